"""connectors.http: what is retried, what is not, and what the error says (never the token)."""

from __future__ import annotations

import httpx
import pytest

from al_backend.errors import ConnectorError
from connectors.http import HttpClient, HttpError
from connectors.labelstudio import LegacyTokenAuth


def client(handler, retries=3, auth=None):
    waits: list[float] = []
    c = HttpClient(
        "http://ls.test",
        service="Label Studio",
        auth=auth,
        retries=retries,
        transport=httpx.MockTransport(handler),
        sleep=waits.append,
    )
    return c, waits


def test_5xx_is_retried_with_growing_backoff_then_succeeds():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(503 if len(calls) < 3 else 200, json={"ok": True})

    c, waits = client(handler)
    assert c.get_json("/api/x") == {"ok": True}
    assert len(calls) == 3 and len(waits) == 2
    assert 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 1.0  # full jitter within [cap/2, cap]


def test_4xx_is_not_retried_and_error_names_the_call_not_the_token():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(400, json={"detail": "Validation error", "validation_errors": {"task": ["bad"]}})

    c, waits = client(handler, auth=LegacyTokenAuth("SECRET-TOKEN-123"))
    with pytest.raises(HttpError) as e:
        c.request("POST", "/api/projects/1/import/predictions", json_body=[{}], what="import predictions")
    msg = str(e.value)
    assert len(calls) == 1 and waits == []
    assert "POST /api/projects/1/import/predictions" in msg and "HTTP 400" in msg and "bad" in msg
    assert "SECRET-TOKEN-123" not in msg and e.value.status == 400
    assert calls[0].headers["Authorization"] == "Token SECRET-TOKEN-123"


def test_retries_are_bounded_and_counted():
    c, waits = client(lambda r: httpx.Response(502, text="<html>bad gateway</html>"), retries=2)
    with pytest.raises(ConnectorError, match=r"GET /api/tasks failed after 3 attempts: HTTP 502 - Bad Gateway"):
        c.request("GET", "/api/tasks")
    assert len(waits) == 2


def test_non_idempotent_calls_are_not_retried_after_a_timeout():
    calls = []

    def handler(request):
        calls.append(request)
        raise httpx.ReadTimeout("slow", request=request)

    c, _ = client(handler)
    with pytest.raises(ConnectorError, match="timed out"):
        c.request("POST", "/api/import", json_body={}, idempotent=False)
    assert len(calls) == 1  # it may have been applied: never send it twice
    calls.clear()
    with pytest.raises(ConnectorError, match="after 4 attempts: timed out"):
        c.request("GET", "/api/tasks")
    assert len(calls) == 4


def test_connect_errors_are_retried_even_for_posts():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(201, json={"created": 1})

    c, _ = client(handler)
    assert c.request("POST", "/api/import", json_body=[1], idempotent=False).json() == {"created": 1}


def test_401_refreshes_credentials_once():
    class Refreshing:
        def __init__(self):
            self.token, self.refreshes = "old", 0

        def headers(self, client):
            return {"Authorization": f"Bearer {self.token}"}

        def refresh(self, client):
            self.refreshes += 1
            self.token = "new"
            return True

    def handler(request):
        ok = request.headers["Authorization"] == "Bearer new"
        return httpx.Response(200 if ok else 401, json={})

    auth = Refreshing()
    c, waits = client(handler, auth=auth)
    assert c.request("GET", "/api/x").status_code == 200 and auth.refreshes == 1 and waits == []


def test_unreachable_server_is_named():
    c = HttpClient("http://127.0.0.1:9", service="Label Studio", retries=1, sleep=lambda s: None)
    with pytest.raises(
        ConnectorError, match=r"Label Studio: GET /health failed after 2 attempts: cannot connect to http://127.0.0.1:9"
    ):
        c.request("GET", "/health")
