"""The Label Studio ML backend: /health, /setup, /predict and /webhook, speaking Label Studio 1.23's protocol.

Label Studio waits 1 s for /webhook and never retries, so the handler only marks the project for a
retrain and returns; one background thread trains. Coalescing: one training at a time and at most one
pending per project, so a flood of annotation events costs at most two rounds. Each retrain is a full
round (pull -> fit -> rank -> push through the connector), so Label Studio serves the new order at once.

Auth (optional, both may be set): HTTP basic auth (what Label Studio sends when the backend is connected
with auth_method BASIC_AUTH) and a bearer token. /health stays open. Label Studio's webhook carries no
credentials, so /webhook without them is accepted only for projects this backend already serves (it can then
only cause a retrain, as any annotation does). Secrets are never logged.

Nothing here parses Label Studio's payloads: the labeling config, task texts and the prediction format come
from the tool's MLBackendAdapter and each project's Connector, both from the `connectors` registry.
"""

from __future__ import annotations

import contextlib
import copy
import hmac
import ipaddress
import logging
import threading
import time
import traceback
from base64 import b64decode
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from connectors import MLBackendAdapter, UnsupportedSchema, make_ml_backend

from . import schemas
from .config import Config
from .errors import ALBackendError, EmptyPoolError
from .redact import redact, redact_obj

log = logging.getLogger("al_backend.server")

TRAIN_ACTIONS = frozenset(
    {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "START_TRAINING", "ANNOTATIONS_CREATED"}
)
DEFAULT_STATE = Config().state.path
ML_BACKEND = "labelstudio"  # the tool whose ML-backend protocol this server speaks (connectors.make_ml_backend)


# ---------------------------------------------------------------------------------------------- scheduling
@dataclass
class ProjectStats:
    requested: int = 0  # events that asked for a retrain
    coalesced: int = 0  # events absorbed by an already pending retrain
    started: int = 0
    completed: int = 0
    failed: int = 0
    last_error: str | None = None
    last_result: dict[str, Any] | None = None
    last_finished: float | None = None
    running: bool = False
    pending: bool = False


