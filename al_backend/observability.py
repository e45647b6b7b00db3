"""Prometheus text exposition for `al-backend serve` (/metrics): rounds, pool, labels, trainings, errors.

Numbers only the running process knows (trainings, errors, coalesced events) come from the retrain
scheduler's stats; everything about rounds comes from the project's state, so it survives restarts.
"""

from __future__ import annotations

from typing import Any

from .store import Store

HELP = {
    "rounds": ("counter", "Rounds recorded in the project state."),
    "last_round_timestamp_seconds": ("gauge", "Unix time the last round finished."),
    "last_round_duration_seconds": ("gauge", "Wall time of the last round."),
    "pool_size": ("gauge", "Tasks in the pool at the last round."),
    "labeled": ("gauge", "Labeled tasks at the last round."),
    "clusters_covered": ("gauge", "Cold-start clusters with at least one label."),
    "embeddings_cached": ("gauge", "Embeddings in the cache."),
    "stop_recommended": ("gauge", "1 when the stopping criterion says labeling can stop (see al-backend status)."),
}


def stop_recommended(last_round: dict[str, Any] | None) -> float:
    """1.0 when the last round's stopping decision was stop, else 0.0 (no round, or no decision yet)."""
    decision = ((last_round or {}).get("metrics") or {}).get("stopping", {}).get("decision") or {}
    return 1.0 if decision.get("stop") else 0.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# per-project numbers the ML backend's scheduler keeps (RetrainScheduler.stats), as Prometheus series
SCHEDULER = {
    "requested": ("trainings_requested_total", "counter", "Events (webhooks, setup) that asked for a retrain."),
    "coalesced": ("trainings_coalesced_total", "counter", "Retrain requests absorbed by one already pending."),
    "started": ("trainings_started_total", "counter", "Retrains started since the process started."),
    "completed": ("trainings_total", "counter", "Retrains completed since the process started."),
    "failed": ("errors_total", "counter", "Retrains that failed since the process started."),
    "running": ("training_running", "gauge", "1 while a retrain of the project runs."),
    "pending": ("training_pending", "gauge", "1 while a retrain of the project waits its turn."),
    "last_finished": ("last_training_timestamp_seconds", "gauge", "Unix time the last retrain ended."),
}


def prometheus_text_many(projects: list[tuple[dict[str, str], Store | None, dict[str, Any]]]) -> str:
    """The /metrics body for several projects: one HELP/TYPE per metric, one series per project.

    Each entry is (labels, state or None, scheduler stats dict); a state that cannot be read is skipped
    for the state metrics and counted in al_backend_state_errors."""
    series: dict[str, tuple[str, str, list[tuple[str, float]]]] = {}

    def add(name: str, kind: str, help_text: str, labels: dict[str, str], value: Any) -> None:
        lab = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items())) + "}" if labels else ""
        series.setdefault(f"al_backend_{name}", (kind, help_text, []))[2].append((lab, float(value)))

    for labels, store, stats in projects:
        if store is not None:
            s = store.summary()
            last = s["last_round"]
            add("rounds_total", *HELP["rounds"], labels, s["rounds"])
            add(
                "last_round_timestamp_seconds",
                *HELP["last_round_timestamp_seconds"],
                labels,
                last["finished_at"] if last else 0,
            )
            add(
                "last_round_duration_seconds",
                *HELP["last_round_duration_seconds"],
                labels,
                last["duration_s"] if last else 0,
            )
            add("pool_size", *HELP["pool_size"], labels, s["pool_size"])
            add("labeled", *HELP["labeled"], labels, s["labeled"])
            add("clusters_covered", *HELP["clusters_covered"], labels, s["clusters_covered"])
            add("embeddings_cached", *HELP["embeddings_cached"], labels, s["embeddings_cached"])
            add("stop_recommended", *HELP["stop_recommended"], labels, stop_recommended(last))
        for key, (name, kind, help_text) in SCHEDULER.items():
            if key in stats:
                value = stats[key]
                add(name, kind, help_text, labels, 0 if value is None else float(value))
    lines: list[str] = []
    for name, (kind, help_text, values) in series.items():
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{lab} {value:.17g}" for lab, value in values)
    return "\n".join(lines) + "\n"
