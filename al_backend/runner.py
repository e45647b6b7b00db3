"""One prioritisation round from end to end: lock, pull, rank, record, push. Used by the CLI, cron and the server."""

from __future__ import annotations

import logging
import time
from typing import Any

from .config import Config
from .engine import Engine
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
) -> dict[str, Any]:
    """Run one round and push it. Returns a summary dict with the Ranking under "ranking"."""
    t0 = time.perf_counter()
    connector = connector or make_source(cfg, source, skip_invalid=skip_invalid)
    with project_lock(cfg.state.path, wait=wait), Store.open(cfg.state.path) as store:
        log.info("round starting: %s, state %s", connector.describe(), cfg.state.path)
        pool = connector.pull()
        engine = Engine(cfg, store, progress=progress)
        ranking = engine.run_round(pool, dry_run=dry_run, label_set=connector.label_set())
        pushed, target = 0, connector.describe()
        if not dry_run:
            report = connector.push(ranking)
            pushed, target = report.pushed, report.target
        phase = "seed" if ranking.strategy == "seed" else "model"
        log.info(
            "round %d done: %d ranked, batch %d, strategy %s, pushed %d to %s",
            ranking.round_id, len(ranking), ranking.batch_size, ranking.strategy, pushed, target,
        )
        text_of = dict(zip(pool.ids, pool.texts))
        return {
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
