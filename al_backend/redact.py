"""Credentials never leave the process: one function that scrubs any text, and a logging filter that applies it.

What is scrubbed, wherever it appears (log lines, error messages, `status`, `/status`, `/metrics`):
  * user info in URLs: ``http://user:secret@host`` -> ``http://***@host``;
  * every secret value the configuration holds (API keys, passwords, tokens, the password of a URL), once
    `register_secret` knows it (`load_config` registers them all, whatever the source: TOML, environment, flag);
  * ``Authorization``-style values and ``key=value`` pairs whose key names a secret (token, api_key, password...).

`install_logging_filter()` puts `RedactingFilter` on every handler of the root logger (and uvicorn's), so a
message formatted anywhere, exception text included, is scrubbed before it is written.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

MASK = "***"
MIN_SECRET_LEN = 4  # shorter values would mask ordinary words

_lock = threading.Lock()
_secrets: set[str] = set()

# scheme://user[:password]@host  ->  scheme://***@host   (no '/', '@' or whitespace inside the user info)
# (also "http:/user:pw@host": what a URL becomes once a path library normalised it)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*:/{1,2})(?P<userinfo>[^/@\s'\"<>]+)@")
# Authorization: Bearer xxx / Token xxx / Basic xxx (a value with a digit: "basic authentication" stays)
_AUTH_HEADER = re.compile(r"(?i)\b(bearer|token|basic)(\s+)(?=[A-Za-z0-9._~+/=\-]*\d)([A-Za-z0-9._~+/=\-]{8,})")
_SECRET_KEY = r"[\w\-]*(?:api[_\-]?key|apikey|token|password|passwd|secret)"
# api_key=..., ?token=... (query strings, flags)
_KEY_EQ = re.compile(r"(?i)\b(" + _SECRET_KEY + r"=)([^\s&,;'\"]+)")
# "password": "...", api_key = '...'  (JSON, TOML, repr of dicts): the value is quoted
_KEY_QUOTED = re.compile(r"(?i)([\"']?\b" + _SECRET_KEY + r"[\"']?\s*[:=]\s*)([\"'])(.*?)\2")


def register_secret(value: Any) -> None:
    """Remember a secret so that `redact` masks it wherever it appears (also its URL-decoded form)."""
    if not isinstance(value, str):
        return
    value = value.strip()
    with _lock:
        for v in {value, unquote(value)}:
            if len(v) >= MIN_SECRET_LEN:
                _secrets.add(v)


def register_url(url: Any) -> None:
    """Register the password (and user) inside a URL's user info."""
    if not isinstance(url, str):
        return
    for m in _URL_USERINFO.finditer(url):
        user, _, password = m.group("userinfo").partition(":")
        register_secret(password)
        register_secret(m.group("userinfo"))


def known_secrets() -> Iterable[str]:
    with _lock:
        return sorted(_secrets, key=len, reverse=True)


def forget_secrets() -> None:
    """For tests."""
    with _lock:
        _secrets.clear()


def redact(text: Any) -> str:
    """The text with every credential replaced by ***."""
    s = text if isinstance(text, str) else str(text)
    if not s:
        return s
    s = _URL_USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", s)
    for secret in known_secrets():
        if secret in s:
            s = s.replace(secret, MASK)
    s = _AUTH_HEADER.sub(lambda m: m.group(1) + m.group(2) + MASK, s)
    s = _KEY_EQ.sub(lambda m: m.group(1) + MASK, s)
    s = _KEY_QUOTED.sub(lambda m: m.group(1) + m.group(2) + MASK + m.group(2), s)
    return s


def redact_url(url: str) -> str:
    return _URL_USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", url or "")


def redact_obj(obj: Any) -> Any:
    """Redact every string inside a JSON-like structure (dicts, lists), keys left alone."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj


class RedactingFilter(logging.Filter):
    """Formats the record's message once, scrubbed; exception text too (cached on the record, scrubbed)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep the raw parts, scrubbed
            message = f"{record.msg} {record.args}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def install_logging_filter(*loggers: str) -> None:
    """Attach the filter to every handler of the root logger and of the named loggers (idempotent)."""
    targets = [logging.getLogger()] + [
        logging.getLogger(n) for n in loggers or ("uvicorn", "uvicorn.error", "uvicorn.access")
    ]
    for lg in targets:
        for h in lg.handlers:
            if _FILTER not in h.filters:
                h.addFilter(_FILTER)
