"""A canary secret in every configuration source (TOML, environment, CLI flag) never appears in what the product
prints: log lines (text and JSON), error lines, `serve`'s start-up line, /status, /metrics, /health."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time

import httpx
import pytest

from al_backend import redact as R
from tests.hardening_util import ROOT, clean_env, cli, cli_process

CANARY = "canary-7f3a9e-SECRET"
CANARY_KEY = "canarykey0123456789abcdef"


@pytest.fixture(autouse=True)
def _fresh_registry():
    R.forget_secrets()
    yield
    R.forget_secrets()


def no_canary(*texts: str) -> None:
    for t in texts:
        assert CANARY not in t and CANARY_KEY not in t, t


# ------------------------------------------------------------------ the function and the filter
def test_redact_urls_registered_secrets_headers_and_pairs():
    R.register_secret(CANARY_KEY)
    assert (
        R.redact(f"GET http://alice:{CANARY}@ls.example:8080/api failed") == "GET http://***@ls.example:8080/api failed"
    )
    assert R.redact(f"token {CANARY_KEY} rejected") == "token *** rejected"
    assert R.redact("Authorization: Bearer abc.def123.ghi") == "Authorization: Bearer ***"
    assert R.redact('{"access_token": "xyz", "hostname": "h"}') == '{"access_token": "***", "hostname": "h"}'
    assert R.redact("https://h/api?api_key=abc123&page=2") == "https://h/api?api_key=***&page=2"
    # ordinary words stay
    for text in ("basic authentication required", "legacy token: Label Studio rejected it", "me@example.com"):
        assert R.redact(text) == text


def test_url_encoded_password_is_registered_both_ways():
    R.register_url("http://bob:p%40ss-word-99@host/")
    assert R.redact("password p@ss-word-99 or p%40ss-word-99") == "password *** or ***"


def test_logging_filter_scrubs_message_args_and_traceback(capsys):
    from al_backend.cli.main import setup_logging

    R.register_secret(CANARY_KEY)
    setup_logging("text")
    log = logging.getLogger("al_backend.test")
    try:
        raise RuntimeError(f"connect to http://u:{CANARY}@h failed with {CANARY_KEY}")
    except RuntimeError:
        log.exception("round failed for %s", f"http://u:{CANARY}@h")
    setup_logging("json")
    try:
        raise RuntimeError(f"key {CANARY_KEY}")
    except RuntimeError:
        log.exception("json %s", CANARY_KEY)
    err = capsys.readouterr().err
    no_canary(err)
    assert "round failed for http://***@h" in err and '"message": "json ***"' in err


# ------------------------------------------------------------------ CLI: environment, TOML, flags
def _ls_env(**extra):
    return {
        "LABEL_STUDIO_URL": f"http://alice:{CANARY}@127.0.0.1:9",
        "LABEL_STUDIO_API_KEY": CANARY_KEY,
        "AL_LABELSTUDIO_RETRIES": "0",
        "AL_LABELSTUDIO_TIMEOUT": "2",
        **extra,
    }


ARGILLA_ENV = {
    "ARGILLA_API_URL": f"http://alice:{CANARY}@127.0.0.1:9",
    "ARGILLA_API_KEY": CANARY_KEY,
    "AL_ARGILLA_RETRIES": "0",
    "AL_ARGILLA_TIMEOUT": "2",
}


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("tool", ["labelstudio", "argilla"])
def test_env_url_password_and_key_never_printed(tmp_path, log_format, tool):
    where = ["--project", "3"] if tool == "labelstudio" else ["--dataset", "news", "--workspace", "team"]
    r = cli(
        ["prioritize", "--source", tool, *where, "--state", tmp_path / "s.sqlite", "--log-format", log_format],
        env=_ls_env() if tool == "labelstudio" else ARGILLA_ENV,
    )
    assert r.exit_code == 5, r.output
    no_canary(r.output)
    assert "http://***@127.0.0.1:9" in r.output


def test_toml_url_password_never_printed_and_wrongly_typed_secret_not_echoed(tmp_path):
    cfg = tmp_path / "al.toml"
    cfg.write_text(
        f'[labelstudio]\nurl = "http://alice:{CANARY}@127.0.0.1:9"\napi_key = "{CANARY_KEY}"\n'
        f"retries = 0\ntimeout = 2\n"
    )
    r = cli(
        ["prioritize", "--source", "labelstudio", "--project", "3", "--state", tmp_path / "s.sqlite", "--config", cfg]
    )
    assert r.exit_code == 5, r.output
    no_canary(r.output)
    for bad in (f'api_key = ["{CANARY_KEY}"]', f'api_key = {{ k = "{CANARY_KEY}" }}', f'url = ["http://a:{CANARY}@h"]'):
        cfg.write_text(f"[labelstudio]\n{bad}\n")
        r = cli(
            [
                "prioritize",
                "--source",
                "labelstudio",
                "--project",
                "3",
                "--state",
                tmp_path / "s.sqlite",
                "--config",
                cfg,
            ]
        )
        assert r.exit_code == 2, r.output
        assert f"{cfg}: [labelstudio] " in r.stderr and "expected str" in r.stderr
        no_canary(r.output)
    cfg.write_text(f'[server]\napi_token = ["{CANARY_KEY}"]\n')
    r = cli(["serve", "--config", cfg])
    assert r.exit_code == 2 and "value not shown: it is a secret" in r.output
    no_canary(r.output)


def test_flag_values_with_credentials_never_printed(tmp_path):
    url = f"http://alice:{CANARY}@files.example/tasks.jsonl"
    r = cli(["prioritize", "--input", url, "--output", tmp_path / "o.jsonl", "--state", tmp_path / "s.sqlite"])
    assert r.exit_code == 3 and "http:/***@files.example/tasks.jsonl does not exist" in r.stderr, r.output
    no_canary(r.output)
    r = cli(["status", "--state", f"http://alice:{CANARY}@h/state.sqlite"])
    assert r.exit_code == 4
    no_canary(r.output)


def test_real_process_with_env_canary(tmp_path):
    p = cli_process(
        ["prioritize", "--source", "labelstudio", "--project", "3", "--state", tmp_path / "s.sqlite"],
        cwd=tmp_path,
        env=clean_env(**_ls_env()),
    )
    assert p.returncode == 5 and "Traceback" not in p.stderr
    no_canary(p.stdout, p.stderr)


# ------------------------------------------------------------------ serve: start-up line, /status, /metrics, /health
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_never_prints_the_canary(tmp_path):
    port = _free_port()
    token = "bearer-for-hardening-test-1"
    env = clean_env(**_ls_env(AL_API_TOKEN=token, AL_LABELSTUDIO_PROJECT="3"))
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "al_backend.cli.main",
            "serve",
            "--port",
            str(port),
            "--state",
            str(tmp_path / "p{project}.sqlite"),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        from al_backend.server import wait_healthy

        url = f"http://127.0.0.1:{port}"
        assert wait_healthy(url, proc, timeout=60)
        h = {"Authorization": f"Bearer {token}"}
        r = httpx.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": 3}}, headers=h)
        assert r.status_code == 200
        deadline = time.monotonic() + 30
        status = {}
        while time.monotonic() < deadline:
            status = httpx.get(f"{url}/status", headers=h).json()
            if status["projects"].get("3", {}).get("failed"):
                break
            time.sleep(0.2)
        assert status["projects"]["3"]["failed"] == 1
        texts = [json.dumps(status), httpx.get(f"{url}/metrics", headers=h).text, httpx.get(f"{url}/health").text]
        assert "http://***@127.0.0.1:9" in status["projects"]["3"]["last_error"]
    finally:
        proc.terminate()
        proc.wait(10)
        log.seek(0)
        output = log.read()
        log.close()
    no_canary(output, *texts)
    assert "Label Studio at http://***@127.0.0.1:9" in output  # the start-up line
    assert "Traceback" not in output
