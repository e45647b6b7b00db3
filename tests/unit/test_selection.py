"""Selectors: picks worked out by hand, and k-center against a brute-force textbook reference."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from al_backend import selection
from al_backend.selection import (
    diverse_among_uncertain,
    epsilon_greedy,
    full_order,
    hybrid,
    k_center_greedy,
    top_k,
)


def textbook_k_center(X: np.ndarray, k: int, labeled: np.ndarray | None) -> list[int]:
    """Brute force: at every pick recompute every distance to labeled + selected (float64)."""
    X = X.astype(np.float64)
    if labeled is None:
        picks = [int(np.argmin(np.linalg.norm(X - X.mean(axis=0), axis=1)))]
        centres = X[picks]
    else:
        picks, centres = [], labeled.astype(np.float64)
    while len(picks) < k:
        dist = np.linalg.norm(X[:, None, :] - centres[None, :, :], axis=2).min(axis=1)
        dist[picks] = -1.0
        i = int(np.argmax(dist))
        picks.append(i)
        centres = np.vstack([centres, X[i]])
    return picks


LINE = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])


def test_k_center_one_dimensional_by_hand():
    # labeled at 0: distances 0,1,2,10,11 -> 11 (row 4); then min(|x-0|,|x-11|) = 0,1,2,1,0 -> 2 (row 2)
    assert k_center_greedy(LINE, 2, labeled=np.array([[0.0]])).tolist() == [4, 2]
    # no labeled: mean 4.8, closest row is 2 (x=2); then 11 is farthest (9); then 0 (distance 2 to x=2)
    assert k_center_greedy(LINE, 3).tolist() == [2, 4, 0]


def test_k_center_edge_sizes():
    assert k_center_greedy(LINE, 0).dtype == np.int64 and len(k_center_greedy(LINE, 0)) == 0
    assert len(k_center_greedy(LINE, -3)) == 0
    assert sorted(k_center_greedy(LINE, 5).tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="k=6"):
        k_center_greedy(LINE, 6)
    with pytest.raises(ValueError, match="dimensions"):
        k_center_greedy(LINE, 1, labeled=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2-d"):
        k_center_greedy(np.zeros(4), 1)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    n=st.integers(3, 120),  # two rows are always equidistant from their mean: a tie for the first pick
    d=st.integers(1, 6),
    n_labeled=st.integers(0, 5),
    k_fraction=st.floats(0.0, 1.0),
    small_pool=st.booleans(),
)
def test_k_center_equals_textbook_greedy(seed, n, d, n_labeled, k_fraction, small_pool):
    # continuous random data: ties have probability zero
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    labeled = rng.normal(size=(n_labeled, d)) if n_labeled else None
    k = max(1, int(round(k_fraction * n)))
    # a tiny candidate pool forces the lazy engine through pool rebuilds
    saved = selection._MIN_POOL
    selection._MIN_POOL = 2 if small_pool else saved
    try:
        got = k_center_greedy(X, k, labeled)
    finally:
        selection._MIN_POOL = saved
    assert got.dtype == np.int64
    assert got.tolist() == textbook_k_center(X, k, labeled)


def test_k_center_float32_large_pool_matches_running_min_loop():
    # large enough for the lazy candidate pool (16 * k rows) to be rebuilt several times
    rng = np.random.default_rng(7)
    X = rng.normal(size=(20_000, 16)).astype(np.float32)
    labeled = rng.normal(size=(10, 16)).astype(np.float32)
    k = 60
    X64, L64 = X.astype(np.float64), labeled.astype(np.float64)
    min_d = np.linalg.norm(X64[:, None] - L64[None], axis=2).min(axis=1)
    picks = []
    for _ in range(k):
        i = int(np.argmax(min_d))
        picks.append(i)
        min_d = np.minimum(min_d, np.linalg.norm(X64 - X64[i], axis=1))
    assert k_center_greedy(X, k, labeled).tolist() == picks


def test_top_k_by_hand_with_ties_to_lower_index():
    assert top_k(np.array([0.1, 0.9, 0.5, 0.9]), 3).tolist() == [1, 3, 2]
    assert top_k(np.array([0.2, 0.2, 0.2]), 2).tolist() == [0, 1]
    assert top_k(np.array([1.0]), 0).tolist() == []
    with pytest.raises(ValueError):
        top_k(np.array([1.0, 2.0]), 3)


POINTS = np.array([[0.0], [1.0], [5.0], [6.0]])
SCORES = np.array([1.0, 0.0, 0.5, 0.0])


def test_hybrid_additive_by_hand():
    # normalised scores 1, 0, .5, 0; distances to labeled 0 are 0,1,5,6, scaled by 6 (fixed for the batch)
    # values .5*s + .5*d/6 = .5, .083, .667, .5 -> row 2; distances become 0,1,0,1 -> .5, .083, -, .083 -> row 0
    assert hybrid(SCORES, POINTS, 2, labeled=np.array([[0.0]]), alpha=0.5).tolist() == [2, 0]


def test_hybrid_multiplicative_by_hand():
    # s * d/6 = 0, 0, .4167, 0 -> row 2 first
    assert hybrid(SCORES, POINTS, 1, labeled=np.array([[0.0]]), form="multiplicative").tolist() == [2]
    with pytest.raises(ValueError, match="form"):
        hybrid(SCORES, POINTS, 1, form="sum")
    with pytest.raises(ValueError, match="alpha"):
        hybrid(SCORES, POINTS, 1, alpha=1.5)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 100_000), n=st.integers(2, 80), k_fraction=st.floats(0.0, 1.0), labeled=st.booleans())
def test_hybrid_extremes_reduce_to_top_k_and_k_center(seed, n, k_fraction, labeled):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    scores = rng.random(n)
    L = rng.normal(size=(2, 3)) if labeled else None
    k = max(1, int(round(k_fraction * n)))
    # alpha = 1: distance has no weight, so the greedy takes the scores in order
    assert hybrid(scores, X, k, L, alpha=1.0).tolist() == top_k(scores, k).tolist()
    if labeled:
        # alpha = 0: only the distance counts, which is k-center
        assert hybrid(scores, X, k, L, alpha=0.0).tolist() == k_center_greedy(X, k, L).tolist()


def test_diverse_kcenter_restricts_to_most_uncertain():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 4))
    scores = rng.random(500)
    got = diverse_among_uncertain(scores, X, 10, m_factor=5, method="kcenter")
    candidates = top_k(scores, 50)
    assert got.tolist() == candidates[k_center_greedy(X[candidates], 10)].tolist()


def test_diverse_cluster_round_robin_by_hand():
    # two tight groups among the 4 most uncertain; row 4 is too certain to be a candidate (M = 2 * 2)
    X = np.array([[0.0, 0.0], [0.0, 0.1], [10.0, 10.0], [10.0, 10.1], [50.0, 50.0]])
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.1])
    # round 0: the group whose best score is highest first (row 3), then the other group's best (row 0)
    assert diverse_among_uncertain(scores, X, 2, m_factor=2, method="cluster").tolist() == [3, 0]
    # as many picks as candidates: nothing to diversify, the most uncertain first
    assert diverse_among_uncertain(scores, X, 4, m_factor=1, method="cluster").tolist() == [3, 0, 1, 2]


def test_diverse_cluster_second_round_order():
    X = np.array([[0.0, 0.0], [0.0, 0.1], [0.1, 0.0], [10.0, 10.0], [10.0, 10.1], [10.1, 10.0]])
    scores = np.array([0.9, 0.8, 0.3, 0.95, 0.7, 0.2])
    # 2 clusters from 6 candidates; rounds: (3, 0), then (4, 1), then (5, 2)... cut at k
    got = diverse_among_uncertain(scores, X, 2, m_factor=3, method="cluster")
    assert got.tolist() == [3, 0]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    n=st.integers(1, 300),
    k_fraction=st.floats(0.0, 1.0),
    method=st.sampled_from(["kcenter", "cluster"]),
    m_factor=st.integers(1, 12),
)
def test_diverse_picks_distinct_rows_inside_pool(seed, n, k_fraction, method, m_factor):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    scores = rng.random(n)
    k = int(round(k_fraction * n))
    got = diverse_among_uncertain(scores, X, k, m_factor=m_factor, method=method, seed=seed)
    assert got.dtype == np.int64 and len(got) == k and len(np.unique(got)) == k
    assert ((got >= 0) & (got < n)).all()
    # every pick is among the m_factor * k most uncertain
    assert set(got.tolist()) <= set(top_k(scores, min(n, m_factor * k)).tolist())


def test_epsilon_greedy_counts_and_positions():
    batch = np.array([7, 3, 9, 1])
    rng = np.random.default_rng(0)
    assert epsilon_greedy(batch, 100, 4, 0.0, rng).tolist() == [7, 3, 9, 1]
    # ceil(0.25 * 4) = 1 slot replaced, in place; the others keep their positions
    got = epsilon_greedy(batch, 100, 4, 0.25, rng)
    changed = got != batch
    assert changed.sum() == 1 and got[changed][0] not in batch.tolist()
    # ceil(0.1 * 4) = 1: any epsilon > 0 explores at least once
    assert (epsilon_greedy(batch, 100, 4, 0.1, rng) != batch).sum() == 1
    every = epsilon_greedy(batch, 100, 4, 1.0, rng)
    assert not set(every.tolist()) & set(batch.tolist()) and len(set(every.tolist())) == 4
    with pytest.raises(ValueError):
        epsilon_greedy(batch, 100, 4, 1.5, rng)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 100_000), n=st.integers(1, 60), k_fraction=st.floats(0, 1), epsilon=st.floats(0, 1))
def test_epsilon_greedy_distinct_inside_pool(seed, n, k_fraction, epsilon):
    rng = np.random.default_rng(seed)
    k = int(round(k_fraction * n))
    batch = rng.permutation(n)[:k]
    got = epsilon_greedy(batch, n, k, epsilon, rng)
    assert len(got) == k and len(np.unique(got)) == k and ((got >= 0) & (got < n)).all()
    expected_changes = min(math.ceil(epsilon * k - 1e-12), n - k) if k else 0
    assert (got != batch).sum() == max(expected_changes, 0)


def test_full_order_by_hand():
    order = full_order(np.array([3, 1]), np.array([0.1, 0.5, 0.9, 0.0, 0.5]))
    assert order.tolist() == [3, 1, 2, 4, 0]
    with pytest.raises(ValueError, match="distinct"):
        full_order(np.array([1, 1]), np.zeros(3))


def textbook_hybrid(scores, X, k, labeled, alpha, form):
    """Brute force: recompute every row's distance to labeled + picked at each pick; scales fixed at start."""
    s = (scores - scores.min()) / (scores.max() - scores.min()) if scores.max() > scores.min() else 0 * scores
    if labeled is None:
        picks = [int(np.argmax(scores))]
        centres = X[picks]
    else:
        picks, centres = [], labeled
    scale = None
    while len(picks) < k:
        dist = np.linalg.norm(X[:, None, :] - centres[None, :, :], axis=2).min(axis=1)
        if scale is None:
            scale = dist.max() if dist.max() > 0 else 1.0
        value = alpha * s + (1 - alpha) * dist / scale if form == "additive" else s * dist / scale
        value[picks] = -np.inf
        i = int(np.argmax(value))
        picks.append(i)
        centres = np.vstack([centres, X[i]])
    return picks


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    n=st.integers(2, 80),
    k_fraction=st.floats(0.0, 1.0),
    labeled=st.booleans(),
    alpha=st.floats(0.05, 0.95),
    form=st.sampled_from(["additive", "multiplicative"]),
    small_pool=st.booleans(),
)
def test_hybrid_equals_textbook_greedy(seed, n, k_fraction, labeled, alpha, form, small_pool):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    scores = rng.random(n)
    L = rng.normal(size=(3, 3)) if labeled else None
    k = max(1, int(round(k_fraction * n)))
    if form == "multiplicative":
        k = min(k, n - 1)  # once every product is 0 the order among zeros is a tie
    saved = selection._MIN_POOL
    selection._MIN_POOL = 2 if small_pool else saved
    try:
        got = hybrid(scores, X, k, L, alpha=alpha, form=form)
    finally:
        selection._MIN_POOL = saved
    assert got.tolist() == textbook_hybrid(scores, X, k, L, alpha, form)


