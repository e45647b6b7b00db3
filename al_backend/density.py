"""kNN density (typicality) of embeddings, with FAISS, for pools up to millions of rows.

density(q) = 1 / (1 + mean Euclidean distance from q to its k nearest rows of X), in (0, 1],
higher = denser. Plain Euclidean on the vectors as given (no normalised copy of a 1M-row pool);
for unit-norm embeddings the distance is sqrt(2 - 2 cos), so the ranking equals mean-cosine ranking
up to the concavity of the square root.

Below ``exact_threshold`` rows the search is exact (FAISS brute force, BLAS). Above it the pool is
partitioned IVF-style: k-means centroids (nlist ~ 3 sqrt(N) by default, trained on a sample), every
row assigned to its nearest centroid, and the queries of each list searched exactly, with one BLAS
product, against the rows of the ``nprobe`` lists whose centroids are nearest to that list's centroid.
This is IndexIVFFlat's approximation (probe a few lists), but with the probing decided per list rather
than per query, so the scan is a matrix product: IndexIVFFlat.search at 1M x 384 measured ~180 s with
nprobe=4 on the 2-core machines, the blocked form a fraction of that. Density does not change between
rounds for old rows: callers cache it and pass ``queries`` for new rows only.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["knn_density", "outlier_mask", "DEFAULT_EXACT_THRESHOLD"]

DEFAULT_EXACT_THRESHOLD = 20_000
_QUERY_BLOCK = 16_384


def _faiss():
    import faiss

    # more OpenMP threads than cores collapses FAISS throughput
    faiss.omp_set_num_threads(_cores())
    return faiss


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _as_f32(X: np.ndarray, name: str) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (n, d), got shape {X.shape}")
    if X.dtype != np.float32 or not X.flags.c_contiguous:
        X = np.ascontiguousarray(X, dtype=np.float32)
    return X


def _density_from(sq_dist: np.ndarray, ids: np.ndarray, self_ids: np.ndarray | None, k: int) -> np.ndarray:
    """Mean of the k nearest distances, excluding the self-match when self_ids is given.

    sq_dist, ids: (q, k or k+1) FAISS results (squared L2, ascending; id -1 = missing).
    """
    dist = np.sqrt(np.maximum(sq_dist, 0.0, dtype=np.float64))
    keep = ids >= 0
    if self_ids is not None:
        is_self = ids == self_ids[:, None]
        keep &= ~is_self
        # with duplicates the self-match may be missing from the list: drop the farthest instead
        no_self = ~is_self.any(axis=1)
        keep[no_self, -1] = False
    counts = keep.sum(axis=1)
    total = np.where(keep, dist, 0.0).sum(axis=1)
    mean = np.divide(total, counts, out=np.zeros_like(total), where=counts > 0)
    return 1.0 / (1.0 + mean)


def knn_density(
    X: np.ndarray,
    k: int = 10,
    *,
    queries: np.ndarray | None = None,
    exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
    nprobe: int = 3,
    nlist: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Typicality of each query row among the rows of X: 1 / (1 + mean distance to its k nearest rows).

    X: (N, d) pool embeddings. queries: (n_q, d) rows to score, or None to score X itself (each row's
    own match is excluded). k is capped at the number of available neighbours; a row with none gets 1.
    exact_threshold: pools of at most this many rows are searched exactly. nprobe: lists whose rows are
    candidates for each list's queries (approximate search only); nlist: lists, default ~3 sqrt(N).
    Returns (n_q,) float64 in (0, 1], higher = denser. Deterministic for a given seed.
    """
    X = _as_f32(X, "X")
    n, dim = X.shape
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if queries is None:
        self_excluded = True
        Q = X
    else:
        self_excluded = False
        Q = _as_f32(queries, "queries")
        if Q.shape[1] != dim:
            raise ValueError(f"queries have {Q.shape[1]} dimensions, X has {dim}")
    n_q = Q.shape[0]
    k_eff = min(k, n - 1 if self_excluded else n)
    if n_q == 0:
        return np.empty(0, dtype=np.float64)
    if k_eff <= 0:
        return np.ones(n_q, dtype=np.float64)
    faiss = _faiss()
    n_search = k_eff + 1 if self_excluded else k_eff
    if n <= exact_threshold:
        out = np.empty(n_q, dtype=np.float64)
        for start in range(0, n_q, _QUERY_BLOCK):
            block = Q[start : start + _QUERY_BLOCK]
            sq, ids = faiss.knn(block, X, n_search)
            self_ids = np.arange(start, start + len(block)) if self_excluded else None
            out[start : start + len(block)] = _density_from(sq, ids, self_ids, k_eff)
        return out
    return _blocked_ivf_density(faiss, X, Q, self_excluded, k_eff, n_search, nprobe, nlist, seed)


