"""The data that flows through the engine: a Pool of tasks in, a Ranking out.

Connectors produce a Pool and consume a Ranking; the engine never sees HTTP.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError


@dataclass
class Pool:
    """Columnar tasks. Row i is one task.

    ids:     unique task ids (strings; connectors stringify numeric ids)
    texts:   the text to embed, non-empty str
    labels:  the (majority) label, or None for unlabeled
    meta:    free metadata per task (kept, passed back to connectors)
    vectors: optional precomputed embeddings, shape (n, d) float32; skips the model
    source:  where the pool came from, used in error messages ("tasks.jsonl", "label studio project 3")
    """

    ids: list[str]
    texts: list[str]
    labels: list[str | None]
    meta: list[dict[str, Any]] = field(default_factory=list)
    vectors: np.ndarray | None = None
    source: str = "pool"

    def __post_init__(self) -> None:
        n = len(self.ids)
        if not self.meta:
            self.meta = [{} for _ in range(n)]
        if len(self.texts) != n or len(self.labels) != n or len(self.meta) != n:
            raise InputError(
                f"{self.source}: pool columns differ in length "
                f"(ids={n}, texts={len(self.texts)}, labels={len(self.labels)}, meta={len(self.meta)})"
            )
        if self.vectors is not None and self.vectors.shape[0] != n:
            raise InputError(f"{self.source}: {self.vectors.shape[0]} vectors for {n} tasks")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labeled_mask(self) -> np.ndarray:
        """(n,) bool: the rows with a label (one C-level pass: no Python bytecode per row)."""
        return np.fromiter(map(operator.is_not, self.labels, itertools.repeat(None)), dtype=bool, count=len(self))

    def validate(self) -> None:
        """Raise InputError naming the first bad task: empty/non-string text, duplicate id, bad vector."""
        if len(set(self.ids)) == len(self.ids) and _all_nonblank_str(self.texts):
            if self.vectors is not None:
                check_vectors(self.vectors, self.ids, where=self.source)
            return  # the common case, checked in one pass; the loop below finds the culprit otherwise
        seen: dict[str, int] = {}
        for i, (tid, text) in enumerate(zip(self.ids, self.texts)):
            if tid in seen:
                raise InputError(f"{self.source}: duplicate id {tid!r} (rows {seen[tid] + 1} and {i + 1})")
            seen[tid] = i
            check_text(text, where=f"{self.source}: task {tid!r}")
        if self.vectors is not None:
            check_vectors(self.vectors, self.ids, where=self.source)


def _all_nonblank_str(texts: Sequence[Any]) -> bool:
    """Every text a str with a non-whitespace character, checked in C (map over str methods); False sends
    validate to its row-by-row loop, which names the culprit."""
    try:
        # all(): no empty text; isspace stops at the first non-blank character (no copy, unlike strip);
        # TypeError: a text that is not a str
        return all(texts) and not any(map(str.isspace, texts))
    except TypeError:
        return False


def check_text(text: Any, where: str) -> None:
    if not isinstance(text, str):
        raise InputError(f"{where}: text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InputError(f"{where}: text is empty")


def check_vectors(vectors: np.ndarray, ids: Sequence[str], where: str, dim: int | None = None) -> None:
    if vectors.ndim != 2:
        raise InputError(f"{where}: vectors must be a 2-d array, got shape {vectors.shape}")
    if dim is not None and vectors.shape[1] != dim:
        raise InputError(f"{where}: vectors have {vectors.shape[1]} dimensions, expected {dim}")
    # a row sum is NaN/inf when any entry is: no (n, d) mask. The sums are one BLAS matrix-vector product in
    # the vectors' own precision (a float64 reduction of 1M x 384 took a second); a row it flags is checked
    # entry by entry, since a float32 sum of large finite values can overflow
    if vectors.dtype in (np.float32, np.float64) and vectors.shape[1] > 0:
        with np.errstate(over="ignore", invalid="ignore"):
            sums = vectors @ np.ones(vectors.shape[1], dtype=vectors.dtype)
        suspect = np.flatnonzero(~np.isfinite(sums))
    else:
        suspect = np.flatnonzero(~np.isfinite(vectors.sum(axis=1, dtype=np.float64)))
    if suspect.size:
        finite = np.isfinite(vectors[suspect]).all(axis=1)
        if not finite.all():
            bad = int(suspect[np.flatnonzero(~finite)[0]])
            raise InputError(f"{where}: vector of task {ids[bad]!r} contains NaN or infinity")


@dataclass
class Ranking:
    """The outcome of one round, ordered: position 0 is asked first.

    ids:        unlabeled task ids, best first (the selected batch first, in pick order, then the rest)
    priority:   (n,) float in (0, 1], strictly decreasing with rank: higher = ask first
    batch_size: how many leading ids form the selected batch
    components: name -> (n,) float array, every score component aligned with ids (e.g. "margin", "density")
    predicted:  predicted label per id (None before any model exists)
    confidence: (n,) probability of the predicted label (NaN before any model exists)
    cluster:    cold-start cluster per id (-1 when unknown)
    round_id:   integer round number in the project state
    model_version: string identifying the head that produced the scores
    strategy:   the strategy that made the ranking ("seed", "margin", ...)
    """

    ids: list[str]
    priority: np.ndarray
    batch_size: int
    components: dict[str, np.ndarray]
    predicted: list[str | None]
    confidence: np.ndarray
    cluster: np.ndarray
    round_id: int
    model_version: str
    strategy: str
    probabilities: np.ndarray | None = None  # (n, C) aligned with ids, columns = classes
    classes: list[str] = field(default_factory=list)
    stopping: dict[str, Any] | None = None  # the round's stopping decision (stop, criterion, reason, evidence)

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def priorities(n: int) -> np.ndarray:
        """Priority for ranks 0..n-1: 1 - rank/n, so (0, 1], strictly decreasing, stable across rounds."""
        return 1.0 - np.arange(n, dtype=np.float64) / max(n, 1)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per ranked task (for files, logs and --json)."""
        out = []
        for i, tid in enumerate(self.ids):
            row: dict[str, Any] = {
                "id": tid,
                "rank": i + 1,
                "priority": float(self.priority[i]),
                "in_batch": i < self.batch_size,
                "predicted": self.predicted[i],
                "confidence": _num(self.confidence[i]),
                "cluster": int(self.cluster[i]),
            }
            for name, values in self.components.items():
                row[name] = _num(values[i])
            out.append(row)
        return out


def _num(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x
