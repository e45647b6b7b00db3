"""Rounds against a real Label Studio 1.23.2 that goes down, drops connections, answers 5xx and answers slowly,
through the fault-injecting proxy in tests/services/faultproxy.py. What must hold after every fault:

- a failed round says which call failed and why, and exits with the connector code (5);
- a round interrupted mid-push is completed by the next run, with exactly one prediction per unlabeled task of
  the project's model version (no duplicates, no gaps) and the scores of the recorded ranking;
- Label Studio never serves a ranking that mixes two rounds.

Embeddings are prefilled in the state (the tests are about faults), so no round loads the model."""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import pytest

from al_backend.config import Config
from al_backend.errors import ConnectorError
from al_backend.round import run_project_round
from al_backend.store import Store
from connectors.labelstudio import LabelStudioConnector
from tests.services.faultproxy import FaultProxy, Rule, al_backend_cmd, cli_env, prefill_embeddings
from tests.services.labelstudio import BBC_CLASSES

pytestmark = [pytest.mark.labelstudio]

N_TASKS = 60
IMPORT = r"/import/predictions$"


@pytest.fixture
def project(label_studio, bbc_texts, tmp_path):
    """A fresh project of 60 BBC paragraphs, 10 annotated (2 per class), its state with embeddings cached."""
    rows = bbc_texts[:N_TASKS]
    pid = label_studio.create_project(BBC_CLASSES, title=f"faults {tmp_path.name[-20:]}")
    ids = label_studio.import_tasks(pid, [t for t, _ in rows])
    for tid, (_, cls) in list(zip(ids, rows))[:10]:
        label_studio.annotate(tid, cls)
    state = tmp_path / "state.sqlite"
    prefill_embeddings(state, [t for t, _ in rows], [c for _, c in rows])
    return {"id": pid, "ids": ids, "rows": rows, "state": state, "labeled": set(ids[:10])}


@pytest.fixture
def proxy(label_studio):
    with FaultProxy(label_studio.url) as p:
        yield p


def config(state) -> Config:
    cfg = Config()
    cfg.state.path = str(state)
    cfg.strategy.batch_size = 10
    return cfg


def connector(url: str, label_studio, pid: int, **kw) -> LabelStudioConnector:
    kw.setdefault("retries", 3)
    c = LabelStudioConnector(url, label_studio.legacy_token, pid, **kw)
    c.http.backoff = kw.pop("backoff", 0.1)
    return c


def run_round(url, label_studio, project, **kw):
    conn = connector(url, label_studio, project["id"], **kw)
    try:
        return run_project_round(config(project["state"]), conn, progress=False)
    finally:
        conn.close()


def rounds(state) -> list:
    with Store.open(state, create=False) as store:
        return store.rounds()


def assert_served_exactly(label_studio, project, round_id: int) -> None:
    """Label Studio serves this round's ranking: one prediction per unlabeled task of the project's version,
    scores = 1 - priority of the recorded ranking, nothing missing, nothing twice, no other al- version left."""
    with Store.open(project["state"], create=False) as store:
        ranking = store.load_ranking(round_id)
    proj = label_studio.project(project["id"])
    assert proj["sampling"] == "Uncertainty sampling"
    assert proj["model_version"] == ranking.model_version
    preds = label_studio.api("GET", "/api/predictions/", params={"project": project["id"]})
    ours = [p for p in preds if p["model_version"] == ranking.model_version]
    per_task = Counter(str(p["task"]) for p in ours)
    assert max(per_task.values()) == 1, f"duplicated predictions: {[t for t, n in per_task.items() if n > 1]}"
    unlabeled = {str(t) for t in project["ids"]} - {str(t) for t in project["labeled"]}
    assert set(per_task) == unlabeled == set(ranking.ids), "missing or extra predictions"
    expected = {tid: 1.0 - p for tid, p in zip(ranking.ids, ranking.priority)}
    assert all(abs(p["score"] - expected[str(p["task"])]) < 1e-9 for p in ours)
    others = {p["model_version"] for p in preds if p["model_version"] != ranking.model_version}
    assert not {v for v in others if v.startswith("al-")}, f"an older round is still served too: {others}"
    nxt = label_studio.api("GET", f"/api/projects/{project['id']}/next/")
    assert str(nxt["id"]) == ranking.ids[0]


