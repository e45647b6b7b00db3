"""The Python API: select() and ActiveLearner over caller-given vectors, the same round as the CLI."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import al_backend
from al_backend.errors import ConfigError, InputError
from tests.unit.test_one_round import blobs, prioritize_batch


def test_importing_and_selecting_on_vectors_loads_neither_torch_nor_sentence_transformers():
    code = (
        "import sys, numpy as np, al_backend\n"
        "X = np.random.default_rng(0).normal(size=(200, 8)).astype('float32')\n"
        "labels = [None] * 200; labels[0] = 'a'; labels[1] = 'b'\n"
        "picks = al_backend.select(X, labels, 5, random_state=0)\n"
        "learner = al_backend.ActiveLearner(X, random_state=0).teach([0, 1, 2, 3], ['a', 'b', 'a', 'b'])\n"
        "learner.query(3); learner.predict_proba(X[:2])\n"
        "print(len(picks), 'torch' in sys.modules, 'sentence_transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["5", "False", "False"]


def test_select_picks_what_prioritize_picks_for_the_same_vectors_labels_and_random_state(tmp_path):
    X, y = blobs(n=240)
    labeled = list(range(0, 240, 12))  # 20 labels
    labels = [y[i] if i in set(labeled) else None for i in range(len(y))]
    picks = al_backend.select(X, labels, 10, random_state=5)
    rows = list(range(len(y)))
    # prioritize_batch writes ids = row numbers; its config fixes the label set, which select() infers:
    # with every class labeled both give the same clusters (2 x classes)
    assert sorted(set(y[i] for i in labeled)) == sorted(set(y))
    assert picks.tolist() == prioritize_batch(tmp_path, X, y, rows, labeled, 10, 5, "api")
    assert not set(picks.tolist()) & set(labeled)


@settings(max_examples=15, deadline=None)
@given(
    n_labeled=st.integers(0, 40),
    k=st.integers(1, 30),
    seed=st.integers(0, 2**16),
)
def test_query_never_returns_labeled_or_repeated_rows(n_labeled, k, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(120, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    learner = al_backend.ActiveLearner(X, random_state=seed)
    rows = rng.choice(120, size=n_labeled, replace=False)
    learner.teach(rows, y[rows])
    picks = learner.query(k)
    assert len(picks) == min(k, 120 - n_labeled) == len(set(picks.tolist()))
    assert not set(picks.tolist()) & set(rows.tolist())
    assert picks.dtype == np.int64 and ((picks >= 0) & (picks < 120)).all()


def test_learner_keeps_label_types_and_predicts_calibrated_probabilities():
    X, y = blobs(n=300, classes=3)
    ints = np.array([int(v[1:]) for v in y])
    learner = al_backend.ActiveLearner(X, random_state=0)
    learner.teach(np.arange(30), ints[:30])
    for _ in range(3):
        q = learner.query(20)
        learner.teach(q, ints[q])
    assert learner.classes_ == [0, 1, 2]  # the caller's ints, not strings
    p = learner.predict_proba(X)
    assert p.shape == (300, 3) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    accuracy = np.mean(np.array(learner.predict(X)) == ints)
    assert accuracy > 0.8  # separable blobs; chance is ~0.33


def test_stop_decision_follows_the_budget_counted_on_taught_labels():
    X, y = blobs(n=200, classes=2)
    learner = al_backend.ActiveLearner(X, stopping="budget:labels=40", random_state=0)
    learner.teach(np.arange(30), y[:30])
    before = learner.stop_decision()
    assert (before.stop, before.criterion) == (False, "budget")
    assert before.evidence == {"labels": 30, "budget": 40}
    learner.teach(np.arange(30, 40), y[30:40])
    after = learner.stop_decision()
    assert after.stop and after.evidence == {"labels": 40, "budget": 40}
    assert "40 labels reached the budget of 40" in after.reason
    assert learner.stop_decision().stop  # asking again records nothing and says the same


def test_stop_decision_on_stable_predictions_needs_quiet_rounds_first():
    # classification_change over a window of 2 rounds: at the first query there is no history to compare,
    # so the answer must be "not yet" whatever the model; after rounds where a separable problem's
    # predictions no longer change, it must say stop.
    X, y = blobs(n=300, classes=2)
    learner = al_backend.ActiveLearner(X, stopping="classification_change:tolerance=0,window=2", random_state=0)
    learner.teach(np.arange(20), y[:20])
    first = learner.stop_decision()
    assert first.stop is False and first.criterion == "classification_change"
    for _ in range(4):
        q = learner.query(20)
        learner.teach(q, [y[i] for i in q])
    last = learner.stop_decision()
    assert last.stop is True and last.criterion == "classification_change", last.reason


def test_a_scikit_learn_head_is_used_as_given():
    from sklearn.neighbors import KNeighborsClassifier

    X, y = blobs(n=200, classes=2)
    learner = al_backend.ActiveLearner(X, head=KNeighborsClassifier(n_neighbors=3), random_state=1)
    learner.teach(np.arange(20), y[:20])
    picks = learner.query(5)
    assert len(picks) == 5
    p = learner.predict_proba(X[:4])
    assert set(np.unique(p).round(4)) <= {0.0, 0.3333, 0.6667, 1.0}  # 3-NN votes: thirds, an LR head is not


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda X: al_backend.select(X[:, 0], [None] * 50, 5), "2-d array"),
        (lambda X: al_backend.select(X, [None] * 49, 5), "49 entries for 50"),
        (lambda X: al_backend.select(X, [None] * 50, 0), "batch_size must be a positive int"),
        (lambda X: al_backend.select(X, [None] * 49 + [1.5], 5), "labels must be str or int"),
        (lambda X: al_backend.ActiveLearner(X).teach([50], ["a"]), "index 50 is outside the pool of 50"),
        (lambda X: al_backend.ActiveLearner(X).teach([1, 2], ["a"]), "2 indices but 1 labels"),
        (lambda X: al_backend.ActiveLearner(X).predict_proba(X), "no model yet"),
        (lambda X: al_backend.ActiveLearner(X, random_state=-1), "random_state must be >= 0"),
        (lambda X: al_backend.ActiveLearner(X, stopping="kappa"), "kappa"),
    ],
)
def test_bad_input_gets_a_message_naming_what_is_wrong(call, message):
    X = np.random.default_rng(0).normal(size=(50, 4))
    with pytest.raises((InputError, ConfigError)) as err:
        call(X)
    assert message in str(err.value)


def test_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid strategies: default"):
        al_backend.select(np.eye(4), [None] * 4, 1, strategy="nope")


def test_the_readme_python_api_snippet_runs_as_written():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    assert namespace["rows"].shape == (20,) and namespace["proba"].shape == (5, 2)
    assert namespace["decision"].stop in (True, False)
