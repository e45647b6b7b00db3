"""Watch mode: poll a labeling tool's counters and run a round once enough new answers have arrived.

Tool-agnostic: a `poll` callable returns counters ({"submitted": int, "records": int}); a `run_round`
callable does pull -> rank -> push. A round runs when
  - no round has run yet under this watcher's baseline (the first poll prioritises the dataset), or
  - `submitted` grew by at least `min_new` since the counters seen before the last round, or
  - `records` changed (new or deleted records need priorities; set `track_records=False` to ignore).
The counters are read *before* a round, so an answer that arrives while a round runs counts as new for the
next one (a spare retrain rather than a missed one). The baseline can be persisted (`save_baseline`), so a
restarted watcher does not retrain for answers the last round already saw.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ALBackendError, ConfigError, EmptyPoolError, StateError

log = logging.getLogger(__name__)


@dataclass
class PollResult:
    """What one poll saw and did."""

    counters: dict[str, int]
    new_submitted: int
    ran: bool
    reason: str  # "initial", "new responses", "records changed", "waiting", "error", "nothing pending"
    result: Any = None  # whatever run_round returned
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Watcher:
    """Poll, compare against the baseline, run a round when due. Call `poll_once()` (tests) or `run()`."""

    poll: Callable[[], Mapping[str, int]]
    run_round: Callable[[], Any]
    min_new: int
    baseline: dict[str, int] | None = None
    save_baseline: Callable[[dict[str, int]], None] | None = None
    track_records: bool = True
    rounds: int = 0
    polls: int = 0
    history: list[PollResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.min_new < 1:
            raise ConfigError(f"--min-new must be >= 1, got {self.min_new}")

    def due(self, counters: Mapping[str, int]) -> tuple[bool, str, int]:
        """(run now?, why, new submitted responses) for these counters against the baseline."""
        if self.baseline is None:
            return True, "initial", int(counters.get("submitted", 0))
        new = int(counters.get("submitted", 0)) - int(self.baseline.get("submitted", 0))
        if new >= self.min_new:
            return True, "new responses", new
        if self.track_records and "records" in counters and counters["records"] != self.baseline.get("records"):
            return True, "records changed", max(new, 0)
        return False, "waiting", max(new, 0)

    def poll_once(self) -> PollResult:
        """Read the counters; run a round if due. Errors from the round propagate (run() decides)."""
        t0 = time.perf_counter()
        counters = {k: int(v) for k, v in self.poll().items()}
        self.polls += 1
        if self.baseline is not None and counters.get("submitted", 0) < self.baseline.get("submitted", 0):
            # responses were deleted: count new ones from here rather than wait for the old total again
            self.baseline = {**self.baseline, "submitted": counters["submitted"]}
            self._save()
        run, reason, new = self.due(counters)
        if not run:
            res = PollResult(counters, new, False, reason, seconds=time.perf_counter() - t0)
            self.history.append(res)
            return res
        try:
            result = self.run_round()
        except EmptyPoolError:
            # every record is labeled: nothing to prioritise until new records arrive
            self.baseline = counters
            self._save()
            res = PollResult(counters, new, False, "nothing pending", seconds=time.perf_counter() - t0)
            self.history.append(res)
            return res
        self.rounds += 1
        self.baseline = counters
        self._save()
        res = PollResult(counters, new, True, reason, result=result, seconds=time.perf_counter() - t0)
        self.history.append(res)
        return res

    def _save(self) -> None:
        if self.save_baseline is not None and self.baseline is not None:
            self.save_baseline(dict(self.baseline))

    def run(
        self,
        every: float,
        *,
        max_rounds: int | None = None,
        max_polls: int | None = None,
        stop: threading.Event | None = None,
        on_poll: Callable[[PollResult], None] | None = None,
        on_wait: Callable[[float], None] | None = None,
        max_consecutive_errors: int | None = None,
    ) -> list[PollResult]:
        """Poll every `every` seconds until stopped (KeyboardInterrupt, `stop` set, max_rounds rounds or
        max_polls polls). A failing poll or round is reported and retried at the next poll: a watcher must
        survive the tool restarting. Configuration and state errors stop it at once."""
        if every <= 0:
            raise ConfigError(f"--every must be > 0 seconds, got {every}")
        stop = stop or threading.Event()
        errors = 0
        while not stop.is_set():
            try:
                res = self.poll_once()
                errors = 0
            except (ConfigError, StateError):
                raise
            except ALBackendError as e:
                errors += 1
                res = PollResult({}, 0, False, "error", error=f"{type(e).__name__}: {e}")
                self.history.append(res)
                log.error("watch: %s", e)
                if max_consecutive_errors is not None and errors >= max_consecutive_errors:
                    raise
            if on_poll:
                on_poll(res)
            if max_rounds is not None and self.rounds >= max_rounds:
                break
            if max_polls is not None and self.polls >= max_polls:
                break
            if on_wait:
                on_wait(every)
            if stop.wait(every):
                break
        return self.history


def baseline_from_store(store, key: str) -> dict[str, int] | None:
    """The counters saved by the last round of this watcher, or None (state meta `key`, JSON)."""
    import json

    raw = store.get_meta(key)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return {str(k): int(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError):
        raise StateError(f"state meta {key!r} is not a counters object: {raw[:80]!r}") from None


def save_baseline_to_store(store, key: str, counters: Mapping[str, int]) -> None:
    import json

    store.set_meta(key, json.dumps(dict(counters), sort_keys=True))
