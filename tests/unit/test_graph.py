"""kNN graph and feature smoothing: values by hand, the FAISS paths against dense numpy references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from al_backend.density import knn_density
from al_backend.graph import (
    density_from_graph,
    extend_knn_graph,
    knn_graph,
    knn_query,
    smooth_features,
    smooth_queries,
)


def dense_knn(X: np.ndarray, k: int, Q: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Slow reference: full distance matrix, self excluded when Q is None."""
    X = X.astype(np.float64)
    QQ = X if Q is None else Q.astype(np.float64)
    sq = ((QQ[:, None, :] - X[None, :, :]) ** 2).sum(axis=2)
    if Q is None:
        np.fill_diagonal(sq, np.inf)
    order = np.argsort(sq, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sq, order, axis=1)


def dense_smooth(X: np.ndarray, ids: np.ndarray, alpha: float, hops: int = 1, normalize: bool = True) -> np.ndarray:
    """Slow reference: an explicit N x N row-normalised adjacency matrix."""
    n = X.shape[0]
    A = np.zeros((n, n))
    for i in range(n):
        nb = ids[i][ids[i] >= 0]
        if len(nb):
            A[i, nb] = 1.0 / len(nb)
    has = A.sum(axis=1) > 0
    Z = X.astype(np.float64)
    for _ in range(hops):
        Z = np.where(has[:, None], (1 - alpha) * Z + alpha * (A @ Z), Z)
        if normalize:
            norms = np.linalg.norm(Z, axis=1, keepdims=True)
            Z = np.divide(Z, norms, out=np.zeros_like(Z), where=norms > 0)
    return Z


LINE = np.array([[0.0], [1.0], [3.0], [7.0]], dtype=np.float32)


def test_graph_by_hand():
    ids, sq = knn_graph(LINE, 2)
    # 0: 1 (d 1), 3 (d 9); 1: 0 (1), 3 (4); 3: 1 (4), 0 (9); 7: 3 (16), 1 (36)
    assert ids.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    assert sq.tolist() == [[1, 9], [1, 4], [4, 9], [16, 36]]
    assert ids.dtype == np.int64 and sq.dtype == np.float32
    # k beyond the other rows: missing entries are -1 / inf
    ids, sq = knn_graph(LINE[:2], 3)
    assert ids.tolist() == [[1, -1, -1], [0, -1, -1]]
    assert sq[:, 0].tolist() == [1, 1] and np.isinf(sq[:, 1:]).all()
    ids, sq = knn_graph(LINE[:1], 2)
    assert ids.tolist() == [[-1, -1]]
    assert knn_graph(np.zeros((0, 3)), 2)[0].shape == (0, 2)
    with pytest.raises(ValueError):
        knn_graph(LINE, 0)


def test_duplicates_never_list_themselves():
    X = np.array([[0.0], [0.0], [0.0], [5.0]], dtype=np.float32)
    ids, sq = knn_graph(X, 2)
    for i in range(3):
        assert i not in ids[i]
        assert sq[i].tolist() == [0, 0]
    assert ids[3].tolist()[0] in (0, 1, 2) and sq[3].tolist() == [25, 25]


