"""The README quick start, run as written through the installed console script, with the real model."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).parent / "al-backend"

pytestmark = pytest.mark.slow


def run(*args, cwd, check=True):
    p = subprocess.run(
        [str(EXE), *args], cwd=cwd, capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"}
    )
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def test_quickstart_as_in_readme(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    run("prioritize", "--input", "examples/tasks.jsonl", "--output", "ranked.jsonl", "--batch-size", "5", cwd=tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "ranked.jsonl").read_text().splitlines()]
    tasks = [json.loads(line) for line in (tmp_path / "examples/tasks.jsonl").read_text().splitlines()]
    unlabeled = {t["id"] for t in tasks if "label" not in t}
    assert {r["id"] for r in rows} == unlabeled and len(rows) == len(unlabeled)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert sum(r["in_batch"] for r in rows) == 5 and all(r["in_batch"] for r in rows[:5])
    assert all(a["priority"] > b["priority"] for a, b in zip(rows, rows[1:]))
    assert all(isinstance(r["cluster"], int) and r["cluster"] >= 0 for r in rows)

    status = json.loads(run("status", "--state", ".al-state/tasks.sqlite", "--json", cwd=tmp_path).stdout)
    assert status["pool_size"] == len(tasks) and status["labeled"] == len(tasks) - len(unlabeled)
    assert status["rounds"] == 1 and status["embeddings_cached"] == len(tasks)

    # second run: label five more, nothing re-embedded
    lab = tmp_path / "labels.csv"
    truth = {r["id"]: None for r in rows[:5]}
    lab.write_text("id,label\n" + "".join(f"{i},sports\n" for i in truth))
    out = json.loads(
        run(
            "prioritize",
            "--input",
            "examples/tasks.jsonl",
            "--labels",
            "labels.csv",
            "--output",
            "ranked.jsonl",
            "--batch-size",
            "5",
            "--json",
            cwd=tmp_path,
        ).stdout
    )
    assert out["embedded"] == 0 and out["labeled"] == len(tasks) - len(unlabeled) + 5
    assert out["round"] == 2 and len(out["batch"]) == 5 and not set(out["batch"]) & set(truth)


def test_bad_input_exits_non_zero_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "text": "fine"}\n{"id": 2, "text": ""}\n')
    p = run("prioritize", "--input", str(bad), "--output", "ranked.jsonl", cwd=tmp_path, check=False)
    assert p.returncode == 3
    assert "bad.jsonl:2: task '2': text is empty" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "ranked.jsonl").exists()

    cfg = tmp_path / "al.toml"
    cfg.write_text("[strategy]\nbatch_sise = 3\n")
    p = run("prioritize", "--input", str(bad), "--config", str(cfg), cwd=tmp_path, check=False)
    assert p.returncode == 2 and "unknown key 'batch_sise' in [strategy]" in p.stderr

    p = run(
        "prioritize",
        "--input",
        str(bad),
        "--output",
        "ranked.jsonl",
        "--skip-invalid",
        "--batch-size",
        "1",
        cwd=tmp_path,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert "skipped 1 invalid rows" in p.stderr
    assert len((tmp_path / "ranked.jsonl").read_text().splitlines()) == 1


def test_help_teaches_with_examples(tmp_path):
    p = run("prioritize", "--help", cwd=tmp_path)
    assert "Examples:" in p.stdout and "--source labelstudio" in p.stdout and "Exit codes" in p.stdout
