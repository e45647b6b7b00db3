"""A small fault-injecting HTTP proxy for tests: put it in front of a real server and break things on purpose.

    with FaultProxy("http://127.0.0.1:8080") as proxy:        # listens on a free loopback port
        connector = LabelStudioConnector(proxy.url, token, project)
        proxy.add(Rule(status=503, count=2, path=r"^/api/tasks"))       # a burst of two 503s, then pass-through
        proxy.add(Rule(action="drop_response", method="POST", path=r"/import/predictions$"))
        proxy.add(Rule(action="delay", seconds=3, path=r"^/api/tasks"))  # answers slower than a timeout
        proxy.add(Rule(action="drop", skip=2, path=r"/records/bulk$"))   # cut after 2 requests
        proxy.go_down() / proxy.come_up()                                 # connection refused, then back
        proxy.log                                                         # what happened to every request

Rules are tried in order; the first that matches a request (method, path regex on the path + query) and
still has `count` left decides its fate; `skip` lets that many matching requests through first.

Actions:
    pass           forward (the default when no rule matches)
    status         answer `status` without forwarding (the server never sees the call)
    drop           close the connection without forwarding (the server never sees the call)
    drop_response  forward, let the server apply it, then close the connection without answering
    delay          wait `seconds`, then forward (or close, when the client gave up)

Each request is forwarded on its own upstream connection, and the answer is re-sent with a Content-Length,
so keep-alive clients (httpx, requests) see normal HTTP/1.1. Threaded; loopback only.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}
ACTIONS = {"pass", "status", "drop", "drop_response", "delay"}


@dataclass
class Rule:
    action: str = "status"
    status: int = 503
    seconds: float = 0.0
    method: str | None = None  # None = any method
    path: str | None = None  # regex searched in the path (with its query string); None = any path
    count: int | None = None  # how many requests this rule breaks; None = every matching one
    skip: int = 0  # matching requests let through before the rule starts acting
    seen: int = 0  # matching requests so far
    applied: int = 0  # requests this rule acted on

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r} (one of {sorted(ACTIONS)})")
        self._path_re = re.compile(self.path) if self.path else None

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return self._path_re is None or bool(self._path_re.search(path))

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.applied >= self.count


@dataclass
class Event:
    """What the proxy did with one request: `outcome` is the action taken, `status` what the client got
    (None when the connection was closed without an answer)."""

    time: float
    method: str
    path: str
    outcome: str
    status: int | None = None
    upstream_status: int | None = None
    seconds: float = 0.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class FaultProxy:
    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0, upstream_timeout: float = 600.0):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.upstream_timeout = upstream_timeout
        self.host = host
        self.port = port
        self.rules: list[Rule] = []
        self.log: list[Event] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._arrived = threading.Condition(self._lock)
        self._arrivals: list[Event] = []  # every request as it arrives, before its fate is decided

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server((self.host, self.port), Handler)
        self.port = self._server.server_address[1]  # keep the port across go_down()/come_up()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"faultproxy:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def go_down(self) -> None:
        """Stop listening: new connections are refused (as when the server process is gone)."""
        self.stop()

    def come_up(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            deadline = time.monotonic() + 5
            while True:
                try:
                    self.start()
                    return
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ rules
    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Back to pass-through (the log is kept)."""
        with self._lock:
            self.rules.clear()

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()
            self._arrivals.clear()

    def events(self, method: str | None = None, path: str | None = None) -> list[Event]:
        rx = re.compile(path) if path else None
        with self._lock:
            return [e for e in self.log if (method is None or e.method == method) and (rx is None or rx.search(e.path))]

    def wait_for(
        self,
        method: str | None = None,
        path: str | None = None,
        *,
        n: int = 1,
        timeout: float = 60.0,
        arrived: bool = True,
    ) -> list[Event]:
        """Block until `n` requests matching method/path arrived (arrived=True) or were answered."""
        rx = re.compile(path) if path else None
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                pool = self._arrivals if arrived else self.log
                hits = [e for e in pool if (method is None or e.method == method) and (rx is None or rx.search(e.path))]
                if len(hits) >= n:
                    return hits
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{n} request(s) {method or '*'} {path or '*'} not seen in {timeout} s; "
                        f"log: {[(e.method, e.path, e.outcome) for e in self.log][-20:]}"
                    )
                self._arrived.wait(left)

    def wait_outcome(self, outcome: str, timeout: float = 30.0) -> Event:
        """The first logged request with this outcome, waiting for it: a delayed request is logged when its
        delay is over, which can be after the client gave up and finished its round."""
        with self._arrived:
            deadline = time.monotonic() + timeout
            while True:
                hits = [e for e in self.log if e.outcome == outcome]
                if hits:
                    return hits[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"no {outcome!r} in {timeout} s; log: {[(e.method, e.path, e.outcome) for e in self.log][-20:]}"
                    )
                self._arrived.wait(left)

    def _decide(self, method: str, path: str) -> Rule | None:
        with self._lock:
            self._arrivals.append(Event(time.time(), method, path, "arrived"))
            self._arrived.notify_all()
            for rule in self.rules:
                if rule.exhausted or not rule.matches(method, path):
                    continue
                rule.seen += 1
                if rule.seen <= rule.skip:
                    return None
                rule.applied += 1
                return rule
            return None

    def _record(self, event: Event) -> None:
        with self._lock:
            self.log.append(event)
            self._arrived.notify_all()


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # quiet
        pass

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _handle(self) -> None:
        t0 = time.perf_counter()
        proxy = self.owner
        method, path = self.command, self.path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        rule = proxy._decide(method, path)
        action = rule.action if rule else "pass"
        event = Event(time.time(), method, path, action)
        if action == "status":
            payload = b'{"detail": "injected by faultproxy"}'
            self.send_response(rule.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            event.status = rule.status
        elif action == "drop":
            self._drop()
        else:
            if action == "delay":
                time.sleep(rule.seconds)
            try:
                status, reason, headers, data = self._forward(method, path, body)
            except OSError as e:  # upstream down: answer like a gateway would
                status, reason, headers, data = (
                    502,
                    "Bad Gateway",
                    [("Content-Type", "text/plain")],
                    f"faultproxy: upstream unreachable ({e})".encode(),
                )
            event.upstream_status = status
            if action == "drop_response":
                self._drop()
            else:
                try:
                    self.send_response(status, reason)
                    for k, v in headers:
                        if k.lower() not in HOP_BY_HOP:
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if method != "HEAD":
                        self.wfile.write(data)
                    event.status = status
                except OSError:  # the client gave up (its timeout) while we waited
                    event.outcome = f"{action}:client-gone"
                    self.close_connection = True
        event.seconds = time.perf_counter() - t0
        proxy._record(event)

    def _forward(self, method: str, path: str, body: bytes):
        proxy = self.owner
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=proxy.upstream_timeout)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Host"] = f"{proxy.upstream_host}:{proxy.upstream_port}"
            if body or method in ("POST", "PUT", "PATCH"):
                headers["Content-Length"] = str(len(body))
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


