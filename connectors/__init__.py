"""Connectors: one module per labeling tool, each speaking the protocols in connectors.base, found by name.

    make_connector("argilla", config)        # a Connector for the configured dataset
    connector_names()                         # ["argilla", "file", "labelstudio", <plugins>...]
    register_connector("mytool", MyConnector) # in-process; or an entry point, see docs/plugins.md
    make_ml_backend("labelstudio")            # the server's MLBackendAdapter

A factory is a class with `from_config(config, **kwargs)` or a callable `factory(config, **kwargs)`.
Built-ins are imported only when asked for (the Argilla SDK is slow to import); third-party connectors come
from the entry-point group `al_backend.connectors` (ML-backend adapters: `al_backend.ml_backends`), read
once and imported on first use. Precedence: register_*() > built-in > entry point.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from .base import Connector, ConnectorBase, LabelSchema, MLBackendAdapter, OnChunk, PushReport, UnsupportedSchema

__all__ = [
    "CONNECTOR_GROUP",
    "ML_BACKEND_GROUP",
    "Connector",
    "ConnectorBase",
    "LabelSchema",
    "MLBackendAdapter",
    "OnChunk",
    "PushReport",
    "UnsupportedSchema",
    "connector_names",
    "make_connector",
    "make_ml_backend",
    "ml_backend_names",
    "register_connector",
    "register_ml_backend",
]

log = logging.getLogger(__name__)

CONNECTOR_GROUP = "al_backend.connectors"
ML_BACKEND_GROUP = "al_backend.ml_backends"


class _Registry:
    """Names -> factories: explicit registrations, lazily imported built-ins, then entry points."""

    def __init__(self, kind: str, group: str, builtins: dict[str, str]):
        self.kind = kind
        self.group = group
        self._builtins = builtins  # name -> "module:attribute", imported on first use
        self._registered: dict[str, Any] = {}
        self._lock = threading.Lock()

    def register(self, name: str, factory: Any) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if not callable(factory) and not callable(getattr(factory, "from_config", None)):
            raise TypeError(f"{self.kind} factory for {name!r} must be callable or have from_config, got {factory!r}")
        with self._lock:
            self._registered[name] = factory

    def names(self) -> list[str]:
        from al_backend.plugins import entry_point_names

        return sorted(set(self._registered) | set(self._builtins) | set(entry_point_names(self.group)))

    def factory(self, name: str) -> Any:
        with self._lock:
            if name in self._registered:
                return self._registered[name]
        if name in self._builtins:
            module, _, attr = self._builtins[name].partition(":")
            return getattr(importlib.import_module(module), attr)
        from al_backend.plugins import entry_point_names, load_entry_point

        if name in entry_point_names(self.group):
            return load_entry_point(self.group, name)  # ConfigError naming the plugin if it fails to import
        from al_backend.errors import ConfigError

        raise ConfigError(f"unknown {self.kind} {name!r}: choose one of {', '.join(self.names())}")


_connectors = _Registry(
    "connector",
    CONNECTOR_GROUP,
    {
        "file": "connectors.files:FileConnector",
        "labelstudio": "connectors.labelstudio:LabelStudioConnector",
        "argilla": "connectors.argilla:ArgillaConnector",
    },
)
_ml_backends = _Registry(
    "ML backend",
    ML_BACKEND_GROUP,
    {
        "labelstudio": "connectors.labelstudio:LabelStudioMLBackend",
    },
)


def register_connector(name: str, factory: Callable[..., Connector] | type) -> None:
    """Make `make_connector(name, config, **kwargs)` build connectors with `factory` (replaces any other)."""
    _connectors.register(name, factory)


def connector_names() -> list[str]:
    """Every connector name make_connector accepts: built-ins, registered ones and installed plugins."""
    return _connectors.names()


def make_connector(name: str, config: Any, **kwargs: Any) -> Connector:
    """Build the connector `name` ("file", "labelstudio", "argilla", or a plugin's) from the typed config.

    Unknown names and plugins that fail to import are ConfigErrors; so is a factory whose object lacks part
    of the Connector protocol."""
    factory = _connectors.factory(name)
    connector = _build(factory, config, **kwargs)
    _check(connector, Connector, "connector", name, ("name", "describe", "bind", "pull", "label_set", "push"))
    return connector


def register_ml_backend(name: str, factory: Callable[..., MLBackendAdapter] | type) -> None:
    _ml_backends.register(name, factory)


def ml_backend_names() -> list[str]:
    return _ml_backends.names()


def make_ml_backend(name: str, **kwargs: Any) -> MLBackendAdapter:
    """The ML-backend adapter for tool `name` (built-in: "labelstudio")."""
    adapter = _ml_backends.factory(name)(**kwargs)
    _check(
        adapter,
        MLBackendAdapter,
        "ML backend",
        name,
        ("name", "setup_schema", "predict_schema", "task_texts", "prediction", "connector"),
    )
    return adapter


def _build(factory: Any, config: Any, **kwargs: Any) -> Any:
    from_config = getattr(factory, "from_config", None)
    if callable(from_config):
        return from_config(config, **kwargs)
    return factory(config, **kwargs)


def _check(obj: Any, protocol: type, kind: str, name: str, members: tuple[str, ...]) -> None:
    if not isinstance(obj, protocol):
        from al_backend.errors import ConfigError

        missing = [m for m in members if not hasattr(obj, m)]
        raise ConfigError(
            f"{kind} {name!r} built {type(obj).__name__}, which lacks {', '.join(missing)} "
            f"of the {protocol.__name__} protocol (connectors/base.py)"
        )
