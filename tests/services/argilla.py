"""A real Argilla 2.8.0 stack for the integration tests: noida-db (Elasticsearch API + Redis) and
argilla-server, each on a free loopback port, data in a temporary directory.

Installed by `scripts/install-argilla.sh` into `.services/argilla-venv` (or $AL_ARGILLA_VENV).
`python -m tests.services.argilla` starts a stack by hand and prints its URL and owner key.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = ROOT / ".services" / "argilla-venv"
INSTALL_HINT = (
    "the Argilla test stack is not installed: run `scripts/install-argilla.sh` "
    "(the README's test command does it), or set AL_ARGILLA_VENV to a venv with "
    "argilla-server==2.8.0 and noida-db==0.2.3"
)
OWNER_API_KEY = "al-backend.owner.apikey"  # a throwaway key for a throwaway server
OWNER_PASSWORD = "owner-password-1234"
ANNOTATOR_PASSWORD = "annotator-password-1234"

_BOOTSTRAP = """
from argilla_server.cli.database.migrate import migrate_db
from argilla_server.cli.database.users.create_default import create_default
migrate_db(revision="head")
create_default(api_key={key!r}, password={password!r}, quiet=True)
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _venv() -> Path:
    return Path(os.environ.get("AL_ARGILLA_VENV", DEFAULT_VENV))