# ---------------------------------------------------------------------------------------------- fault-test helpers
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def prefill_embeddings(
    state_path, texts, classes=None, *, dim: int = 384, model_id: str = DEFAULT_MODEL_ID, seed: int = 0
) -> None:
    """Put a vector for every text in the state's embedding cache, so a round never loads the model (these
    tests are about faults, not embeddings). With `classes` (aligned with texts) the vectors cluster by class,
    so the head learns something real; without, they are random unit vectors."""
    import numpy as np

    from al_backend.embedding import text_hash
    from al_backend.store import Store

    texts = list(texts)
    rng = np.random.default_rng(seed)
    names = sorted({c for c in classes or [] if c is not None})
    centres = {c: rng.normal(size=dim) for c in names}
    out = np.empty((len(texts), dim), dtype=np.float32)
    for i, t in enumerate(texts):
        noise = np.random.default_rng(int.from_bytes(text_hash(t)[:8], "little")).normal(size=dim)
        c = classes[i] if classes else None
        v = (centres[c] + 0.8 * noise) if c is not None else noise
        out[i] = v / np.linalg.norm(v)
    with Store.open(state_path) as store:
        store.put_embeddings(model_id, [text_hash(t) for t in texts], out)


def al_backend_cmd(*args: str) -> list[str]:
    """The CLI as a subprocess, from this checkout (the same code the tests import)."""
    import sys

    return [sys.executable, "-c", "from al_backend.cli.main import main; main()", *args]


def cli_env(**extra: str) -> dict[str, str]:
    """The test process's environment without tool credentials, plus `extra`; the checkout on PYTHONPATH."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "ARGILLA_", "AL_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(root), **extra)
    return env
