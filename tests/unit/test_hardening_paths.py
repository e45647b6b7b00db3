"""Paths a run reads and writes: refused up front (before the round) with one line and a documented exit code,
inputs never replaced, no round recorded when nothing could be written, no traceback without --debug."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.hardening_util import cli, cli_process, rounds_in, snapshot, write_pool


def prioritize(inp, vec, out, state, *extra):
    return cli(
        ["prioritize", "--input", inp, "--vectors", vec, "--output", out, "--state", state, "--batch-size", "3", *extra]
    )


def test_output_same_as_input_is_refused_and_the_input_is_untouched(tmp_path):
    inp, vec = write_pool(tmp_path)
    before = snapshot(tmp_path)
    state = tmp_path / "st" / "s.sqlite"
    r = prioritize(inp, vec, inp, state)
    assert r.exit_code == 2, r.output
    assert f"--output {inp} is the same file as --input {inp}" in r.stderr
    assert "would replace your tasks" in r.stderr and "Traceback" not in r.output
    assert snapshot(tmp_path) == before  # nothing written, not even the state
    assert not state.exists()


@pytest.mark.parametrize("how", ["relative", "symlink", "hardlink", "labels", "vectors"])
def test_output_aliasing_an_input_is_refused(tmp_path, how, monkeypatch):
    inp, vec = write_pool(tmp_path)
    monkeypatch.chdir(tmp_path)
    labels = None
    if how == "relative":
        out = Path("./sub/../tasks.jsonl")
        (tmp_path / "sub").mkdir()
    elif how == "symlink":
        out = tmp_path / "link.jsonl"
        out.symlink_to(inp)
    elif how == "hardlink":
        out = tmp_path / "hard.jsonl"
        os.link(inp, out)
    elif how == "labels":
        labels = tmp_path / "labels.csv"
        labels.write_text("id,label\nt7,sports\n")
        out = Path("labels.csv")
    else:
        out = vec.with_suffix(".npy")  # format check comes after: the alias is what is reported
    before = snapshot(tmp_path)
    extra = ["--labels", labels] if labels else []
    r = prioritize(inp, vec, out, tmp_path / "s.sqlite", *extra)
    assert r.exit_code == 2, r.output
    assert "is the same file as" in r.stderr
    assert snapshot(tmp_path) == before


def test_output_parent_is_a_file_fails_before_the_round(tmp_path):
    inp, vec = write_pool(tmp_path)
    (tmp_path / "afile").write_text("x")
    state = tmp_path / "s.sqlite"
    r = prioritize(inp, vec, tmp_path / "afile" / "ranked.jsonl", state)
    assert r.exit_code == 73, r.output
    assert (
        f"cannot write output {tmp_path / 'afile' / 'ranked.jsonl'}: {tmp_path / 'afile'} is a file, not a directory"
        in r.stderr
    )
    assert not state.exists() and rounds_in(state) == 0  # refused before the lock and the state


def test_output_directory_and_unknown_format_fail_before_the_round(tmp_path):
    inp, vec = write_pool(tmp_path)
    (tmp_path / "outdir").mkdir()
    state = tmp_path / "s.sqlite"
    r = prioritize(inp, vec, tmp_path / "outdir", state)
    assert r.exit_code == 73 and "is a directory; pass a file path" in r.stderr, r.output
    r = prioritize(inp, vec, tmp_path / "ranked.txt", state)
    assert r.exit_code == 3 and "unknown file type '.txt'" in r.stderr, r.output
    assert not state.exists()


def test_state_or_lock_under_a_file_fails_before_the_round(tmp_path):
    inp, vec = write_pool(tmp_path)
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "ranked.jsonl"
    r = prioritize(inp, vec, out, tmp_path / "afile" / "s.sqlite")
    assert r.exit_code == 73, r.output
    assert "cannot write state file" in r.stderr and "is a file, not a directory" in r.stderr
    assert not out.exists()
    # the lock alone in the way: a directory where the lock file should be
    state = tmp_path / "s.sqlite"
    (tmp_path / "s.sqlite.lock").mkdir()
    r = prioritize(inp, vec, out, state)
    assert r.exit_code == 73 and f"lock file {state}.lock is a directory" in r.stderr, r.output
    assert not out.exists() and not state.exists()


def test_missing_output_for_the_file_source_fails_before_the_round(tmp_path):
    inp, vec = write_pool(tmp_path)
    state = tmp_path / "s.sqlite"
    r = cli(["prioritize", "--input", inp, "--vectors", vec, "--state", state])
    assert r.exit_code == 3 and "needs --output PATH" in r.stderr
    assert not state.exists()


def test_directory_as_input_is_named_a_directory(tmp_path):
    (tmp_path / "data").mkdir()
    r = cli(
        ["prioritize", "--input", tmp_path / "data", "--output", tmp_path / "o.jsonl", "--state", tmp_path / "s.sqlite"]
    )
    assert r.exit_code == 3
    assert f"input file {tmp_path / 'data'} is a directory, not a file" in r.stderr
    assert "does not exist" not in r.stderr


def test_a_good_run_then_a_failing_one_records_no_second_round(tmp_path):
    inp, vec = write_pool(tmp_path)
    state = tmp_path / "s.sqlite"
    out = tmp_path / "ranked.jsonl"
    r = prioritize(inp, vec, out, state)
    assert r.exit_code == 0, r.output
    assert rounds_in(state) == 1
    (tmp_path / "blocker").write_text("x")
    r = prioritize(inp, vec, tmp_path / "blocker" / "r.jsonl", state)
    assert r.exit_code == 73
    assert rounds_in(state) == 1


# ------------------------------------------------------------------ permissions: only meaningful as a non-root user
NOBODY = 65534


def _as_nobody_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="al-perm-"))
    d.chmod(0o777)
    return d


def _nobody_can_run_python() -> bool:
    import subprocess
    import sys

    if os.geteuid() != 0:
        return True  # a normal user: permissions apply to us
    try:
        return subprocess.run([sys.executable, "-c", "0"], user=NOBODY, capture_output=True, timeout=30).returncode == 0
    except OSError:
        return False


needs_nobody = pytest.mark.skipif(
    not _nobody_can_run_python(), reason="root ignores permissions and 'nobody' cannot run this Python"
)


def _sys_refuses_files() -> bool:
    try:
        fd, name = tempfile.mkstemp(dir="/sys")
    except OSError:
        return True
    os.close(fd)
    os.unlink(name)
    return False


@pytest.mark.skipif(not _sys_refuses_files(), reason="/sys accepts new files here")
@pytest.mark.parametrize("what", ["output", "state file"])
def test_a_directory_nobody_may_write_fails_up_front_even_for_root(tmp_path, what):
    """/sys refuses new files even to root: a stand-in for a read-only directory when the tests run as root."""
    inp, vec = write_pool(tmp_path)
    out, state = tmp_path / "ranked.jsonl", tmp_path / "s.sqlite"
    if what == "output":
        out = Path("/sys/al-backend-ranked.jsonl")
    else:
        state = Path("/sys/al-backend-state.sqlite")
    before = snapshot(tmp_path)
    r = prioritize(inp, vec, out, state)
    assert r.exit_code == 73, r.output
    assert f"cannot write {what} {out if what == 'output' else state}: directory /sys is not writable" in r.stderr
    assert snapshot(tmp_path) == before  # no state, no output, inputs as they were


def _run_restricted(args, cwd):
    """As the user 'nobody' when the tests run as root (root ignores permissions); else as ourselves."""
    return cli_process(args, cwd=cwd, user=NOBODY if os.geteuid() == 0 else None)


@needs_nobody
@pytest.mark.parametrize("what", ["output dir", "state dir", "lock file", "read-only output"])
def test_unwritable_paths_fail_up_front_with_73(what):
    d = _as_nobody_dir()
    try:
        inp, vec = write_pool(d)
        for p in (inp, vec):
            p.chmod(0o644)
        ro = d / "ro"
        ro.mkdir()
        out, state = d / "ranked.jsonl", d / "state" / "s.sqlite"
        (d / "state").mkdir()
        (d / "state").chmod(0o777)
        if what == "output dir":
            out = ro / "ranked.jsonl"
        elif what == "state dir":
            state = ro / "s.sqlite"
        elif what == "lock file":
            (d / "state" / "s.sqlite.lock").write_text("")
            (d / "state" / "s.sqlite.lock").chmod(0o444)
        else:
            out.write_text("old ranking\n")
            out.chmod(0o444)
        ro.chmod(0o555)
        before = snapshot(inp, vec)
        p = _run_restricted(["prioritize", "--input", inp, "--vectors", vec, "--output", out, "--state", state], cwd=d)
        assert p.returncode == 73, p.stderr
        assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
        assert "cannot write" in p.stderr
        assert snapshot(inp, vec) == before
        assert rounds_in(state) == 0
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ the guard: no traceback without --debug
def test_an_unexpected_error_is_one_line_and_exit_1_unless_debug(tmp_path, monkeypatch):
    import al_backend.round as round_module

    def boom(*a, **k):  # a bug cannot be produced on demand: inject one
        raise RuntimeError("something broke at http://user:canary-pw-1@host")

    monkeypatch.setattr(round_module, "run_project_round", boom)
    inp, vec = write_pool(tmp_path)
    r = prioritize(inp, vec, tmp_path / "o.jsonl", tmp_path / "s.sqlite")
    assert r.exit_code == 1
    assert "error: unexpected RuntimeError: something broke at http://***@host" in r.stderr
    assert "--debug" in r.stderr and "Traceback" not in r.output and "canary-pw-1" not in r.output
    r = cli(
        [
            "--debug",
            "prioritize",
            "--input",
            inp,
            "--vectors",
            vec,
            "--output",
            tmp_path / "o.jsonl",
            "--state",
            tmp_path / "s.sqlite",
        ]
    )
    assert r.exit_code == 1 and isinstance(r.exception, RuntimeError)  # --debug lets it through


def test_real_process_errors_are_one_line(tmp_path):
    inp, vec = write_pool(tmp_path)
    before = snapshot(tmp_path)
    p = cli_process(
        ["prioritize", "--input", inp, "--vectors", vec, "--output", inp, "--state", tmp_path / "s.sqlite"],
        cwd=tmp_path,
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith("error: --output") and p.stderr.count("\n") == 1
    assert snapshot(tmp_path) == before


def test_status_json_of_a_good_round(tmp_path):
    inp, vec = write_pool(tmp_path)
    state = tmp_path / "s.sqlite"
    assert prioritize(inp, vec, tmp_path / "o.jsonl", state).exit_code == 0
    r = cli(["status", "--state", state, "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["rounds"] == 1
    assert np.load(vec).shape == (24, 8)


def test_store_open_where_no_file_can_be_made_is_a_write_error():
    """What the server meets for a project whose state cannot be created (no preflight on that path)."""
    from al_backend.errors import WriteError
    from al_backend.store import Store

    if not _sys_refuses_files():
        pytest.skip("/sys accepts new files here")
    with pytest.raises(WriteError, match=r"^cannot create or open the state file /sys/al-state-test.sqlite"):
        Store.open("/sys/al-state-test.sqlite")
