"""The Argilla feedback loop against a real Argilla 2.8.0 stack (argilla-server + noida-db), with 200 real
BBC News paragraphs, responses submitted as an annotator user, and the real embedding model.

One dataset is shared by the tests of this module, in order: set up -> round -> read back -> repeat ->
disagreement -> watch. Each test asserts what the server holds, read back through the SDK or the search
endpoint, never what the connector believes it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from al_backend.config import load_config
from al_backend.datasets import BBC_CLASSES, load_bbc
from al_backend.round import run_project_round
from al_backend.store import Store
from connectors.argilla import ArgillaConnector

pytestmark = [pytest.mark.argilla, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
N_RECORDS = 200
SEED_LABELS = 3  # per class, submitted by the annotator before the first round
USER_GUIDELINES = (
    "# How to label\n\nPick the *topic* of the paragraph.\r\nIf two fit, pick the first in the list.\n\n"
    "<!-- reviewer: Ana -->\n"
)


def bbc_records(n: int = N_RECORDS, seed: int = 7):
    """n real BBC paragraphs, balanced over the 5 classes, with their true label and own metadata."""
    texts, labels = load_bbc(unit="paragraph", seed=seed, max_words=80)
    rng = np.random.default_rng(seed)
    by_class = {c: [i for i, lab in enumerate(labels) if lab == c] for c in BBC_CLASSES}
    rows = []
    for c in BBC_CLASSES:
        for i in rng.choice(by_class[c], size=n // len(BBC_CLASSES), replace=False):
            rows.append(int(i))
    rng.shuffle(rows)
    return [
        {
            "id": f"bbc-{i:05d}",
            "text": texts[i],
            "truth": labels[i],
            "metadata": {"source": f"bbc/{labels[i]}", "doc": i, "note": f"para {i}"},
        }
        for i in rows
    ]


def make_config(stack, dataset: str, workspace: str, state: Path, **argilla):
    overrides = {
        "argilla.api_url": stack.url,
        "argilla.api_key": stack.api_key,
        "argilla.dataset": dataset,
        "argilla.workspace": workspace,
        "state.path": str(state),
        "strategy.batch_size": 20,
    }
    overrides.update({f"argilla.{k}": v for k, v in argilla.items()})
    return load_config(None, env={}, overrides=overrides)


def server_records(stack, dataset: str, workspace: str) -> dict[str, dict]:
    """What the server holds per record: status, metadata, label suggestion, submitted labels."""
    ds = stack.client().datasets(name=dataset, workspace=workspace)
    out = {}
    for r in ds.records(with_suggestions=True, with_responses=True):
        sug = [(s.value, s.score, s.agent) for s in r.suggestions if s.question_name == "label"]
        out[str(r.id)] = {
            "status": str(r.status),
            "metadata": dict(r.metadata),
            "suggestion": sug[0] if sug else None,
            "labels": [
                x.value
                for x in r.responses
                if x.question_name == "label" and str(getattr(x.status, "value", x.status)) == "submitted"
            ],
        }
    return out


@pytest.fixture(scope="module")
def project(argilla_server, tmp_path_factory):
    """A 200-record dataset with own metadata; the annotator has submitted 3 true labels per class."""
    import argilla as rg

    stack = argilla_server
    ws = stack.create_workspace()
    name = f"bbc-{uuid.uuid4().hex[:6]}"
    records = bbc_records()
    ds = stack.create_dataset(
        name,
        ws,
        records,
        BBC_CLASSES,
        metadata_properties=[rg.TermsMetadataProperty(name="source"), rg.IntegerMetadataProperty(name="doc")],
    )
    with stack.http() as http:  # the owner's own guidelines, which the stopping note must leave as they are
        http.patch(f"/api/v1/datasets/{ds.id}", json={"guidelines": USER_GUIDELINES}).raise_for_status()
    annotator = stack.create_annotator(ws)
    seed = {}
    for c in BBC_CLASSES:
        for r in [x for x in records if x["truth"] == c][:SEED_LABELS]:
            seed[r["id"]] = c
    stack.submit(annotator, ds, seed)
    state = tmp_path_factory.mktemp("argilla-state") / "project.sqlite"
    cfg = make_config(stack, name, ws, state)
    return {
        "stack": stack,
        "ws": ws,
        "name": name,
        "records": records,
        "truth": {r["id"]: r["truth"] for r in records},
        "annotator": annotator,
        "seed": seed,
        "cfg": cfg,
        "ds": ds,
        "state": state,
        "rounds": [],
    }


def run_round(project):
    connector = ArgillaConnector.from_config(project["cfg"])
    result = run_project_round(project["cfg"], connector, progress=False)
    project["rounds"].append(result)
    return result, connector


def test_01_round_writes_priorities_to_every_pending_record(project):
    stack = project["stack"]
    before = {p.name for p in stack.client().datasets(name=project["name"], workspace=project["ws"]).settings.metadata}
    assert not before & {"al_priority", "al_rank", "al_round", "al_cluster"}

    result, connector = run_round(project)
    ranking = result["ranking"]
    held = server_records(stack, project["name"], project["ws"])
    pending = {rid for rid, r in held.items() if r["status"] == "pending"}
    assert len(held) == N_RECORDS
    assert len(pending) == N_RECORDS - len(project["seed"]) == len(ranking)
    assert set(ranking.ids) == pending  # the pool's unlabeled rows are exactly the pending records
    # the metadata properties were added to the existing dataset, with the types the UI sorts by
    props = {
        p.name: type(p).__name__
        for p in stack.client().datasets(name=project["name"], workspace=project["ws"]).settings.metadata
    }
    assert props["al_priority"] == "FloatMetadataProperty"
    assert props["al_rank"] == props["al_round"] == props["al_cluster"] == "IntegerMetadataProperty"
    for i, rid in enumerate(ranking.ids):
        md = held[rid]["metadata"]
        assert md["al_priority"] == pytest.approx(1 - i / len(ranking))
        assert md["al_rank"] == i + 1
        assert md["al_round"] == ranking.round_id
        assert md["al_cluster"] == int(ranking.cluster[i]) >= 0
    # labeled records are not ranked and get nothing
    for rid in project["seed"]:
        assert "al_priority" not in held[rid]["metadata"]
        assert held[rid]["labels"] == [project["seed"][rid]]
    assert result["labeled"] == len(project["seed"])


def dataset_json(project) -> dict:
    ds = project["stack"].client().datasets(name=project["name"], workspace=project["ws"])
    with project["stack"].http() as http:
        return http.get(f"/api/v1/datasets/{ds.id}").raise_for_status().json()


def test_01b_stopping_note_in_the_guidelines(project):
    """The round's decision is a marked block at the end of the guidelines: the owner's text before it kept
    byte for byte, replaced (never duplicated) by the next decision, nothing written when it is unchanged."""
    import dataclasses

    from connectors.argilla import NOTE_BEGIN, NOTE_END
    from tests.services.faultproxy import FaultProxy

    ranking = project["rounds"][0]["ranking"]
    decision = ranking.stopping
    assert decision is not None and decision["stop"] is False  # one round with a model: too early to stop
    guidelines = dataset_json(project)["guidelines"]
    assert guidelines.startswith(USER_GUIDELINES + "\n" + NOTE_BEGIN) and guidelines.endswith(NOTE_END)
    note = guidelines[len(USER_GUIDELINES) + 1 :]
    assert f"Keep labeling (round {ranking.round_id}, {len(project['seed'])} labels): " in note
    assert decision["reason"] in note and "\n" not in note.split("\n\n")[1]  # one line between the markers
    assert project["stack"].api_key not in guidelines and project["stack"].url not in guidelines

    with FaultProxy(project["stack"].url) as proxy:
        connector = ArgillaConnector.from_config(project["cfg"], api_url=proxy.url)
        before = dataset_json(project)["updated_at"]
        report = connector.push(ranking)  # the same ranking again: no record and no guidelines written
        assert report.pushed == 0 and "stopping_note" not in report.details
        assert proxy.events("PATCH") == [] and proxy.events("PUT") == []
        assert dataset_json(project)["updated_at"] == before and dataset_json(project)["guidelines"] == guidelines
        connector.push(dataclasses.replace(ranking, stopping=None))  # no decision: the note stays
        assert proxy.events("PATCH") == [] and dataset_json(project)["guidelines"] == guidelines

        # the owner edits the guidelines around the block; the next decision replaces only the block
        edited = "Read this first.\n\n" + guidelines + "\n\nA later addition."
        with project["stack"].http() as http:
            http.patch(f"/api/v1/datasets/{connector.dataset.id}", json={"guidelines": edited}).raise_for_status()
        stop = {
            "stop": True,
            "criterion": "budget",
            "reason": "15 labels reached the budget of 15",
            "evidence": {"labels": 15, "budget": 15},
        }
        report = connector.push(dataclasses.replace(ranking, stopping=stop))
        assert report.pushed == 0  # the records already hold this ranking
        assert len(proxy.events("PATCH", r"^/api/v1/datasets/")) == 1
        now = dataset_json(project)["guidelines"]
        assert now.count(NOTE_BEGIN) == 1 and now.count(NOTE_END) == 1
        assert now.startswith("Read this first.\n\n" + USER_GUIDELINES + "\n" + NOTE_BEGIN)
        assert now.endswith(NOTE_END + "\n\nA later addition.")
        assert (
            f"You can stop labeling (round {ranking.round_id}, 15 labels): budget: 15 labels reached the budget of 15"
        ) in now and "Keep labeling" not in now
        connector.push(dataclasses.replace(ranking, stopping=stop))
        assert len(proxy.events("PATCH", r"^/api/v1/datasets/")) == 1  # unchanged: not written again


def test_02_sorting_by_al_priority_in_argilla_gives_the_ranking(project):
    ranking = project["rounds"][0]["ranking"]
    connector = ArgillaConnector.from_config(project["cfg"])
    # the sort the UI offers annotators: metadata al_priority descending, over pending records
    assert connector.search_sorted(status="pending", by="al_priority", order="desc") == ranking.ids
    # and by rank ascending the same
    assert connector.search_sorted(status="pending", by="al_rank", order="asc") == ranking.ids


def test_03_suggestions_carry_score_and_agent(project):
    ranking = project["rounds"][0]["ranking"]
    held = server_records(project["stack"], project["name"], project["ws"])
    assert ranking.model_version and all(p is not None for p in ranking.predicted)  # 5 classes labeled: a model
    for i, rid in enumerate(ranking.ids):
        value, score, agent = held[rid]["suggestion"]
        assert value == ranking.predicted[i] in BBC_CLASSES
        assert score == pytest.approx(float(ranking.confidence[i]), abs=1e-6)
        assert 1 / len(BBC_CLASSES) - 1e-6 <= score <= 1.0
        assert agent == ranking.model_version
    # the suggestions come from a real model on real text: far better than chance on the pending records
    truth = project["truth"]
    accuracy = np.mean([held[rid]["suggestion"][0] == truth[rid] for rid in ranking.ids])
    assert accuracy > 0.5, accuracy


def test_04_record_own_metadata_survives(project):
    held = server_records(project["stack"], project["name"], project["ws"])
    for r in project["records"]:
        md = held[r["id"]]["metadata"]
        # declared properties (terms, integer) and an undeclared key (allow_extra_metadata) alike
        assert {k: md[k] for k in ("source", "doc", "note")} == r["metadata"], r["id"]


def test_05_repeated_round_without_new_responses_gives_the_same_priorities(project):
    first = server_records(project["stack"], project["name"], project["ws"])
    result, connector = run_round(project)
    second = server_records(project["stack"], project["name"], project["ws"])
    assert result["round"] == project["rounds"][0]["round"] + 1
    assert result["ranking"].ids == project["rounds"][0]["ranking"].ids
    pending = [rid for rid, r in second.items() if r["status"] == "pending"]
    assert len(pending) == len(project["rounds"][0]["ranking"])
    for rid in pending:
        a, b = first[rid]["metadata"], second[rid]["metadata"]
        assert b["al_priority"] == a["al_priority"] and b["al_rank"] == a["al_rank"], rid
        assert b["al_round"] == result["round"]  # rewritten by the new round, same values
        assert second[rid]["suggestion"][0] == first[rid]["suggestion"][0]


def test_05b_an_interrupted_push_is_completed_by_the_next_run(project):
    """A run killed mid-push leaves records without priorities; the next run completes that push first."""
    stack, cfg = project["stack"], project["cfg"]
    connector = ArgillaConnector.from_config(cfg)
    held = server_records(stack, project["name"], project["ws"])
    pending = sorted(rid for rid, r in held.items() if r["status"] == "pending")
    lost = pending[::2]  # as if the bulks holding these never reached the server
    ds = stack.client().datasets(name=project["name"], workspace=project["ws"])
    ids = stack.record_ids(ds)
    own = {r["id"]: r["metadata"] for r in project["records"]}
    with stack.http() as http:
        http.put(
            f"/api/v1/datasets/{ds.id}/records/bulk",
            json={"items": [{"id": ids[rid], "metadata": own[rid]} for rid in lost]},
        ).raise_for_status()
    with Store.open(project["state"], create=False) as store:
        last = store.last_round().round_id
        store.set_push_progress(last, connector.describe(), 1, 3)
    result, _ = run_round(project)
    assert result["resumed_round"] == last
    held = server_records(stack, project["name"], project["ws"])
    ranking = result["ranking"]
    assert sorted(ranking.ids) == pending
    for i, rid in enumerate(ranking.ids):
        md = held[rid]["metadata"]
        assert md["al_priority"] == pytest.approx(float(ranking.priority[i])) and md["al_rank"] == i + 1, rid
        # written by the resumed push (the runner skips pushing an identical ranking twice) or by this round
        assert md["al_round"] in (last, result["round"]), rid
    with Store.open(project["state"], create=False) as store:
        assert store.unfinished_push(connector.describe()) is None


def test_06_majority_label_and_disagreement_recorded(project):
    stack, seed = project["stack"], project["seed"]
    ids = list(seed)
    agree, split = ids[0], ids[1]
    other = next(c for c in BBC_CLASSES if c != seed[split])
    a2, a3 = stack.create_annotator(project["ws"]), stack.create_annotator(project["ws"])
    stack.submit(a2, project["ds"], {agree: seed[agree], split: other})
    stack.submit(a3, project["ds"], {split: other})  # 2 against 1: the majority overturns the first answer
    connector = ArgillaConnector.from_config(project["cfg"])
    pool = connector.pull()
    row = {tid: i for i, tid in enumerate(pool.ids)}
    assert pool.labels[row[agree]] == seed[agree]
    assert pool.meta[row[agree]]["disagreement"] is False
    assert pool.labels[row[split]] == other
    assert pool.meta[row[split]]["disagreement"] is True
    assert sorted(pool.meta[row[split]]["annotation_labels"]) == sorted([seed[split], other, other])
    result, _ = run_round(project)
    with Store.open(project["state"], create=False) as store:
        rows = store.conn.execute("SELECT item_id, labels, chosen FROM disagreements").fetchall()
    assert [(r[0], r[2]) for r in rows] == [(split, other)]
    assert sorted(json.loads(rows[0][1])) == sorted([seed[split], other, other])


def test_07_watch_retrains_after_n_submissions_and_not_before(project):
    from al_backend.cli.argilla import make_watcher

    stack, cfg = project["stack"], project["cfg"]
    connector = ArgillaConnector.from_config(cfg)
    watcher = make_watcher(cfg, connector, min_new=5, wait=30)
    assert watcher.baseline is None  # no watch has run on this state yet
    first = watcher.poll_once()
    assert first.ran and first.reason == "initial"
    round_after_initial = first.result["round"]

    def rounds_in_state():
        with Store.open(project["state"], create=False) as store:
            return len(store.rounds())

    n_rounds = rounds_in_state()
    held = server_records(stack, project["name"], project["ws"])
    batch = [rid for rid in first.result["batch"] if held[rid]["status"] == "pending"]
    truth = project["truth"]

    stack.submit(project["annotator"], project["ds"], {rid: truth[rid] for rid in batch[:4]})
    idle = watcher.poll_once()
    assert not idle.ran and idle.new_submitted == 4 and idle.reason == "waiting"
    assert rounds_in_state() == n_rounds  # 4 < 5: no retraining
    held = server_records(stack, project["name"], project["ws"])
    assert {r["metadata"]["al_round"] for r in held.values() if r["status"] == "pending"} == {round_after_initial}

    stack.submit(project["annotator"], project["ds"], {rid: truth[rid] for rid in batch[4:5]})
    due = watcher.poll_once()
    assert due.ran and due.reason == "new responses" and due.new_submitted == 5
    assert rounds_in_state() == n_rounds + 1
    assert due.result["labeled"] == first.result["labeled"] + 5
    held = server_records(stack, project["name"], project["ws"])
    pending = [r for r in held.values() if r["status"] == "pending"]
    assert len(pending) == len(due.result["ranking"])
    assert {r["metadata"]["al_round"] for r in pending} == {due.result["round"]}

    # a restarted watcher reads the baseline from the state: nothing new, no round
    again = make_watcher(cfg, ArgillaConnector.from_config(cfg), min_new=5, wait=30)
    assert again.baseline is not None and not again.poll_once().ran
    assert rounds_in_state() == n_rounds + 1


def test_08_vector_field_receives_the_embeddings(project, argilla_server, tmp_path):
    import argilla as rg

    stack = argilla_server
    name = f"vec-{uuid.uuid4().hex[:6]}"
    records = project["records"][:40]
    stack.create_dataset(
        name,
        project["ws"],
        records,
        BBC_CLASSES,
        metadata_properties=[rg.TermsMetadataProperty(name="source"), rg.IntegerMetadataProperty(name="doc")],
    )
    cfg = make_config(stack, name, project["ws"], tmp_path / "vec.sqlite", vector_field="al_embedding")
    result = run_project_round(cfg, ArgillaConnector.from_config(cfg), progress=False)
    ds = stack.client().datasets(name=name, workspace=project["ws"])  # reloaded: the schema gained a vector field
    assert ds.settings.vectors["al_embedding"].dimensions == 384
    got = {str(r.id): np.asarray(r.vectors["al_embedding"]) for r in ds.records(with_vectors=["al_embedding"])}
    assert len(got) == 40 == len(result["ranking"])
    from al_backend.embedding import Embedder

    text_of = {r["id"]: r["text"] for r in records}
    with Store.open(cfg.state.path, create=False) as store:
        expected = Embedder.from_config(cfg, store, progress=False).embed([text_of[i] for i in sorted(got)])
    np.testing.assert_allclose(np.stack([got[i] for i in sorted(got)]), expected, atol=1e-6)


def test_09_cli_prioritize_and_watch(project, tmp_path):
    """The documented commands, as a user runs them: environment for the connection, flags for the rest."""
    stack = project["stack"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGILLA_", "AL_"))}
    env.update(ARGILLA_API_URL=stack.url, ARGILLA_API_KEY=stack.api_key, HF_HUB_OFFLINE="1")
    state = tmp_path / "cli.sqlite"
    # start from the module's state (its embedding cache spares the subprocess embedding 200 texts again),
    # minus the watcher's counters, so the watch below begins with its initial round
    import sqlite3

    with Store.open(project["state"], create=False) as src, sqlite3.connect(state) as dst:
        src.conn.backup(dst)
        dst.execute("DELETE FROM meta WHERE key LIKE 'watch.%'")
    with Store.open(state, create=False) as store:
        last = store.last_round().round_id
    base = [sys.executable, "-c", "from al_backend.cli.main import app; app()"]
    cmd = [
        *base,
        "prioritize",
        "--source",
        "argilla",
        "--dataset",
        project["name"],
        "--workspace",
        project["ws"],
        "--state",
        str(state),
        "--json",
    ]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["round"] == last + 1 and summary["embedded"] == 0
    assert summary["pushed"] == summary["ranked"] > 0
    assert stack.api_key not in done.stdout + done.stderr

    watch = [
        *base,
        "argilla",
        "watch",
        "--dataset",
        project["name"],
        "--workspace",
        project["ws"],
        "--state",
        str(state),
        "--every",
        "1",
        "--min-new",
        "3",
        "--max-rounds",
        "1",
    ]
    done = subprocess.run(watch, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"round {last + 2} (initial" in done.stderr and "stopped after 1 rounds" in done.stderr, done.stderr[-2000:]
    assert stack.api_key not in done.stdout + done.stderr


def test_10_watch_survives_an_argilla_restart(project):
    """The server goes away mid-watch: the poll fails, is reported, and the watcher carries on once it is back."""
    from al_backend.cli.argilla import make_watcher

    stack, cfg = project["stack"], project["cfg"]
    watcher = make_watcher(cfg, ArgillaConnector.from_config(cfg), min_new=2, wait=30)
    assert watcher.baseline is not None and not watcher.poll_once().ran  # test_07's counters, nothing new
    held = server_records(stack, project["name"], project["ws"])
    todo = [rid for rid, r in held.items() if r["status"] == "pending"][:2]
    stack.stop_server()
    events = []

    def on_poll(res):
        events.append(res.reason)
        if res.reason == "error":
            assert "cannot connect" in res.error or "ConnectError" in res.error, res.error
            stack.start_server()
            stack.submit(project["annotator"], project["ds"], {rid: project["truth"][rid] for rid in todo})

    watcher.run(0.2, max_rounds=1, max_polls=5, on_poll=on_poll)
    assert events == ["error", "new responses"]
    held = server_records(stack, project["name"], project["ws"])
    assert all(held[rid]["status"] == "completed" for rid in todo)
    last = watcher.history[-1].result
    assert {r["metadata"]["al_round"] for r in held.values() if r["status"] == "pending"} == {last["round"]}
