"""Strategy registry: names, errors, compositions, wrappers, and the whole-pool order."""

import numpy as np
import pytest

from al_backend import density, scoring, selection, strategies
from al_backend.errors import EmptyPoolError
from al_backend.strategies import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    ModelRequiredError,
    SelectionContext,
    full_order,
    list_strategies,
    rank_pool,
    select_batch,
)

REQUIRED = {
    "random",
    "least_confidence",
    "margin",
    "entropy",
    "vote_entropy",
    "kl_consensus",
    "bald",
    "egl",
    "margin_density",
    "kcenter",
    "hybrid",
    "hybrid_mult",
    "margin_kcenter",
    "margin_cluster",
}
N, D, C, M = 400, 8, 4, 5


def make_ctx(seed: int = 0, labeled: bool = True, model: bool = True) -> SelectionContext:
    rng = np.random.default_rng(seed)
    return SelectionContext(
        X=rng.normal(size=(N, D)).astype(np.float32),
        probs=rng.dirichlet(np.ones(C), size=N) if model else None,
        committee=rng.dirichlet(np.ones(C), size=(M, N)) if model else None,
        X_labeled=rng.normal(size=(12, D)).astype(np.float32) if labeled else None,
    )


def test_registry_has_every_required_name_and_default_alias():
    assert REQUIRED <= set(STRATEGIES)
    names = list_strategies()
    assert list(names)[0] == "default" and REQUIRED <= set(names)
    assert DEFAULT_STRATEGY == "margin"
    assert strategies.resolve_name("default") == DEFAULT_STRATEGY
    ctx = make_ctx()
    a, _ = select_batch("default", ctx, 10, rng=np.random.default_rng(0))
    b, _ = select_batch(DEFAULT_STRATEGY, ctx, 10, rng=np.random.default_rng(0))
    assert np.array_equal(a, b)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="margin_kcenter"):
        select_batch("uncertainty", make_ctx(), 5, rng=np.random.default_rng(0))


def test_unknown_parameter_is_rejected_known_ones_accepted_everywhere():
    ctx = make_ctx()
    with pytest.raises(ValueError, match="gamma"):
        select_batch("margin", ctx, 5, rng=np.random.default_rng(0), gamma=1.0)
    # one configuration serves every strategy: parameters a strategy does not use are ignored
    for name in sorted(REQUIRED):
        idx, _ = select_batch(name, ctx, 5, rng=np.random.default_rng(0), alpha=0.5, beta=1.0, m_factor=10)
        assert len(idx) == 5


@pytest.mark.parametrize("name", sorted(REQUIRED - {"random", "kcenter"}))
def test_model_based_strategies_without_model_raise(name):
    with pytest.raises(ModelRequiredError, match=name):
        select_batch(name, make_ctx(model=False), 5, rng=np.random.default_rng(0))


@pytest.mark.parametrize("name", ["random", "kcenter"])
def test_model_free_strategies_work_before_any_model(name):
    idx, comps = select_batch(name, make_ctx(model=False, labeled=False), 7, rng=np.random.default_rng(0))
    assert len(np.unique(idx)) == 7


@pytest.mark.parametrize("name", sorted(REQUIRED))
@pytest.mark.parametrize("labeled", [True, False])
def test_every_strategy_returns_distinct_rows_and_full_components(name, labeled):
    ctx = make_ctx(labeled=labeled)
    idx, comps = select_batch(name, ctx, 20, rng=np.random.default_rng(1))
    assert idx.dtype == np.int64 and len(idx) == 20 and len(np.unique(idx)) == 20
    assert ((idx >= 0) & (idx < N)).all()
    assert comps and all(v.shape == (N,) and v.dtype == np.float64 and np.isfinite(v).all() for v in comps.values())
    # the primary component (first) is what orders the rest of the pool
    assert next(iter(comps)) == STRATEGIES[name].primary


