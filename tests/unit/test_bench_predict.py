"""`al-backend bench predict`'s load generator against a real local HTTP server: every request is sent and
counted once, answers that are not one result per task are errors, and the percentiles are the measured ones."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from al_backend.bench.predict_load import _Payloads, label_config, percentile, run_load


class _Predict(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    short_every = 0  # answer one result too few on every n-th request (0 = never)
    seen: list[int] = []
    lock = threading.Lock()

    def log_message(self, *a) -> None:
        pass

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send({"status": "UP"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        tasks = body["tasks"]
        assert body["project"].startswith("7.") and "$text" in body["label_config"]
        with self.lock:
            self.seen.append(tasks[0]["id"])
            n = len(self.seen)
        results = [{"result": [{"value": {"choices": ["a"]}}], "score": 0.9, "model_version": "v"} for _ in tasks]
        if self.short_every and n % self.short_every == 0:
            results = results[:-1]
        self._send({"results": results})


@pytest.fixture
def server():
    _Predict.seen = []
    _Predict.short_every = 0
    s = ThreadingHTTPServer(("127.0.0.1", 0), _Predict)
    s.daemon_threads = True
    threading.Thread(target=s.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{s.server_address[1]}"
    s.shutdown()
    s.server_close()


def test_every_request_is_sent_once_with_the_tasks_asked_for(server):
    texts = [f"text {i}" for i in range(25)]
    payloads = _Payloads(texts, 10, 7, label_config(["a", "b"]))
    result = run_load(server, payloads, concurrency=8, requests=50)
    assert result["requests"] == 50 and result["errors"] == 0
    assert len(_Predict.seen) == 50
    # request i starts at text (i * 10) mod 25: the texts are cycled, every one is sent
    assert sorted(set(_Predict.seen)) == [1_000_000 + s for s in (0, 5, 10, 15, 20)]
    assert result["p50_s"] <= result["p99_s"] <= result["max_s"]
    assert result["tasks_per_s"] == pytest.approx(result["requests_per_s"] * 10)


def test_a_wrong_number_of_results_is_an_error(server):
    _Predict.short_every = 5
    payloads = _Payloads(["x", "y"], 4, 7, label_config(["a", "b"]))
    result = run_load(server, payloads, concurrency=4, requests=40)
    assert result["errors"] == 8 and "expected 4 results" in result["error_examples"][0]


def test_percentile_is_numpy_s_linear_interpolation():
    values = [0.010, 0.020, 0.030, 0.040, 1.0]
    assert percentile(values, 50) == 0.030
    assert percentile(values, 99) == pytest.approx(np.percentile(values, 99)) == pytest.approx(0.9616)
