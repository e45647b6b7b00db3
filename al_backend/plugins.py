"""Third-party extensions through Python entry points (the `[project.entry-points."<group>"]` of a package).

Groups: `al_backend.connectors` (connector factories, see connectors/__init__.py), `al_backend.ml_backends`
(ML-backend adapters for the server) and `al_backend.strategies`. Discovery reads the installed
distributions' metadata only (no import); an entry point's object is imported on first use and kept, so
each plugin is imported at most once per process. `clear_cache()` forgets both (tests, or after installing a
plugin into a running process). A plugin that cannot be imported is a ConfigError naming the plugin, its
distribution and the target, never a bare ImportError from somewhere inside it.
"""

from __future__ import annotations

import threading
from importlib.metadata import EntryPoint, entry_points

from .errors import ConfigError

__all__ = ["clear_cache", "entry_point_names", "load_entry_point", "load_entry_points"]

_lock = threading.RLock()
_found: dict[str, dict[str, EntryPoint]] = {}  # group -> name -> entry point (metadata only)
_loaded: dict[tuple[str, str], object] = {}  # (group, name) -> the loaded object


def _discover(group: str) -> dict[str, EntryPoint]:
    with _lock:
        if group not in _found:
            eps: dict[str, EntryPoint] = {}
            for ep in entry_points(group=group):
                eps.setdefault(ep.name, ep)  # the same distribution can be on sys.path twice: first wins
            _found[group] = eps
        return _found[group]


def entry_point_names(group: str) -> list[str]:
    """Names declared in `group` by the installed distributions, sorted; nothing is imported."""
    return sorted(_discover(group))


def load_entry_point(group: str, name: str) -> object:
    """The object behind entry point `name` of `group`, imported once. ConfigError if there is no such entry
    point, or if importing it fails (the message names the plugin, its distribution and the target)."""
    key = (group, name)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        ep = _discover(group).get(name)
        if ep is None:
            have = ", ".join(entry_point_names(group)) or "none installed"
            raise ConfigError(f"no plugin {name!r} in entry-point group {group!r} ({have})")
        try:
            obj = ep.load()
        except Exception as e:  # an ImportError, or anything the plugin's module raises at import
            dist = getattr(getattr(ep, "dist", None), "name", None)
            origin = f" from distribution {dist!r}" if dist else ""
            raise ConfigError(
                f"plugin {name!r} ({group}{origin}) failed to load {ep.value!r}: {type(e).__name__}: {e}; "
                "reinstall or uninstall that package"
            ) from e
        _loaded[key] = obj
        return obj


def load_entry_points(group: str) -> dict[str, object]:
    """{name: object} for every entry point of `group`, each imported once (see load_entry_point)."""
    return {name: load_entry_point(group, name) for name in entry_point_names(group)}


def clear_cache() -> None:
    """Forget what was discovered and loaded: the next call reads the installed distributions again."""
    with _lock:
        _found.clear()
        _loaded.clear()
