"""Every endpoint validates its body: wrong JSON shapes get 4xx naming the field, oversized bodies 413, and
nothing reaches the client as a bare 500 or the log as a traceback."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from al_backend.config import load_config
from al_backend.server import create_app

LABEL_CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
    '<Choice value="pos"/><Choice value="neg"/></Choices></View>'
)


@pytest.fixture
def client(tmp_path):
    cfg = load_config(
        None, env={}, overrides={"state.path": str(tmp_path / "p{project}.sqlite"), "server.max_body_bytes": 4096}
    )
    with TestClient(create_app(cfg, start_worker=False), raise_server_exceptions=False) as c:
        yield c


def predict(client, body):
    return client.post("/predict", json=body)


@pytest.mark.parametrize(
    "tasks,field",
    [
        ({"id": 1}, "tasks: Input should be a valid list"),
        ("abc", "tasks: Input should be a valid list"),
        ([1], "tasks[0]: Input should be a valid dictionary"),
        ([{"id": 1, "data": ["text", "x"]}], "tasks[0].data: Input should be a valid dictionary"),
        (
            [{"id": 1, "data": {"text": "ok"}}, {"id": 2, "data": "x"}],
            "tasks[1].data: Input should be a valid dictionary",
        ),
        ([{"id": [1], "data": {}}], "tasks[0].id: "),
    ],
)
def test_predict_wrong_shapes_get_422_naming_the_field(client, tasks, field):
    r = predict(client, {"tasks": tasks, "project": "3.1700000000", "label_config": LABEL_CONFIG})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(field)


def test_predict_other_wrong_fields(client):
    r = predict(client, {"tasks": [], "project": 3, "label_config": ["<View/>"]})
    assert r.status_code == 422 and r.json()["detail"].startswith("label_config: Input should be a valid string")
    r = client.post("/predict", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"].startswith("body")
    r = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]


def test_predict_odd_but_valid_values_are_answered(client):
    tasks = [
        {"id": 1, "data": {"text": 5}},
        {"id": 2, "data": {"text": None}},
        {"id": 3, "data": {"text": {"a": 1}}},
        {"id": 4, "data": {}},
        {"id": 5, "data": {"text": "fine"}, "extra": [1, 2]},
    ]
    r = predict(client, {"tasks": tasks, "project": "3.17", "label_config": LABEL_CONFIG})
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 5 and all(x["model_version"] == "none" for x in r.json()["results"])


@pytest.mark.parametrize(
    "path,body,field",
    [
        ("/setup", {"project": "3.1", "schema": 5}, "schema: Input should be a valid string"),
        (
            "/setup",
            {"project": "3.1", "schema": LABEL_CONFIG, "access_token": ["x"]},
            "access_token: Input should be a valid string",
        ),
        (
            "/webhook",
            {"action": "ANNOTATION_CREATED", "project": {"id": 3}, "task": "x"},
            "task: Input should be a valid dictionary",
        ),
        (
            "/webhook",
            {"action": ["ANNOTATION_CREATED"], "project": {"id": 3}},
            "action: Input should be a valid string",
        ),
        ("/webhook", [1, 2], "body: expected a JSON object, got an array"),
        ("/train", "x", "body: expected a JSON object, got a string"),
    ],
)
def test_other_endpoints_validate_their_bodies(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(field)


@pytest.mark.parametrize("path", ["/setup", "/webhook", "/train"])
def test_body_that_is_not_json_is_400(client, path):
    r = client.post(path, content=b"\xff\xfe{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"] == "body is not valid JSON"


@pytest.mark.parametrize("path", ["/predict", "/webhook"])
def test_body_size_limit_with_and_without_content_length(client, path):
    big = {"tasks": [{"data": {"text": "x" * 5000}}], "project": 3, "label_config": LABEL_CONFIG}
    r = client.post(path, json=big)
    assert r.status_code == 413 and "body larger than 4096 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: a streamed body is counted as it arrives
        yield b'{"tasks": [{"data": {"text": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}}], "project": 3}'

    r = client.post(path, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unexpected_failure_is_one_line_500_without_traceback(tmp_path, caplog):
    cfg = load_config(None, env={}, overrides={"state.path": str(tmp_path / "p{project}.sqlite")})

    def broken_engine(c):  # a bug cannot be produced on demand: inject one
        raise RuntimeError("engine exploded near http://u:pw-canary-42@h")

    app = create_app(cfg, engine_factory=broken_engine, start_worker=False)
    with caplog.at_level(logging.DEBUG, logger="al_backend.server"), TestClient(app, raise_server_exceptions=True) as c:
        r = c.post("/predict", json={"tasks": [{"data": {"text": "a"}}], "project": 3, "label_config": LABEL_CONFIG})
    assert r.status_code == 500
    assert r.json()["detail"] == "internal error: RuntimeError: engine exploded near http://***@h"
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert [e.getMessage() for e in errors] == ["POST /predict failed: RuntimeError: engine exploded near http://***@h"]
    assert all(rec.exc_info is None for rec in errors)  # the traceback only at debug level
    assert "pw-canary-42" not in r.text
