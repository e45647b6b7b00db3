"""Benchmark: the ML backend's /predict under load, as Label Studio calls it (N tasks a request, many at once).

`concurrency` workers, each with its own keep-alive connection, send `requests` POST /predict calls in total,
`tasks_per_request` tasks each, texts cycled from a tasks file. The texts are sent once before timing, so
their embeddings are in the state's cache (what a running project looks like: Label Studio asks for tasks the
backend has ranked). The reference, measured in the same run, is the same call sent one at a time.

Self-contained (no URL): a round on the tasks file builds a state with a trained model (the real embedding
model, once), then `al-backend serve` is started on it in a subprocess on a free loopback port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from ..server import wait_healthy

DEFAULT_TASKS = Path(__file__).resolve().parents[2] / "examples" / "tasks.jsonl"
TARGET_P99_S = 0.5


def label_config(labels: Sequence[str], text_key: str = "text") -> str:
    choices = "".join(f'<Choice value="{lab}"/>' for lab in labels)
    return (
        f'<View><Text name="text" value="${text_key}"/>'
        f'<Choices name="label" toName="text" choice="single">{choices}</Choices></View>'
    )


def read_tasks(path: Path, text_key: str = "text") -> tuple[list[str], list[str]]:
    """Texts and the distinct labels of a JSONL tasks file (id, text[, label])."""
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                texts.append(str(row[text_key]))
                if row.get("label"):
                    labels.append(str(row["label"]))
    return texts, sorted(set(labels))


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Payloads:
    def __init__(self, texts: Sequence[str], per_request: int, project: int, config: str):
        self.texts, self.per_request, self.project, self.config = list(texts), per_request, project, config

    def body(self, i: int) -> dict[str, Any]:
        start = (i * self.per_request) % len(self.texts)
        tasks = [
            {"id": 1_000_000 + start + j, "data": {"text": self.texts[(start + j) % len(self.texts)]}}
            for j in range(self.per_request)
        ]
        return {
            "tasks": tasks,
            "project": f"{self.project}.1700000000",
            "label_config": self.config,
            "params": {"context": None},
        }


def _one(client: httpx.Client, body: dict[str, Any], n_tasks: int) -> tuple[float, str | None]:
    t = time.perf_counter()
    try:
        r = client.post("/predict", json=body)
        sec = time.perf_counter() - t
        if r.status_code != 200:
            return sec, f"HTTP {r.status_code}: {r.text[:200]}"
        results = r.json().get("results")
        if not isinstance(results, list) or len(results) != n_tasks:
            return sec, f"expected {n_tasks} results, got {r.text[:200]}"
        if not any(res.get("result") for res in results):
            return sec, "no prediction in any result (is there a trained model?)"
        return sec, None
    except httpx.HTTPError as e:
        return time.perf_counter() - t, f"{type(e).__name__}: {e}"


def run_load(
    url: str, payloads: _Payloads, *, concurrency: int, requests: int, auth: Any = None, timeout: float = 30.0
) -> dict[str, Any]:
    """Send `requests` calls from `concurrency` threads at once; latencies in seconds, errors listed."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    barrier = threading.Barrier(concurrency)

    def worker() -> None:
        with httpx.Client(base_url=url, auth=auth, timeout=timeout) as client:
            client.get("/health")  # open the connection before the clock starts
            barrier.wait()
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                sec, err = _one(client, payloads.body(i), payloads.per_request)
                with lock:
                    latencies.append(sec)
                    if err:
                        errors.append(err)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:3],
        "wall_s": wall,
        "p50_s": percentile(latencies, 50),
        "p90_s": percentile(latencies, 90),
        "p99_s": percentile(latencies, 99),
        "max_s": max(latencies) if latencies else float("nan"),
        "mean_s": float(np.mean(latencies)) if latencies else float("nan"),
        "requests_per_s": len(latencies) / wall if wall else 0.0,
        "tasks_per_s": len(latencies) * payloads.per_request / wall if wall else 0.0,
    }


