"""Benchmark: selection on a synthetic pool against a plain numpy k-center loop measured in the same run.

Random unit vectors (N x D, float32) and 100 labeled ones. Timed, one after the other:
  kcenter:    selection.k_center_greedy (lazy exact greedy)
  reference:  the plain numpy running-min-distance loop, one matrix-vector product per pick
  scores:     margin of random class probabilities (the scorer cost)
  density:    density.knn_density over the whole pool
  hybrid:     selection.hybrid (additive, alpha 0.5) on those scores
Reports seconds, the reference / kcenter ratio, whether both picked the same points, and peak memory.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import density, scoring, selection


def unit_vectors(n: int, dim: int, rng: np.random.Generator, block: int = 65_536) -> np.ndarray:
    """(n, dim) float32 rows uniform on the unit sphere, built in blocks (no float64 copy of the pool)."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, block):
        rows = rng.standard_normal((min(block, n - start), dim), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        out[start : start + len(rows)] = rows
    return out


def reference_k_center(X: np.ndarray, k: int, labeled: np.ndarray) -> np.ndarray:
    """The plain loop: running min squared distance, one matvec over the pool per pick."""
    sq_norms = np.einsum("nd,nd->n", X, X)
    lab_half_sq = 0.5 * np.einsum("md,md->m", labeled, labeled)
    min_sq = np.empty(len(X), dtype=np.float32)
    for start in range(0, len(X), 32_768):
        block = X[start : start + 32_768]
        prod = block @ labeled.T
        prod -= lab_half_sq
        min_sq[start : start + len(block)] = sq_norms[start : start + len(block)] - 2.0 * prod.max(axis=1)
    picks = np.empty(k, dtype=np.int64)
    dist = np.empty(len(X), dtype=np.float32)
    for j in range(k):
        i = int(np.argmax(min_sq))
        picks[j] = i
        np.matmul(X, X[i], out=dist)
        dist *= -2.0
        dist += sq_norms
        dist += sq_norms[i]
        np.minimum(min_sq, dist, out=min_sq)
        min_sq[i] = -np.inf
    return picks


def first_difference(X: np.ndarray, labeled: np.ndarray, ours: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """Where two pick orders first differ, and both candidates' exact (float64) distance to the centres
    chosen so far: equal to ~1e-7 means a float32 rounding tie, not a wrong pick."""
    j = int(np.flatnonzero(ours != ref)[0])
    centres = np.vstack([labeled, X[ours[:j]]]).astype(np.float64)

    def distance(row: int) -> float:
        return float(np.sqrt(((X[row].astype(np.float64) - centres) ** 2).sum(axis=1)).min())

    return {
        "position": j,
        "ours": int(ours[j]),
        "reference": int(ref[j]),
        "ours_distance": distance(int(ours[j])),
        "reference_distance": distance(int(ref[j])),
    }


def peak_memory_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def bench_selection(
    pool_size: int,
    dim: int,
    batch_size: int,
    *,
    labeled: int = 100,
    seed: int = 0,
    reference: bool = True,
    with_density: bool = True,
    n_classes: int = 10,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the benchmark; returns seconds per stage, the speedup ratio, agreement and peak memory (MB)."""
    rng = np.random.default_rng(seed)
    log(f"generating {pool_size:,} x {dim} unit vectors")
    X = unit_vectors(pool_size, dim, rng)
    X_labeled = unit_vectors(labeled, dim, rng)
    result: dict[str, Any] = {
        "pool_size": pool_size,
        "dim": dim,
        "batch_size": batch_size,
        "labeled": labeled,
        "seed": seed,
    }

    log("k-center (lazy exact greedy)")
    t = time.perf_counter()
    picks = selection.k_center_greedy(X, batch_size, X_labeled)
    result["kcenter_s"] = time.perf_counter() - t

    if reference:
        log("k-center reference (plain numpy running-min loop)")
        t = time.perf_counter()
        ref_picks = reference_k_center(X, batch_size, X_labeled)
        result["reference_s"] = time.perf_counter() - t
        result["speedup"] = result["reference_s"] / max(result["kcenter_s"], 1e-12)
        result["same_picks"] = bool(np.array_equal(picks, ref_picks))
        result["same_set"] = int(len(np.intersect1d(picks, ref_picks)))
        if not result["same_picks"]:
            result["first_difference"] = first_difference(X, X_labeled, picks, ref_picks)

    log("scores (margin of random probabilities)")
    probs = rng.dirichlet(np.full(n_classes, 0.3), size=pool_size)
    t = time.perf_counter()
    scores = scoring.margin(probs)
    result["scores_s"] = time.perf_counter() - t
    del probs

    if with_density:
        log("kNN density")
        t = time.perf_counter()
        dens = density.knn_density(X)
        result["density_s"] = time.perf_counter() - t
        result["density_range"] = [float(dens.min()), float(dens.max())]

    log("hybrid (additive, alpha 0.5)")
    t = time.perf_counter()
    selection.hybrid(scores, X, batch_size, X_labeled, alpha=0.5)
    result["hybrid_s"] = time.perf_counter() - t

    result["end_to_end_s"] = result["scores_s"] + result.get("density_s", 0.0) + result["hybrid_s"]
    result["peak_memory_mb"] = peak_memory_mb()
    return result
