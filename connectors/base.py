"""The protocols connectors speak. Only connectors talk to labeling tools; al_backend/ sees these types.

- `Connector`: pull a Pool, push a Ranking (in chunks, resumable), for one project/dataset/file.
- `MLBackendAdapter`: the tool-facing half of the ML backend server (al_backend/server.py): parse the
  project's labeling schema from the tool's setup/predict calls, turn tasks into texts, render predictions.

Connectors receive the project's Store and Embedder through `bind()`; they never open them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from al_backend.errors import ConnectorError
from al_backend.pool import Pool, Ranking

if TYPE_CHECKING:
    from al_backend.embedding import Embedder
    from al_backend.store import Store

__all__ = [
    "Connector",
    "ConnectorBase",
    "LabelSchema",
    "MLBackendAdapter",
    "OnChunk",
    "PushReport",
    "UnsupportedSchema",
]

OnChunk = Callable[[int, int], None]  # on_chunk(done, total) after each chunk the tool has accepted


@dataclass
class PushReport:
    """What a push did: how many items were written, where, and anything skipped."""

    pushed: int
    target: str
    details: dict = field(default_factory=dict)


@runtime_checkable
class Connector(Protocol):
    """One project in one labeling tool (or one local file)."""

    name: str

    def describe(self) -> str:
        """Where this connector reads and writes, for messages and as the push-progress key (never a token)."""

    def bind(self, store: Store, embedder: Embedder) -> None:
        """Receive the project's state and embedder before a push (a connector never opens them itself)."""

    def pull(self) -> Pool:
        """All tasks of the project: labeled ones with their (majority) label, the rest with None."""

    def label_set(self) -> list[str] | None:
        """The fixed label set when the tool defines one (LS Choices, Argilla LabelQuestion), else None."""

    def push(self, ranking: Ranking, start_chunk: int = 0, on_chunk: OnChunk | None = None) -> PushReport:
        """Write the ranking back so the tool serves tasks in its order.

        In chunks: `on_chunk(done, total)` after each one the tool accepted (the runner records it), and at
        least once, with done == total, when the push is complete. `start_chunk` is where an interrupted
        push of this same ranking stopped (the `done` last reported); a connector may skip those chunks or
        redo them, as long as the result is the same as one uninterrupted push."""


class ConnectorBase:
    """Optional base for connectors: keeps what `bind()` hands over; `close()` does nothing."""

    name = "connector"
    store: Store | None = None
    embedder: Embedder | None = None

    def bind(self, store: Store, embedder: Embedder) -> None:
        self.store = store
        self.embedder = embedder

    def close(self) -> None:
        pass


class UnsupportedSchema(ConnectorError):
    """The project's labeling schema is not one al-backend can learn from (message: what is supported)."""


@runtime_checkable
class LabelSchema(Protocol):
    """A tool's labeling schema as far as al-backend uses it (for Label Studio: connectors.labelstudio.LabelConfig)."""

    labels: Sequence[str]

    def describe(self) -> str:
        """One line for logs: what is labeled, with how many labels."""


@runtime_checkable
class MLBackendAdapter(Protocol):
    """What the ML backend server needs from a tool, besides the Connector of each project.

    The server keeps the HTTP protocol (routes, project ids, auth, scheduling); the adapter knows the tool's
    payloads. Schema errors are `UnsupportedSchema` (the server answers 400 naming the error class)."""

    name: str

    def setup_schema(self, payload: Mapping[str, Any]) -> LabelSchema:
        """The schema of the project a /setup call describes; UnsupportedSchema if al-backend cannot learn it."""

    def predict_schema(self, payload: Mapping[str, Any]) -> LabelSchema:
        """The schema a /predict call carries; UnsupportedSchema as above."""

    def task_texts(self, schema: LabelSchema, tasks: Sequence[Mapping[str, Any]]) -> list[str]:
        """The text of each task ("" when it has none), aligned with `tasks`."""

    def prediction(self, schema: LabelSchema, label: str | None, score: float, model_version: str) -> dict[str, Any]:
        """One task's prediction in the tool's format (label None: no pre-annotation)."""

    def connector(self, config: Any, setup: Mapping[str, Any] | None = None) -> Connector:
        """The Connector for one project: `config` is that project's Config, `setup` what its /setup brought."""
