"""Rounds against a real Argilla 2.8 stack that goes down, drops connections, answers 5xx and answers slowly,
through the fault-injecting proxy (tests/services/faultproxy.py). What must hold after every fault:

- a failed round names the call that failed and why, and the CLI exits with the connector code (5);
- a push interrupted between bulks is completed by the next run: every pending record then carries the
  priorities of exactly one recorded round (no record left behind, none from another round);
- idempotent calls (reads, the bulk PUT) ride out dropped connections and 5xx bursts within the round.

Embeddings are prefilled in the state (the tests are about faults), so no round loads the model."""

from __future__ import annotations

import subprocess
import uuid

import pytest

import connectors.argilla as argilla_mod
from al_backend.config import load_config
from al_backend.errors import ConnectorError
from al_backend.round import run_project_round
from al_backend.store import Store
from connectors.argilla import ArgillaConnector
from tests.services.faultproxy import FaultProxy, Rule, al_backend_cmd, cli_env, prefill_embeddings
from tests.services.labelstudio import BBC_CLASSES

pytestmark = [pytest.mark.argilla]

N_RECORDS = 80
BULK = r"/records/bulk$"


@pytest.fixture
def dataset(argilla_server, bbc_texts, tmp_path):
    """80 BBC paragraphs, 2 per class submitted by an annotator; a state with their embeddings cached."""
    stack = argilla_server
    ws = stack.create_workspace()
    name = f"faults-{uuid.uuid4().hex[:6]}"
    rows = [{"id": f"r{i:03d}", "text": t, "truth": c} for i, (t, c) in enumerate(bbc_texts[:N_RECORDS])]
    ds = stack.create_dataset(name, ws, rows, BBC_CLASSES)
    annotator = stack.create_annotator(ws)
    labeled = {r["id"]: r["truth"] for r in rows[:10]}
    stack.submit(annotator, ds, labeled)
    state = tmp_path / "state.sqlite"
    prefill_embeddings(state, [r["text"] for r in rows], [r["truth"] for r in rows])
    return {"stack": stack, "ws": ws, "name": name, "rows": rows, "labeled": labeled, "state": state}


@pytest.fixture
def proxy(argilla_server):
    with FaultProxy(argilla_server.url) as p:
        yield p


@pytest.fixture
def small_bulks(monkeypatch):
    """Bulks of 25 records (the server takes up to 500), so an 80-record push takes three."""
    monkeypatch.setattr(argilla_mod, "BULK_MAX", 25)


def config(dataset, url: str):
    return load_config(
        None,
        env={},
        overrides={
            "argilla.api_url": url,
            "argilla.api_key": dataset["stack"].api_key,
            "argilla.dataset": dataset["name"],
            "argilla.workspace": dataset["ws"],
            "state.path": str(dataset["state"]),
            "strategy.batch_size": 10,
        },
    )


def run_round(dataset, url: str, *, timeout: float = 120.0, retries: int = 3):
    cfg = config(dataset, url)
    conn = ArgillaConnector.from_config(cfg, timeout=timeout, retries=retries)
    conn.http.backoff = 0.1
    try:
        return run_project_round(cfg, conn, progress=False)
    finally:
        conn.close()


def held(dataset) -> dict[str, dict]:
    """Per record, what the server holds: status and metadata (read directly, not through the proxy)."""
    ds = dataset["stack"].client().datasets(name=dataset["name"], workspace=dataset["ws"])
    return {str(r.id): {"status": str(r.status), "metadata": dict(r.metadata)} for r in ds.records()}


def assert_served_exactly(dataset, round_id: int) -> None:
    """Every pending record carries this round's priority, rank and round number; no record from another round."""
    with Store.open(dataset["state"], create=False) as store:
        ranking = store.load_ranking(round_id)
    records = held(dataset)
    pending = {rid for rid, r in records.items() if r["status"] == "pending"}
    assert pending == set(ranking.ids) == {r["id"] for r in dataset["rows"]} - set(dataset["labeled"])
    rounds_seen = {records[rid]["metadata"].get("al_round") for rid in pending}
    assert rounds_seen == {round_id}, f"pending records carry rounds {rounds_seen}"
    for i, rid in enumerate(ranking.ids):
        md = records[rid]["metadata"]
        assert md.get("al_priority") == pytest.approx(float(ranking.priority[i])) and md.get("al_rank") == i + 1, rid


def rounds(state) -> list:
    with Store.open(state, create=False) as store:
        return store.rounds()


