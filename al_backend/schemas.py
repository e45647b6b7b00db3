"""Schemas of the bodies the ML backend accepts (Label Studio 1.23's payloads), and the server's guards.

Every endpoint validates its body here before touching it: a malformed shape is answered 422 with a message
naming the field (`tasks[0].data: expected an object, got a list`), never a 500. Unknown extra fields are
allowed (Label Studio adds fields between versions); the fields the backend reads are typed.

`install(app)` adds, in one call: the body-size limit on POST endpoints (413), a JSON 400 for bodies that are
not JSON, the 422 message for FastAPI's own validation, and a last-resort handler that answers a one-line
500 with credentials redacted (the traceback goes to the log at debug level only).
"""

from __future__ import annotations

import builtins
import json
import logging
import re
import sys
from typing import Any, Optional, Union

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .redact import redact

log = logging.getLogger("al_backend.server")

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024  # /predict of a full Data Manager page of long texts fits easily
LIMITED_PATHS = ("/predict", "/webhook", "/setup", "/train")

ProjectRef = Union[int, str, dict[str, Any], None]


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Task(_Loose):
    id: Union[int, str, None] = None
    data: dict[str, Any] = Field(default_factory=dict)
    project: ProjectRef = None


class PredictRequest(_Loose):
    tasks: list[Task] = Field(default_factory=list)
    project: ProjectRef = None
    label_config: Optional[str] = None
    params: Optional[dict[str, Any]] = None


class SetupRequest(_Loose):
    project: ProjectRef = None
    schema_: Optional[str] = Field(default=None, alias="schema")
    label_config: Optional[str] = None
    hostname: Optional[str] = None
    access_token: Optional[str] = None
    model_version: Optional[str] = None


class WebhookRequest(_Loose):
    action: Optional[str] = None
    project: ProjectRef = None
    task: Optional[dict[str, Any]] = None
    annotation: Optional[dict[str, Any]] = None


class TrainRequest(_Loose):
    project: ProjectRef = None


_UNION_TAG = re.compile(r"^(int|str|float|bool|none|dict\[.*\]|list\[.*\]|function-.*|literal\[.*\])$")


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part in ("body",) and not out:
            continue
        if isinstance(part, str) and _UNION_TAG.match(part):
            continue  # pydantic names the union member it tried: not a field
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def describe(err: ValidationError | RequestValidationError) -> str:
    """'tasks[0].data: Input should be a valid dictionary' for the first error, plus a count of the others."""
    errors = err.errors()
    if not errors:
        return "invalid body"
    grouped: dict[str, list[str]] = {}
    for e in errors:
        msgs = grouped.setdefault(_field(tuple(e.get("loc", ()))), [])
        if e.get("msg", "invalid") not in msgs:
            msgs.append(e.get("msg", "invalid"))
    field, msgs = next(iter(grouped.items()))
    msg = f"{field}: {', or '.join(msgs)}"  # a union's members: "Input should be a valid integer, or ... string"
    if len(grouped) > 1:
        msg += f" (and {len(grouped) - 1} more)"
    return msg


def validate_body(model: type[BaseModel], body: Any) -> BaseModel:
    """The body as `model`, or HTTPException 422 naming the first wrong field."""
    if not isinstance(body, dict):
        raise HTTPException(status_code=422, detail=f"body: expected a JSON object, got {_json_type(body)}")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise HTTPException(status_code=422, detail=describe(e)) from None


def _json_type(value: Any) -> str:
    return {
        list: "an array",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


async def read_json(request: Request) -> Any:
    """The parsed body; HTTPException 400 when it is not JSON (an empty body is {})."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise HTTPException(status_code=400, detail="body is not valid JSON") from None


class Guard:
    """ASGI middleware, innermost of the user middlewares' outer edge:

    * bodies over `max_bytes` on the limited paths get 413, whether the client sends Content-Length or streams
      the body in chunks (the body is read here, then handed on: the endpoints read it whole anyway);
    * any exception that escapes the app is answered with a one-line 500 (credentials redacted) and logged on
      one line, the traceback only at debug level (Starlette's own last resort would log a traceback)."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY_BYTES, paths: tuple[str, ...] = LIMITED_PATHS):
        self.app = app
        self.max_bytes = max_bytes
        self.paths = paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limited = scope.get("path") in self.paths
        if limited:
            for name, value in scope.get("headers") or []:
                if name == b"content-length":
                    try:
                        declared = int(value)
                    except ValueError:
                        return await _reject(send, 400, "Content-Length is not a number")
                    if declared > self.max_bytes:
                        return await _reject(send, 413, self._too_big())
        if limited:  # read the whole body first (the endpoints do anyway): over the limit, answer 413 at once
            chunks: list[bytes] = []
            size, more = 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                body = message.get("body", b"")
                size += len(body)
                if size > self.max_bytes:
                    return await _reject(send, 413, self._too_big())
                chunks.append(body)
                more = message.get("more_body", False)
            buffered: dict[str, Any] | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

            async def replay():
                nonlocal buffered
                if buffered is not None:
                    message, buffered = buffered, None
                    return message
                return await receive()
        else:
            replay = receive
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, replay, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last resort: one line, no traceback, no secret
            leaf = _leaf(exc)
            where = f"{scope.get('method', '')} {scope.get('path', '')}"
            log.error("%s failed: %s", where, redact(f"{type(leaf).__name__}: {leaf}"))
            log.debug("%s traceback", where, exc_info=exc)
            if not started:
                await _reject(send, 500, redact(f"internal error: {type(leaf).__name__}: {leaf}"))

    def _too_big(self) -> str:
        return f"body larger than {self.max_bytes} bytes ([server] max_body_bytes)"


async def _reject(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


if sys.version_info >= (3, 11):
    _ExceptionGroup = builtins.BaseExceptionGroup  # (via builtins: ruff's py310 target does not know the name)
else:  # pragma: no cover - the exceptiongroup backport (an anyio dependency) on 3.10
    from exceptiongroup import BaseExceptionGroup as _ExceptionGroup


def _leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups, which anyio task groups wrap errors in."""
    while isinstance(exc, _ExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def install(app, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
    """Body-size limit, 422 messages naming the field, and a redacted one-line 500 as the last resort."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": describe(exc), "error": "InvalidBody"}, status_code=422)

    app.add_middleware(Guard, max_bytes=max_body_bytes)
