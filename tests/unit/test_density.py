"""kNN density: values by hand, the exact path against brute force, the approximate path against exact."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from al_backend.density import knn_density, outlier_mask


def brute_force_density(X: np.ndarray, k: int, queries: np.ndarray | None = None) -> np.ndarray:
    X = X.astype(np.float64)
    Q = X if queries is None else queries.astype(np.float64)
    dist = np.linalg.norm(Q[:, None, :] - X[None, :, :], axis=2)
    if queries is None:
        np.fill_diagonal(dist, np.inf)
        k = min(k, len(X) - 1)
    else:
        k = min(k, len(X))
    if k == 0:
        return np.ones(len(Q))
    return 1.0 / (1.0 + np.sort(dist, axis=1)[:, :k].mean(axis=1))


LINE = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)


def test_one_dimensional_by_hand():
    # k=1: nearest other row at 1, 1, 2 -> 1/2, 1/2, 1/3
    assert knn_density(LINE, 1) == pytest.approx([0.5, 0.5, 1 / 3])
    # k=2: mean distances (1+3)/2, (1+2)/2, (2+3)/2 -> 1/3, 0.4, 1/3.5
    assert knn_density(LINE, 2) == pytest.approx([1 / 3, 0.4, 1 / 3.5])
    # queries are scored against all rows, nothing excluded: 2 is 1 from both 1 and 3
    assert knn_density(LINE, 1, queries=np.array([[2.0]])) == pytest.approx([0.5])
    assert knn_density(LINE, 2, queries=np.array([[0.0]])) == pytest.approx([1 / 1.5])


def test_duplicates_and_tiny_pools():
    dup = np.array([[0.0], [0.0], [5.0]], dtype=np.float32)
    # each duplicate's nearest other row is its twin at distance 0; the self-match is still excluded
    assert knn_density(dup, 1) == pytest.approx([1.0, 1.0, 1 / 6])
    # k beyond the other rows is capped; a single row has no neighbour and gets 1
    assert knn_density(LINE, 10) == pytest.approx(knn_density(LINE, 2))
    assert knn_density(LINE[:1], 5) == pytest.approx([1.0])
    assert len(knn_density(LINE, 3, queries=np.zeros((0, 1)))) == 0
    with pytest.raises(ValueError):
        knn_density(LINE, 0)
    with pytest.raises(ValueError, match="dimensions"):
        knn_density(LINE, 1, queries=np.zeros((2, 3)))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    n=st.integers(2, 60),
    d=st.integers(1, 8),
    k=st.integers(1, 12),
    with_queries=st.booleans(),
)
def test_exact_path_equals_brute_force(seed, n, d, k, with_queries):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    queries = rng.normal(size=(7, d)).astype(np.float32) if with_queries else None
    got = knn_density(X, k, queries=queries)
    expected = brute_force_density(X, k, queries)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert ((got > 0) & (got <= 1)).all()


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d))
    which = rng.choice(20, size=n, p=rng.dirichlet(np.ones(20)))
    spread = rng.uniform(0.2, 1.0, size=20)[which, None]
    X = centres[which] + rng.normal(size=(n, d)) * spread
    return X.astype(np.float32)


def test_approximate_path_tracks_exact_density():
    both = _clustered(4050, 16, seed=3)
    X, new = both[:4000], both[4000:]
    exact = knn_density(X, 10, exact_threshold=10**9)
    approx = knn_density(X, 10, exact_threshold=0, nprobe=3, seed=0)
    # a missed neighbour can only make a row look sparser: approximate density never exceeds exact
    assert (approx <= exact + 1e-6).all()
    assert np.corrcoef(exact, approx)[0, 1] > 0.95
    # deterministic for a seed
    assert np.array_equal(approx, knn_density(X, 10, exact_threshold=0, nprobe=3, seed=0))
    # queries take the same path: density of new rows (same distribution) against the pool
    q_exact = knn_density(X, 10, queries=new, exact_threshold=10**9)
    q_approx = knn_density(X, 10, queries=new, exact_threshold=0)
    assert (q_approx <= q_exact + 1e-6).all() and np.corrcoef(q_exact, q_approx)[0, 1] > 0.9


def test_outlier_mask_by_hand():
    density = np.array([0.5, 0.1, 0.3, 0.2, 0.4])
    # quantile 0.5 of (0.1 .. 0.5) is 0.3: rows with density <= 0.3
    assert outlier_mask(density, 0.5).tolist() == [False, True, True, True, False]
    # quantile 0.2 is 0.18: only the 0.1 row
    assert outlier_mask(density, 0.2).tolist() == [False, True, False, False, False]
    assert outlier_mask(density, 0.0).tolist() == [False, True, False, False, False]
    assert outlier_mask(density, 1.0).all()
    with pytest.raises(ValueError):
        outlier_mask(density, 1.5)
