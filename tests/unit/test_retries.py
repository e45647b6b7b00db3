"""connectors.http against a real HTTP server on loopback: what is retried (connection errors, timeouts, 5xx),
with what backoff and up to which bound; what is not (4xx); and what the final error says (the call and why,
never the token). The server is a real socket server scripted per test, so timeouts and dropped connections
are the real thing, not a mocked transport."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from al_backend.errors import ConnectorError
from connectors.http import HttpClient, HttpError
from connectors.labelstudio import LabelStudioConnector, LegacyTokenAuth
from tests.services.faultproxy import FaultProxy, Rule

TOKEN = "SECRET-token-0123456789abcdef"


class Scripted(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[tuple[int, float, dict]] = []  # (status, delay before answering, body), consumed in order
        self.default = (200, 0.0, {"ok": True})
        self.hits: list[tuple[float, str, str, str]] = []  # (time, method, path, authorization header)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_answer(self, method: str, path: str, auth: str) -> tuple[int, float, dict]:
        with self.lock:
            self.hits.append((time.monotonic(), method, path, auth))
            return self.script.pop(0) if self.script else self.default


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, delay, body = self.server.next_answer(self.command, self.path, self.headers.get("Authorization", ""))
        if delay:
            time.sleep(delay)
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if status in (429, 503) and "retry_after" in body:
                self.send_header("Retry-After", str(body["retry_after"]))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


@pytest.fixture
def server():
    s = Scripted()
    t = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield s
    s.shutdown()
    s.server_close()


def make_client(url: str, **kw) -> HttpClient:
    kw.setdefault("retries", 3)
    kw.setdefault("backoff", 0.05)
    kw.setdefault("max_backoff", 0.4)
    kw.setdefault("timeout", 5.0)
    return HttpClient(url, service="Label Studio", auth=LegacyTokenAuth(TOKEN), **kw)


def gaps(hits) -> list[float]:
    return [b[0] - a[0] for a, b in zip(hits, hits[1:])]


def test_a_burst_of_5xx_is_retried_with_exponential_backoff_then_succeeds(server):
    server.script = [(500, 0, {}), (502, 0, {}), (503, 0, {})]
    with make_client(server.url) as c:
        assert c.get_json("/api/tasks", what="list tasks") == {"ok": True}
    assert [h[1:3] for h in server.hits] == [("GET", "/api/tasks")] * 4
    g = gaps(server.hits)
    # full jitter in [cap/2, cap] with cap = 0.05 * 2^(n-1): each wait at least half its cap, and growing caps
    assert g[0] >= 0.025 and g[1] >= 0.05 and g[2] >= 0.1, g
    assert g[0] < 0.3 and g[1] < 0.4 and g[2] < 0.6, g


def test_retries_stop_at_the_bound_and_the_error_names_the_call_and_why(server):
    server.default = (503, 0, {"detail": "database is locked"})
    with make_client(server.url, retries=2) as c, pytest.raises(HttpError) as e:
        c.request("GET", "/api/projects/7/", what="read the project")
    assert len(server.hits) == 3  # one call + two retries, no more
    msg = str(e.value)
    assert "GET /api/projects/7/" in msg and "read the project" in msg
    assert "after 3 attempts" in msg and "HTTP 503" in msg and "database is locked" in msg
    assert e.value.status == 503 and isinstance(e.value, ConnectorError)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_4xx_is_not_retried(server, status):
    server.default = (status, 0, {"detail": f"nope {status}"})
    with make_client(server.url) as c, pytest.raises(HttpError) as e:
        c.request("POST", "/api/projects/1/import/predictions", json_body=[{"task": 1}], what="import predictions")
    assert len(server.hits) == 1
    assert e.value.status == status and f"HTTP {status}" in str(e.value)
    assert "POST /api/projects/1/import/predictions" in str(e.value)


def test_429_is_retried_after_the_server_s_retry_after(server):
    server.script = [(429, 0, {"retry_after": 0.3})]
    with make_client(server.url) as c:
        assert c.get_json("/api/tasks") == {"ok": True}
    assert len(server.hits) == 2 and gaps(server.hits)[0] >= 0.29


def test_a_read_timeout_is_retried_for_a_read_and_named_when_it_persists(server):
    server.script = [(200, 1.0, {"slow": True})]  # the first answer comes after the client's timeout
    with make_client(server.url, timeout=0.3) as c:
        assert c.get_json("/api/tasks", what="list tasks") == {"ok": True}
    assert len(server.hits) == 2

    server.hits.clear()
    server.default = (200, 1.0, {"slow": True})
    with make_client(server.url, timeout=0.3, retries=1) as c, pytest.raises(HttpError) as e:
        c.get_json("/api/tasks", what="list tasks")
    assert len(server.hits) == 2
    msg = str(e.value)
    assert "list tasks (GET /api/tasks)" in msg and "timed out" in msg and "after 2 attempts" in msg
    assert e.value.status is None


def test_a_non_idempotent_post_is_not_repeated_after_a_timeout(server):
    """The server received the import; asking again could apply it twice. The next round's resume decides."""
    server.default = (201, 1.0, {"created": 1})
    with make_client(server.url, timeout=0.3) as c, pytest.raises(HttpError, match="timed out"):
        c.request("POST", "/api/projects/1/import/predictions", json_body=[{"task": 1}], idempotent=False)
    time.sleep(0.1)
    assert len(server.hits) == 1


def test_connection_refused_is_retried_then_named_with_the_url():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with make_client(f"http://127.0.0.1:{port}", retries=3) as c, pytest.raises(HttpError) as e:
        c.request("POST", "/api/projects/1/import/predictions", json_body=[], idempotent=False, what="import")
    # never sent, so even a POST is retried: waits of at least 0.025 + 0.05 + 0.1
    assert time.monotonic() - t0 >= 0.17
    msg = str(e.value)
    assert "after 4 attempts" in msg and f"127.0.0.1:{port}" in msg and "cannot connect" in msg


def test_a_dropped_connection_is_retried_for_reads_but_not_for_imports(server):
    with FaultProxy(server.url) as proxy, make_client(proxy.url) as c:
        proxy.add(Rule(action="drop", method="GET", count=2))
        assert c.get_json("/api/tasks") == {"ok": True}
        # the proxy logs a relayed request when its relay ends, which can be just after the client has the answer
        deadline = time.monotonic() + 5.0
        while len(proxy.log) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [e.outcome for e in proxy.log] == ["drop", "drop", "pass"]

        proxy.add(Rule(action="drop_response", method="POST", count=1))
        with pytest.raises(HttpError, match=r"POST /api/projects/1/import/predictions failed"):
            c.request("POST", "/api/projects/1/import/predictions", json_body=[], idempotent=False)
        posts = [h for h in server.hits if h[1] == "POST"]
        assert len(posts) == 1  # applied once by the server, never re-sent


def test_the_token_never_appears_in_errors_even_when_the_server_echoes_it(server):
    """Some servers echo the Authorization header in their error body; the message must not carry it."""
    server.default = (500, 0, {"detail": f"upstream rejected header Authorization: Token {TOKEN}"})
    conn = LabelStudioConnector(server.url, TOKEN, 1, retries=1)
    conn.http.backoff = 0.01
    with pytest.raises(ConnectorError) as e:
        conn.project()
    assert len(server.hits) == 2 and server.hits[0][3] == f"Token {TOKEN}"  # the token was sent...
    assert TOKEN not in str(e.value) and TOKEN not in repr(e.value)  # ...and is never shown
    assert "GET /api/projects/1/" in str(e.value) and "HTTP 500" in str(e.value)
    conn.close()
