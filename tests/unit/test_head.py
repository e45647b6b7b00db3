"""The classifier head: probabilities, fallbacks, late classes, tuning, calibration, persistence."""

import json

import numpy as np
import pytest

import al_backend.head as head_module
from al_backend.errors import InputError
from al_backend.head import C_GRID, Head


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def blobs(n, d=32, sep=1.0, seed=0, n_classes=3, noise=0.0):
    """Unit-norm points around n_classes random directions; `noise` flips that share of labels."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_classes, d)))
    y = rng.integers(n_classes, size=n)
    X = unit(centres[y] * sep + rng.normal(size=(n, d)) / np.sqrt(d))
    observed = y.copy()
    if noise:
        flip = rng.random(n) < noise
        observed[flip] = rng.integers(n_classes, size=flip.sum())
    return X.astype(np.float32), np.array([f"c{v}" for v in observed]), np.array([f"c{v}" for v in y])


def nll(head, X, y):
    P = head.predict_proba(X)
    col = {c: i for i, c in enumerate(head.classes_)}
    return float(-np.mean(np.log(P[np.arange(len(y)), [col[v] for v in y]])))


def test_probabilities_are_float64_rows_summing_to_one_in_class_order():
    X, y, _ = blobs(150, seed=1)
    head = Head(["c2", "c0", "c1"], random_state=0).fit(X, y)
    P = head.predict_proba(X)
    assert head.is_fitted
    assert head.classes_ == ["c2", "c0", "c1"]
    assert P.shape == (150, 3) and P.dtype == np.float64
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-12)
    assert (P >= 0).all()
    # columns follow classes_: the predicted column is the true class on easy data
    predicted = np.array(head.classes_)[P.argmax(axis=1)]
    assert (predicted == y).mean() > 0.9


def test_matches_sklearn_logistic_regression_when_uncalibrated():
    from sklearn.linear_model import LogisticRegression

    X, y, _ = blobs(120, seed=2, sep=0.5)
    head = Head(calibrate=False, random_state=0).fit(X, y)
    ref = LogisticRegression(C=head.C_, class_weight="balanced", max_iter=1000, tol=1e-8).fit(X, y)
    np.testing.assert_allclose(head.predict_proba(X), ref.predict_proba(X), atol=2e-3)


def test_binary_problem_matches_sklearn_too():
    from sklearn.linear_model import LogisticRegression

    X, y, _ = blobs(80, seed=3, sep=0.5, n_classes=2)
    head = Head(calibrate=False, random_state=0).fit(X, y)
    ref = LogisticRegression(C=head.C_, class_weight="balanced", max_iter=1000, tol=1e-8).fit(X, y)
    np.testing.assert_allclose(head.predict_proba(X), ref.predict_proba(X), atol=2e-3)


def test_state_dict_round_trip_is_exact_and_json_safe():
    from al_backend.store import dumps_state, loads_state

    X, y, _ = blobs(200, seed=4, sep=0.6)
    head = Head(random_state=7, committee_size=3).fit(X, y)
    state = head.state_dict()
    for key, value in state.items():  # JSON scalars/lists, or arrays; nothing else
        assert isinstance(value, (np.ndarray, str, int, float, bool, list, dict, type(None))), key
    restored = Head.from_state_dict(loads_state(dumps_state(state)))
    np.testing.assert_array_equal(restored.predict_proba(X), head.predict_proba(X))
    np.testing.assert_array_equal(restored.committee_proba(X), head.committee_proba(X))
    assert restored.version == head.version
    assert restored.classes_ == head.classes_
    assert restored.summary() == head.summary()
    assert head.summary()["committee"] == 3 and head.summary()["labels"] == 200
    json.dumps(head.summary())
    json.dumps({k: v for k, v in state.items() if not isinstance(v, np.ndarray)})


def test_version_is_stable_for_same_data_and_seed_and_changes_otherwise():
    X, y, _ = blobs(100, seed=5)
    a = Head(random_state=1).fit(X, y)
    b = Head(random_state=1).fit(X, y)
    c = Head(random_state=1).fit(X[:90], y[:90])
    assert a.version == b.version and len(a.version) == 12
    assert a.version != c.version


def test_no_labels_gives_uniform_fallback():
    X, _, _ = blobs(10, seed=6)
    head = Head(["a", "b"]).fit(np.zeros((0, X.shape[1]), np.float32), [])
    assert not head.is_fitted
    np.testing.assert_allclose(head.predict_proba(X), 0.5)
    assert head.committee_proba(X).shape == (5, 10, 2)
    unknown = Head().fit(np.zeros((0, X.shape[1]), np.float32), [])
    assert unknown.classes_ == [] and unknown.predict_proba(X).shape == (10, 1)
    np.testing.assert_allclose(unknown.predict_proba(X), 1.0)


def test_single_class_is_not_fitted_and_uniform_over_known_classes():
    X, _, _ = blobs(12, seed=7)
    head = Head(["a", "b", "c"]).fit(X[:5], ["b"] * 5)
    assert not head.is_fitted
    np.testing.assert_allclose(head.predict_proba(X), 1 / 3)
    lonely = Head().fit(X[:5], ["only"] * 5)
    assert lonely.classes_ == ["only"]
    np.testing.assert_allclose(lonely.predict_proba(X), 1.0)
    assert Head.from_state_dict(head.state_dict()).predict_proba(X).shape == (12, 3)


def test_labels_appearing_later_are_appended_sorted_and_unlabeled_classes_get_no_mass():
    X, y, _ = blobs(120, seed=8)
    head = Head(["zeta", "c1"], random_state=0).fit(X, y)
    assert head.classes_ == ["zeta", "c1", "c0", "c2"]
    P = head.predict_proba(X)
    assert P.shape == (120, 4)
    assert P[:, 0].max() < 1e-9  # "zeta" was never labeled
    assert (np.array(head.classes_)[P.argmax(axis=1)] == y).mean() > 0.9


def test_tiny_and_imbalanced_sets_including_a_singleton_class():
    X, y, _ = blobs(60, seed=9, n_classes=2)
    y = y.astype(object)
    y[0] = "rare"  # one example: CV folds must keep it in training
    head = Head(random_state=0).fit(X, y)
    assert head.is_fitted and head.C_ in C_GRID
    assert set(head.cv_scores_) == {repr(c) for c in C_GRID}
    assert head.predict_proba(X[:1])[0, head.classes_.index("rare")] > 1 / 3  # its own point leans to it
    two = Head(random_state=0).fit(X[:2], ["a", "b"])  # two labels, two classes: no CV, default C
    assert two.is_fitted and two.C_ == head_module.DEFAULT_C and two.temperature_ == 1.0


def test_temperature_scaling_lowers_held_out_nll_on_an_overconfident_head(monkeypatch):
    # a weak penalty on noisy, high-dimensional data fits the noise: held-out probabilities are overconfident
    monkeypatch.setattr(head_module, "C_GRID", (100.0,))
    X, y, _ = blobs(600, d=100, sep=0.6, seed=0, noise=0.3)
    train, test = slice(0, 150), slice(150, 600)
    calibrated = Head(random_state=0).fit(X[train], y[train])
    raw = Head(calibrate=False, random_state=0).fit(X[train], y[train])
    assert calibrated.temperature_ > 1.5  # softened
    assert nll(calibrated, X[test], y[test]) < nll(raw, X[test], y[test]) - 0.2
    # temperature never changes the predicted class
    np.testing.assert_array_equal(calibrated.predict_proba(X).argmax(1), raw.predict_proba(X).argmax(1))


def test_cross_validation_prefers_a_strong_penalty_on_noisy_data():
    # label noise + few labels in 100-d: the weakest penalty in the grid overfits, CV must not pick it
    X, y, _ = blobs(150, d=100, sep=0.6, seed=1, noise=0.3)
    head = Head(random_state=0).fit(X, y)
    scores = {float(k): v for k, v in head.cv_scores_.items()}
    assert head.C_ < max(C_GRID)
    assert scores[head.C_] == min(scores.values()) or scores[head.C_] <= min(scores.values()) * 1.005


def test_committee_members_differ_but_agree_with_the_head_on_average():
    X, y, _ = blobs(150, seed=10, sep=0.4)
    head = Head(random_state=0, committee_size=4).fit(X, y)
    C = head.committee_proba(X)
    assert C.shape == (4, 150, 3)
    np.testing.assert_allclose(C.sum(axis=2), 1.0, atol=1e-12)
    assert np.abs(C[0] - C[1]).max() > 1e-3
    agree = (C.mean(axis=0).argmax(1) == head.predict_proba(X).argmax(1)).mean()
    assert agree > 0.9
    no_committee = Head(random_state=0, committee_size=0).fit(X, y)
    np.testing.assert_array_equal(no_committee.committee_proba(X)[0], no_committee.predict_proba(X))


def test_bad_inputs_raise_input_error():
    X, y, _ = blobs(20, seed=11)
    with pytest.raises(InputError):
        Head().fit(X, y[:5])
    head = Head().fit(X, y)
    with pytest.raises(InputError):
        head.predict_proba(X[:, :10])
    with pytest.raises(InputError):
        Head(class_weight="weird")
    with pytest.raises(InputError):
        Head.from_state_dict({"format": "pickle"})
