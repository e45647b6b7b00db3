"""Stopping criteria: kappa against sklearn, the stop set, each criterion on hand-made histories, parsing."""

import hashlib
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from al_backend import stopping
from al_backend.errors import ConfigError, InputError
from al_backend.stopping import (
    AnyOf,
    Budget,
    ClassificationChange,
    Never,
    OverallUncertainty,
    RoundEvidence,
    StabilizingPredictions,
    StopDecision,
    TargetAccuracy,
    cohen_kappa,
    first_stop,
    parse_criterion,
    stop_set,
)

AB = ("neg", "pos")


def ev(labels, pred=None, classes=AB, **kw):
    return RoundEvidence(
        labels=labels, stop_predictions=None if pred is None else np.array(pred), classes=classes, **kw
    )


# ------------------------------------------------------------------------------------------- kappa


def test_kappa_two_by_two_by_hand():
    # a = 0 0 1 1, b = 0 1 1 1: table [[1, 1], [0, 2]]; p_o = 3/4;
    # marginals a (2, 2), b (1, 3): p_e = (2*1 + 2*3) / 16 = 1/2; kappa = (3/4 - 1/2) / (1 - 1/2) = 0.5
    assert cohen_kappa(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])) == pytest.approx(0.5)


def test_kappa_three_classes_by_hand():
    # a = 0 1 2 0 1 2, b = 0 1 2 1 2 0: p_o = 3/6; marginals all (2, 2, 2): p_e = 3 * 4 / 36 = 1/3;
    # kappa = (1/2 - 1/3) / (2/3) = 0.25
    assert cohen_kappa(np.array([0, 1, 2, 0, 1, 2]), np.array([0, 1, 2, 1, 2, 0])) == pytest.approx(0.25)


def test_kappa_degenerate_cases():
    same = np.zeros(7, dtype=np.int64)
    assert cohen_kappa(same, same) == 1.0  # p_e = 1: defined as 1 (sklearn: nan)
    assert cohen_kappa(np.full(5, 2), np.full(5, 2)) == 1.0
    # all 0 vs all 1: p_o = 0, p_e = 0 -> 0
    assert cohen_kappa(np.zeros(4, int), np.ones(4, int)) == 0.0
    assert cohen_kappa(np.zeros(0, int), np.zeros(0, int)) == 1.0
    # perfect disagreement on a balanced pair: p_o = 0, p_e = 1/2 -> -1
    assert cohen_kappa(np.array([0, 1]), np.array([1, 0])) == pytest.approx(-1.0)


def test_kappa_rejects_bad_shapes():
    with pytest.raises(InputError):
        cohen_kappa(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(InputError):
        cohen_kappa(np.array([0, -1]), np.array([0, 0]))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda k: st.integers(1, 120).flatmap(
            lambda m: st.tuples(
                st.lists(st.integers(0, k - 1), min_size=m, max_size=m),
                st.lists(st.integers(0, k - 1), min_size=m, max_size=m),
            )
        )
    )
)
def test_kappa_matches_sklearn(pair):
    from sklearn.metrics import cohen_kappa_score

    a, b = np.array(pair[0]), np.array(pair[1])
    ours = cohen_kappa(a, b)
    assert ours == pytest.approx(cohen_kappa(b, a), abs=1e-12)  # symmetric
    assert -1.0 - 1e-12 <= ours <= 1.0 + 1e-12
    if len(set(a.tolist()) | set(b.tolist())) == 1:
        assert ours == 1.0  # sklearn returns nan here
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = cohen_kappa_score(a, b)
    assert ours == pytest.approx(ref, abs=1e-9)
    # padding the class count with unused classes changes nothing
    assert cohen_kappa(a, b, n_classes=int(max(a.max(), b.max())) + 3) == pytest.approx(ours, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=80))
def test_kappa_of_identical_vectors_is_one(a):
    a = np.array(a)
    assert cohen_kappa(a, a) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------- stop set


