"""Generated request bodies against every endpoint of the ML backend: never a 5xx, every 4xx says what is wrong,
and nothing is logged as a traceback."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient
from hypothesis import event, given
from hypothesis import strategies as st

from al_backend.config import load_config
from al_backend.server import create_app
from tests.fuzz import fuzz_settings

LABEL_CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
    '<Choice value="pos"/><Choice value="neg"/></Choices></View>'
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),  # JSON has no NaN or infinity: a client cannot send them
    st.text(max_size=20),
    st.sampled_from(["3", "3.1700000000", "-1", "0", "", "x.y", "1e5"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10,
)
projects = st.one_of(
    st.integers(-5, 10**6),
    st.sampled_from(["3", "3.1700000000", "7.1"]),
    st.fixed_dictionaries({"id": st.integers(0, 50)}),
    json_values,
)
label_configs = st.one_of(
    st.just(LABEL_CONFIG),
    st.text(max_size=60),
    json_values,
    st.sampled_from(["<View/>", "<View><Text name='t' value='$t'/></View>", "<", "<!DOCTYPE x>"]),
)
tasks = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "project": projects,
        "data": st.one_of(
            st.fixed_dictionaries({"text": json_values}),
            st.dictionaries(st.text(max_size=6), json_values, max_size=3),
            json_values,
        ),
    },
)
near_valid_predict = st.fixed_dictionaries(
    {
        "tasks": st.lists(
            st.fixed_dictionaries(
                {"data": st.dictionaries(st.sampled_from(["text", "other", "$text"]), json_values, max_size=2)},
                optional={"id": st.one_of(st.integers(), st.text(max_size=5)), "project": projects},
            ),
            max_size=5,
        ),
        "project": st.sampled_from(["3.1700000000", 3, {"id": 3}]),
        "label_config": st.just(LABEL_CONFIG),
    }
)
predict_bodies = st.one_of(
    near_valid_predict,
    st.fixed_dictionaries(
        {},
        optional={
            "tasks": st.one_of(st.lists(tasks, max_size=4), json_values),
            "project": projects,
            "label_config": label_configs,
            "params": json_values,
        },
    ),
)
webhook_bodies = st.fixed_dictionaries(
    {},
    optional={
        "action": st.one_of(st.sampled_from(["ANNOTATION_CREATED", "START_TRAINING", "PROJECT_UPDATED"]), json_values),
        "project": projects,
        "task": st.one_of(tasks, json_values),
        "annotation": json_values,
    },
)
setup_bodies = st.fixed_dictionaries(
    {},
    optional={
        "project": projects,
        "schema": label_configs,
        "label_config": label_configs,
        "hostname": json_values,
        "access_token": json_values,
        "model_version": json_values,
    },
)
raw_bodies = st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz-server")
    cfg = load_config(
        None, env={}, overrides={"state.path": str(tmp / "p{project}.sqlite"), "server.max_body_bytes": 64 * 1024}
    )
    # no worker: a scheduled retrain would try to reach Label Studio; what the endpoints answer is under test
    with TestClient(create_app(cfg, start_worker=False), raise_server_exceptions=False) as c:
        yield c


def check(r) -> None:
    event(f"{r.request.url.path} {r.status_code}")
    assert r.status_code < 500, (r.request.url.path, r.status_code, r.text)
    if r.status_code >= 400:
        detail = r.json().get("detail")
        assert isinstance(detail, str) and detail, r.text


@fuzz_settings(60)
@given(body=predict_bodies)
def test_fuzz_predict(client, body, caplog):
    with caplog.at_level(logging.DEBUG, logger="al_backend.server"):
        check(client.post("/predict", json=body))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@fuzz_settings(40)
@given(
    path=st.sampled_from(["/webhook", "/setup", "/train"]), body=st.one_of(webhook_bodies, setup_bodies, json_values)
)
def test_fuzz_webhook_setup_train(client, path, body):
    check(client.post(path, json=body))


@fuzz_settings(40)
@given(
    path=st.sampled_from(["/predict", "/webhook", "/setup", "/train"]),
    raw=raw_bodies,
    ctype=st.sampled_from(["application/json", "text/plain", ""]),
)
def test_fuzz_raw_bytes(client, path, raw, ctype):
    check(client.post(path, content=raw, headers={"content-type": ctype} if ctype else {}))
