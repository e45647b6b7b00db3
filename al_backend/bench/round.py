"""`al-backend bench round`: whole engine rounds on a synthetic pool, the way `prioritize` runs them.

Random unit vectors stand in for cached embeddings (the pool's `vectors`), a few hundred of them labeled.
Two rounds run against a temporary state: the first clusters the pool and records every item, the second
is the steady state (nothing new to embed, cluster or record). The reference, measured in the same run, is
one pass of the head over the pool (a float32 matmul + softmax): the cheapest thing a round could do.
"""

from __future__ import annotations

import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def synthetic_pool(n: int, d: int, labeled: int, classes: int, seed: int):
    from ..pool import Pool

    rng = np.random.default_rng(seed)
    X = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks: a float64 draw of the whole pool would double the peak
        block = rng.standard_normal((min(100_000, n - start), d), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        X[start : start + len(block)] = block
    ids = [f"t{i}" for i in range(n)]
    labels: list[str | None] = [None] * n
    for i in range(min(labeled, n - 1)):
        labels[i] = f"c{i % classes}"
    return Pool(ids=ids, texts=[f"task {i}" for i in range(n)], labels=labels, vectors=X, source="synthetic pool")


def _timed(into: dict[str, float], key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into[key] = into.get(key, 0.0) + time.perf_counter() - t

    return wrapper


def bench_round(
    pool_size: int,
    dim: int = 384,
    batch_size: int = 1000,
    labeled: int = 300,
    classes: int = 5,
    strategy: str = "default",
    rounds: int = 2,
    seed: int = 0,
    smoothing: float | None = None,
) -> dict[str, Any]:
    """smoothing: [head] smoothing for the rounds (None: the product default; 0: the plain head)."""
    from ..config import load_config
    from ..head import Head
    from ..round import Round
    from ..store import Store

    pool = synthetic_pool(pool_size, dim, labeled, classes, seed)
    cfg = load_config(
        None,
        env={},
        overrides={
            "strategy.batch_size": batch_size,
            "strategy.name": strategy,
            "seeding.min_cluster_coverage": 0.0,
            **({} if smoothing is None else {"head.smoothing": smoothing}),
        },
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="al-bench-") as tmp:
        store = Store.open(Path(tmp) / "state.sqlite")
        engine = Round(cfg, store, progress=False)
        # the two steps the round's own timings cannot hold: validating the pool (before the round's clock)
        # and writing the round (the transaction that stores those timings)
        extra: dict[str, float] = {}
        pool.validate = _timed(extra, "validate_s", pool.validate)  # type: ignore[method-assign,unused-ignore]
        store.record_round = _timed(extra, "record_s", store.record_round)  # type: ignore[method-assign]
        for r in range(rounds):
            extra.clear()
            t = time.perf_counter()
            ranking = engine.run(pool)
            seconds = time.perf_counter() - t
            last = store.last_round()
            assert last is not None
            metrics = last.metrics
            timings = {**metrics["timings"], **extra}
            timings["other_s"] = max(seconds - sum(timings.values()), 0.0)
            results.append(
                {
                    "round": r + 1,
                    "seconds": seconds,
                    "strategy": ranking.strategy,
                    "head_reused": bool(metrics.get("head_reused")),
                    **timings,
                }
            )
        store.close()
    labeled_idx = np.flatnonzero(pool.labeled_mask)
    head = Head(random_state=seed).fit(pool.vectors[labeled_idx], [pool.labels[i] for i in labeled_idx])
    t = time.perf_counter()
    head.predict_proba(pool.vectors)
    reference = time.perf_counter() - t
    return {
        "pool_size": pool_size,
        "dim": dim,
        "batch_size": batch_size,
        "labeled": int(labeled_idx.size),
        "strategy": results[0]["strategy"],
        "rounds": results,
        "reference_scoring_pass_s": reference,
        "steady_round_vs_reference": results[-1]["seconds"] / reference if reference > 0 else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