def slow_stop_set(ids, size, random_state):
    """Reference: hash every id, sort all by hash, keep the first `size`."""
    keyed = [
        (int.from_bytes(hashlib.blake2b(f"{random_state}\x1f{i}".encode(), digest_size=8).digest(), "big"), pos)
        for pos, i in enumerate(ids)
    ]
    return [pos for _, pos in sorted(keyed)[:size]]


def test_stop_set_matches_slow_reference():
    ids = [f"task-{i}" for i in range(1000)]
    got = stop_set(ids, 50, random_state=7)
    assert got.dtype == np.int64 and got.shape == (50,)
    assert got.tolist() == slow_stop_set(ids, 50, 7)
    assert stop_set(ids, 50, random_state=8).tolist() == slow_stop_set(ids, 50, 8)
    assert set(stop_set(ids, 50, 8).tolist()) != set(got.tolist())


def test_stop_set_is_independent_of_pool_order():
    ids = [f"id{i}" for i in range(300)]
    perm = np.random.default_rng(0).permutation(300)
    shuffled = [ids[i] for i in perm]
    a = [ids[i] for i in stop_set(ids, 40, 1)]
    b = [shuffled[i] for i in stop_set(shuffled, 40, 1)]
    assert a == b  # same ids, same order


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 400), st.integers(0, 300), st.integers(0, 60), st.integers(0, 3))
def test_stop_set_as_the_pool_grows(n_old, n_new, size, seed):
    old = [f"o{i}" for i in range(n_old)]
    grown = old + [f"n{i}" for i in range(n_new)]
    small = [old[i] for i in stop_set(old, size, seed)]
    big = [grown[i] for i in stop_set(grown, size, seed)]
    assert len(small) == min(size, n_old) and len(big) == min(size, n_old + n_new)
    # old members survive in order, as a prefix of the old set; only new ids can displace them
    survivors = [i for i in big if i.startswith("o")]
    assert survivors == small[: len(survivors)]
    assert all(i in small for i in survivors)


def test_stop_set_edges():
    assert stop_set([], 10, 0).tolist() == []
    assert stop_set(["a", "b"], 0, 0).tolist() == []
    assert sorted(stop_set(["a", "b", "c"], 10, 0).tolist()) == [0, 1, 2]
    with pytest.raises(InputError, match="unique"):
        stop_set(["a", "b", "a"], 2, 0)
    with pytest.raises(InputError):
        stop_set(["a"], -1, 0)


# ---------------------------------------------------------------------------------------- evidence


def test_round_evidence_json_round_trip():
    r = RoundEvidence(
        labels=250,
        stop_predictions=np.array([0, 2, 1, 1]),
        classes=("a", "b", "c"),
        changed_unlabeled=12,
        unlabeled=9000,
        mean_uncertainty=0.31,
        cv_accuracy=0.84,
    )
    back = RoundEvidence.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r
    assert back.stop_predictions.dtype == np.int64 and back.stop_predictions.tolist() == [0, 2, 1, 1]
    empty = RoundEvidence(labels=0)
    assert RoundEvidence.from_dict(json.loads(json.dumps(empty.to_dict()))) == empty
    assert empty.stop_predictions is None and empty.mean_uncertainty is None


def test_round_evidence_copies_and_freezes_predictions():
    buf = np.array([0, 1, 1])
    r = ev(10, buf)
    buf[0] = 1
    assert r.stop_predictions.tolist() == [0, 1, 1]
    with pytest.raises(ValueError):
        r.stop_predictions[0] = 1


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(labels=-1),
        dict(labels=5, stop_predictions=np.array([0, 2]), classes=AB),  # index 2 out of 2 classes
        dict(labels=5, stop_predictions=np.array([[0, 1]]), classes=AB),
        dict(labels=5, stop_predictions=np.array([0.0, 1.0]), classes=AB),
        dict(labels=5, mean_uncertainty=float("nan")),
        dict(labels=5, changed_unlabeled=-3),
    ],
)
def test_round_evidence_rejects_bad_values(kwargs):
    with pytest.raises(InputError):
        RoundEvidence(**kwargs)


def test_round_evidence_from_dict_rejects_unknown_keys():
    with pytest.raises(InputError, match="unknown"):
        RoundEvidence.from_dict({"labels": 3, "kappa": 1.0})