# ---------------------------------------------------------------------------------------------- server down
def test_server_down_before_a_round_exits_5_names_the_call_and_records_nothing(dataset, proxy):
    proxy.go_down()
    env = cli_env(ARGILLA_API_URL=proxy.url, ARGILLA_API_KEY=dataset["stack"].api_key)
    args = [
        "prioritize",
        "--source",
        "argilla",
        "--dataset",
        dataset["name"],
        "--workspace",
        dataset["ws"],
        "--state",
        str(dataset["state"]),
        "--log-format",
        "json",
    ]
    done = subprocess.run(al_backend_cmd(*args), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 5, done.stderr
    assert "GET /api/v1/me" in done.stderr and "cannot connect" in done.stderr and "after 4 attempts" in done.stderr
    assert dataset["stack"].api_key not in done.stderr + done.stdout
    assert rounds(dataset["state"]) == []

    proxy.come_up()
    done = subprocess.run(al_backend_cmd(*args), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_served_exactly(dataset, 1)


# ---------------------------------------------------------------------------------------------- lost mid-push
def test_server_lost_between_bulks_next_run_completes_the_push(dataset, proxy, small_bulks):
    proxy.add(Rule(action="drop", method="PUT", path=BULK, skip=1))  # bulk 1 lands, then the server is gone
    with pytest.raises(ConnectorError, match=r"update records \(bulk 2/3"):
        run_round(dataset, proxy.url)
    assert [e.outcome for e in proxy.events("PUT", BULK)] == ["pass"] + ["drop"] * 4  # bulk 2 tried 4 times
    target = f"argilla dataset {dataset['name']!r} in workspace {dataset['ws']!r} at {proxy.url}"
    with Store.open(dataset["state"], create=False) as store:
        assert store.unfinished_push(target) == (1, 1, 3)
    records = held(dataset)
    assert sum("al_round" in r["metadata"] for r in records.values()) == 25  # one bulk of three arrived

    proxy.clear()
    result = run_round(dataset, proxy.url)  # the next cron run
    assert result["resumed_round"] == 1
    assert_served_exactly(dataset, 1)  # the same inputs give the same ranking: round 1's values everywhere
    with Store.open(dataset["state"], create=False) as store:
        assert store.unfinished_push(target) is None


def test_new_answers_after_an_interrupted_push_never_mix_two_rounds(dataset, proxy, small_bulks):
    proxy.add(Rule(action="drop", method="PUT", path=BULK, skip=1))
    with pytest.raises(ConnectorError):
        run_round(dataset, proxy.url)
    proxy.clear()
    more = {r["id"]: r["truth"] for r in dataset["rows"][10:15]}
    stack = dataset["stack"]
    ds = stack.client().datasets(name=dataset["name"], workspace=dataset["ws"])
    stack.submit(stack.create_annotator(dataset["ws"]), ds, more)
    dataset["labeled"].update(more)
    result = run_round(dataset, proxy.url)
    assert result["resumed_round"] == 1 and result["round"] == 2 and result["labeled"] == 15
    assert_served_exactly(dataset, 2)


def test_a_lost_answer_to_a_bulk_update_is_retried_within_the_round(dataset, proxy, small_bulks):
    """The bulk PUT is idempotent: the server applied it, the answer was lost, sending it again is safe."""
    proxy.add(Rule(action="drop_response", method="PUT", path=BULK, skip=1, count=1))
    result = run_round(dataset, proxy.url)
    assert [e.outcome for e in proxy.events("PUT", BULK)] == ["pass", "drop_response", "pass", "pass"]
    assert result["round"] == 1
    assert_served_exactly(dataset, 1)


# ---------------------------------------------------------------------------------------------- 5xx and slowness
def test_a_burst_of_5xx_is_ridden_out_within_one_round(dataset, proxy, small_bulks):
    proxy.add(Rule(status=503, method="PUT", path=BULK, skip=1, count=2))
    proxy.add(Rule(status=502, method="GET", path=r"^/api/v1/me$", count=2))
    result = run_round(dataset, proxy.url)
    assert [e.status for e in proxy.events("PUT", BULK)] == [200, 503, 503, 200, 200]
    assert [e.status for e in proxy.events("GET", r"^/api/v1/me$")][:3] == [502, 502, 200]
    assert_served_exactly(dataset, result["round"])


def test_a_burst_of_5xx_while_reading_records_is_ridden_out(dataset, proxy):
    """The records are read through the Argilla SDK: its calls must be retried like ours."""
    proxy.add(Rule(status=503, path=r"/records", count=2))
    result = run_round(dataset, proxy.url)
    statuses = [e.status for e in proxy.log if "/records" in e.path]
    assert statuses[:2] == [503, 503] and 200 in statuses[2:]
    assert_served_exactly(dataset, result["round"])


def test_answers_slower_than_the_timeout_are_retried_then_reported(dataset, proxy):
    proxy.add(Rule(action="delay", seconds=2.0, method="GET", path=r"^/api/v1/me$", count=1))
    result = run_round(dataset, proxy.url, timeout=1.0)
    slow = proxy.wait_outcome("delay:client-gone")  # the slow answer was abandoned by the client...
    assert slow.path == "/api/v1/me" and slow.upstream_status == 200
    assert [e.outcome for e in proxy.events("GET", r"^/api/v1/me$")].count("pass") >= 1  # ...and asked again
    assert_served_exactly(dataset, result["round"])

    proxy.clear()
    proxy.add(Rule(action="delay", seconds=2.0, method="GET", path=r"^/api/v1/me$"))
    with pytest.raises(ConnectorError) as e:
        run_round(dataset, proxy.url, timeout=1.0, retries=1)
    assert "GET /api/v1/me" in str(e.value) and "timed out" in str(e.value) and "after 2 attempts" in str(e.value)
    assert [r.round_id for r in rounds(dataset["state"])] == [1]
