"""The ML backend app: retrain scheduling (coalescing), webhook latency, auth, setup errors, bind checks."""

from __future__ import annotations

import base64
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from al_backend.config import load_config
from al_backend.errors import ConfigError
from al_backend.server import AuthSettings, RetrainScheduler, create_app, is_loopback, parse_project, project_config

CONFIG_XML = (
    '<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
    '<Choice value="a"/><Choice value="b"/></Choices></View>'
)


def test_scheduler_runs_one_at_a_time_and_keeps_at_most_one_pending():
    gate = threading.Event()
    running, peak, runs = [0], [0], []
    lock = threading.Lock()

    def run(project):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        runs.append(project)
        gate.wait(5)
        with lock:
            running[0] -= 1
        return {"ok": project}

    s = RetrainScheduler(run)
    s.start()
    try:
        assert s.request(1) is True
        deadline = time.monotonic() + 5
        while not s.stats(1)["running"] and time.monotonic() < deadline:
            time.sleep(0.01)
        answers = [s.request(1) for _ in range(50)]  # a flood while the first retrain runs
        assert answers[0] is True and not any(answers[1:])  # one pending, the rest coalesced
        assert s.request(2) is True  # another project gets its own pending slot
        gate.set()
        assert s.wait_idle(10)
        st = s.stats(1)
        assert (st["requested"], st["coalesced"], st["started"], st["completed"]) == (51, 49, 2, 2)
        assert runs.count(1) == 2 and runs.count(2) == 1 and peak[0] == 1
    finally:
        gate.set()
        s.stop()


def test_scheduler_survives_a_failing_retrain():
    calls = []

    def run(project):
        calls.append(project)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return {"n": len(calls)}

    s = RetrainScheduler(run)
    s.start()
    try:
        s.request(3)
        assert s.wait_idle(5)
        assert s.stats(3)["failed"] == 1 and "boom" in s.stats(3)["last_error"]
        s.request(3)
        assert s.wait_idle(5)
        st = s.stats(3)
        assert st["completed"] == 1 and st["last_error"] is None and st["last_result"] == {"n": 2}
    finally:
        s.stop()


class SlowEngine:
    """An engine whose round takes a while: the webhook must not wait for it."""

    def __init__(self):
        self.predicted = []

    def predict(self, texts):
        self.predicted.append(list(texts))
        return SimpleNamespace(
            labels=["b" if "bee" in t else "a" for t in texts],
            confidence=np.full(len(texts), 0.75),
            probabilities=None,
            classes=["a", "b"],
            model_version="al-model-test",
        )


def app_with(env=None, retrain=None):
    cfg = load_config(env=env or {})
    app = create_app(cfg, engine_factory=lambda c: SlowEngine(), connector_factory=lambda c, s: None)
    if retrain is not None:
        app.state.backend.scheduler._run = retrain
    return app


def test_webhook_returns_at_once_while_a_retrain_runs():
    gate = threading.Event()
    started = threading.Event()

    def retrain(project):
        started.set()
        gate.wait(10)
        return {}

    with TestClient(app_with(retrain=retrain)) as client:
        ev = {"action": "ANNOTATION_CREATED", "project": {"id": 5}}
        assert client.post("/webhook", json=ev).json()["status"] == "scheduled"
        assert started.wait(5)
        t = time.perf_counter()
        statuses = [client.post("/webhook", json=ev).json()["status"] for _ in range(20)]
        assert time.perf_counter() - t < 1.0  # twenty answers while the training is blocked
        assert statuses[0] == "scheduled" and set(statuses[1:]) == {"coalesced"}
        assert (
            client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 5}}).json()["status"]
            == "ignored"
        )
        gate.set()


def test_predict_gives_one_result_per_task_in_order():
    with TestClient(app_with(retrain=lambda p: {})) as client:
        tasks = [
            {"id": 1, "data": {"text": "a bee"}},
            {"id": 2, "data": {"text": ""}},
            {"id": 3, "data": {"text": "ant"}},
        ]
        body = client.post(
            "/predict", json={"tasks": tasks, "project": "4.1700000000", "label_config": CONFIG_XML}
        ).json()
        res = body["results"]
        assert [r["result"][0]["value"]["choices"] if r["result"] else None for r in res] == [["b"], None, ["a"]]
        assert res[0]["score"] == 0.75 and res[0]["model_version"] == "al-model-test"
        bad = client.post("/predict", json={"tasks": tasks, "project": "4.1", "label_config": "<View/>"})
        assert bad.status_code == 400 and "found no <Choices>" in bad.json()["detail"]


