"""`al-backend serve`: run the Label Studio ML backend (al_backend.server) under uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from ..errors import ALBackendError, ConfigError
from ..redact import install_logging_filter, redact, redact_url

log = logging.getLogger("al_backend.server")

EPILOG = (
    "Examples:\n\n"
    "  al-backend serve                                   # 127.0.0.1:9090, LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY\n\n"
    "  AL_BASIC_AUTH_USER=ls AL_BASIC_AUTH_PASS=... al-backend serve --host 0.0.0.0 --config al.toml\n\n"
    "Then in Label Studio: Project > Settings > Model > Connect Model, URL http://HOST:9090\n"
    "(with Basic auth if set). Annotations then retrain and reprioritise the project.\n"
)


def serve(
    host: Optional[str] = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1, [server] host)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default 9090, [server] port)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML configuration file."),
    state: Optional[str] = typer.Option(
        None,
        "--state",
        help="State file; '{project}' is replaced by the Label Studio project id. "
        "Default: .al-state/labelstudio-<project>.sqlite",
    ),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback --host without any auth."),
    log_format: str = typer.Option("text", "--log-format", help="Log lines as 'text' or 'json'."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Run the Label Studio ML backend: /health, /setup, /predict, /webhook (annotations retrain and reprioritise).

    Secrets come from the config file or the environment only (never flags, which `ps` shows):
    AL_BASIC_AUTH_USER / AL_BASIC_AUTH_PASS (Label Studio's "Basic auth" for ML backends),
    AL_API_TOKEN (Authorization: Bearer), LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY (to pull and push).
    """
    from ..config import load_config

    try:
        from .main import setup_logging

        setup_logging(log_format, verbose)
    except ImportError:  # pragma: no cover
        logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO)
    try:
        cfg = load_config(config, overrides={"server.host": host, "server.port": port, "state.path": state})
        check_bind(cfg.server.host, cfg, insecure)
        if not cfg.labelstudio.api_key:
            log.warning(
                "no Label Studio API key configured (LABEL_STUDIO_API_KEY): pulling and pushing will use "
                "the token Label Studio sends in /setup, which only works with legacy tokens enabled"
            )
    except ALBackendError as e:
        typer.echo(f"error: {redact(str(e))}", err=True)
        raise typer.Exit(e.exit_code) from None

    import uvicorn

    from ..server import create_app

    app = create_app(cfg)
    auth = []
    if cfg.server.basic_auth_user and cfg.server.basic_auth_pass:
        auth.append("basic auth")
    if cfg.server.api_token:
        auth.append("bearer token")
    log.info(
        "al-backend ML backend on http://%s:%d (auth: %s); Label Studio at %s",
        cfg.server.host,
        cfg.server.port,
        ", ".join(auth) or "none",
        redact_url(cfg.labelstudio.url),
    )
    server_config = uvicorn.Config(
        app, host=cfg.server.host, port=cfg.server.port, log_level="debug" if verbose else "info", access_log=verbose
    )
    install_logging_filter("uvicorn", "uvicorn.error", "uvicorn.access")  # after uvicorn set up its handlers
    uvicorn.Server(server_config).run()


def check_bind(host: str, cfg, insecure: bool) -> None:
    from ..server import auth_from_config, is_loopback

    s = cfg.server
    if bool(s.basic_auth_user) != bool(s.basic_auth_pass):
        raise ConfigError(
            "set both AL_BASIC_AUTH_USER and AL_BASIC_AUTH_PASS ([server] basic_auth_user/pass), or neither"
        )
    if not is_loopback(host) and not auth_from_config(cfg).enabled and not insecure:
        raise ConfigError(
            f"refusing to serve on {host} without authentication: set AL_BASIC_AUTH_USER + AL_BASIC_AUTH_PASS "
            "and/or AL_API_TOKEN, bind 127.0.0.1, or pass --insecure if a proxy in front handles auth"
        )


def register(app: typer.Typer) -> None:
    app.command(epilog=EPILOG)(serve)
