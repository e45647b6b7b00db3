"""Task types: what a label is and which head learns it (see tasks/base.py for the protocol)."""

from __future__ import annotations

from .base import Head, ModelOutputs, TaskType
from .single_label import SingleLabel

__all__ = ["Head", "ModelOutputs", "TaskType", "SingleLabel", "get_task", "TASKS"]

TASKS: dict[str, type] = {"single_label": SingleLabel}


def get_task(name: str = "single_label") -> TaskType:
    from ..errors import ConfigError

    try:
        return TASKS[name]()
    except KeyError:
        raise ConfigError(f"unknown task type {name!r}; valid: {', '.join(TASKS)}") from None
