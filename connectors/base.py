"""The protocol every connector speaks: pull a Pool, push a Ranking. Only connectors talk to tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from al_backend.pool import Pool, Ranking


@dataclass
class PushReport:
    """What a push did: how many items were written, where, and anything skipped."""

    pushed: int
    target: str
    details: dict = field(default_factory=dict)


@runtime_checkable
class Connector(Protocol):
    name: str

    def describe(self) -> str:
        """Where this connector reads and writes, for messages (never includes tokens)."""

    def pull(self) -> Pool:
        """All tasks of the project: labeled ones with their (majority) label, the rest with None."""

    def label_set(self) -> list[str] | None:
        """The fixed label set when the tool defines one (LS Choices, Argilla LabelQuestion), else None."""

    def push(self, ranking: Ranking) -> PushReport:
        """Write the ranking back so the tool serves tasks in its order."""