def test_stop_decision_to_dict_is_json():
    d = StopDecision(True, "budget", "done", {"labels": 10, "budget": 10})
    assert json.loads(json.dumps(d.to_dict())) == {
        "stop": True,
        "criterion": "budget",
        "reason": "done",
        "evidence": {"labels": 10, "budget": 10},
    }


# ---------------------------------------------------------------------------------------- criteria


def test_budget():
    c = Budget()
    assert not c.decide([], budget=100).stop
    assert not c.decide([ev(99)], budget=100).stop
    d = c.decide([ev(50), ev(100)], budget=100)
    assert d.stop and d.criterion == "budget" and d.evidence == {"labels": 100, "budget": 100}
    assert not c.decide([ev(10_000)], budget=None).stop
    assert Budget(labels=20).decide([ev(20)], budget=None).stop
    assert not Budget(labels=20).decide([ev(19)], budget=5).stop  # its own labels= wins over the caller's


def test_stabilizing_predictions_by_hand():
    # kappas between successive rounds: r0->r1 = 0.5 (the 2x2 example), r1->r2 = 1, r2->r3 = 1: mean 5/6
    hist = [ev(50, [0, 0, 1, 1]), ev(100, [0, 1, 1, 1]), ev(150, [0, 1, 1, 1]), ev(200, [0, 1, 1, 1])]
    d = StabilizingPredictions(threshold=0.8, window=3).decide(hist, budget=None)
    assert d.stop and d.criterion == "stabilizing_predictions"
    assert d.evidence["kappas"] == pytest.approx([0.5, 1.0, 1.0])
    assert d.evidence["mean_kappa"] == pytest.approx(5 / 6)
    assert "0.500, 1.000, 1.000" in d.reason
    assert not StabilizingPredictions(threshold=0.9, window=3).decide(hist, budget=None).stop
    assert StabilizingPredictions(threshold=0.99, window=2).decide(hist, budget=None).stop
    # three rounds give only two pairs: a window of 3 cannot decide yet
    assert not StabilizingPredictions(threshold=0.0, window=3).decide(hist[:3], budget=None).stop
    # min_labels delays it
    assert not StabilizingPredictions(threshold=0.8, window=3, min_labels=201).decide(hist, budget=None).stop
    json.dumps(d.to_dict())


def test_stabilizing_predictions_needs_comparable_rounds():
    c = StabilizingPredictions(threshold=0.5, window=2)
    assert not c.decide([ev(10), ev(20, [0, 1]), ev(30, [0, 1])], budget=None).stop  # no model in round 0
    assert not c.decide([ev(10, [0, 1, 1]), ev(20, [0, 1]), ev(30, [0, 1])], budget=None).stop  # stop set changed
    assert c.decide([ev(10, [0, 1]), ev(20, [0, 1]), ev(30, [0, 1])], budget=None).stop


def test_stabilizing_predictions_compares_classes_by_name():
    # a class added later shifts the indices: ("neg", "pos") -> ("neg", "neu", "pos"); same names = agreement
    hist = [
        ev(10, [0, 1, 1, 0], classes=("neg", "pos")),
        ev(20, [0, 2, 2, 0], classes=("neg", "neu", "pos")),
        ev(30, [0, 2, 2, 0], classes=("neg", "neu", "pos")),
    ]
    d = StabilizingPredictions(threshold=0.99, window=2).decide(hist, budget=None)
    assert d.evidence["kappas"] == pytest.approx([1.0, 1.0]) and d.stop
    # the same indices under renamed classes disagree everywhere: kappa -1
    flipped = [ev(10, [0, 1], classes=("neg", "pos")), ev(20, [0, 1], classes=("pos", "neg"))]
    assert StabilizingPredictions(window=1).kappas(flipped) == pytest.approx([-1.0])