def test_smoothing_by_hand():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    ids = np.array([[1, 2], [0, -1], [-1, -1]])
    got = smooth_features(X, ids, alpha=0.5, normalize=False)
    # row 0: 0.5 * (1, 0) + 0.5 * mean((0, 1), (1, 1)) = (0.75, 0.5); row 1: 0.5*(0,1) + 0.5*(1,0);
    # row 2 has no neighbour: unchanged
    assert got.tolist() == [[0.75, 0.5], [0.5, 0.5], [1.0, 1.0]]
    normed = smooth_features(X, ids, alpha=0.5)
    assert np.allclose(np.linalg.norm(normed, axis=1), 1.0)
    assert np.allclose(normed[0], np.array([0.75, 0.5]) / np.hypot(0.75, 0.5))
    # alpha 0 and hops 0 leave X (normalised / as is); alpha 1 is the plain neighbour mean
    assert np.allclose(smooth_features(X, ids, alpha=0.0, normalize=False), X)
    assert np.allclose(smooth_features(X, ids, hops=0), X)
    assert smooth_features(X, ids, alpha=1.0, normalize=False)[1].tolist() == [1.0, 0.0]
    # two hops by hand: second hop on the first hop's output
    h1 = smooth_features(X, ids, alpha=0.5, normalize=False)
    h2 = smooth_features(X, ids, alpha=0.5, hops=2, normalize=False)
    assert np.allclose(h2, smooth_features(h1, ids, alpha=0.5, normalize=False))
    with pytest.raises(ValueError):
        smooth_features(X, ids, alpha=1.5)
    with pytest.raises(ValueError):
        smooth_features(X, ids[:2])
    with pytest.raises(ValueError):
        smooth_features(X, np.array([[3, 0], [0, 0], [0, 0]]))


def test_zero_rows_stay_zero():
    X = np.array([[0.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    out = smooth_features(X, np.array([[1], [0]]), alpha=0.5)
    assert np.all(out == 0) and np.isfinite(out).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 100_000), n=st.integers(1, 50), d=st.integers(1, 6), k=st.integers(1, 8))
def test_exact_graph_equals_dense(seed, n, d, k):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    ids, sq = knn_graph(X, k)
    kk = min(k, n - 1)
    _, ref_sq = dense_knn(X, kk)
    # distances equal (ids may differ only between equidistant rows)
    assert np.allclose(sq[:, :kk], ref_sq, rtol=1e-4, atol=1e-4)
    assert (ids[:, kk:] == -1).all() and np.isinf(sq[:, kk:]).all()
    assert (ids[:, :kk] != np.arange(n)[:, None]).all()
    # every listed distance is the true distance to the listed row
    true = ((X[:, None, :] - X[np.maximum(ids[:, :kk], 0)]) ** 2).sum(axis=2)
    assert np.allclose(sq[:, :kk], true, rtol=1e-4, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    n=st.integers(2, 40),
    d=st.integers(1, 6),
    k=st.integers(1, 6),
    alpha=st.floats(0, 1),
    hops=st.integers(1, 3),
    normalize=st.booleans(),
)
def test_smoothing_equals_dense_adjacency(seed, n, d, k, alpha, hops, normalize):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    ids, _ = knn_graph(X, k)
    got = smooth_features(X, ids, alpha=alpha, hops=hops, normalize=normalize)
    assert got.dtype == np.float32 and got.shape == X.shape
    assert np.allclose(got, dense_smooth(X, ids, alpha, hops, normalize), rtol=1e-4, atol=1e-5)


def test_row_subsets_and_queries_match_full_smoothing():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 8)).astype(np.float32)
    ids, _ = knn_graph(X, 5)
    full = smooth_features(X, ids, alpha=0.5)
    rows = np.array([3, 150, 7])
    assert np.allclose(smooth_features(X, ids[rows], alpha=0.5, rows=rows), full[rows], atol=1e-6)
    # a query equal to a pool row, searched against the rest, smooths like that row does in the pool
    rest = np.delete(np.arange(200), 3)
    q_ids, _ = knn_query(X[rest], X[3:4], 5)
    q = smooth_queries(X[rest], X[3:4], q_ids, alpha=0.5)
    assert np.allclose(q[0], full[3], atol=1e-6)
    with pytest.raises(ValueError):
        smooth_features(X, ids[rows], rows=rows, hops=2)


def test_blocked_smoothing_matches(monkeypatch):
    import al_backend.graph as g

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    ids, _ = knn_graph(X, 6)
    whole = smooth_features(X, ids, alpha=0.3, hops=2)
    monkeypatch.setattr(g, "_SMOOTH_BLOCK", 7)
    assert np.allclose(smooth_features(X, ids, alpha=0.3, hops=2), whole, atol=1e-6)


