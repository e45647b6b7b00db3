"""Helpers for the hardening and fuzzing tests: small pools with precomputed vectors (no model), the CLI run
in-process (typer's CliRunner) or as a real process, and byte snapshots of files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
CLEAN_ENV_PREFIXES = ("LABEL_STUDIO_", "ARGILLA_", "AL_")


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without the tools' and al-backend's own variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLEAN_ENV_PREFIXES)}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def tasks(n: int = 24, labeled: int = 6, classes=("sports", "politics", "science")) -> list[dict]:
    rows = []
    for i in range(n):
        c = classes[i % len(classes)]
        row = {"id": f"t{i}", "text": f"task {i} about {c} number {i * 7 % 11}"}
        if i < labeled:
            row["label"] = c
        rows.append(row)
    return rows


def vectors_for(n: int, dim: int = 8, seed: int = 0, classes: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 4
    return (centers[np.arange(n) % classes] + rng.normal(size=(n, dim))).astype(np.float32)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_pool(tmp: Path, n: int = 24, labeled: int = 6, name: str = "tasks.jsonl", seed: int = 0) -> tuple[Path, Path]:
    """tasks.jsonl and tasks.npy (one vector per row) in tmp."""
    inp = write_jsonl(tmp / name, tasks(n, labeled))
    vec = tmp / (Path(name).stem + ".npy")
    np.save(vec, vectors_for(n, seed=seed))
    return inp, vec


def cli(args: list[str], env: dict[str, str | None] | None = None):
    """Run the CLI in-process, without the caller's LABEL_STUDIO_* / ARGILLA_* / AL_* variables plus `env`;
    returns click's Result (exit_code, stdout, stderr, output)."""
    from al_backend.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args], env={**_unset_env(), **(env or {})})


def _unset_env() -> dict[str, str | None]:
    return {k: None for k in os.environ if k.startswith(CLEAN_ENV_PREFIXES)}


def cli_process(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, user: int | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """The CLI as a real process (this worktree's code), optionally as another user."""
    return subprocess.run(
        [sys.executable, "-m", "al_backend.cli.main", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or clean_env(),
        user=user,
    )


def snapshot(*paths: Path) -> dict[str, str]:
    """sha256 of every file under the given paths (files or directories), to prove inputs are untouched."""
    out = {}
    for p in paths:
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.exists() else []
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def rounds_in(state: Path) -> int:
    """Rounds recorded in a state file (0 when it does not exist)."""
    import sqlite3

    if not state.exists():
        return 0
    c = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return c.execute("SELECT COUNT(*) FROM rounds").fetchone()[0]
    finally:
        c.close()
