"""The task-type protocol: what the round asks of a kind of labeling job (single-label, multi-label, spans, ...).

The round (al_backend/round.py) is the same for every task type. A task type owns everything that depends on
what a label *is*:

- checking and encoding the labels a connector pulled (`check_labels`, `encode`),
- which head is fitted (`make_head`, `head_from_state`), behind the `Head` protocol below,
- what the head outputs for unlabeled items and how per-class (or per-label, per-token) outputs reduce to the
  arrays the strategies score (`outputs`): single-label classification hands over (n, C) probabilities,
- how predictions are rendered into a Ranking (`predictions`): one predicted label and a confidence per item.

A new task type is one module with a class satisfying `TaskType`, registered in `al_backend.tasks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Head(Protocol):
    """A fitted model over embeddings, scikit-learn style, persisted through an explicit state_dict (no pickle)."""

    classes_: list[str]
    is_fitted: bool

    def fit(self, X: np.ndarray, y: Sequence[Any]) -> Head:
        """X: (n, d) float32 embeddings of labeled items; y: their encoded labels. Returns self."""
        ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, C) float probabilities, columns in `classes_` order, rows summing to 1."""
        ...

    def committee_proba(self, X: np.ndarray) -> np.ndarray:
        """(m, n, C): one probability matrix per committee member."""
        ...

    @property
    def version(self) -> str:
        """A short id of the fitted parameters: same data + random state -> same version."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """JSON + arrays, enough for the task type's `head_from_state` to rebuild the head."""
        ...

    def summary(self) -> dict[str, Any]:
        """A few numbers for metrics and `status` (penalty, temperature, cross-validated scores)."""
        ...


@dataclass
class ModelOutputs:
    """What the head says about the unlabeled rows, in the shapes strategies score.

    probs: (n, C) class probabilities (None before a model exists); committee: (m, n, C) or None.
    """

    probs: np.ndarray | None
    committee: np.ndarray | None = None


@runtime_checkable
class TaskType(Protocol):
    name: str

    def check_labels(
        self, ids: Sequence[str], labels: Sequence[Any], label_set: Sequence[str] | None, source: str
    ) -> None:
        """Raise InputError naming the first task whose label is malformed or outside label_set."""
        ...

    def encode(self, labels: Sequence[Any]) -> list[Any]:
        """Labels of the labeled rows, as the head's fit wants them."""
        ...

    def make_head(self, config: Any, label_set: Sequence[str] | None, *, committee: bool, random_state: int) -> Head:
        """A new, unfitted head configured from the typed Config."""
        ...

    def head_from_state(self, state: dict[str, Any]) -> Head:
        """Rebuild a head from its state_dict."""
        ...

    def outputs(self, head: Head, X: np.ndarray, *, committee: bool) -> ModelOutputs:
        """The head's outputs on X (n, d)."""
        ...

    def uncertainty(self, outputs: ModelOutputs) -> np.ndarray:
        """(n,) one uncertainty per item, higher = less sure (the reduction used by stopping criteria and when
        the rest of the pool must be ordered without a strategy score)."""
        ...

    def predictions(self, head: Head, outputs: ModelOutputs) -> tuple[list[Any], np.ndarray]:
        """(predicted label per row, confidence per row (n,) float) for the ranking and pre-annotations."""
        ...