def test_query_by_hand():
    ids, sq = knn_query(LINE, np.array([[2.0], [8.0]]), 2)
    assert ids[1].tolist() == [3, 2] and sq[1].tolist() == [1, 25]
    assert set(ids[0].tolist()) == {1, 2} and sq[0].tolist() == [1, 1]
    ids, sq = knn_query(LINE, np.array([[2.0]]), 6)
    assert ids[0, 4:].tolist() == [-1, -1] and np.isinf(sq[0, 4:]).all()
    with pytest.raises(ValueError):
        knn_query(LINE, np.zeros((1, 2)), 1)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 100_000), n_old=st.integers(0, 30), n_new=st.integers(0, 30), k=st.integers(1, 6))
def test_extend_equals_rebuild(seed, n_old, n_new, k):
    rng = np.random.default_rng(seed)
    X_old = rng.normal(size=(n_old, 3)).astype(np.float32)
    X_new = rng.normal(size=(n_new, 3)).astype(np.float32)
    ids, sq = knn_graph(X_old, k)
    e_ids, e_sq = extend_knn_graph(X_old, ids, sq, X_new)
    r_ids, r_sq = knn_graph(np.concatenate([X_old, X_new]), k)
    assert e_ids.shape == r_ids.shape == (n_old + n_new, k)
    assert np.allclose(e_sq, r_sq, rtol=1e-4, atol=1e-4)
    assert ((e_ids == -1) == (r_ids == -1)).all()


def test_density_from_graph_equals_knn_density():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 5)).astype(np.float32)
    _, sq = knn_graph(X, 7)
    assert np.allclose(density_from_graph(sq), knn_density(X, 7), rtol=1e-5)
    assert density_from_graph(np.full((1, 3), np.inf)).tolist() == [1.0]


def test_approximate_graph_recall():
    # blobs: the blocked IVF path (forced by a low threshold) finds most true neighbours
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(40, 16)).astype(np.float32) * 3
    X = (centres[rng.integers(0, 40, 4000)] + rng.normal(size=(4000, 16))).astype(np.float32)
    exact_ids, exact_sq = knn_graph(X, 10)
    ids, sq = knn_graph(X, 10, exact_threshold=1000, approx="ivf", nprobe=4)
    assert (ids != np.arange(4000)[:, None]).all()
    assert (ids >= 0).all()
    hits = (ids[:, :, None] == exact_ids[:, None, :]).any(axis=2).mean()
    assert hits > 0.9
    # listed distances are true distances, ascending, never better than exact
    true = ((X[:, None, :] - X[ids]) ** 2).sum(axis=2)
    assert np.allclose(sq, true, rtol=1e-3, atol=1e-3)
    assert (np.diff(sq, axis=1) >= -1e-5).all()
    assert (sq[:, -1] >= exact_sq[:, -1] - 1e-3).all()


def _same_graph(a, b):
    assert a.keys.tolist() == b.keys.tolist()
    assert np.allclose(a.sq_dist, b.sq_dist, rtol=1e-4, atol=1e-4)
    assert ((a.ids == -1) == (b.ids == -1)).all()
    # listed neighbours are at the listed distances (ids may differ only between ties)
    return True


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 100_000), n_old=st.integers(1, 30), n_new=st.integers(0, 15), shuffle=st.booleans())
def test_pool_graph_update_equals_rebuild(seed, n_old, n_new, shuffle):
    from al_backend.graph import PoolGraph

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_old + n_new, 3)).astype(np.float32)
    keys = np.array([f"item-{i}" for i in range(n_old + n_new)])
    g = PoolGraph.build(keys[:n_old], X[:n_old], 4)
    order = rng.permutation(n_old + n_new) if shuffle else np.arange(n_old + n_new)
    got = g.update(keys[order], X[order], max_new_fraction=1.0)
    ref = PoolGraph.build(keys[order], X[order], 4)
    _same_graph(got, ref)
    # neighbour ids refer to rows of the current order
    valid = got.ids >= 0
    Xo = X[order]
    true = ((Xo[:, None, :] - Xo[np.maximum(got.ids, 0)]) ** 2).sum(axis=2)
    assert np.allclose(np.where(valid, true, 0), np.where(valid, got.sq_dist, 0), rtol=1e-4, atol=1e-4)


