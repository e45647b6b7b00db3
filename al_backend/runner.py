"""One prioritisation round from end to end: lock, pull, rank, record, push. Used by the CLI, cron and the server."""

from __future__ import annotations

import logging
import time
from typing import Any

from .config import Config
from .engine import Engine
from .preflight import check_round
from .store import Store, project_lock

log = logging.getLogger(__name__)


def make_source(cfg: Config, source: str, *, skip_invalid: bool = False):
    from connectors import make_connector

    if source == "file":
        return make_connector(source, cfg, skip_invalid=skip_invalid)
    return make_connector(source, cfg)


def run_prioritize(
    cfg: Config,
    source: str,
    *,
    dry_run: bool = False,
    skip_invalid: bool = False,
    wait: float = 0.0,
    progress: bool = True,
    connector: Any = None,
    reset_state: bool = False,
) -> dict[str, Any]:
    """Run one round and push it. Returns a summary dict with the Ranking under "ranking"."""
    t0 = time.perf_counter()
    check_round(cfg, source, dry_run=dry_run)  # paths to read and write, before the lock and the round
    connector = connector or make_source(cfg, source, skip_invalid=skip_invalid)
    with project_lock(cfg.state.path, wait=wait), Store.open(cfg.state.path, reset=reset_state) as store:
        log.info("round starting: %s, state %s", connector.describe(), cfg.state.path)
        target = connector.describe()
        resumed = None
        if not dry_run:
            resumed = resume_unfinished_push(store, connector, target)
        pool = connector.pull()
        engine = Engine(cfg, store, progress=progress)
        ranking = engine.run_round(pool, dry_run=dry_run, label_set=connector.label_set())
        pushed = 0
        if not dry_run:
            if resumed is not None and resumed.model_version == ranking.model_version and resumed.ids == ranking.ids:
                # the interrupted push just completed is this very ranking: pushing it again would duplicate it
                store.set_push_progress(ranking.round_id, target, 1, 1)
                pushed = len(ranking)
            else:
                report = push_with_progress(store, connector, ranking, target)
                pushed, target = report.pushed, report.target
        phase = "seed" if ranking.strategy == "seed" else "model"
        log.info(
            "round %d done: %d ranked, batch %d, strategy %s, pushed %d to %s",
            ranking.round_id, len(ranking), ranking.batch_size, ranking.strategy, pushed, target,
        )
        text_of = dict(zip(pool.ids, pool.texts))
        return {
            "resumed_round": None if resumed is None else resumed.round_id,
            "round": ranking.round_id,
            "strategy": ranking.strategy,
            "phase": phase,
            "model_version": ranking.model_version,
            "pool_size": len(pool),
            "labeled": int(pool.labeled_mask.sum()),
            "ranked": len(ranking),
            "batch_size": ranking.batch_size,
            "batch": ranking.ids[: ranking.batch_size],
            "pushed": pushed,
            "target": target,
            "dry_run": dry_run,
            "embedded": engine.embedder.texts_encoded,
            "skipped": len(getattr(connector, "skipped", []) or []),
            "seconds": time.perf_counter() - t0,
            "state": cfg.state.path,
            "ranking": ranking,
            "texts": [text_of[i] for i in ranking.ids[:50]],
        }


def _supports_chunks(connector: Any) -> bool:
    import inspect

    try:
        params = inspect.signature(connector.push).parameters
    except (TypeError, ValueError):
        return False
    return "start_chunk" in params and "on_chunk" in params


def push_with_progress(store: Store, connector: Any, ranking: Any, target: str, start_chunk: int = 0):
    """Push in the connector's chunks, recording progress after each, so a killed push resumes where it stopped."""
    if not _supports_chunks(connector):
        # "started" first: a push that dies half-way (server lost, process killed) is completed by the next run
        store.set_push_progress(ranking.round_id, target, 0, 1)
        report = connector.push(ranking)
        store.set_push_progress(ranking.round_id, target, 1, 1)
        return report

    def on_chunk(done: int, total: int) -> None:
        store.set_push_progress(ranking.round_id, target, done, total)

    if start_chunk == 0:
        store.set_push_progress(ranking.round_id, target, 0, 1)  # "started": a crash before chunk 1 is resumed too
    return connector.push(ranking, start_chunk=start_chunk, on_chunk=on_chunk)


def resume_unfinished_push(store: Store, connector: Any, target: str):
    """Complete the newest round's push to this target if a previous run died mid-push. Returns that Ranking."""
    unfinished = store.unfinished_push(target)
    if unfinished is None:
        return None
    round_id, done, total = unfinished
    last = store.last_round()
    if last is None or last.round_id != round_id:
        return None  # a newer round superseded it; its own push decides what the tool shows
    ranking = store.load_ranking(round_id)
    log.warning("round %d's push to %s stopped at chunk %d of %d; completing it", round_id, target, done, total)
    push_with_progress(store, connector, ranking, target, start_chunk=done if _supports_chunks(connector) else 0)
    return ranking
