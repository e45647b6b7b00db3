"""Scorers: values worked out by hand, ranges, and EGL against an explicit gradient-norm reference."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from al_backend import scoring


def _probs(seed: int, n: int, c: int, concentration: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(c, concentration), size=n)


P = np.array([[0.5, 0.3, 0.2]])


def test_three_class_example_by_hand():
    assert scoring.least_confidence(P) == pytest.approx([0.5])
    assert scoring.margin(P) == pytest.approx([0.8])  # 1 - (0.5 - 0.3)
    by_hand = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))  # 1.029653
    assert scoring.entropy(P) == pytest.approx([by_hand])
    assert by_hand == pytest.approx(1.0296530140645737)


def test_certain_and_uniform_rows():
    p = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    assert scoring.least_confidence(p) == pytest.approx([0.0, 0.75])
    assert scoring.margin(p) == pytest.approx([0.0, 1.0])
    assert scoring.entropy(p) == pytest.approx([0.0, math.log(4)])  # 0 log 0 = 0, no NaN


def test_single_class_scores_zero():
    p = np.ones((3, 1))
    assert np.array_equal(scoring.margin(p), np.zeros(3))
    assert np.array_equal(scoring.least_confidence(p), np.zeros(3))
    assert np.array_equal(scoring.entropy(p), np.zeros(3))


def test_outputs_are_float64_for_float32_input():
    p = _probs(0, 10, 4).astype(np.float32)
    for f in (scoring.least_confidence, scoring.margin, scoring.entropy):
        assert f(p).dtype == np.float64


def test_vote_entropy_by_hand():
    # three members vote class 0, class 0, class 1 on row 0; all vote class 2 on row 1
    c = np.array(
        [
            [[0.6, 0.4, 0.0], [0.1, 0.1, 0.8]],
            [[0.9, 0.1, 0.0], [0.2, 0.2, 0.6]],
            [[0.3, 0.7, 0.0], [0.0, 0.4, 0.6]],
        ]
    )
    expected = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))  # 0.636514
    assert scoring.vote_entropy(c) == pytest.approx([expected, 0.0])


def test_disagreeing_confident_members_by_hand():
    # members certain of different classes: mean (0.5, 0.5); KL(member || mean) = log 2; BALD = log 2 - 0
    c = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert scoring.kl_to_consensus(c) == pytest.approx([math.log(2)])
    assert scoring.bald(c) == pytest.approx([math.log(2)])
    # identical members: no disagreement, even when each is uncertain
    same = np.array([[[0.5, 0.5]], [[0.5, 0.5]]])
    assert scoring.kl_to_consensus(same) == pytest.approx([0.0])
    assert scoring.bald(same) == pytest.approx([0.0])


def test_egl_by_hand():
    # p = (0.5, 0.5), ||x|| = 2: ||p - e_y|| = sqrt(0.5) for both y, EGL = 2 * sqrt(0.5) = sqrt(2)
    assert scoring.expected_gradient_length(np.array([[0.5, 0.5]]), np.array([2.0])) == pytest.approx([math.sqrt(2)])
    # a certain prediction has zero expected gradient
    assert scoring.expected_gradient_length(np.array([[1.0, 0.0]]), np.array([3.0])) == pytest.approx([0.0])


def _egl_reference(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Slow: build the gradient matrix (p - e_y) x^T for every label and take its Frobenius norm."""
    out = np.zeros(len(p))
    for i in range(len(p)):
        for y in range(p.shape[1]):
            e_y = np.zeros(p.shape[1])
            e_y[y] = 1.0
            grad = np.outer(p[i] - e_y, x[i])
            out[i] += p[i, y] * np.linalg.norm(grad, "fro")
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 8), st.integers(1, 6), st.integers(1, 7))
def test_egl_equals_explicit_gradient_norms(seed, n, c, d):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(c), size=n)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 5.0)
    got = scoring.expected_gradient_length(p, np.linalg.norm(x, axis=1))
    np.testing.assert_allclose(got, _egl_reference(p, x), rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 30), st.integers(2, 12), st.sampled_from([0.05, 1.0, 20.0]))
def test_single_model_scores_in_range(seed, n, c, concentration):
    p = _probs(seed, n, c, concentration)
    lc, mg, ent = scoring.least_confidence(p), scoring.margin(p), scoring.entropy(p)
    eps = 1e-12
    assert ((lc >= -eps) & (lc <= 1 - 1 / c + eps)).all()
    assert ((mg >= -eps) & (mg <= 1 + eps)).all()
    assert ((ent >= 0) & (ent <= math.log(c) + eps)).all()
    # margin is at least least-confidence's view of uncertainty: 1 - p1 + p2 >= 1 - p1
    assert (mg >= lc - eps).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(1, 20), st.integers(2, 8))
def test_committee_scores_in_range(seed, m, n, c):
    committee = np.random.default_rng(seed).dirichlet(np.ones(c) * 0.5, size=(m, n))
    eps = 1e-12
    ve = scoring.vote_entropy(committee)
    assert ((ve >= 0) & (ve <= math.log(min(m, c)) + eps)).all()
    mi = scoring.bald(committee)
    assert ((mi >= 0) & (mi <= math.log(c) + eps)).all()
    kl = scoring.kl_to_consensus(committee)
    assert (kl >= 0).all()
    # for proper distributions the mean KL to the consensus is the mutual information
    np.testing.assert_allclose(kl, mi, atol=1e-9)


def test_information_density_by_hand():
    got = scoring.information_density(np.array([0.5, 1.0]), np.array([0.25, 1.0]), beta=2.0)
    assert got == pytest.approx([0.5 * 0.0625, 1.0])
    assert scoring.information_density(np.array([0.3]), np.array([0.7]), beta=0.0) == pytest.approx([0.3])


def test_random_scores_reproducible_and_in_unit_interval():
    a = scoring.random_scores(100, np.random.default_rng(3))
    b = scoring.random_scores(100, np.random.default_rng(3))
    assert np.array_equal(a, b) and a.dtype == np.float64
    assert ((a >= 0) & (a < 1)).all() and len(np.unique(a)) == 100


@pytest.mark.parametrize(
    "call",
    [
        lambda: scoring.margin(np.array([0.5, 0.5])),
        lambda: scoring.entropy(np.zeros((2, 2, 2))),
        lambda: scoring.bald(np.ones((3, 2))),
        lambda: scoring.vote_entropy(np.ones((2, 3))),
        lambda: scoring.expected_gradient_length(np.ones((3, 2)) / 2, np.ones(2)),
        lambda: scoring.information_density(np.ones(3), np.ones(2)),
        lambda: scoring.information_density(np.ones(2), -np.ones(2)),
    ],
)
def test_bad_shapes_and_values_raise_value_error(call):
    with pytest.raises(ValueError):
        call()