def _blocked_ivf_density(faiss, X, Q, self_excluded, k_eff, n_search, nprobe, nlist, seed) -> np.ndarray:
    n, dim = X.shape
    rng = np.random.default_rng(seed)
    nlist = int(nlist) if nlist else max(1, int(round(3 * math.sqrt(n))))
    nlist = min(nlist, n)
    nprobe = max(1, min(int(nprobe), nlist))
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # k-means on small samples: threads only add overhead
    try:
        centroids = _two_level_partition(faiss, X, nlist, rng, seed)
    finally:
        faiss.omp_set_num_threads(threads)
    x_list = _two_level_assign(faiss, centroids, X)
    nlist = len(centroids)
    q_list = x_list if self_excluded else _two_level_assign(faiss, centroids, Q)
    # lists probed for each list's queries: its nprobe nearest centroids (itself first)
    _, probe = faiss.knn(centroids.all, centroids.all, nprobe)
    # rows of a list in random order, so that a truncated list (below) is a uniform subset of it
    perm = rng.permutation(n)
    x_order = perm[np.argsort(x_list[perm], kind="stable")]
    x_starts = np.searchsorted(x_list[x_order], np.arange(nlist + 1))
    q_order = x_order if self_excluded else np.argsort(q_list, kind="stable")
    # k-means lists are unbalanced (hub lists near the centre are probed by many): cap the candidates
    # of a list at nprobe - 1 average lists beyond its own, truncating the last probed list
    cap = int(math.ceil((nprobe - 1) * n / nlist))
    q_starts = x_starts if self_excluded else np.searchsorted(q_list[q_order], np.arange(nlist + 1))
    out = np.ones(Q.shape[0], dtype=np.float64)

    def search_list(lst: int) -> None:
        q_rows = q_order[q_starts[lst] : q_starts[lst + 1]]
        if len(q_rows) == 0:
            return
        parts = [x_order[x_starts[lst] : x_starts[lst + 1]]]
        # a small own list still gets enough neighbours from the next lists
        room = max(cap, n_search + 1 - len(parts[0]))
        for j in probe[lst]:
            if room <= 0:
                break
            if j < 0 or j == lst:
                continue
            part = x_order[x_starts[j] : min(x_starts[j + 1], x_starts[j] + room)]
            parts.append(part)
            room -= len(part)
        cand = np.concatenate(parts)
        if self_excluded and len(cand) <= 1:
            return
        m = min(n_search, len(cand))
        sq, local = faiss.knn(Q[q_rows], X[cand], m)
        ids = np.where(local >= 0, cand[np.maximum(local, 0)], -1)
        out[q_rows] = _density_from(sq, ids, q_rows if self_excluded else None, k_eff)

    # Per-list searches are small: FAISS's OpenMP threads cost more than they bring there (measured 7x
    # slower with 2 threads than 1 on a 105 x 420 search), so run lists on a Python thread per core
    # (FAISS releases the GIL), each with one OpenMP thread (the setting is per calling thread).
    with ThreadPoolExecutor(max_workers=_cores(), initializer=faiss.omp_set_num_threads, initargs=(1,)) as pool:
        list(pool.map(search_list, range(nlist)))
    return out


