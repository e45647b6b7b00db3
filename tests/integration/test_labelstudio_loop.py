"""The whole loop against a real Label Studio 1.23.2 and a real `al-backend serve` with the real embedding model:
connect through POST /api/ml, cold-start seeds first, annotations -> webhook -> retrain -> reprioritisation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from al_backend.server import wait_healthy
from al_backend.store import Store
from connectors.labelstudio import LabelStudioConnector
from tests.services.labelstudio import BBC_CLASSES, free_port

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
AL_USER, AL_PASS = "ls-backend", "s3cret-basic-pass"
SERVER_TOKEN = "bearer-token-for-al-backend-tests"
AL_BACKEND = [sys.executable, "-c", "from al_backend.cli.main import main; main()"]


class Backend:
    def __init__(self, url: str, proc: subprocess.Popen, state_dir: Path, log_path: Path):
        self.url, self.proc, self.state_dir, self.log_path = url, proc, state_dir, log_path
        self.http = httpx.Client(base_url=url, auth=(AL_USER, AL_PASS), timeout=30)

    def status(self, project: int) -> dict:
        r = self.http.get("/status")
        r.raise_for_status()
        return r.json()["projects"].get(str(project), {})

    def wait_rounds(self, project: int, completed: int, timeout: float = 400) -> dict:
        """Wait until `completed` retrains finished and nothing is pending or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(project)
            if st.get("failed"):
                raise AssertionError(f"retrain failed: {st.get('last_error')}\n{self.log_tail()}")
            if st.get("completed", 0) >= completed and not st.get("pending") and not st.get("running"):
                return st
            time.sleep(0.5)
        raise AssertionError(f"no idle backend after {timeout} s: {self.status(project)}\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def state(self, project: int) -> Path:
        return self.state_dir / f"ls-{project}.sqlite"


@pytest.fixture(scope="module")
def backend(label_studio, tmp_path_factory):
    """`al-backend serve` as users run it: basic auth + bearer token, a PAT to reach Label Studio."""
    work = tmp_path_factory.mktemp("al-serve")
    port = free_port()
    log_path = work / "serve.log"
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.personal_access_token(),
        "AL_BASIC_AUTH_USER": AL_USER,
        "AL_BASIC_AUTH_PASS": AL_PASS,
        "AL_API_TOKEN": SERVER_TOKEN,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    cmd = [*AL_BACKEND, "serve", "--port", str(port), "--state", str(work / "ls-{project}.sqlite")]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    b = Backend(url, proc, work, log_path)
    if not wait_healthy(url, proc, timeout=60):
        raise AssertionError(f"al-backend serve did not start:\n{b.log_tail()}")
    yield b
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log_text = log_path.read_text(errors="replace")
    for secret in (AL_PASS, SERVER_TOKEN, label_studio.personal_access_token(), label_studio.legacy_token):
        assert secret not in log_text, "a secret reached the server log"


def connect(label_studio, backend: Backend, project: int) -> dict:
    return label_studio.api(
        "POST",
        "/api/ml",
        json={
            "url": backend.url,
            "project": project,
            "title": "al-backend",
            "is_interactive": False,
            "auth_method": "BASIC_AUTH",
            "basic_auth_user": AL_USER,
            "basic_auth_pass": AL_PASS,
            "timeout": 100,
        },
    )


@pytest.fixture(scope="module")
def loop_project(label_studio, bbc_texts):
    pid = label_studio.create_project(BBC_CLASSES, title="loop test")
    ids = label_studio.import_tasks(pid, [t for t, _ in bbc_texts])
    return {"id": pid, "ids": ids, "truth": {tid: cls for tid, (_, cls) in zip(ids, bbc_texts)}}


def served_order_checks(label_studio, project: int, result: dict, state: Path) -> None:
    """Label Studio now serves exactly the ranking al-backend recorded for its last round."""
    proj = label_studio.project(project)
    assert proj["sampling"] == "Uncertainty sampling"
    assert proj["model_version"] == result["model_version"]
    with Store.open(state, create=False) as store:
        ranked = store.load_ranking(result["round"]).ids
    ranked = [str(i) for i in ranked]
    assert ranked[: len(result["batch"])] == [str(i) for i in result["batch"]]
    c = LabelStudioConnector(label_studio.url, label_studio.legacy_token, project)
    pool = c.pull()
    unlabeled = {i for i, lab in zip(pool.ids, pool.labels) if lab is None}
    assert set(ranked) == unlabeled
    preds = label_studio.api("GET", "/api/predictions/", params={"project": project})
    current = {str(p["task"]) for p in preds if p["model_version"] == proj["model_version"]}
    assert current == unlabeled  # every unlabeled task has a prediction of the project's model version
    view_id = c.ensure_view()
    assert c.view_order(view_id)[: len(ranked)] == ranked
    nxt = label_studio.api("GET", f"/api/projects/{project}/next/")
    assert str(nxt["id"]) == ranked[0]


def test_connect_seeds_first_then_annotations_retrain_and_reprioritise(label_studio, backend, loop_project):
    pid = loop_project["id"]
    ml = connect(label_studio, backend, pid)
    assert ml["state"] in ("CO", "CONNECTED"), ml
    # /setup of a new project schedules the first round: cold-start seeds, pushed before any label exists
    first = backend.wait_rounds(pid, 1)["last_result"]
    assert first["strategy"] == "seed" and first["labeled"] == 0 and len(first["batch"]) > 0
    served_order_checks(label_studio, pid, first, backend.state(pid))

    # an annotator labels what Label Studio serves; every annotation reaches /webhook and schedules a retrain
    truth = loop_project["truth"]
    done: list[int] = []
    while len(done) < 30 or min(Counter(truth[t] for t in done).get(c, 0) for c in BBC_CLASSES) < 3:
        task = label_studio.api("GET", f"/api/projects/{pid}/next/")["id"]
        assert task not in done
        label_studio.annotate(task, truth[task])
        done.append(task)
        assert len(done) < 120, "the served order never covered every class"
    assert str(done[0]) == first["batch"][0]  # the first seed was served first

    st = backend.wait_rounds(pid, 2)
    assert st["requested"] >= len(done) + 1
    last = st["last_result"]
    assert last["labeled"] == len(done)
    assert last["model_version"] != first["model_version"]
    served_order_checks(label_studio, pid, last, backend.state(pid))
    preds = label_studio.api("GET", "/api/predictions/", params={"project": pid})
    current = [p for p in preds if p["model_version"] == last["model_version"]]
    chosen = Counter(p["result"][0]["value"]["choices"][0] for p in current)
    assert len(chosen) >= 3, chosen  # real pre-annotations from the trained head, not one constant label


def test_webhook_answers_at_once_and_floods_coalesce(label_studio, backend, loop_project):
    pid = loop_project["id"]
    before = backend.wait_rounds(pid, 1)
    event = {"action": "ANNOTATION_UPDATED", "project": {"id": pid}, "annotation": {"id": 1}}
    answers, slowest = [], 0.0
    for _ in range(30):
        t = time.perf_counter()
        r = backend.http.post("/webhook", json=event)
        slowest = max(slowest, time.perf_counter() - t)
        assert r.status_code == 200
        answers.append(r.json()["status"])
    assert slowest < 1.0  # Label Studio waits 1 s and never retries
    assert answers[0] == "scheduled" and answers.count("scheduled") <= 2 and "coalesced" in answers
    after = backend.wait_rounds(pid, before["completed"] + 1)
    assert after["requested"] == before["requested"] + 30
    assert 1 <= after["started"] - before["started"] <= 2  # one training at a time, at most one pending
    # nothing changed in Label Studio, so the round's ranking is the one already served
    assert after["last_result"]["model_version"] == before["last_result"]["model_version"]
    assert after["last_result"]["push"].get("unchanged") is True
    # Label Studio's "Start Training" button reaches the same scheduler (as a START_TRAINING webhook)
    ml_id = label_studio.api("GET", "/api/ml", params={"project": pid})[0]["id"]
    label_studio.api("POST", f"/api/ml/{ml_id}/train", json={})
    trained = backend.wait_rounds(pid, after["completed"] + 1)
    assert trained["requested"] == after["requested"] + 1


def test_predict_endpoint_returns_one_result_per_task_in_order(label_studio, backend, loop_project):
    """/predict answers with the latest head: the same choices the last round pushed, one per task, in order."""
    pid = loop_project["id"]
    proj = label_studio.project(pid)
    preds = label_studio.api("GET", "/api/predictions/", params={"project": pid})
    pushed = {
        p["task"]: p["result"][0]["value"]["choices"][0]
        for p in preds
        if p["model_version"] == proj["model_version"] and p["result"]
    }
    assert len(set(pushed.values())) >= 3
    by_class: dict[str, int] = {}
    for task, choice in sorted(pushed.items()):
        by_class.setdefault(choice, task)
    sample = list(by_class.items())[:3]
    tasks = [label_studio.api("GET", f"/api/tasks/{task}/") for _, task in sample]
    tasks.insert(1, {"id": 999999, "data": {"text": "   "}})
    r = backend.http.post(
        "/predict", json={"tasks": tasks, "project": f"{pid}.1700000000", "label_config": proj["label_config"]}
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 4
    assert results[1]["result"] == []  # no text, no guess
    got = [results[i]["result"][0]["value"]["choices"][0] for i in (0, 2, 3)]
    assert got == [choice for choice, _ in sample]
    assert all(results[i]["model_version"].startswith("al-model-") and 0 < results[i]["score"] <= 1 for i in (0, 2, 3))


def test_retrain_with_automatic_predictions_does_not_wait_on_itself(label_studio, backend, loop_project):
    """With "retrieve predictions automatically" on, listing tasks makes Label Studio call our /predict for
    tasks without a current prediction (the labeled ones) while the retrain pulls: it must not block."""
    pid = loop_project["id"]
    label_studio.api("PATCH", f"/api/projects/{pid}/", json={"evaluate_predictions_automatically": True})
    try:
        before = backend.wait_rounds(pid, 1)
        calls_before = backend.http.get("/status").json()["predict"]["calls"]
        r = backend.http.post("/webhook", json={"action": "START_TRAINING", "project": {"id": pid}})
        assert r.json()["status"] == "scheduled"
        after = backend.wait_rounds(pid, before["completed"] + 1, timeout=300)
        assert after["failed"] == 0
        assert after["last_result"]["pull_s"] < 60  # Label Studio's /predict timeout is 100 s
        # Label Studio did call /predict during that round's pull (for labeled tasks, which hold no prediction)
        assert backend.http.get("/status").json()["predict"]["calls"] > calls_before
    finally:
        label_studio.api("PATCH", f"/api/projects/{pid}/", json={"evaluate_predictions_automatically": False})


def test_auth_is_required_and_both_kinds_are_accepted(backend):
    assert httpx.get(f"{backend.url}/health").status_code == 200
    assert httpx.post(f"{backend.url}/webhook", json={"action": "START_TRAINING"}).status_code == 401
    assert httpx.get(f"{backend.url}/status", auth=(AL_USER, "wrong")).status_code == 401
    bearer = httpx.get(f"{backend.url}/status", headers={"Authorization": f"Bearer {SERVER_TOKEN}"})
    assert bearer.status_code == 200


def test_unsupported_label_config_is_refused_at_connect(label_studio, backend):
    xml = (
        '<View><Image name="img" value="$image"/>'
        '<Choices name="c" toName="img"><Choice value="a"/><Choice value="b"/></Choices></View>'
    )
    pid = label_studio.create_project([], title="image project for ml", label_config=xml)
    with label_studio.client() as c:
        r = c.post(
            "/api/ml",
            json={
                "url": backend.url,
                "project": pid,
                "title": "al-backend",
                "auth_method": "BASIC_AUTH",
                "basic_auth_user": AL_USER,
                "basic_auth_pass": AL_PASS,
            },
        )
    # Label Studio refuses the connection because /setup answered 400; it shows its own words, not our body ...
    assert r.status_code == 400 and "/setup" in r.text and "400" in r.text
    assert label_studio.api("GET", "/api/ml", params={"project": pid}) == []
    # ... so the reason is in the backend's log and in the /setup answer itself
    assert f"setup for project {pid} refused" in backend.log_tail(200) and "over <Image" in backend.log_tail(200)
    direct = backend.http.post("/setup", json={"project": f"{pid}.1", "schema": xml})
    assert direct.status_code == 400 and "al-backend cannot learn from this project" in direct.json()["detail"]


def test_prioritize_repeated_without_new_annotations_pushes_the_same_ranking(label_studio, bbc_texts, tmp_path):
    pid = label_studio.create_project(BBC_CLASSES, title="cron test")
    ids = label_studio.import_tasks(pid, [t for t, _ in bbc_texts])
    for tid, (_, cls) in list(zip(ids, bbc_texts))[:15]:
        label_studio.annotate(tid, cls)
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.legacy_token,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    cmd = [
        *AL_BACKEND,
        "prioritize",
        "--source",
        "labelstudio",
        "--project",
        str(pid),
        "--state",
        str(tmp_path / "cron.sqlite"),
        "--json",
    ]
    runs = []
    for _ in range(2):
        p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        runs.append(json.loads(p.stdout))
    a, b = runs
    assert a["pushed"] == 250 - 15 and a["labeled"] == 15
    assert b["model_version"] == a["model_version"] and b["batch"] == a["batch"]
    assert [r["id"] for r in b["top"]] == [r["id"] for r in a["top"]]
    c = LabelStudioConnector(label_studio.url, label_studio.legacy_token, pid)
    assert c.model_versions() == {a["model_version"]: 250 - 15}  # no second copy of the predictions
    nxt = label_studio.api("GET", f"/api/projects/{pid}/next/")
    assert str(nxt["id"]) == a["batch"][0]
