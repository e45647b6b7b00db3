"""A retrying httpx client for connectors: transient failures retried with backoff, every error names its call.

Retried: connection errors, timeouts, 429 and 5xx, with exponential backoff and full jitter up to a bound.
Not retried: other 4xx (a wrong token or a bad request does not get better by asking again).
A non-idempotent call (`idempotent=False`, e.g. a bulk import) is only retried when the request never
reached the server (connect errors), so a slow server cannot make it apply twice.
Errors are `ConnectorError` naming the service, method and path (never headers, never tokens) and why.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import httpx

from al_backend.errors import ConnectorError

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class Auth(Protocol):
    """Supplies the Authorization header; may refresh credentials once when the server answers 401."""

    def headers(self, client: HttpClient) -> dict[str, str]: ...

    def refresh(self, client: HttpClient) -> bool:
        """Get fresh credentials after a 401; True if the call is worth repeating."""


class HttpError(ConnectorError):
    """A call failed with an HTTP status; `.status` holds it (None for transport failures)."""

    def __init__(self, message: str, status: int | None = None, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body


class HttpClient:
    """httpx.Client with retries and clear errors. `service` names the tool in messages ("Label Studio")."""

    def __init__(
        self,
        base_url: str,
        *,
        service: str,
        auth: Auth | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.base_url = base_url.rstrip("/")
        self.service = service
        self.auth = auth
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
            headers={"Accept": "application/json"},
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpClient:  # `with HttpClient(...) as c:` closes the connection pool
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1-based): full jitter on a capped exponential."""
        cap = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return random.uniform(cap / 2, cap)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        ok: Iterable[int] = (200, 201, 204),
        idempotent: bool | None = None,
        authenticated: bool = True,
        timeout: float | None = None,
        what: str | None = None,
    ) -> httpx.Response:
        """Send one call; return the response if its status is in `ok`, else raise HttpError.

        `what` is a human description for messages ("list tasks"); the method and path are always named.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"}
        ok = set(ok)
        call = f"{method} {path}"
        label = f"{self.service}: {what} ({call})" if what else f"{self.service}: {call}"
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            sent_auth = dict(self.auth.headers(self)) if (self.auth and authenticated) else {}
            headers = dict(sent_auth)
            kwargs: dict[str, Any] = {"params": params, "headers": headers}
            if json_body is not None:
                # serialise once by hand: httpx's default adds indentation-free but slower encoding paths
                kwargs["content"] = json.dumps(json_body, separators=(",", ":")).encode()
                headers["Content-Type"] = "application/json"
            if timeout is not None:
                kwargs["timeout"] = timeout
            try:
                resp = self._client.request(method, path, **kwargs)
            except httpx.TransportError as e:
                never_sent = isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout))
                why = _transport_reason(e, self.base_url)
                if attempt <= self.retries and (idempotent or never_sent):
                    wait = self.delay(attempt)
                    log.info("%s failed (%s); retry %d/%d in %.1f s", label, why, attempt, self.retries, wait)
                    self._sleep(wait)
                    continue
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                raise HttpError(_redact(f"{label} failed{tries}: {why}", sent_auth, self.auth)) from None
            if resp.status_code in ok:
                return resp
            if resp.status_code == 401 and self.auth and authenticated and not refreshed:
                refreshed = True
                if self.auth.refresh(self):
                    attempt -= 1  # a credential refresh is not a retry
                    continue
            if resp.status_code in RETRY_STATUS and idempotent and attempt <= self.retries:
                wait = _retry_after(resp) or self.delay(attempt)
                log.info("%s answered %d; retry %d/%d in %.1f s", label, resp.status_code, attempt, self.retries, wait)
                self._sleep(wait)
                continue
            tries = f" after {attempt} attempts" if attempt > 1 else ""
            raise HttpError(
                _redact(f"{label} failed{tries}: HTTP {resp.status_code} {_detail(resp)}", sent_auth, self.auth),
                status=resp.status_code,
                body=_body(resp),
            )

    def get_json(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw).json()


def _redact(message: str, headers: dict[str, str], auth: Any) -> str:
    """Blank out credentials a server may echo back in its error body (the header values we sent, and
    whatever the auth object lists in an optional `secrets()`)."""
    secrets = {part for value in headers.values() for part in [value, *value.split()] if len(part) >= 8}
    extra = getattr(auth, "secrets", None)
    if callable(extra):
        secrets.update(s for s in extra() if s and len(s) >= 8)
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def _transport_reason(e: httpx.TransportError, base_url: str) -> str:
    if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)):
        return f"cannot connect to {base_url} ({type(e).__name__}: {e or 'no answer'}); is the server running and the URL right?"
    if isinstance(e, httpx.TimeoutException):
        return f"timed out waiting for {base_url} ({type(e).__name__})"
    return f"{type(e).__name__}: {e}"


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return min(float(value), 30.0) if value else None
    except ValueError:
        return None


def _body(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text


def _detail(resp: httpx.Response) -> str:
    """A short reason from the body: Django REST's `detail` / `validation_errors`, else the start of the text."""
    body = _body(resp)
    if isinstance(body, dict):
        parts = []
        for key in ("detail", "message", "error"):
            if body.get(key):
                parts.append(str(body[key]))
                break
        if body.get("validation_errors"):
            parts.append(json.dumps(body["validation_errors"])[:300])
        if parts:
            return "- " + "; ".join(parts)
        return "- " + json.dumps(body)[:300]
    text = str(body or resp.reason_phrase).strip().replace("\n", " ")
    if text.lstrip().startswith("<"):
        return f"- {resp.reason_phrase}"  # an HTML error page says nothing useful in one line
    return "- " + text[:300]