class _TwoLevel:
    """nlist fine centroids grouped under ~sqrt(nlist) coarse ones: assigning a row costs ~2 sqrt(nlist)
    distances instead of nlist (at 1M rows and 3,000 lists, ~2 s instead of ~50 s on two cores)."""

    def __init__(self, coarse: np.ndarray, fine: list[np.ndarray]) -> None:
        self.coarse = coarse
        self.fine = fine
        self.offsets = np.cumsum([0] + [len(f) for f in fine])
        self.all = np.ascontiguousarray(np.concatenate(fine))

    def __len__(self) -> int:
        return len(self.all)


def _train_kmeans(faiss, data: np.ndarray, n_centroids: int, seed: int) -> np.ndarray:
    if n_centroids <= 1 or len(data) <= n_centroids:
        return np.ascontiguousarray(data if len(data) <= n_centroids else data.mean(axis=0, keepdims=True))
    kmeans = faiss.Kmeans(data.shape[1], n_centroids, niter=8, seed=int(seed), verbose=False)
    kmeans.cp.min_points_per_centroid = 1
    kmeans.cp.max_points_per_centroid = 1 << 30
    kmeans.train(np.ascontiguousarray(data))
    return kmeans.centroids


def _two_level_partition(faiss, X: np.ndarray, nlist: int, rng: np.random.Generator, seed: int):
    n = X.shape[0]
    # ~20 rows per list is plenty for a partition: recall beyond it is bought with nprobe
    sample_size = min(n, max(20 * nlist, 10_000))
    sample = X[np.sort(rng.choice(n, size=sample_size, replace=False))]
    n_coarse = max(1, int(round(math.sqrt(nlist))))
    coarse = _train_kmeans(faiss, sample, n_coarse, seed)
    sample_coarse = _nearest(faiss, coarse, sample)
    fine: list[np.ndarray] = []
    for j in range(len(coarse)):
        members = sample[sample_coarse == j]
        if len(members) == 0:
            fine.append(coarse[j : j + 1])
            continue
        n_fine = max(1, int(round(nlist * len(members) / len(sample))))
        fine.append(_train_kmeans(faiss, members, n_fine, seed + j + 1))
    return _TwoLevel(coarse, fine)


def _two_level_assign(faiss, centroids: _TwoLevel, X: np.ndarray) -> np.ndarray:
    coarse = _nearest(faiss, centroids.coarse, X)
    out = np.empty(X.shape[0], dtype=np.int64)
    order = np.argsort(coarse, kind="stable")
    starts = np.searchsorted(coarse[order], np.arange(len(centroids.coarse) + 1))
    for j, fine in enumerate(centroids.fine):
        rows = order[starts[j] : starts[j + 1]]
        if len(rows):
            out[rows] = centroids.offsets[j] + _nearest(faiss, fine, X[rows])
    return out


def _nearest(faiss, centroids: np.ndarray, X: np.ndarray) -> np.ndarray:
    out = np.empty(X.shape[0], dtype=np.int64)
    step = 65_536 * 4
    for start in range(0, X.shape[0], step):
        block = X[start : start + step]
        _, ids = faiss.knn(np.ascontiguousarray(block), centroids, 1)
        out[start : start + len(block)] = ids[:, 0]
    return out


def outlier_mask(density: np.ndarray, quantile: float) -> np.ndarray:
    """(n,) bool: True for rows whose density is at or below the given quantile of density (the outliers).

    quantile in [0, 1]; 0 marks only the minimum-density rows, 1 marks every row.
    """
    density = np.asarray(density, dtype=np.float64)
    if density.ndim != 1:
        raise ValueError(f"density must be 1-d, got shape {density.shape}")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    if len(density) == 0:
        return np.zeros(0, dtype=bool)
    return density <= np.quantile(density, quantile)