def test_setup_accepts_choices_and_refuses_other_configs_clearly():
    with TestClient(app_with(retrain=lambda p: {})) as client:
        ok = client.post("/setup", json={"project": "7.1700000000", "schema": CONFIG_XML})
        assert ok.status_code == 200 and "model_version" in ok.json()
        image = '<View><Image name="i" value="$img"/><Choices name="c" toName="i"><Choice value="x"/><Choice value="y"/></Choices></View>'
        bad = client.post("/setup", json={"project": "8.1700000000", "schema": image})
        assert bad.status_code == 400
        assert "al-backend cannot learn from this project" in bad.json()["detail"] and "Image" in bad.json()["detail"]


def test_basic_auth_and_bearer_token():
    env = {"AL_BASIC_AUTH_USER": "u", "AL_BASIC_AUTH_PASS": "p4ss", "AL_API_TOKEN": "tok"}
    with TestClient(app_with(env, retrain=lambda p: {})) as client:
        assert client.get("/health").status_code == 200
        r = client.post("/webhook", json={})
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
        good = "Basic " + base64.b64encode(b"u:p4ss").decode()
        wrong = "Basic " + base64.b64encode(b"u:nope").decode()
        assert client.post("/webhook", json={}, headers={"Authorization": good}).status_code == 200
        assert client.post("/webhook", json={}, headers={"Authorization": wrong}).status_code == 401
        assert client.get("/status", headers={"Authorization": "Bearer tok"}).status_code == 200
        assert client.get("/status", headers={"Authorization": "Bearer tok2"}).status_code == 401
        # Label Studio's own webhook has no credentials: accepted only for a project set up (with auth) before
        ev = {"action": "ANNOTATION_CREATED", "project": {"id": 11}}
        assert client.post("/webhook", json=ev).status_code == 401
        setup = client.post("/setup", json={"project": "11.17", "schema": CONFIG_XML}, headers={"Authorization": good})
        assert setup.status_code == 200
        assert client.post("/setup", json={"project": "12.17", "schema": CONFIG_XML}).status_code == 401
        assert client.post("/webhook", json=ev).json()["status"] in ("scheduled", "coalesced")
        assert client.post("/webhook", json={**ev, "project": {"id": 12}}).status_code == 401


def test_auth_settings_need_both_basic_parts():
    assert not AuthSettings("u", "").enabled
    assert AuthSettings("", "", "t").check("Bearer t") and not AuthSettings("", "", "t").check(None)
    assert "p4ss" not in repr(AuthSettings("u", "p4ss", "tok")) and "tok" not in repr(AuthSettings("u", "p4ss", "tok"))


def test_bind_refuses_public_host_without_auth():
    from al_backend.cli.serve import check_bind

    cfg = load_config(env={})
    check_bind("127.0.0.1", cfg, insecure=False)
    check_bind("::1", cfg, insecure=False)
    with pytest.raises(ConfigError, match="refusing to serve on 0.0.0.0 without authentication"):
        check_bind("0.0.0.0", cfg, insecure=False)
    check_bind("0.0.0.0", cfg, insecure=True)
    check_bind("0.0.0.0", load_config(env={"AL_API_TOKEN": "t"}), insecure=False)
    with pytest.raises(ConfigError, match="both"):
        check_bind("127.0.0.1", load_config(env={"AL_BASIC_AUTH_USER": "u"}), insecure=False)
    assert is_loopback("localhost") and not is_loopback("10.0.0.1")


def test_project_ids_and_state_paths():
    assert parse_project("12.1700000000") == 12 and parse_project({"id": 4}) == 4 and parse_project("x") is None
    cfg = load_config(env={})
    assert project_config(cfg, 3).state.path == ".al-state/labelstudio-3.sqlite"
    assert project_config(cfg, 3).labelstudio.project == 3 and cfg.labelstudio.project == 0
    cfg.state.path = "/data/ls-{project}.sqlite"
    assert project_config(cfg, 9).state.path == "/data/ls-9.sqlite"