def test_massive_ties_terminate_with_distinct_picks():
    # 3,000 copies of 3 points: thousands of equal bounds (more than one refresh block)
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0]]), 1000, axis=0)
    got = k_center_greedy(X, 40, labeled=np.array([[0.0, 0.0]]))
    assert len(np.unique(got)) == 40
    # the first two picks cover the two distinct points away from the labeled one, farthest first
    assert X[got[0]].tolist() == [0.0, 5.0] and X[got[1]].tolist() == [1.0, 0.0]
    flat = hybrid(np.zeros(len(X)), X, 40, labeled=np.array([[0.0, 0.0]]), alpha=1.0)
    assert len(np.unique(flat)) == 40
    # and when the candidate pool is smaller than a group of equal bounds (pool rebuilds under ties)
    saved = selection._MIN_POOL
    selection._MIN_POOL = 2
    try:
        assert len(np.unique(k_center_greedy(X, 40, labeled=np.array([[0.0, 0.0]])))) == 40
        assert len(np.unique(hybrid(np.zeros(len(X)), X, 40, alpha=1.0))) == 40
    finally:
        selection._MIN_POOL = saved


def test_typiclust_takes_the_densest_point_of_each_uncovered_blob_first():
    from al_backend.selection import typiclust

    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=np.float32)
    sizes = [60, 50, 40, 30]
    X = np.vstack([c + rng.normal(scale=0.5, size=(s, 2)) for c, s in zip(centres, sizes)]).astype(np.float32)
    blob = np.repeat(np.arange(4), sizes)
    # one label in the largest blob and a batch of 3: |L| + B = 4 clusters, the blobs. The labeled blob is
    # covered, so the picks go to the three others, largest first
    picks, typ = typiclust(X, 3, labeled=centres[:1] + 0.1, seed=0)
    assert blob[picks].tolist() == [1, 2, 3]
    assert typ.shape == (len(X),)
    # slow reference for the typicality of the first pick: 20 nearest others of its blob
    i = picks[0]
    same = np.flatnonzero(blob == blob[i])
    d = np.sort(np.linalg.norm(X[same] - X[i], axis=1))[1:21]
    assert typ[i] == pytest.approx(1 / d.mean(), rel=1e-4)
    # the pick is the most typical row of its blob
    assert typ[i] == pytest.approx(typ[same].max())
