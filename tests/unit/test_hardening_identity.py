"""The state knows its pool and its embedding space: another pool, or other vectors of the same dimension, is a
clear error (exit 4) unless --reset-state moves the old state aside (never deleting it). A growing pool is
the same pool."""

from __future__ import annotations

import json

import numpy as np
import pytest

from al_backend.config import load_config
from al_backend.errors import StateError
from al_backend.pool import Pool
from al_backend.round import Round
from al_backend.store import Store
from tests.hardening_util import cli, rounds_in, snapshot, tasks, vectors_for, write_pool


def make_pool(rows, X, source="pool.jsonl"):
    return Pool(
        ids=[r["id"] for r in rows],
        texts=[r["text"] for r in rows],
        labels=[r.get("label") for r in rows],
        vectors=X,
        source=source,
    )


@pytest.fixture
def engine(tmp_path):
    cfg = load_config(None, env={}, overrides={"state.path": str(tmp_path / "s.sqlite"), "strategy.batch_size": 3})
    store = Store.open(cfg.state.path)
    yield Round(cfg, store, progress=False)
    store.close()


def test_growing_pool_is_the_same_pool(engine):
    rows, X = tasks(30), vectors_for(30)
    engine.run(make_pool(rows[:20], X[:20]))
    grown = [dict(r) for r in rows]
    grown[7]["label"] = "sports"  # labeled since
    grown[12]["text"] = "edited text"  # one edited
    X2 = X.copy()
    X2[12] = vectors_for(1, seed=9)[0]
    engine.run(make_pool(grown, X2))
    engine.run(make_pool(grown[5:], X2[5:]))  # some deleted
    assert engine.store.summary()["rounds"] == 3


def test_another_pool_is_refused_and_nothing_recorded(engine):
    rows, X = tasks(20), vectors_for(20)
    engine.run(make_pool(rows, X, source="a.jsonl"))
    other = [{"id": f"other-{i}", "text": f"different {i}"} for i in range(20)]
    with pytest.raises(StateError) as e:
        engine.run(make_pool(other, X, source="b.jsonl"))
    assert (
        f"state file {engine.store.path} belongs to another pool (a.jsonl, 20 tasks): none of the 20 tasks of b.jsonl"
        in str(e.value)
    )
    assert "--reset-state" in str(e.value)
    # same ids, every text different: another pool numbered the same way
    renumbered = [{"id": r["id"], "text": "unrelated " + r["text"]} for r in rows]
    with pytest.raises(StateError, match="belongs to another pool"):
        engine.run(make_pool(renumbered, X, source="c.jsonl"))
    assert engine.store.summary()["rounds"] == 1


def test_other_vectors_of_the_same_dimension_are_refused(engine):
    rows, X = tasks(40), vectors_for(40)
    engine.run(make_pool(rows, X))
    rotation = np.linalg.qr(np.random.default_rng(3).normal(size=(8, 8)))[0].astype(np.float32)
    with pytest.raises(StateError) as e:
        engine.run(make_pool(rows, X @ rotation))
    assert "was built from other vectors: 32 of 32 sampled tasks with unchanged text now have different vectors" in str(
        e.value
    )
    # the same vectors recomputed (float noise) are the same space
    engine.run(make_pool(rows, X + np.float32(1e-4)))
    assert engine.store.summary()["rounds"] == 2


def test_model_space_recorded_and_compared(tmp_path):
    rows, X = tasks(10), vectors_for(10)
    with Store.open(tmp_path / "s.sqlite") as store:
        pool = make_pool(rows, X)
        with store.transaction():
            store.set_identity(make_pool(rows, None), "model:sentence-transformers/all-MiniLM-L6-v2")
        store.check_identity(make_pool(rows, None), "model:sentence-transformers/all-MiniLM-L6-v2")
        with pytest.raises(
            StateError,
            match=r"built from embeddings of model 'sentence-transformers/all-MiniLM-L6-v2', "
            r"this run uses model 'BAAI/bge-small-en'",
        ):
            store.check_identity(make_pool(rows, None), "model:BAAI/bge-small-en")
        with pytest.raises(StateError, match=r"this run uses precomputed vectors"):
            store.check_identity(pool, "vectors")


def test_cli_mismatch_exit_4_then_reset_state_moves_it_aside(tmp_path):
    inp, vec = write_pool(tmp_path)
    state = tmp_path / "s.sqlite"
    out = tmp_path / "ranked.jsonl"
    args = ["prioritize", "--input", inp, "--vectors", vec, "--output", out, "--state", state, "--batch-size", "3"]
    assert cli(args).exit_code == 0
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"id": f"o{i}", "text": f"other task {i}"}) + "\n" for i in range(24)))
    args2 = ["prioritize", "--input", other, "--vectors", vec, "--output", out, "--state", state, "--batch-size", "3"]
    before = snapshot(tmp_path)
    r = cli(args2)
    assert r.exit_code == 4 and "belongs to another pool" in r.stderr and "--reset-state" in r.stderr, r.output
    assert snapshot(tmp_path) == before  # refused: output, state and inputs as they were
    r = cli(args2 + ["--reset-state"])
    assert r.exit_code == 0, r.output
    aside = sorted(tmp_path.glob("s.sqlite.replaced-*"))
    assert len(aside) == 1 and rounds_in(aside[0]) == 1  # the old state, kept whole
    assert rounds_in(state) == 1
    assert "moved" in r.stderr and str(aside[0]) in r.stderr


def test_reset_state_flag_is_documented():
    r = cli(["prioritize", "--help"])
    assert "--reset-state" in r.stdout and "never deleted" in r.stdout