def bench_predict(
    url: str | None = None,
    *,
    concurrency: int = 32,
    tasks_per_request: int = 10,
    requests: int | None = None,
    tasks_file: Path | None = None,
    project: int = 1,
    auth: Any = None,
    reference_requests: int = 20,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the benchmark against `url`, or (url None) against a server started here on a fresh state."""
    tasks_file = Path(tasks_file or DEFAULT_TASKS)
    if not tasks_file.is_file():
        from ..errors import InputError

        raise InputError(f"tasks file {tasks_file} not found: pass --input with a JSONL of id, text[, label]")
    texts, labels = read_tasks(tasks_file)
    requests = requests or concurrency * 10
    server = None
    tmp = None
    try:
        if url is None:
            tmp = tempfile.TemporaryDirectory(prefix="al-bench-predict-")
            url, server, labels = _start_own_server(Path(tmp.name), tasks_file, project, log)
        payloads = _Payloads(texts, tasks_per_request, project, label_config(labels or ["a", "b"]))
        log(f"warming the embedding cache: {len(texts)} texts")
        with httpx.Client(base_url=url, auth=auth, timeout=300) as client:
            for i in range(0, len(texts), tasks_per_request):
                _, err = _one(client, payloads.body(i // tasks_per_request), tasks_per_request)
                if err:
                    from ..errors import ConnectorError

                    raise ConnectorError(f"POST {url}/predict failed while warming up: {err}")
        log(f"reference: {reference_requests} requests one at a time")
        reference = run_load(url, payloads, concurrency=1, requests=reference_requests, auth=auth)
        log(f"load: {requests} requests of {tasks_per_request} tasks, {concurrency} at once")
        load = run_load(url, payloads, concurrency=concurrency, requests=requests, auth=auth)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        if tmp is not None:
            tmp.cleanup()
    return {
        "url": url if server is None else "self-contained",
        "concurrency": concurrency,
        "tasks_per_request": tasks_per_request,
        "texts": len(texts),
        "cpu_count": os.cpu_count(),
        "reference": reference,
        "load": load,
        "p50_ms": round(load["p50_s"] * 1000, 1),
        "p99_ms": round(load["p99_s"] * 1000, 1),
        "p99_vs_single_p50": load["p99_s"] / reference["p50_s"] if reference["p50_s"] else float("nan"),
        "target_p99_ms": TARGET_P99_S * 1000,
        "ok": load["errors"] == 0 and load["p99_s"] < TARGET_P99_S,
    }


def _start_own_server(work: Path, tasks_file: Path, project: int, log: Callable[[str], None]):
    """A state with a trained model (one round on the tasks file), and `al-backend serve` on it."""
    from ..config import Config
    from ..round import make_connector, run_project_round
    from ..store import Store

    state = work / f"state-{project}.sqlite"
    cfg = Config()
    cfg.file.input = str(tasks_file)
    cfg.file.output = str(work / "ranked.jsonl")
    cfg.state.path = str(state)
    log(f"building a state with a model: one round on {tasks_file} (embeds the texts once)")
    run_project_round(cfg, make_connector(cfg, "file"), progress=False)
    with Store.open(state, create=False) as store:
        latest = store.latest_model()
    if latest is None:
        from ..errors import InputError

        raise InputError(f"{tasks_file}: a model needs labels of at least two classes in the tasks file")
    classes = list(latest[1].get("classes") or latest[1].get("classes_") or [])
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "AL_"))}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["LABEL_STUDIO_URL"] = "http://127.0.0.1:9"  # never called: /predict reads the state only
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    log_path = work / "serve.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from al_backend.cli.main import main; main()",
            "serve",
            "--port",
            str(port),
            "--state",
            str(work / "state-{project}.sqlite"),
        ],
        cwd=work,
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    if not wait_healthy(url, proc, timeout=60):
        proc.kill()
        raise RuntimeError(f"al-backend serve did not start:\n{log_path.read_text(errors='replace')[-2000:]}")
    log(f"al-backend serve on {url} (project {project}, classes {', '.join(classes)})")
    return url, proc, classes
