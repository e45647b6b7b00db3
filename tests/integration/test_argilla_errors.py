"""Clear errors against a real Argilla 2.8.0: a missing dataset or workspace, a dataset without the configured
question, a wrong key, an annotator's key, an unreachable server. Each names what is wrong and never the key."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from al_backend.errors import ConnectorError
from connectors.argilla import ArgillaConnector
from tests.services.argilla import free_port

pytestmark = pytest.mark.argilla
ROOT = Path(__file__).resolve().parents[2]
TEXTS = [{"id": f"r{i}", "text": f"Shares in the firm rose {i} percent after the results."} for i in range(5)]


@pytest.fixture(scope="module")
def ws(argilla_server):
    return argilla_server.create_workspace()


@pytest.fixture(scope="module")
def dataset(argilla_server, ws):
    name = f"err-{uuid.uuid4().hex[:6]}"
    argilla_server.create_dataset(name, ws, TEXTS, ["business", "sport"])
    return name


def connector(stack, dataset, ws, **kw):
    return ArgillaConnector(kw.pop("url", stack.url), kw.pop("key", stack.api_key), dataset, ws, **kw)


def test_missing_dataset_names_it_and_lists_what_exists(argilla_server, ws, dataset):
    with pytest.raises(ConnectorError) as e:
        connector(argilla_server, "no-such-dataset", ws).pull()
    msg = str(e.value)
    assert "'no-such-dataset' not found" in msg and repr(ws) in msg and dataset in msg


def test_missing_workspace_names_it(argilla_server, dataset):
    with pytest.raises(ConnectorError) as e:
        connector(argilla_server, dataset, "no-such-workspace").pull()
    assert "workspace 'no-such-workspace' not found" in str(e.value)


def test_dataset_without_the_configured_question(argilla_server, ws, dataset):
    with pytest.raises(ConnectorError) as e:
        connector(argilla_server, dataset, ws, question="sentiment").pull()
    msg = str(e.value)
    assert "no question 'sentiment'" in msg and "questions: label" in msg


def test_dataset_without_any_label_question(argilla_server, ws):
    import argilla as rg

    name = f"noq-{uuid.uuid4().hex[:6]}"
    client = argilla_server.client()
    settings = rg.Settings(fields=[rg.TextField(name="text")], questions=[rg.TextQuestion(name="comment")])
    rg.Dataset(name=name, workspace=ws, settings=settings, client=client).create()
    with pytest.raises(ConnectorError) as e:
        connector(argilla_server, name, ws).pull()
    assert "no single-label questions" in str(e.value) and "LabelQuestion" in str(e.value)
    with pytest.raises(ConnectorError) as e:
        connector(argilla_server, name, ws, question="comment").pull()
    assert "'comment' is a text question" in str(e.value)


def test_wrong_text_field(argilla_server, ws, dataset):
    with pytest.raises(ConnectorError) as e:
        connector(argilla_server, dataset, ws, text_field="body").pull()
    assert "no field 'body'" in str(e.value) and "fields: text" in str(e.value)


def test_wrong_key(argilla_server, ws, dataset):
    key = "wrong-key-" + uuid.uuid4().hex
    with pytest.raises(ConnectorError) as e:
        connector(argilla_server, dataset, ws, key=key).pull()
    msg = str(e.value)
    assert "rejected the API key (HTTP 401" in msg and "ARGILLA_API_KEY" in msg
    assert key not in msg


def test_annotator_key_is_refused_with_a_reason(argilla_server, ws, dataset):
    key = argilla_server.create_annotator(ws)
    with pytest.raises(ConnectorError) as e:
        connector(argilla_server, dataset, ws, key=key).pull()
    assert "annotator" in str(e.value) and "owner or admin" in str(e.value) and key not in str(e.value)


def test_unreachable_server(argilla_server, ws, dataset):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(ConnectorError) as e:
        connector(argilla_server, dataset, ws, url=url, retries=1).pull()
    msg = str(e.value)
    assert f"cannot connect to {url}" in msg and "is the server running" in msg
    assert time.monotonic() - t0 < 30


def test_cli_exit_code_and_message_for_a_wrong_key(argilla_server, ws, dataset, tmp_path):
    key = "wrong-key-" + uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGILLA_", "AL_"))}
    env.update(ARGILLA_API_URL=argilla_server.url, ARGILLA_API_KEY=key)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from al_backend.cli.main import app; app()",
            "argilla",
            "check",
            "--dataset",
            dataset,
            "--workspace",
            ws,
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 5, done.stderr[-2000:]
    assert "rejected the API key" in done.stderr and key not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_url_that_is_not_the_api_root(argilla_server, ws, dataset):
    # the UI answers any unknown path with its HTML page: that must not pass for an API
    url = argilla_server.url + "/argilla"
    with pytest.raises(ConnectorError) as e:
        connector(argilla_server, dataset, ws, url=url).pull()
    assert "does not look like an Argilla 2.x server" in str(e.value) and "text/html" in str(e.value)


def test_without_workspace_the_dataset_is_found_when_unique_and_ambiguity_is_an_error(argilla_server, ws, dataset):
    pool = connector(argilla_server, dataset, None).pull()
    assert len(pool) == len(TEXTS)
    twin = f"twin-{uuid.uuid4().hex[:6]}"
    other_ws = argilla_server.create_workspace()
    argilla_server.create_dataset(twin, ws, TEXTS, ["business", "sport"])
    argilla_server.create_dataset(twin, other_ws, TEXTS, ["business", "sport"])
    with pytest.raises(ConnectorError) as e:
        connector(argilla_server, twin, None).pull()
    assert "exists in several workspaces" in str(e.value) and "--workspace" in str(e.value)
    assert ws in str(e.value) and other_ws in str(e.value)


def test_cli_check_describes_the_dataset(argilla_server, ws, dataset):
    from typer.testing import CliRunner

    from al_backend.cli.main import app

    env = {"ARGILLA_API_URL": argilla_server.url, "ARGILLA_API_KEY": argilla_server.api_key, "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["argilla", "check", "--dataset", dataset, "--workspace", ws], env=env)
    assert result.exit_code == 0, result.output
    assert "text field 'text'; label question 'label': business, sport" in result.output
    assert f"{len(TEXTS)} records in the pool: {len(TEXTS)} pending, 0 labeled" in result.output
    assert argilla_server.api_key not in result.output