def _noida_binary(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages/noida_db/noida-db"))
    if not found:
        raise RuntimeError(INSTALL_HINT)
    return found[0]


def _fast_tmp() -> str | None:
    """tmpfs when there is one: the server's SQLite writes are most of the cost of logging records."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


@dataclass
class ArgillaStack:
    """A running stack: `url`, the owner's `api_key`, and helpers to set up test data."""

    url: str
    api_key: str
    run_dir: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    start_seconds: float = 0.0
    _server_cmd: list[str] = field(default_factory=list, repr=False)
    _server_env: dict[str, str] = field(default_factory=dict, repr=False)

    # -- raw HTTP as any user --------------------------------------------------------------
    def http(self, api_key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-Argilla-Api-Key": api_key or self.api_key}, timeout=120)

    def client(self, api_key: str | None = None):
        import argilla as rg

        return rg.Argilla(api_url=self.url, api_key=api_key or self.api_key, timeout=120)

    # -- set-up helpers -------------------------------------------------------------------
    def create_workspace(self, name: str | None = None) -> str:
        import argilla as rg

        name = name or f"ws-{uuid.uuid4().hex[:8]}"
        client = self.client()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the SDK warns when the workspace does not exist yet
            missing = client.workspaces(name) is None
        if missing:
            rg.Workspace(name=name, client=client).create()
        return name

    def create_dataset(
        self,
        name: str,
        workspace: str,
        records: Iterable[Mapping],
        labels: list[str],
        *,
        text_field: str = "text",
        question: str = "label",
        extra_fields: Iterable[str] = (),
        extra_questions: Iterable = (),
        metadata_properties: Iterable = (),
        vectors: Iterable = (),
    ):
        """Create a dataset (TaskDistribution(min_submitted=1)) and log `records`: dicts with "id",
        `text_field` and optionally "metadata" (a dict). Returns the SDK Dataset."""
        import argilla as rg

        client = self.client()
        records = list(records)
        declared = {p.name for p in metadata_properties} if metadata_properties else set()
        metadata_properties = list(metadata_properties)
        extra = {k for row in records for k in (row.get("metadata") or {})} - declared
        settings = rg.Settings(
            fields=[rg.TextField(name=text_field), *(rg.TextField(name=f) for f in extra_fields)],
            questions=[rg.LabelQuestion(name=question, labels=list(labels)), *extra_questions],
            metadata=metadata_properties or None,
            vectors=list(vectors) or None,
            distribution=rg.TaskDistribution(min_submitted=1),
            allow_extra_metadata=bool(extra),  # undeclared metadata keys are kept, not filterable
        )
        dataset = rg.Dataset(name=name, workspace=workspace, settings=settings, client=client).create()
        batch = [
            rg.Record(
                id=str(row["id"]),
                fields={text_field: row[text_field], **{f: row.get(f, "-") for f in extra_fields}},
                metadata=dict(row.get("metadata") or {}),
            )
            for row in records
        ]
        if batch:
            dataset.records.log(batch, batch_size=500)
        return dataset

    def create_annotator(self, workspace: str, username: str | None = None) -> str:
        """Create an annotator in `workspace`; returns the annotator's own API key."""
        username = username or f"annotator-{uuid.uuid4().hex[:8]}"
        with self.http() as http:
            created = http.post(
                "/api/v1/users",
                json={
                    "username": username,
                    "first_name": username,
                    "password": ANNOTATOR_PASSWORD,
                    "role": "annotator",
                },
            )
            created.raise_for_status()
            user = created.json()
            ws = self.client().workspaces(workspace)
            http.post(f"/api/v1/workspaces/{ws.id}/users", json={"user_id": user["id"]}).raise_for_status()
        return user["api_key"]

    def record_ids(self, dataset) -> dict[str, str]:
        """external id -> server record UUID, for every record of `dataset`."""
        return {str(r.id): str(r._server_id) for r in dataset.records(with_suggestions=False)}

    def submit(self, annotator_key: str, dataset, answers: Mapping[str, str], question: str = "label") -> int:
        """Submit `answers` (external id -> label) as the annotator, through the annotation endpoint
        the UI uses. Returns how many were submitted."""
        server_ids = self.record_ids(dataset)
        with self.http(annotator_key) as http:
            for external_id, label in answers.items():
                reply = http.post(
                    f"/api/v1/records/{server_ids[str(external_id)]}/responses",
                    json={"values": {question: {"value": label}}, "status": "submitted"},
                )
                if reply.status_code != 201:
                    raise RuntimeError(f"submitting {external_id}: {reply.status_code} {reply.text}")
        return len(answers)

    # -- lifecycle ------------------------------------------------------------------------
    def start_server(self, timeout: float = 90) -> None:
        """(Re)start argilla-server on the same port and data; returns once /api/v1/version answers."""
        log = self.run_dir / "argilla.log"
        proc = subprocess.Popen(
            self._server_cmd,
            env=self._server_env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes.append(proc)
        _wait(f"{self.url}/api/v1/version", "argilla-server", proc, log, timeout)

    def stop_server(self) -> None:
        """Stop argilla-server only (noida keeps the search index and Redis), as an outage would."""
        proc = self.processes.pop()
        _terminate(proc)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        self.processes.clear()


def _terminate(proc: subprocess.Popen, grace: float = 15) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


def _wait(url: str, what: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; log {log}:\n{_tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready at {url} after {timeout:.0f} s; log {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_stack(run_dir: Path | None = None, timeout: float = 120) -> ArgillaStack:
    """Start noida-db and argilla-server on free loopback ports; raises RuntimeError when not installed
    or when a service does not come up (with the tail of its log)."""
    venv = _venv()
    python = venv / "bin" / "python"
    if not python.exists():
        raise RuntimeError(INSTALL_HINT)
    noida = _noida_binary(venv)
    run_dir = Path(run_dir or tempfile.mkdtemp(prefix="al-argilla-", dir=_fast_tmp()))
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    es_port, redis_port, argilla_port = free_port(), free_port(), free_port()
    stack = ArgillaStack(url=f"http://127.0.0.1:{argilla_port}", api_key=OWNER_API_KEY, run_dir=run_dir)
    try:
        noida_log = run_dir / "noida.log"
        stack.processes.append(
            subprocess.Popen(
                [
                    str(noida),
                    "start",
                    "--data-dir",
                    str(run_dir / "noida"),
                    "--host",
                    "127.0.0.1",
                    "--only",
                    "redis,elasticsearch",
                    "--elasticsearch-port",
                    str(es_port),
                    "--redis-port",
                    str(redis_port),
                ],
                stdout=noida_log.open("wb"),
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        _wait(f"http://127.0.0.1:{es_port}/_cluster/health", "noida-db", stack.processes[0], noida_log, 30)

        env = {k: v for k, v in os.environ.items() if not k.startswith("ARGILLA_")}
        env.update(
            ARGILLA_HOME_PATH=str(run_dir / "home"),
            ARGILLA_ELASTICSEARCH=f"http://127.0.0.1:{es_port}",
            ARGILLA_SEARCH_ENGINE="elasticsearch",
            ARGILLA_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            ARGILLA_ENABLE_TELEMETRY="0",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_OFFLINE="1",
            VIRTUAL_ENV=str(venv),
            PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        )
        env.pop("PYTHONPATH", None)
        boot_log = run_dir / "bootstrap.log"
        with boot_log.open("wb") as out:
            done = subprocess.run(
                [str(python), "-c", _BOOTSTRAP.format(key=OWNER_API_KEY, password=OWNER_PASSWORD)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
            )
        if done.returncode != 0:
            raise RuntimeError(f"argilla migrations failed; log {boot_log}:\n{_tail(boot_log)}")

        stack._server_cmd = [
            str(python),
            "-m",
            "argilla_server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(argilla_port),
            "--no-access-log",
        ]
        stack._server_env = env
        stack.start_server(timeout - (time.monotonic() - t0))
    except BaseException:
        stack.stop()
        raise
    stack.start_seconds = time.monotonic() - t0
    return stack


@pytest.fixture(scope="session")
def argilla_server():
    """A real Argilla 2.8.0 stack for the whole session. Fails (never skips) when not installed."""
    venv = _venv()
    if not (venv / "bin" / "python").exists() or not list(venv.glob("lib/python*/site-packages/noida_db")):
        pytest.fail(INSTALL_HINT, pytrace=False)
    run_dir = Path(tempfile.mkdtemp(prefix="al-argilla-", dir=_fast_tmp()))
    try:
        stack = start_stack(run_dir)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    sys.stderr.write(f"\n[argilla] stack up at {stack.url} in {stack.start_seconds:.1f} s\n")
    try:
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":  # start a stack by hand: python -m tests.services.argilla
    # SIGTERM (kill PID) and SIGINT stop the stack too; a background job started by a script ignores SIGINT
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    s = start_stack()
    print(
        f"ARGILLA_API_URL={s.url}\nARGILLA_API_KEY={s.api_key}\n# up in {s.start_seconds:.1f} s, "
        f"data in {s.run_dir} (removed on exit); Ctrl-C or SIGTERM stops it",
        flush=True,
    )
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        s.stop()
        shutil.rmtree(s.run_dir, ignore_errors=True)