def test_classification_change():
    c = ClassificationChange()
    assert not c.decide([ev(10)], budget=None).stop  # unknown on the first model
    assert not c.decide([ev(10), ev(20, changed_unlabeled=3, unlabeled=1000)], budget=None).stop
    d = c.decide([ev(20, changed_unlabeled=0, unlabeled=1000)], budget=None)
    assert d.stop and d.evidence["changed"] == [0]
    # tolerance 0.5 %: 3 of 1000 = 0.3 % passes, 6 of 1000 does not
    tol = ClassificationChange(tolerance=0.005, window=2)
    assert tol.decide(
        [ev(10, changed_unlabeled=5, unlabeled=1000), ev(20, changed_unlabeled=3, unlabeled=1000)], budget=None
    ).stop
    assert not tol.decide(
        [ev(10, changed_unlabeled=6, unlabeled=1000), ev(20, changed_unlabeled=3, unlabeled=1000)], budget=None
    ).stop
    assert not tol.decide([ev(10, changed_unlabeled=0), ev(20, changed_unlabeled=0)], budget=None).stop  # no pool size


def test_overall_uncertainty_and_target_accuracy():
    u = OverallUncertainty(threshold=0.2, window=2)
    assert not u.decide([ev(10, mean_uncertainty=0.1)], budget=None).stop
    assert u.decide([ev(10, mean_uncertainty=0.19), ev(20, mean_uncertainty=0.1)], budget=None).stop
    assert not u.decide([ev(10, mean_uncertainty=0.2), ev(20, mean_uncertainty=0.1)], budget=None).stop  # strict <
    t = TargetAccuracy(target=0.9, min_labels=100)
    assert not t.decide([ev(99, cv_accuracy=0.95)], budget=None).stop
    assert not t.decide([ev(100, cv_accuracy=None)], budget=None).stop
    assert not t.decide([ev(100, cv_accuracy=0.89)], budget=None).stop
    d = t.decide([ev(100, cv_accuracy=0.9)], budget=None)
    assert d.stop and d.criterion == "target_accuracy"


def test_any_of_reports_the_deciding_criterion():
    c = AnyOf((StabilizingPredictions(), Budget()))
    hist = [ev(50, [0, 1]), ev(100, [1, 0])]
    d = c.decide(hist, budget=100)
    assert d.stop and d.criterion == "budget"
    d = c.decide(hist, budget=1000)
    assert not d.stop and d.criterion == "stabilizing_predictions|budget"
    assert set(d.evidence) == {"stabilizing_predictions", "budget"}
    json.dumps(d.to_dict())
    assert not Never().decide(hist, budget=1).stop


def test_first_stop():
    # kappas: 1 -> 0 (all flip) ... stable from round 3 on; window 2 needs rounds 3, 4, 5 stable: index 5
    preds = [[0, 1], [0, 1], [1, 0], [0, 1], [0, 1], [0, 1], [0, 1]]
    hist = [ev(50 * (i + 1), p) for i, p in enumerate(preds)]
    assert first_stop(hist, StabilizingPredictions(threshold=0.99, window=2)) == 5
    assert first_stop(hist, Never(), budget=10) is None
    assert first_stop(hist, Budget(), budget=200) == 3  # labels 50, 100, 150, 200
    assert first_stop([], Budget(), budget=0) is None
    combo = parse_criterion("stabilizing_predictions:window=2|budget")
    assert first_stop(hist, combo, budget=200) == 3
    assert first_stop(hist, combo, budget=10_000) == 5


# ----------------------------------------------------------------------------------------- parsing


def test_parse_criterion():
    default = parse_criterion("default")
    assert isinstance(default, AnyOf)
    assert default.criteria == (
        ClassificationChange(tolerance=0.0, window=3),
        StabilizingPredictions(threshold=0.99, window=3),
        Budget(),
    )
    assert parse_criterion(stopping.DEFAULT_SPEC).criteria == default.criteria
    assert parse_criterion("budget") == Budget()
    assert parse_criterion("budget:labels=500") == Budget(labels=500)
    assert parse_criterion("budget:labels=none") == Budget()
    assert parse_criterion("stabilizing_predictions:threshold=0.98, window=5") == StabilizingPredictions(0.98, 5)
    assert parse_criterion("target_accuracy:target=0.9") == TargetAccuracy(target=0.9)
    assert parse_criterion("none") == Never()
    assert parse_criterion("classification_change:tolerance=0.01|overall_uncertainty:threshold=0.05").criteria == (
        ClassificationChange(tolerance=0.01),
        OverallUncertainty(threshold=0.05),
    )
    assert parse_criterion("default|target_accuracy").criteria[3] == TargetAccuracy()  # flattened
    assert set(stopping.CRITERIA) == {
        "budget",
        "target_accuracy",
        "stabilizing_predictions",
        "classification_change",
        "overall_uncertainty",
        "none",
    }
    assert all(stopping.describe_criteria().values())