def test_pool_graph_unchanged_removed_and_state():
    from al_backend.graph import PoolGraph

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3)).astype(np.float32)
    keys = [str(i) for i in range(20)]
    g = PoolGraph.build(keys, X, 3)
    assert g.update(keys, X) is g
    # an item removed: rebuilt over the rest
    g2 = g.update(keys[1:], X[1:])
    _same_graph(g2, PoolGraph.build(keys[1:], X[1:], 3))
    assert (g2.ids < 19).all()
    # state round trip
    g3 = PoolGraph.from_state_dict(g.state_dict())
    assert g3.keys.tolist() == keys and (g3.ids == g.ids).all() and (g3.sq_dist == g.sq_dist).all()
    assert np.allclose(g.smooth(X), smooth_features(X, g.ids))
    with pytest.raises(ValueError):
        PoolGraph.from_state_dict({"format": "x"})
    with pytest.raises(ValueError):
        PoolGraph(["a", "a"], np.zeros((2, 1)), np.zeros((2, 1)), 1)


def test_pool_graph_extends_small_additions_and_rebuilds_large_ones(monkeypatch):
    from al_backend import graph as g

    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    keys = [f"k{i}" for i in range(60)]
    base = g.PoolGraph.build(keys[:50], X[:50], 5)
    calls = []
    real_build = g.PoolGraph.build.__func__
    monkeypatch.setattr(
        g.PoolGraph, "build", classmethod(lambda cls, *a, **kw: calls.append(1) or real_build(cls, *a, **kw))
    )
    small = base.update(keys[:55], X[:55])  # 5 new of 55: extended, not rebuilt
    assert calls == []
    _same_graph(small, real_build(g.PoolGraph, keys[:55], X[:55], 5))
    big = base.update(keys, X, max_new_fraction=0.1)  # 10 new of 60 > 10 %: rebuilt
    assert calls == [1]
    _same_graph(big, real_build(g.PoolGraph, keys, X, 5))
    # at 100k rows with IVF a rebuild compares each row with ~316 rows: 500 new rows are cheaper to rebuild;
    # an HNSW rebuild costs about an exact 6k-row search a row, so up to 3k new rows are extended instead
    assert g._rebuild_candidates(100_000, approx="ivf") == pytest.approx(3 * 100_000 / 949)
    assert g._rebuild_candidates(100_000) == 6_000
    assert g._rebuild_candidates(1000) == 1000


def test_hnsw_graph_recall_and_contract():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(3000, 24)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    exact_ids, _ = knn_graph(X, 10)
    ids, sq = knn_graph(X, 10, exact_threshold=500)  # HNSW is the default approximate path
    assert ids.shape == (3000, 10) and (ids >= 0).all()
    assert (ids != np.arange(3000)[:, None]).all()
    assert (ids[:, :, None] == exact_ids[:, None, :]).any(axis=2).mean() > 0.6
    better, _ = knn_graph(X, 10, exact_threshold=500, hnsw_m=16, ef_construction=40, ef_search=64)
    assert (better[:, :, None] == exact_ids[:, None, :]).any(axis=2).mean() > 0.9
    true = ((X[:, None, :] - X[ids]) ** 2).sum(axis=2)
    assert np.allclose(sq, true, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="approx"):
        knn_graph(X, 10, exact_threshold=500, approx="lsh")


def test_pool_graph_smooth_is_memoised_per_input():
    from al_backend.graph import PoolGraph

    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    g = PoolGraph.build([str(i) for i in range(40)], X, 4)
    a = g.smooth(X, 0.5)
    assert g.smooth(X.copy(), 0.5) is a  # same content: not recomputed
    b = g.smooth(X, 0.3)
    assert b is not a and np.allclose(b, smooth_features(X, g.ids, 0.3))
    X2 = X.copy()
    X2[17] += 1.0
    assert np.allclose(g.smooth(X2, 0.3), smooth_features(X2, g.ids, 0.3))
