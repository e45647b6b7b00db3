"""The project state under faults, through the real CLI in real subprocesses:

- kill -9 during a round (while pulling, while pushing to a real Label Studio), then a rerun: the state is
  intact, the lock is free, the round completes and Label Studio serves exactly one ranking;
- two overlapping runs: the second exits at once with code 75 and a clear message, or waits with --wait and
  runs after the first (never both at once);
- corrupted or foreign state files: exit code 4, a message that says how to recover, the file untouched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from al_backend.errors import LockedError, StateError
from al_backend.store import Store
from tests.integration import test_faults_labelstudio as ls_faults
from tests.integration.test_faults_labelstudio import N_TASKS, assert_served_exactly
from tests.services.faultproxy import Rule, al_backend_cmd, cli_env

# the Label Studio fault tests' fixtures, project (60 BBC paragraphs, 10 annotated, embeddings cached) and proxy,
# bound here so that pytest finds them in this module
project = ls_faults.project
proxy = ls_faults.proxy

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "examples" / "tasks.jsonl"
IMPORT = r"/import/predictions$"


# ---------------------------------------------------------------------------------------------- helpers
def ls_args(project, *extra: str) -> list[str]:
    return al_backend_cmd(
        "prioritize",
        "--source",
        "labelstudio",
        "--project",
        str(project["id"]),
        "--state",
        str(project["state"]),
        "--batch-size",
        "10",
        "--log-format",
        "json",
        *extra,
    )


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=log.open("wb"), text=True)


def integrity(state: Path) -> str:
    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------- kill -9
def test_kill_9_while_pulling_leaves_the_state_intact_and_the_rerun_completes(label_studio, project, proxy, tmp_path):
    env = cli_env(LABEL_STUDIO_URL=proxy.url, LABEL_STUDIO_API_KEY=label_studio.legacy_token)
    proxy.add(Rule(action="delay", seconds=2.0, method="GET", path=r"^/api/tasks", count=1))
    proc = start(ls_args(project), env, tmp_path / "killed.log")
    proxy.wait_for("GET", r"^/api/tasks", timeout=60)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    assert integrity(project["state"]) == "ok"
    with Store.open(project["state"], create=False) as store:
        assert store.rounds() == [] and store.embedding_count() == N_TASKS  # the cache survived, nothing half-written

    done = subprocess.run(ls_args(project, "--json"), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr  # the kernel released the dead run's lock
    assert json.loads(done.stdout)["round"] == 1
    assert_served_exactly(label_studio, project, 1)


def test_kill_9_while_pushing_then_rerun_completes_without_duplicates(label_studio, project, proxy, tmp_path):
    """Killed while Label Studio is still taking the import: it lands after the process died."""
    env = cli_env(LABEL_STUDIO_URL=proxy.url, LABEL_STUDIO_API_KEY=label_studio.legacy_token)
    proxy.add(Rule(action="delay", seconds=2.0, method="POST", path=IMPORT, count=1))
    proc = start(ls_args(project), env, tmp_path / "killed.log")
    proxy.wait_for("POST", IMPORT, timeout=60)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    proxy.wait_outcome("delay:client-gone")  # Label Studio applied the import of a dead client
    assert integrity(project["state"]) == "ok"
    with Store.open(project["state"], create=False) as store:
        assert [r.round_id for r in store.rounds()] == [1]  # the round was recorded before its push began
        target = f"Label Studio project {project['id']} at {proxy.url}"
        assert store.unfinished_push(target) == (1, 0, 1)

    done = subprocess.run(ls_args(project, "--json"), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed_round"] == 1
    assert_served_exactly(label_studio, project, summary["round"])
    status = subprocess.run(
        al_backend_cmd("status", "--state", str(project["state"]), "--json"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and json.loads(status.stdout)["rounds"] == summary["round"]


# ---------------------------------------------------------------------------------------------- overlapping runs
def test_overlapping_runs_second_exits_75_at_once_or_waits_its_turn(label_studio, project, proxy, tmp_path):
    env = cli_env(LABEL_STUDIO_URL=proxy.url, LABEL_STUDIO_API_KEY=label_studio.legacy_token)
    proxy.add(Rule(action="delay", seconds=5.0, method="GET", path=r"^/api/tasks", count=1))
    first = start(ls_args(project, "--json"), env, tmp_path / "first.log")
    proxy.wait_for("GET", r"^/api/tasks", timeout=60)  # the first run holds the lock, busy pulling

    t0 = time.monotonic()
    second = subprocess.run(ls_args(project), env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == LockedError.exit_code == 75
    assert first.poll() is None, "the second run must not wait for the first"
    assert time.monotonic() - t0 < 15
    assert "another al-backend run holds the lock" in second.stderr and f"(pid {first.pid})" in second.stderr
    assert "--wait" in second.stderr

    waiting = start(ls_args(project, "--json", "--wait", "120"), env, tmp_path / "waiting.log")
    out_first, _ = first.communicate(timeout=120)
    out_waiting, _ = waiting.communicate(timeout=120)
    assert first.returncode == 0 and waiting.returncode == 0, (tmp_path / "waiting.log").read_text()
    a, b = json.loads(out_first), json.loads(out_waiting)
    assert (a["round"], b["round"]) == (1, 2)
    with Store.open(project["state"], create=False) as store:
        r1, r2 = store.rounds()
    assert r2.started_at >= r1.finished_at  # never two rounds at once
    assert_served_exactly(label_studio, project, 2)


# ---------------------------------------------------------------------------------------------- corrupted / foreign state
@pytest.fixture(scope="module")
def file_inputs(tmp_path_factory):
    """Vectors for examples/tasks.jsonl (no model), and a healthy state made by one real round."""
    d = tmp_path_factory.mktemp("file-state")
    n = sum(1 for line in TASKS.read_text().splitlines() if line.strip())
    vectors = d / "vectors.npy"
    np.save(vectors, np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32))
    good = d / "good.sqlite"
    done = file_run(vectors, d, good)
    assert done.returncode == 0, done.stderr
    con = sqlite3.connect(good)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # one self-contained file to copy and damage
    con.close()
    return {"vectors": vectors, "good": good}


def file_run(vectors: Path, workdir: Path, state: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = al_backend_cmd(
        "prioritize",
        "--input",
        str(TASKS),
        "--vectors",
        str(vectors),
        "--output",
        str(workdir / "ranked.jsonl"),
        "--state",
        str(state),
        *extra,
    )
    return subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=120, cwd=workdir)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_garbage(path: Path, good: Path) -> None:
    path.write_bytes(b"PK\x03\x04 this is a zip file, not a state file" + bytes(range(256)) * 8)


def make_foreign_sqlite(path: Path, good: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO users VALUES (1, 'alice')")
    con.commit()
    con.close()


def make_other_app(path: Path, good: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    con.execute("INSERT INTO meta VALUES ('app', 'some-other-tool')")
    con.commit()
    con.close()


def make_corrupt_pages(path: Path, good: Path) -> None:
    """A real al-backend state whose pages after the first were overwritten (a disk or a copy gone wrong)."""
    data = bytearray(good.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    for p in range(1, len(data) // page):
        data[p * page : (p + 1) * page] = b"\xde\xad\xbe\xef" * (page // 4)
    path.write_bytes(bytes(data))


def make_truncated(path: Path, good: Path) -> None:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def make_newer_schema(path: Path, good: Path) -> None:
    shutil.copy(good, path)
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()


DAMAGE = {
    "garbage": make_garbage,
    "foreign_sqlite": make_foreign_sqlite,
    "other_app": make_other_app,
    "corrupt_pages": make_corrupt_pages,
    "truncated": make_truncated,
    "newer_schema": make_newer_schema,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_corrupted_or_foreign_state_is_refused_untouched_with_the_way_to_recover(file_inputs, tmp_path, damage):
    bad = tmp_path / "bad.sqlite"
    DAMAGE[damage](bad, file_inputs["good"])
    before = sha(bad)

    done = file_run(file_inputs["vectors"], tmp_path, bad)
    assert done.returncode == StateError.exit_code == 4, done.stderr
    assert "Traceback" not in done.stderr and str(bad) in done.stderr
    if damage == "newer_schema":
        assert "upgrade al-backend or use another --state" in done.stderr
    else:
        assert "not a usable al-backend state file" in done.stderr and "Nothing was changed" in done.stderr
        assert "Move it aside" in done.stderr and "rebuilds its state" in done.stderr
    status = subprocess.run(
        al_backend_cmd("status", "--state", str(bad), "--json"),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 4 and json.loads(status.stdout)["error"] == "StateError"
    assert sha(bad) == before, "the refused file was modified"
    assert not (tmp_path / "ranked.jsonl").exists()  # no output from a refused state
    wal = bad.with_name(bad.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "something was written to the refused state's WAL"

    if damage in ("garbage", "corrupt_pages"):  # the recovery the message gives: move it aside, rerun
        for f in tmp_path.glob("bad.sqlite*"):
            f.rename(tmp_path / f.name.replace("bad.sqlite", "broken.sqlite"))
        done = file_run(file_inputs["vectors"], tmp_path, bad, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["round"] == 1 and integrity(bad) == "ok"
        assert sha(tmp_path / "broken.sqlite") == before
