"""Connectors: one module per labeling tool, each speaking the small protocol in connectors.base."""

from .base import Connector, PushReport

__all__ = ["Connector", "PushReport", "make_connector"]


def make_connector(source: str, config, **kwargs) -> Connector:
    """Build the connector named by `source` ("file", "labelstudio", "argilla") from the typed config."""
    if source == "file":
        from .files import FileConnector

        return FileConnector.from_config(config, **kwargs)
    if source == "labelstudio":
        from .labelstudio import LabelStudioConnector

        return LabelStudioConnector.from_config(config, **kwargs)
    if source == "argilla":
        from .argilla import ArgillaConnector

        return ArgillaConnector.from_config(config, **kwargs)
    from al_backend.errors import ConfigError

    raise ConfigError(f"unknown source {source!r}: choose file, labelstudio or argilla")