@pytest.mark.parametrize(
    "spec, message",
    [
        ("kappa", "valid: default, stabilizing_predictions"),
        ("", "valid"),
        ("stabilizing_predictions:thresh=0.9", "valid parameters: threshold, window, min_labels"),
        ("stabilizing_predictions:window=3.5", "window"),
        ("stabilizing_predictions:window", "needs a value"),
        ("stabilizing_predictions:threshold=abc", "threshold"),
        ("stabilizing_predictions:threshold=1.5", "threshold"),
        ("target_accuracy:target=nan", "target"),
        ("budget|", "empty"),
        ("none:x=1", "valid parameters: none"),
        ("default:window=2", "takes no parameters"),
    ],
)
def test_parse_criterion_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_criterion(spec)


def test_module_imports_neither_sklearn_nor_torch():
    code = (
        "import sys, al_backend.stopping; print(sorted(m for m in ('sklearn', 'torch', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_round_evidence_from_probabilities():
    from al_backend.stopping import round_evidence

    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.3, 0.3, 0.4]])
    # margins: 1 - (0.7 - 0.2) = 0.5, 1 - (0.5 - 0.4) = 0.9, 1 - (0.4 - 0.3) = 0.9: mean 2.3 / 3
    # predictions a, b, c; the previous model (classes a, c) predicted a, c, a: rows 1 and 2 changed
    r = round_evidence(
        120,
        ("a", "b", "c"),
        p,
        stop_proba=np.array([[0.1, 0.9, 0.0], [0.6, 0.3, 0.1]]),
        prev_pred_unlabeled=np.array([0, 1, 0]),
        prev_classes=("a", "c"),
        cv_accuracy=0.8,
    )
    assert r.mean_uncertainty == pytest.approx(2.3 / 3)
    assert r.changed_unlabeled == 2  # row 1: c -> b, row 2: a -> c
    assert r.unlabeled == 3 and r.labels == 120 and r.cv_accuracy == 0.8
    assert r.stop_predictions.tolist() == [1, 0] and r.classes == ("a", "b", "c")
    same = round_evidence(5, ("a", "b", "c"), p, prev_pred_unlabeled=np.array([0, 1, 2]))
    assert same.changed_unlabeled == 0 and same.stop_predictions is None
    before = round_evidence(0, ("a", "b"), None)
    assert before.mean_uncertainty is None and before.stop_predictions is None
    with pytest.raises(InputError):
        round_evidence(5, ("a", "b"), p)


def test_rounds_without_new_labels_are_not_evidence():
    from al_backend.stopping import informative_rounds

    # re-running a round without new labels refits (or reuses) the same model: kappa 1, nothing changed
    busy = [
        ev(100, [0, 1, 1, 0], changed_unlabeled=40, unlabeled=900),
        ev(150, [1, 1, 0, 0], changed_unlabeled=30, unlabeled=850),
    ]
    idle = [ev(150, [1, 1, 0, 0], changed_unlabeled=0, unlabeled=850) for _ in range(4)]
    assert [r.labels for r in informative_rounds(busy + idle)] == [100, 150]
    assert informative_rounds(busy + idle)[-1].changed_unlabeled == 30  # the first round at a count is kept
    for criterion in (
        StabilizingPredictions(threshold=0.99, window=3),
        ClassificationChange(),
        parse_criterion("default"),
    ):
        assert not criterion.decide(busy + idle, budget=None).stop, criterion
    # the budget still counts labels, idle or not
    assert parse_criterion("default").decide(busy + idle, budget=150).stop