def test_margin_is_top_k_of_margin_scores():
    ctx = make_ctx()
    idx, comps = select_batch("margin", ctx, 15, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(comps["margin"], scoring.margin(ctx.probs))
    np.testing.assert_array_equal(idx, selection.top_k(scoring.margin(ctx.probs), 15))


def test_committee_and_egl_scorers_are_wired():
    ctx = make_ctx()
    _, comps = select_batch("bald", ctx, 3, rng=np.random.default_rng(0))
    np.testing.assert_allclose(comps["bald"], scoring.bald(ctx.committee))
    _, comps = select_batch("egl", ctx, 3, rng=np.random.default_rng(0))
    norms = np.linalg.norm(ctx.X.astype(np.float64), axis=1)
    np.testing.assert_allclose(comps["egl"], scoring.expected_gradient_length(ctx.probs, norms), rtol=1e-6)


def test_margin_density_uses_cached_density_and_beta():
    ctx = make_ctx()
    # a cached density that is zero except on rows 5..9: information density can only pick those first
    ctx.density = np.zeros(N)
    ctx.density[5:10] = np.linspace(0.5, 1.0, 5)
    idx, comps = select_batch("margin_density", ctx, 5, rng=np.random.default_rng(0))
    assert set(idx.tolist()) == {5, 6, 7, 8, 9}
    np.testing.assert_allclose(comps["information_density"], comps["margin"] * ctx.density)
    _, comps2 = select_batch("margin_density", ctx, 5, rng=np.random.default_rng(0), beta=2.0)
    np.testing.assert_allclose(comps2["information_density"], comps["margin"] * ctx.density**2)
    assert strategies.needs_density("margin_density") and not strategies.needs_density("margin")


def test_density_is_computed_lazily_and_stored_on_the_context():
    ctx = make_ctx()
    assert ctx.density is None
    _, comps = select_batch("margin_density", ctx, 5, rng=np.random.default_rng(0))
    np.testing.assert_allclose(ctx.density, density.knn_density(ctx.X, 10))
    np.testing.assert_allclose(comps["density"], ctx.density)


def test_outlier_quantile_excludes_low_density_rows():
    ctx = make_ctx()
    ctx.density = np.random.default_rng(5).random(N)
    low = density.outlier_mask(ctx.density, 0.5)
    for name in ("margin", "kcenter", "hybrid", "margin_kcenter", "margin_cluster"):
        idx, comps = select_batch(name, ctx, 30, rng=np.random.default_rng(0), outlier_quantile=0.5)
        assert not low[idx].any(), name
        assert "density" in comps


def test_epsilon_replaces_ceil_epsilon_k_slots():
    ctx = make_ctx()
    plain, _ = select_batch("margin", ctx, 10, rng=np.random.default_rng(0))
    explored, _ = select_batch("margin", ctx, 10, rng=np.random.default_rng(0), epsilon=0.3)
    assert (plain != explored).sum() == 3 and len(np.unique(explored)) == 10


def test_k_is_capped_and_empty_pool_raises():
    ctx = make_ctx()
    idx, _ = select_batch("margin", ctx, N + 50, rng=np.random.default_rng(0))
    assert sorted(idx.tolist()) == list(range(N))
    assert len(select_batch("margin", ctx, 0, rng=np.random.default_rng(0))[0]) == 0
    empty = SelectionContext(X=np.zeros((0, D), np.float32), probs=np.zeros((0, C)), committee=None, X_labeled=None)
    with pytest.raises(EmptyPoolError):
        select_batch("margin", empty, 5, rng=np.random.default_rng(0))


def test_context_shapes_are_validated():
    ctx = make_ctx()
    ctx.probs = ctx.probs[:10]
    with pytest.raises(ValueError, match="probs"):
        select_batch("margin", ctx, 5, rng=np.random.default_rng(0))


def test_rank_pool_puts_batch_first_then_primary_descending():
    ctx = make_ctx()
    order, batch_size, comps = rank_pool("hybrid", ctx, 10, rng=np.random.default_rng(0))
    idx, _ = select_batch("hybrid", ctx, 10, rng=np.random.default_rng(0))
    assert batch_size == 10 and np.array_equal(order[:10], idx)
    assert sorted(order.tolist()) == list(range(N))
    rest = comps["margin"][order[10:]]
    assert (np.diff(rest) <= 0).all()
    np.testing.assert_array_equal(order, full_order(idx, comps["margin"]))
    np.testing.assert_array_equal(strategies.primary_score("hybrid", comps, N), comps["margin"])


def test_outlier_exclusion_never_shrinks_the_batch():
    ctx = make_ctx()
    ctx.density = np.random.default_rng(5).random(N)
    # excluding the lower half would leave 200 rows for a batch of 300: the exclusion is skipped
    idx, _ = select_batch("margin", ctx, 300, rng=np.random.default_rng(0), outlier_quantile=0.5)
    assert len(np.unique(idx)) == 300