class RetrainScheduler:
    """One worker thread; per project at most one retrain running and at most one pending.

    `run(project)` does the work; `request(project)` never blocks beyond a lock and returns whether the
    event started a new pending retrain (False = coalesced into one already pending).
    """

    def __init__(self, run: Callable[[int], dict[str, Any] | None], *, name: str = "al-retrain"):
        self._run = run
        self._cond = threading.Condition()
        self._queue: deque[int] = deque()
        self._stats: dict[int, ProjectStats] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._started:
            self._thread.join(timeout)

    def request(self, project: int) -> bool:
        with self._cond:
            st = self._stats.setdefault(project, ProjectStats())
            st.requested += 1
            if st.pending:
                st.coalesced += 1
                return False
            st.pending = True
            self._queue.append(project)
            self._cond.notify_all()
            return True

    def stats(self, project: int | None = None) -> dict[str, Any]:
        with self._cond:
            if project is not None:
                return dict(vars(self._stats.get(project, ProjectStats())))
            return {str(p): dict(vars(s)) for p, s in self._stats.items()}

    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not any(s.running for s in self._stats.values())

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or any(s.running for s in self._stats.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                project = self._queue.popleft()
                st = self._stats[project]
                st.pending = False  # events from now on ask for another round after this one
                st.running = True
                st.started += 1
            result, error = None, None
            try:
                result = self._run(project)
            except Exception as e:  # the worker must survive any failure
                error = f"{type(e).__name__}: {e}"
                if isinstance(e, ALBackendError):
                    log.error("retrain of project %s failed: %s", project, e)
                else:
                    log.error("retrain of project %s crashed: %s (serve --verbose logs the traceback)", project, error)
                    log.debug("retrain of project %s: %s", project, traceback.format_exc())
            with self._cond:
                st.running = False
                st.last_finished = time.time()
                if error is None:
                    st.completed += 1
                    st.last_result = result
                    st.last_error = None
                else:
                    st.failed += 1
                    st.last_error = error
                self._cond.notify_all()


# ---------------------------------------------------------------------------------------------- per project
def project_config(config: Config, project: int) -> Config:
    """The config for one Label Studio project: [labelstudio] project set, its own state file."""
    cfg = copy.deepcopy(config)
    cfg.labelstudio.project = project
    path = config.state.path
    if "{project}" in path:
        cfg.state.path = path.format(project=project)
    elif path == DEFAULT_STATE:
        cfg.state.path = f".al-state/labelstudio-{project}.sqlite"  # same file `prioritize --project` uses
    elif config.labelstudio.project and config.labelstudio.project != project:
        p = Path(path)
        cfg.state.path = str(p.with_name(f"{p.stem}-{project}{p.suffix}"))
    return cfg


def default_engine_factory(cfg: Config):
    """The project's Round over its open state (kept for /predict between retrains)."""
    from .round import Round
    from .store import Store

    return Round(cfg, Store.open(cfg.state.path), progress=False)


def default_connector_factory(cfg: Config, setup: dict[str, Any] | None = None):
    """The connector for one project, from the tool's adapter: config/env credentials, else what /setup
    brought (hostname, token)."""
    return make_ml_backend(ML_BACKEND).connector(cfg, setup)


class Backend:
    """Engines and connectors per project, the scheduler, and the round the worker runs."""

    def __init__(self, config: Config, engine_factory=None, connector_factory=None, lock_wait: float = 600.0):
        self.config = config
        self.engine_factory = engine_factory or default_engine_factory
        self.connector_factory = connector_factory or default_connector_factory
        self.adapter: MLBackendAdapter = make_ml_backend(ML_BACKEND)
        self.lock_wait = lock_wait
        self._engines: dict[int, Any] = {}
        self._setup: dict[int, dict[str, Any]] = {}
        self._versions: dict[int, str] = {}
        self.predict_calls = 0
        self.predicted_tasks = 0
        self._lock = threading.RLock()  # one engine user at a time (SQLite connection, torch model)
        self.scheduler = RetrainScheduler(self.retrain)

    def engine(self, project: int):
        with self._lock:
            if project not in self._engines:
                self._engines[project] = self.engine_factory(project_config(self.config, project))
            return self._engines[project]

    def remember_setup(self, project: int, setup: dict[str, Any]) -> bool:
        """Keep what /setup told us; True the first time this project is seen."""
        with self._lock:
            first = project not in self._setup
            self._setup[project] = {k: setup.get(k) for k in ("hostname", "access_token")}
            return first

    def knows(self, project: int) -> bool:
        """A project this backend serves: set up through /setup, configured, or with a state file already."""
        if project in self._setup or project == self.config.labelstudio.project:
            return True
        return Path(project_config(self.config, project).state.path).exists()

    def connector(self, project: int):
        return self.connector_factory(project_config(self.config, project), self._setup.get(project))

    def metrics_text(self) -> str:
        """Prometheus text for every project this process serves: its state (rounds, last round time and
        duration, pool, labels) and the scheduler's counters (trainings, errors, coalesced events)."""
        from .observability import prometheus_text_many
        from .store import Store

        stats = self.scheduler.stats()
        projects = {int(p) for p in stats} | set(self._engines) | set(self._setup)
        if self.config.labelstudio.project:
            projects.add(int(self.config.labelstudio.project))
        entries, stores = [], []
        try:
            for project in sorted(projects):
                path = Path(project_config(self.config, project).state.path)
                store = None
                if path.exists():
                    try:  # its own read connection: a retrain holding the engine's lock must not block a scrape
                        store = Store.open(path, create=False)
                        stores.append(store)
                    except ALBackendError as e:
                        log.warning("metrics: project %s: %s", project, e)
                entries.append(({"project": str(project)}, store, stats.get(str(project), {})))
            return prometheus_text_many(entries)
        finally:
            for store in stores:
                store.close()

    def retrain(self, project: int) -> dict[str, Any]:
        """One round for the project (the same `run_project_round` as the CLI). Runs on the worker thread."""
        from .round import run_project_round

        cfg = project_config(self.config, project)
        connector = self.connector(project)
        try:
            with self._lock:
                round_ = self.engine(project)
            # The engine lock is held around the work on the state, not around the pull: a project that
            # "retrieves predictions automatically" makes Label Studio call our /predict while it lists tasks.
            summary = run_project_round(
                cfg,
                connector,
                round_=round_,
                wait=self.lock_wait,
                progress=False,
                guard=lambda: self._lock,
                on_ranking=lambda ranking: self._versions.__setitem__(project, ranking.model_version),
            )
        except EmptyPoolError as e:
            log.info("project %s: %s", project, e)
            return {"round": None, "ranked": 0, "reason": str(e)}
        finally:
            close = getattr(connector, "close", None)
            if close:
                close()
        result = {
            key: summary[key]
            for key in (
                "round",
                "model_version",
                "strategy",
                "pool_size",
                "labeled",
                "ranked",
                "batch",
                "pushed",
                "push",
                "pull_s",
                "stopping",
            )
        }
        result["first"] = summary["ranking"].ids[0] if summary["ranking"].ids else None
        result["seconds"] = round(summary["seconds"], 3)
        log.info(
            "project %s: round %s (%s) ranked %d, pushed %d, version %s in %.1f s",
            project,
            result["round"],
            result["strategy"],
            result["ranked"],
            result["pushed"],
            result["model_version"],
            result["seconds"],
        )
        return result

    def predict(self, project: int, schema: Any, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One prediction per task, in the tool's format; `schema` from the adapter's predict_schema."""
        adapter = self.adapter
        self.predict_calls += 1
        self.predicted_tasks += len(tasks)
        texts = adapter.task_texts(schema, tasks)
        with self._lock:
            engine = self.engine(project)
            rows = [i for i, t in enumerate(texts) if t.strip()]
            pred = engine.predict([texts[i] for i in rows]) if rows else None
        out = [adapter.prediction(schema, None, 0.0, pred.model_version if pred else "none") for _ in tasks]
        if pred is not None:
            for j, i in enumerate(rows):
                conf = float(pred.confidence[j])
                out[i] = adapter.prediction(schema, pred.labels[j], 0.0 if conf != conf else conf, pred.model_version)
        return out

    def current_version(self, project: int) -> str:
        """The version last pushed by this server (no engine access: /setup must answer within 3 s)."""
        return self._versions.get(project, "none")


# ---------------------------------------------------------------------------------------------- auth
@dataclass
class AuthSettings:
    basic_user: str = ""
    basic_pass: str = field(default="", repr=False)
    api_token: str = field(default="", repr=False)

    @property
    def enabled(self) -> bool:
        return bool((self.basic_user and self.basic_pass) or self.api_token)

    def check(self, header: str | None) -> bool:
        if not self.enabled:
            return True
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and self.basic_user and self.basic_pass:
            try:
                user, _, pw = b64decode(value.strip()).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            ok_user = hmac.compare_digest(user.encode(), self.basic_user.encode())
            ok_pass = hmac.compare_digest(pw.encode(), self.basic_pass.encode())
            return ok_user and ok_pass
        if scheme in ("bearer", "token") and self.api_token:
            return hmac.compare_digest(value.strip().encode(), self.api_token.encode())
        return False


def auth_from_config(config: Config) -> AuthSettings:
    s = config.server
    return AuthSettings(s.basic_auth_user, s.basic_auth_pass, s.api_token)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_project(value: Any) -> int | None:
    """Label Studio names projects "<id>.<created timestamp>" in ML calls, and {"id": ...} in webhooks."""
    if isinstance(value, dict):
        value = value.get("id")
    if value is None:
        return None
    try:
        return int(str(value).split(".", 1)[0])
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------- the app
def create_app(config: Config, engine_factory=None, connector_factory=None, *, start_worker: bool = True) -> FastAPI:
    """The FastAPI app. engine_factory(cfg) -> Engine and connector_factory(cfg, setup) -> connector are
    called per Label Studio project with that project's config."""
    backend = Backend(config, engine_factory, connector_factory)
    auth = auth_from_config(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_worker:
            backend.scheduler.start()
        try:
            yield
        finally:
            backend.scheduler.stop()

    app = FastAPI(
        title="al-backend",
        description="Active-learning ML backend for Label Studio",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.backend = backend

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        authorized = auth.check(request.headers.get("authorization"))
        request.state.authorized = authorized
        # Label Studio sends its webhook without the ML backend's credentials (the subscription it creates
        # has no headers), so /webhook decides itself: unauthenticated calls may only ask for a retrain of a
        # project this backend already serves, which is what an annotation does anyway.
        if request.url.path not in ("/health", "/webhook") and not authorized:
            headers = {"WWW-Authenticate": 'Basic realm="al-backend"'} if auth.basic_user else {}
            return JSONResponse({"detail": "authentication required"}, status_code=401, headers=headers)
        return await call_next(request)

    schemas.install(app, config.server.max_body_bytes)  # body-size limit, 422 naming the field, no bare 500

    @app.exception_handler(ALBackendError)
    async def _app_error(request: Request, exc: ALBackendError):
        return JSONResponse({"detail": redact(str(exc)), "error": type(exc).__name__}, status_code=400)

    @app.get("/health")
    @app.get("/")
    async def health() -> dict[str, Any]:
        return {"status": "UP", "model_class": "al-backend"}

    @app.post("/setup")
    async def setup(request: Request):
        body = await _json(request)
        schemas.validate_body(schemas.SetupRequest, body)
        project = parse_project(body.get("project"))
        try:
            schema = backend.adapter.setup_schema(body)
        except UnsupportedSchema as e:
            log.warning("setup for project %s refused: %s", project, e)
            return JSONResponse(
                {"detail": f"al-backend cannot learn from this project: {e}", "error": type(e).__name__},
                status_code=400,
            )
        if project is None:
            return JSONResponse({"detail": "setup without a project id"}, status_code=400)
        first = backend.remember_setup(project, body)
        if first and start_worker:
            backend.scheduler.request(project)  # rank a fresh project at once: cold-start seeds first
        log.info("setup: project %s, %s", project, schema.describe())
        return {"model_version": backend.current_version(project)}

    @app.post("/predict")
    def predict(body: dict[str, Any]):
        schemas.validate_body(schemas.PredictRequest, body)
        tasks = body.get("tasks") or []
        project = parse_project(body.get("project"))
        if project is None and tasks:
            project = parse_project(tasks[0].get("project"))
        if project is None:
            return JSONResponse({"detail": "predict without a project id"}, status_code=400)
        try:
            schema = backend.adapter.predict_schema(body)
        except UnsupportedSchema as e:
            return JSONResponse({"detail": str(e), "error": type(e).__name__}, status_code=400)
        return {"results": backend.predict(project, schema, tasks)}

    @app.post("/webhook")
    async def webhook(request: Request):
        body = await _json(request)
        schemas.validate_body(schemas.WebhookRequest, body)
        action = str(body.get("action") or "")
        project = parse_project(body.get("project"))
        if project is None and isinstance(body.get("task"), dict):
            project = parse_project(body["task"].get("project"))
        if not request.state.authorized and (project is None or not backend.knows(project)):
            headers = {"WWW-Authenticate": 'Basic realm="al-backend"'} if auth.basic_user else {}
            return JSONResponse(
                {"detail": "authentication required for a project this backend does not serve"},
                status_code=401,
                headers=headers,
            )
        if action not in TRAIN_ACTIONS or project is None:
            return {"status": "ignored", "action": action}
        new = backend.scheduler.request(project)
        return {"status": "scheduled" if new else "coalesced", "action": action, "project": project}

    @app.post("/train")
    async def train(request: Request):
        """Older Label Studio versions call /train for "Start Training"; same effect as START_TRAINING."""
        body = await _json(request)
        schemas.validate_body(schemas.TrainRequest, body)
        project = parse_project(body.get("project"))
        if project is None:
            return JSONResponse({"detail": "train without a project id"}, status_code=400)
        new = backend.scheduler.request(project)
        return {"status": "scheduled" if new else "coalesced", "project": project}

    @app.get("/status")
    async def status() -> dict[str, Any]:
        return redact_obj(
            {
                "projects": backend.scheduler.stats(),
                "idle": backend.scheduler.idle(),
                "predict": {"calls": backend.predict_calls, "tasks": backend.predicted_tasks},
            }
        )

    @app.get("/metrics")
    def metrics():
        from fastapi.responses import PlainTextResponse

        return PlainTextResponse(redact(backend.metrics_text()), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


async def _json(request: Request) -> Any:
    return await schemas.read_json(request)  # 400 when not JSON; validate_body then checks the shape


def wait_healthy(url: str, proc: Any = None, timeout: float = 60.0, interval: float = 0.2) -> bool:
    """Poll `url`/health until it answers 200 (True), or the process `proc` exits or `timeout` passes (False).

    For whoever starts `al-backend serve` as a subprocess: the load benchmark and the tests."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            return False
        time.sleep(interval)
