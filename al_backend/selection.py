"""Batch selectors: scores and embeddings in, distinct int64 row indices out, in pick order.

Every selector here accepts 1M-row pools: no N x N matrices, no Python loops over rows. The greedy
distance-based selectors (k-center, hybrid) share one exact lazy engine, ``_LazyGreedy``:

* a point's distance to its nearest centre (labeled rows and rows picked so far) only ever decreases,
  so a stale value is an upper bound of the true one;
* each pick looks only at a candidate pool (the top rows by upper bound); candidates are re-checked,
  a block at a time with one small matrix product, against the centres added since their last check;
  a candidate whose value is current and not below any other upper bound is the exact greedy pick;
* rows outside the candidate pool are never touched until the pool's best current value drops below
  the best upper bound outside it; then the pool is rebuilt.

So the picks are exactly those of the textbook greedy (ties aside), while a pick costs a few
thousand dot products instead of a pass over the whole pool (docs: environment.md, "Selection and
scoring costs").
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "k_center_greedy",
    "top_k",
    "hybrid",
    "diverse_among_uncertain",
    "epsilon_greedy",
    "full_order",
]

# Rows per block in pool-wide passes: bounds a block's temporaries to ~tens of MB.
_BLOCK_ROWS = 32_768
# Candidates re-checked at once: from a few (most picks settle quickly) doubling up to a block large
# enough for an efficient matrix product, small enough to stay lazy.
_FIRST_REFRESH_BLOCK = 32
_REFRESH_BLOCK = 2048
# Smallest candidate pool of the lazy greedy (tests shrink it to exercise pool rebuilds).
_MIN_POOL = 8192


def _as_float_matrix(X: np.ndarray, name: str) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (n, d), got shape {X.shape}")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float32)
    return X


def _row_sq_norms(X: np.ndarray) -> np.ndarray:
    out = np.empty(X.shape[0], dtype=np.float64)
    for start in range(0, X.shape[0], _BLOCK_ROWS):
        block = X[start : start + _BLOCK_ROWS]
        out[start : start + len(block)] = np.einsum("nd,nd->n", block, block)
    return out


def _min_sq_dist_to(X: np.ndarray, sq_norms: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N,) squared Euclidean distance from each row of X to its nearest row of centres, blocked GEMMs."""
    centres = np.ascontiguousarray(centres, dtype=X.dtype)
    centre_sq = _row_sq_norms(centres)
    out = np.full(X.shape[0], np.inf, dtype=np.float64)
    # bound a block's (rows x centres) product to ~32M entries
    col_step = max(1, min(len(centres), 4096))
    row_step = max(1, min(_BLOCK_ROWS, (1 << 25) // col_step))
    for c0 in range(0, len(centres), col_step):
        cols = centres[c0 : c0 + col_step]
        cols_sq = centre_sq[c0 : c0 + col_step]
        for start in range(0, X.shape[0], row_step):
            block = X[start : start + row_step]
            prod = block @ cols.T
            prod *= -2.0
            prod += cols_sq[None, :].astype(prod.dtype)
            nearest = prod.min(axis=1).astype(np.float64) + sq_norms[start : start + len(block)]
            np.minimum(out[start : start + len(block)], nearest, out=out[start : start + len(block)])
    return np.maximum(out, 0.0)


class _LazyGreedy:
    """Exact lazy greedy over ``value(rows, min_dist)``, which must be non-decreasing in min_dist.

    min_dist is the Euclidean distance to the nearest centre (labeled rows, then the picks).
    """

    def __init__(
        self,
        X: np.ndarray,
        min_sq: np.ndarray,
        value: Callable[[np.ndarray, np.ndarray], np.ndarray],
        k: int,
        sq_norms: np.ndarray,
        picked: Sequence[int] = (),
    ) -> None:
        self.X = X
        self.sq_norms = sq_norms
        self.value = value
        n = X.shape[0]
        self.min_sq = min_sq  # (N,) upper bounds of the squared distance to the nearest centre
        self.checked = np.zeros(n, dtype=np.int64)  # centres (picks) each row's bound accounts for
        self.centres = np.empty((k, X.shape[1]), dtype=X.dtype)
        self.centre_half_sq = np.empty(k, dtype=X.dtype)
        self.n_centres = 0  # picks made by this engine; earlier picks are already in min_sq
        self.picked = np.zeros(n, dtype=bool)
        self.picked[list(picked)] = True  # picks made before the engine (they are centres already)
        self.pool_size = int(min(n, max(_MIN_POOL, 32 * k)))
        self.last_refreshed = _REFRESH_BLOCK // 2  # rows re-checked for the previous pick
        self._build_pool()

    def _values(self, rows: np.ndarray, min_sq: np.ndarray) -> np.ndarray:
        return self.value(rows, np.sqrt(min_sq))

    def _build_pool(self) -> None:
        """Candidate pool = top rows by upper-bound value; outside_max bounds every row outside it."""
        n = self.X.shape[0]
        free = ~self.picked
        available = int(np.count_nonzero(free))
        size = min(self.pool_size, available)
        ub = np.full(n, -np.inf)
        ub[free] = self._values(np.flatnonzero(free), self.min_sq[free])
        if size < available:
            part = np.argpartition(-ub, size)
            self.pool = part[:size]
            self.outside_max = float(ub[part[size:]].max())
        else:
            self.pool = np.flatnonzero(free)
            self.outside_max = -np.inf
        self.pool_ub = ub[self.pool]

    def _refresh(self, slots: np.ndarray) -> None:
        # slots: stale rows only. Picked (and ineligible) rows hold -inf and are never passed here:
        # refreshing them would bring a picked row back.
        rows = self.pool[slots]
        hi = self.n_centres
        lag = hi - self.checked[rows]
        # rows that missed few centres should not pay for rows that missed many: bucket by log2(lag),
        # so no row is compared with more than twice the centres it needs
        bucket = np.frexp(lag.astype(np.float64))[1]
        for b in np.unique(bucket):
            in_bucket = bucket == b
            self._refresh_rows(slots[in_bucket], rows[in_bucket], hi)

    def _refresh_rows(self, slots: np.ndarray, rows: np.ndarray, hi: int) -> None:
        lo = int(self.checked[rows].min())
        # extra old centres are harmless: min with a distance already >= the bound changes nothing.
        # ||x - c||^2 = ||x||^2 - 2 (x.c - ||c||^2 / 2): one product, one subtraction, one max, in X's dtype
        prod = self.X[rows] @ self.centres[lo:hi].T
        prod -= self.centre_half_sq[None, lo:hi]
        nearest = self.sq_norms[rows] - 2.0 * prod.max(axis=1).astype(np.float64)
        new_sq = np.minimum(self.min_sq[rows], np.maximum(nearest, 0.0))
        self.min_sq[rows] = new_sq
        self.checked[rows] = hi
        self.pool_ub[slots] = self._values(rows, new_sq)

    def pick(self) -> int:
        # start from what the previous pick needed (hybrid picks often settle after a handful of re-checks,
        # k-center picks after thousands), then double while more are needed
        block = int(min(max(self.last_refreshed, _FIRST_REFRESH_BLOCK), _REFRESH_BLOCK))
        self.last_refreshed = 0
        while True:
            stale = self.checked[self.pool] < self.n_centres
            current_ub = np.where(stale, -np.inf, self.pool_ub)
            slot = int(np.argmax(current_ub))
            current_best = current_ub[slot]
            # only stale rows whose bound beats every known value can change the pick: re-check the best
            # of them (a block, for one matrix product) against the centres they have not yet seen
            need = stale & (self.pool_ub > current_best) & (self.pool_ub >= self.outside_max)
            n_need = int(np.count_nonzero(need))
            if n_need:
                need_ub = np.where(need, self.pool_ub, -np.inf)
                if n_need > block:
                    slots = np.argpartition(-need_ub, block)[:block]
                else:
                    slots = np.flatnonzero(need)
                self._refresh(slots)
                self.last_refreshed += len(slots)
                block = min(2 * block, _REFRESH_BLOCK)
                continue
            if current_best == -np.inf or current_best < self.outside_max:
                if self.outside_max == -np.inf:
                    raise RuntimeError("no eligible row left to pick (caller must cap k)")
                self._build_pool()  # a row outside the pool may be better: widen the search
                continue
            row = int(self.pool[slot])
            break
        self.pool_ub[slot] = -np.inf
        self.picked[row] = True
        self.min_sq[row] = 0.0
        self.centres[self.n_centres] = self.X[row]
        self.centre_half_sq[self.n_centres] = 0.5 * self.sq_norms[row]
        self.n_centres += 1
        return row


def _check_k(k: int, n: int) -> int:
    k = int(k)
    if k > n:
        raise ValueError(f"cannot select k={k} rows from a pool of {n}")
    return max(k, 0)


def k_center_greedy(X: np.ndarray, k: int, labeled: np.ndarray | None = None) -> np.ndarray:
    """Greedy k-center (core-set) selection: each pick maximises the Euclidean distance to its nearest
    centre among the labeled rows and the rows picked so far.

    X: (N, d) float pool; k: number of picks (0 or less -> empty; more than N -> ValueError);
    labeled: (M, d) already-labeled embeddings, or None.
    With ``labeled=None`` the first pick is the row closest to the pool mean (the best single centre of
    the pool, deterministic); the rest follow the greedy rule. Returns (k,) distinct int64 row indices
    of X in pick order, exactly the textbook greedy's picks (ties aside), without N x N matrices:
    one pass of matrix products to the labeled set, then a lazy exact re-check of top candidates.
    """
    return _k_center(X, k, labeled)[0]


def _k_center(
    X: np.ndarray, k: int, labeled: np.ndarray | None, eligible: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """k_center_greedy restricted to rows where eligible is True; also returns (N,) Euclidean distance of
    every row to the nearest labeled row (to the first pick when there are none), for explanations."""
    X = _as_float_matrix(X, "X")
    labeled = _check_labeled(labeled, X)

    def first_pick(sq_norms: np.ndarray) -> int:
        mean = X.mean(axis=0, dtype=np.float64)
        # argmin ||x - mean||^2 = argmin ||x||^2 - 2 x.mean
        closeness = sq_norms - 2.0 * _matvec(X, mean)
        if eligible is not None:
            closeness[~eligible] = np.inf
        return int(np.argmin(closeness))

    return _greedy(X, k, labeled, lambda min_sq: _identity_value, first_pick, eligible)


def _check_labeled(labeled: np.ndarray | None, X: np.ndarray) -> np.ndarray | None:
    if labeled is None:
        return None
    labeled = _as_float_matrix(labeled, "labeled")
    if labeled.shape[1] != X.shape[1]:
        raise ValueError(f"labeled has {labeled.shape[1]} dimensions, X has {X.shape[1]}")
    return labeled if len(labeled) else None


def _greedy(
    X: np.ndarray,
    k: int,
    labeled: np.ndarray | None,
    make_value: Callable[[np.ndarray], Callable[[np.ndarray, np.ndarray], np.ndarray]],
    first_pick: Callable[[np.ndarray], int],
    eligible: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Shared driver of the distance-greedy selectors. make_value(initial min_sq) -> value(rows, min_dist)."""
    n = X.shape[0]
    n_eligible = n if eligible is None else int(np.count_nonzero(eligible))
    k = _check_k(k, n_eligible)
    sq_norms = _row_sq_norms(X)
    picks: list[int] = []
    if labeled is not None:
        min_sq = _min_sq_dist_to(X, sq_norms, labeled)
    else:
        if k == 0:
            return np.empty(0, dtype=np.int64), np.zeros(n)
        first = first_pick(sq_norms)
        picks.append(first)
        min_sq = _min_sq_dist_to(X, sq_norms, X[first : first + 1])
        min_sq[first] = 0.0
    initial_dist = np.sqrt(min_sq)
    if len(picks) >= k:
        return np.asarray(picks[:k], dtype=np.int64), initial_dist
    value = make_value(min_sq)
    if eligible is not None:
        plain_value = value

        def value(rows: np.ndarray, min_dist: np.ndarray) -> np.ndarray:
            out = np.asarray(plain_value(rows, min_dist), dtype=np.float64)
            return np.where(eligible[rows], out, -np.inf)

    engine = _LazyGreedy(X, min_sq.copy(), value, k, sq_norms, picked=picks)
    with _one_blas_thread():
        while len(picks) < k:
            picks.append(engine.pick())
    return np.asarray(picks, dtype=np.int64), initial_dist


def _one_blas_thread():
    """The lazy loop's products are small and many: a second BLAS thread mostly spins, and on a loaded
    2-core machine it made k-center 2-4x slower (measured). Process-wide while active."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn; without it keep the default
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _identity_value(rows: np.ndarray, min_dist: np.ndarray) -> np.ndarray:
    return min_dist


def _matvec(X: np.ndarray, v: np.ndarray) -> np.ndarray:
    v = v.astype(X.dtype)
    out = np.empty(X.shape[0], dtype=np.float64)
    for start in range(0, X.shape[0], _BLOCK_ROWS * 8):
        block = X[start : start + _BLOCK_ROWS * 8]
        out[start : start + len(block)] = block @ v
    return out


def _check_scores(scores: np.ndarray, n: int | None = None) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-d (n,), got shape {scores.shape}")
    if n is not None and len(scores) != n:
        raise ValueError(f"scores has {len(scores)} rows but X has {n}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The k highest scores' indices, highest first (ties: lower index first). Returns (k,) int64."""
    scores = _check_scores(scores)
    k = _check_k(k, len(scores))
    if k == 0:
        return np.empty(0, dtype=np.int64)
    if k < len(scores):
        cand = np.argpartition(-scores, k - 1)[:k]
        # argpartition may cut a tie arbitrarily: take every row tied with the k-th value, then sort
        kth = scores[cand].min()
        cand = np.flatnonzero(scores >= kth)
    else:
        cand = np.arange(len(scores))
    order = np.lexsort((cand, -scores[cand]))
    return cand[order][:k].astype(np.int64)


def _normalise(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi > lo:
        return (values - lo) / (hi - lo)
    return np.zeros_like(values)


def hybrid(
    scores: np.ndarray,
    X: np.ndarray,
    k: int,
    labeled: np.ndarray | None = None,
    alpha: float = 0.5,
    form: str = "additive",
) -> np.ndarray:
    """Greedy mix of informativeness and distance to the nearest centre (labeled rows and picks).

    additive:       alpha * s + (1 - alpha) * dist
    multiplicative: s * dist
    where s = scores min-max normalised over the pool and dist = Euclidean distance to the nearest centre
    divided by the largest such distance at batch start. Both normalisations are fixed at batch start
    (not re-normalised per pick), so later picks trade off on the same scale as the first.
    With ``labeled=None`` the first pick is the highest score; distances are measured from it on.
    scores: (N,), X: (N, d), labeled: (M, d) or None. Returns (k,) distinct int64 indices in pick order.
    """
    X = _as_float_matrix(X, "X")
    n = X.shape[0]
    scores = _check_scores(scores, n)
    k = _check_k(k, n)
    if form not in ("additive", "multiplicative"):
        raise ValueError(f"form must be 'additive' or 'multiplicative', got {form!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if k == 0:
        return np.empty(0, dtype=np.int64)
    return _hybrid(scores, X, k, labeled, alpha, form)[0]


def _hybrid(scores, X, k, labeled, alpha, form, eligible=None) -> tuple[np.ndarray, np.ndarray]:
    s = _normalise(scores)
    labeled = _check_labeled(labeled, X)

    def first_pick(sq_norms: np.ndarray) -> int:
        return int(top_k(scores if eligible is None else np.where(eligible, scores, -np.inf), 1)[0])

    def make_value(min_sq: np.ndarray):
        dist_scale = float(np.sqrt(min_sq.max()))
        dist_scale = dist_scale if dist_scale > 0 else 1.0
        if form == "additive":
            return lambda rows, min_dist: alpha * s[rows] + (1.0 - alpha) * (min_dist / dist_scale)
        return lambda rows, min_dist: s[rows] * (min_dist / dist_scale)

    return _greedy(X, k, labeled, make_value, first_pick, eligible)


def diverse_among_uncertain(
    scores: np.ndarray,
    X: np.ndarray,
    k: int,
    m_factor: int = 10,
    method: str = "kcenter",
    labeled: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Diversity that serves uncertainty: restrict to the M = m_factor * k highest scores, then diversify.

    method="kcenter": k-center greedy inside the M candidates (distances to ``labeled`` count).
    method="cluster": k-means (k clusters, FAISS, seeded) on the M candidates, then round-robin: the most
    uncertain row of each cluster (clusters in order of their best score), then each cluster's second, ...
    scores: (N,), X: (N, d), labeled: (M, d) or None. Returns (k,) distinct int64 indices in pick order.
    """
    X = _as_float_matrix(X, "X")
    n = X.shape[0]
    scores = _check_scores(scores, n)
    k = _check_k(k, n)
    if m_factor < 1:
        raise ValueError(f"m_factor must be >= 1, got {m_factor}")
    if method not in ("kcenter", "cluster"):
        raise ValueError(f"method must be 'kcenter' or 'cluster', got {method!r}")
    if k == 0:
        return np.empty(0, dtype=np.int64)
    candidates = top_k(scores, min(n, int(m_factor) * k))
    if len(candidates) == k:
        return candidates
    sub = np.ascontiguousarray(X[candidates])
    if method == "kcenter":
        return candidates[k_center_greedy(sub, k, labeled)]
    return candidates[_cluster_round_robin(sub, scores[candidates], k, seed)]


def _cluster_round_robin(X: np.ndarray, scores: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means into k clusters; picks: rank-0 member of every cluster, then rank-1, ... (by score)."""
    import faiss  # optional at import time: only the cluster method needs it

    data = np.ascontiguousarray(X, dtype=np.float32)
    kmeans = faiss.Kmeans(data.shape[1], k, niter=20, seed=int(seed), verbose=False)
    kmeans.cp.min_points_per_centroid = 1
    kmeans.cp.max_points_per_centroid = 1 << 30  # no subsampling: the candidate set is small
    kmeans.train(data)
    _, assign = kmeans.index.search(data, 1)
    assign = assign[:, 0].astype(np.int64)
    # order rows by (cluster, score desc, index): rank of each row inside its cluster
    order = np.lexsort((np.arange(len(scores)), -scores, assign))
    sorted_assign = assign[order]
    starts = np.flatnonzero(np.r_[True, sorted_assign[1:] != sorted_assign[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    rank_in_cluster = np.arange(len(order)) - np.repeat(starts, sizes)
    # clusters ordered by their best score; within a round, the same order
    best = scores[order[starts]]
    cluster_rank = np.empty(len(starts), dtype=np.int64)
    cluster_rank[np.lexsort((order[starts], -best))] = np.arange(len(starts))
    cluster_rank_per_row = np.repeat(cluster_rank, sizes)
    pick_order = np.lexsort((cluster_rank_per_row, rank_in_cluster))
    return order[pick_order][:k].astype(np.int64)


def epsilon_greedy(selected: np.ndarray, n: int, k: int, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """Exploration: replace ceil(epsilon * k) slots of the batch by uniformly random other rows.

    selected: the strategy's picks in order (the first k are the batch); n: pool size. The slots to
    replace are drawn uniformly among the k; replacements are drawn uniformly, without replacement, from
    the rows of range(n) not in the batch, and take the replaced slot's position. epsilon = 0 returns the
    batch unchanged; epsilon > 0 always explores at least one slot. Returns (k,) distinct int64.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    batch = np.asarray(selected, dtype=np.int64)[: max(int(k), 0)].copy()
    if len(batch) < k:
        raise ValueError(f"epsilon_greedy needs at least k={k} selected rows, got {len(batch)}")
    n_explore = min(math.ceil(epsilon * len(batch) - 1e-12), len(batch), n - len(batch))
    if n_explore <= 0:
        return batch
    slots = rng.choice(len(batch), size=n_explore, replace=False)
    replacements = _sample_excluding(n, batch, n_explore, rng)
    batch[slots] = replacements
    return batch


def _sample_excluding(n: int, excluded: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """size distinct rows of range(n) not in excluded, uniform; O(n) memory only when it must be."""
    excluded_set = np.unique(excluded)
    n_free = n - len(excluded_set)
    # draw positions among the free rows, then map position -> row by skipping excluded rows
    positions = np.sort(rng.choice(n_free, size=size, replace=False))
    # row = position + number of excluded rows <= row; solve by searchsorted on (excluded - rank)
    shifted = excluded_set - np.arange(len(excluded_set))
    rows = positions + np.searchsorted(shifted, positions, side="right")
    return rng.permutation(rows).astype(np.int64)


def full_order(indices: np.ndarray, primary_score: np.ndarray) -> np.ndarray:
    """Whole-pool ranking: the batch first in pick order, then the other rows by primary_score descending
    (ties: lower index first). indices: (k,) distinct; primary_score: (n,). Returns (n,) int64."""
    primary_score = np.asarray(primary_score, dtype=np.float64)
    indices = np.asarray(indices, dtype=np.int64)
    n = len(primary_score)
    rest_mask = np.ones(n, dtype=bool)
    rest_mask[indices] = False
    if rest_mask.sum() != n - len(indices):
        raise ValueError("indices must be distinct rows of the pool")
    rest = np.flatnonzero(rest_mask)
    rest = rest[np.argsort(-primary_score[rest], kind="stable")]
    return np.concatenate([indices, rest]).astype(np.int64)


TYPICLUST_NEIGHBOURS = 20
TYPICLUST_MAX_CLUSTERS = 500


def typiclust(
    X: np.ndarray,
    k: int,
    labeled: np.ndarray | None = None,
    *,
    seed: int = 0,
    n_neighbours: int = TYPICLUST_NEIGHBOURS,
    max_clusters: int = TYPICLUST_MAX_CLUSTERS,
) -> tuple[np.ndarray, np.ndarray]:
    """TypiClust (Hacohen, Dekel & Weinshall 2022): the most typical unlabeled item of the least covered,
    largest clusters. Returns ((k,) distinct row indices into X in pick order, (n,) typicality of X's rows).

    X: (n, d) unlabeled rows; labeled: (m, d) labeled rows (they cover clusters; never returned).
    The pool (labeled + unlabeled) is clustered by FAISS k-means into min(m + k, max_clusters) clusters (the
    paper's |L| + B, capped as scikit-activeml does); typicality of a row is the inverse mean distance to its
    `n_neighbours` nearest rows of the same cluster (FAISS kNN, within-cluster filter). Each pick takes the
    cluster with the fewest labels (ties: the largest), and its most typical remaining row.
    """
    import faiss

    X = _as_float_matrix(X, "X")
    n = X.shape[0]
    k = _check_k(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(n)
    L = np.zeros((0, X.shape[1]), np.float32) if labeled is None else _as_float_matrix(labeled, "labeled")
    pool = np.ascontiguousarray(np.vstack([X, L]), dtype=np.float32)  # unlabeled rows first: row i of X is row i
    n_clusters = int(max(1, min(len(L) + k, max_clusters, len(pool))))
    km = faiss.Kmeans(pool.shape[1], n_clusters, niter=20, seed=int(seed), verbose=False, min_points_per_centroid=1)
    km.train(pool)
    _, assign = km.index.search(pool, 1)
    assign = assign.ravel().astype(np.int64)
    # within-cluster kNN: search more neighbours than needed, keep those of the same cluster
    index = faiss.IndexFlatL2(pool.shape[1])
    index.add(pool)
    depth = int(min(len(pool), 2 * n_neighbours + 1))
    sq, nb = index.search(X, depth)
    same = (nb >= 0) & (assign[np.maximum(nb, 0)] == assign[:n, None]) & (nb != np.arange(n)[:, None])
    use = same & (np.cumsum(same, axis=1) <= n_neighbours)
    count = use.sum(axis=1)
    dist = np.sqrt(np.maximum(sq, 0.0))
    typicality = np.where(count > 0, count / np.maximum((dist * use).sum(axis=1), 1e-12), 0.0)
    sizes = np.bincount(assign, minlength=n_clusters)
    covered = np.bincount(assign[n:], minlength=n_clusters).astype(np.int64)
    # rows of each cluster, most typical first: one sort, then a cursor per cluster (k picks, not n)
    order = np.lexsort((-typicality, assign[:n]))
    starts = np.searchsorted(assign[:n][order], np.arange(n_clusters))
    ends = np.searchsorted(assign[:n][order], np.arange(n_clusters), side="right")
    cursor = starts.copy()
    picks = np.empty(k, dtype=np.int64)
    for j in range(k):  # k picks over n_clusters clusters: no loop over pool rows
        available = cursor < ends
        key = np.where(available, covered.astype(np.float64) * (len(pool) + 1) - sizes, np.inf)
        c = int(np.argmin(key))
        picks[j] = order[cursor[c]]
        cursor[c] += 1
        covered[c] += 1
    return picks, typicality.astype(np.float64)