# ---------------------------------------------------------------------------------------------- server down
def test_server_down_before_a_round_exits_5_names_the_call_and_records_nothing(label_studio, project, proxy):
    proxy.go_down()
    env = cli_env(LABEL_STUDIO_URL=proxy.url, LABEL_STUDIO_API_KEY=label_studio.legacy_token)
    args = [
        "prioritize",
        "--source",
        "labelstudio",
        "--project",
        str(project["id"]),
        "--state",
        str(project["state"]),
        "--log-format",
        "json",
    ]
    done = subprocess.run(al_backend_cmd(*args), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 5, done.stderr
    assert f"GET /api/projects/{project['id']}/" in done.stderr and "cannot connect" in done.stderr
    assert "after 4 attempts" in done.stderr  # retried with backoff up to the bound first
    assert label_studio.legacy_token not in done.stderr + done.stdout
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]  # --log-format json: every line
    assert lines[-1]["level"] == "error" and lines[-1]["exit_code"] == 5 and "cannot connect" in lines[-1]["message"]
    assert sum("retry" in line["message"] for line in lines) == 3
    assert rounds(project["state"]) == []

    proxy.come_up()  # the server is back: the next scheduled run just works
    done = subprocess.run(al_backend_cmd(*args), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [r.round_id for r in rounds(project["state"])] == [1]
    assert_served_exactly(label_studio, project, 1)


def test_dropped_connections_during_the_pull_are_retried_within_the_round(label_studio, project, proxy):
    proxy.add(Rule(action="drop", method="GET", path=r"^/api/tasks", count=2))
    result = run_round(proxy.url, label_studio, project)
    assert [e.outcome for e in proxy.events("GET", r"^/api/tasks")][:3] == ["drop", "drop", "pass"]
    assert result["round"] == 1 and result["pushed"] == N_TASKS - 10
    assert_served_exactly(label_studio, project, 1)


def test_dry_run_ranks_but_writes_nothing_to_label_studio_or_the_state(label_studio, project, proxy):
    conn = connector(proxy.url, label_studio, project["id"])
    result = run_project_round(config(project["state"]), conn, dry_run=True, progress=False)
    conn.close()
    assert result["dry_run"] and result["pushed"] == 0 and len(result["ranking"]) == N_TASKS - 10
    assert {e.method for e in proxy.log} == {"GET"}, [(e.method, e.path) for e in proxy.log]
    assert rounds(project["state"]) == []
    assert label_studio.api("GET", "/api/predictions/", params={"project": project["id"]}) == []


# ---------------------------------------------------------------------------------------------- lost mid-push
def test_answer_lost_after_label_studio_applied_the_import_next_run_completes_without_duplicates(
    label_studio, project, proxy
):
    """The worst moment: Label Studio stored the predictions, the answer never came back."""
    proxy.add(Rule(action="drop_response", method="POST", path=IMPORT, count=1))
    with pytest.raises(ConnectorError, match=r"import predictions \(POST /api/projects/\d+/import/predictions\)"):
        run_round(proxy.url, label_studio, project)
    assert [e.outcome for e in proxy.events("POST", IMPORT)] == ["drop_response"]  # sent once, never repeated
    with Store.open(project["state"], create=False) as store:
        assert store.unfinished_push(f"Label Studio project {project['id']} at {proxy.url}") == (1, 0, 1)
        first = store.load_ranking(1)
    assert label_studio.project(project["id"])["model_version"] != first.model_version  # not activated yet

    proxy.reset_log()
    result = run_round(proxy.url, label_studio, project)  # the next cron run
    assert result["resumed_round"] == 1
    assert proxy.events("POST", IMPORT) == []  # what Label Studio already held was not imported again
    assert_served_exactly(label_studio, project, result["round"])
    assert result["model_version"] == first.model_version  # same inputs, same ranking


def test_connection_lost_between_chunks_next_run_replaces_the_partial_push(label_studio, project, proxy):
    proxy.add(Rule(action="drop", method="POST", path=IMPORT, skip=1))  # chunk 1 lands, then the server is gone
    with pytest.raises(ConnectorError):
        run_round(proxy.url, label_studio, project, push_chunk=20)
    assert [e.outcome for e in proxy.events("POST", IMPORT)] == ["pass", "drop"]
    version = rounds(project["state"])[0].model_version
    partial = [
        p
        for p in label_studio.api("GET", "/api/predictions/", params={"project": project["id"]})
        if p["model_version"] == version
    ]
    assert len(partial) == 20  # half a ranking sits in Label Studio, not served (model_version not switched)

    proxy.clear()
    result = run_round(proxy.url, label_studio, project, push_chunk=20)
    assert result["resumed_round"] == 1
    assert_served_exactly(label_studio, project, result["round"])


def test_new_labels_after_an_interrupted_push_never_mix_two_rounds(label_studio, project, proxy):
    proxy.add(Rule(action="drop", method="POST", path=IMPORT, skip=1))
    with pytest.raises(ConnectorError):
        run_round(proxy.url, label_studio, project, push_chunk=20)
    proxy.clear()
    # annotators keep working while the tool was unreachable from al-backend
    rows = dict(zip(project["ids"], project["rows"]))
    for tid in project["ids"][10:15]:
        label_studio.annotate(tid, rows[tid][1])
        project["labeled"].add(tid)
    result = run_round(proxy.url, label_studio, project, push_chunk=20)
    assert result["resumed_round"] == 1 and result["round"] == 2 and result["labeled"] == 15
    assert_served_exactly(label_studio, project, 2)  # only round 2's predictions are served, round 1's pruned


# ---------------------------------------------------------------------------------------------- 5xx and slowness
def test_a_burst_of_5xx_is_ridden_out_within_one_round(label_studio, project, proxy):
    proxy.add(Rule(status=502, method="GET", path=r"^/api/tasks", count=2))
    proxy.add(Rule(status=503, method="GET", path=r"/model-versions/", count=3))
    proxy.add(Rule(status=500, method="PATCH", path=rf"^/api/projects/{project['id']}/$", count=1))
    result = run_round(proxy.url, label_studio, project)
    assert [e.status for e in proxy.events("GET", r"^/api/tasks")][:3] == [502, 502, 200]
    assert [e.status for e in proxy.events("GET", r"/model-versions/")][:4] == [503, 503, 503, 200]
    assert [e.status for e in proxy.events("PATCH")][:2] == [500, 200]
    assert_served_exactly(label_studio, project, result["round"])


def test_a_5xx_on_the_import_is_not_blindly_repeated_and_the_next_run_completes(label_studio, project, proxy):
    proxy.add(Rule(status=500, method="POST", path=IMPORT, count=1))
    with pytest.raises(ConnectorError) as e:
        run_round(proxy.url, label_studio, project)
    assert "import predictions" in str(e.value) and "HTTP 500" in str(e.value)
    assert len(proxy.events("POST", IMPORT)) == 1
    result = run_round(proxy.url, label_studio, project)
    assert result["resumed_round"] == 1
    assert_served_exactly(label_studio, project, result["round"])


def test_answers_slower_than_the_timeout_are_retried_then_reported(label_studio, project, proxy):
    proxy.add(Rule(action="delay", seconds=2.0, method="GET", path=r"^/api/tasks", count=1))
    result = run_round(proxy.url, label_studio, project, timeout=1.0)
    slow = proxy.wait_outcome("delay:client-gone")  # the slow answer was abandoned by the client...
    assert slow.path.startswith("/api/tasks") and slow.upstream_status == 200
    assert [e.outcome for e in proxy.events("GET", r"^/api/tasks")].count("pass") == 1  # ...and asked again
    assert_served_exactly(label_studio, project, result["round"])

    proxy.clear()
    proxy.add(Rule(action="delay", seconds=2.0, method="GET", path=r"^/api/tasks"))  # slow for good
    with pytest.raises(ConnectorError) as e:
        run_round(proxy.url, label_studio, project, timeout=1.0, retries=1)
    msg = str(e.value)
    assert "list tasks (GET /api/tasks)" in msg and "timed out" in msg and "after 2 attempts" in msg
    assert [r.round_id for r in rounds(project["state"])] == [1]  # the failed round recorded nothing
