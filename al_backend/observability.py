"""Prometheus text exposition for `al-backend serve` (/metrics): rounds, pool, labels, trainings, errors.

Counters that only the running process knows (trainings, errors, webhook events) live in `Counters`;
everything about rounds comes from the project's state, so it survives restarts.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .store import Store


@dataclass
class Counters:
    """Process counters, thread-safe. Names map to al_backend_<name>_total."""

    values: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def inc(self, name: str, by: float = 1.0) -> None:
        with self.lock:
            self.values[name] = self.values.get(name, 0.0) + by

    def get(self, name: str) -> float:
        with self.lock:
            return self.values.get(name, 0.0)

    def snapshot(self) -> dict[str, float]:
        with self.lock:
            return dict(self.values)


HELP = {
    "rounds": ("counter", "Rounds recorded in the project state."),
    "last_round_timestamp_seconds": ("gauge", "Unix time the last round finished."),
    "last_round_duration_seconds": ("gauge", "Wall time of the last round."),
    "pool_size": ("gauge", "Tasks in the pool at the last round."),
    "labeled": ("gauge", "Labeled tasks at the last round."),
    "clusters_covered": ("gauge", "Cold-start clusters with at least one label."),
    "embeddings_cached": ("gauge", "Embeddings in the cache."),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(store: Store | None, counters: Counters | None = None, labels: dict[str, str] | None = None) -> str:
    """The /metrics body (text format 0.0.4)."""
    lab = ""
    if labels:
        lab = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items())) + "}"
    lines: list[str] = []

    def emit(name: str, kind: str, help_text: str, value: Any) -> None:
        full = f"al_backend_{name}"
        lines.append(f"# HELP {full} {help_text}")
        lines.append(f"# TYPE {full} {kind}")
        lines.append(f"{full}{lab} {float(value):.17g}")

    if store is not None:
        s = store.summary()
        last = s["last_round"]
        emit("rounds_total", *HELP["rounds"], s["rounds"])
        emit("last_round_timestamp_seconds", *HELP["last_round_timestamp_seconds"], last["finished_at"] if last else 0)
        emit("last_round_duration_seconds", *HELP["last_round_duration_seconds"], last["duration_s"] if last else 0)
        emit("pool_size", *HELP["pool_size"], s["pool_size"])
        emit("labeled", *HELP["labeled"], s["labeled"])
        emit("clusters_covered", *HELP["clusters_covered"], s["clusters_covered"])
        emit("embeddings_cached", *HELP["embeddings_cached"], s["embeddings_cached"])
    for name, value in sorted((counters.snapshot() if counters else {}).items()):
        emit(f"{name}_total", "counter", f"{name.replace('_', ' ').capitalize()} since the process started.", value)
    return "\n".join(lines) + "\n"
