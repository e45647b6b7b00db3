"""The Python API: active learning on your own vectors, with the same round the CLI and the servers run.

    import al_backend
    order = al_backend.select(X, labels, batch_size=20)          # rows to label next, best first

    learner = al_backend.ActiveLearner(X, random_state=0)
    learner.teach([3, 17], ["sports", "politics"])
    rows = learner.query(20)                                      # never rows already labeled
    proba = learner.predict_proba(X_new)                          # (n, C), columns learner.classes_
    learner.stop_decision().stop                                  # time to stop labeling?

Both keep their state in memory (`Store.memory()`); nothing loads torch or sentence-transformers, because the
embeddings are yours. Conventions follow scikit-learn: `random_state` (int, or None for a fresh random state),
inputs validated with messages that say what is wrong, `classes_` after a fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .config import Config
from .errors import ConfigError, EmptyPoolError, InputError
from .pool import Pool

__all__ = ["select", "ActiveLearner"]


def _check_embeddings(embeddings: Any, name: str = "embeddings") -> np.ndarray:
    X = np.asarray(embeddings)
    if X.ndim != 2:
        raise InputError(f"{name} must be a 2-d array (n, d); got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"{name} is empty: shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise InputError(f"{name} must be numeric; got dtype {X.dtype}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    finite = np.isfinite(X.sum(axis=1, dtype=np.float64))
    if not finite.all():
        raise InputError(f"{name}: row {int(np.flatnonzero(~finite)[0])} contains NaN or infinity")
    return X


def _random_state(random_state: int | None) -> int:
    if random_state is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    if isinstance(random_state, (bool, np.bool_)) or not isinstance(random_state, (int, np.integer)):
        raise InputError(f"random_state must be an int or None; got {random_state!r}")
    if random_state < 0:
        raise InputError(f"random_state must be >= 0; got {random_state}")
    return int(random_state)


def _config(strategy: str, random_state: int) -> Config:
    from . import strategies

    if not isinstance(strategy, str):
        raise InputError(f"strategy must be a name (str); got {type(strategy).__name__}")
    if strategy != "seed":
        try:
            strategies.resolve_name(strategy)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    cfg = Config()
    cfg.strategy.name = strategy
    cfg.strategy.seed = random_state
    return cfg


class _Labels:
    """User labels (str or int, any hashable) <-> the strings the round works with, both ways."""

    def __init__(self) -> None:
        self.to_user: dict[str, Any] = {}

    def encode(self, label: Any, where: str) -> str:
        if label is None:
            raise InputError(f"{where}: label is None (leave unlabeled rows out instead)")
        if isinstance(label, (float, np.floating)) and np.isnan(label):
            raise InputError(f"{where}: label is NaN")
        if isinstance(label, np.generic):
            label = label.item()
        if not isinstance(label, (str, int)) or isinstance(label, bool):
            raise InputError(f"{where}: labels must be str or int; got {type(label).__name__} {label!r}")
        key = label if isinstance(label, str) else f"\x00int:{label}"
        if key in self.to_user and self.to_user[key] != label:
            raise InputError(f"{where}: label {label!r} clashes with label {self.to_user[key]!r}")
        self.to_user[key] = label
        return key

    def decode(self, key: str) -> Any:
        return self.to_user.get(key, key)


def select(
    embeddings: Any,
    labels: Sequence[Any],
    batch_size: int,
    strategy: str = "default",
    random_state: int | None = None,
) -> np.ndarray:
    """Row indices to label next, in pick order.

    embeddings: (n, d) array; labels: length-n sequence, a label (str or int) per labeled row and None for
    unlabeled rows; batch_size: how many rows to pick (capped at the unlabeled rows); strategy: a name from
    `al-backend strategies` ("default" is the measured best; "seed" forces cold-start seeding).
    Returns (k,) int64 indices into embeddings, never a labeled row. The round is the one `prioritize` runs
    (seeding until classes and clusters are covered, then the strategy): for the same vectors, labels and
    random_state, `prioritize --vectors` over the same rows with a fresh state picks the same rows.
    """
    X = _check_embeddings(embeddings)
    n = X.shape[0]
    if isinstance(labels, np.ndarray) and labels.ndim != 1:
        raise InputError(f"labels must be 1-d; got shape {labels.shape}")
    labels = list(labels)
    if len(labels) != n:
        raise InputError(f"labels has {len(labels)} entries for {n} embeddings; give None for unlabeled rows")
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int; got {batch_size!r}")
    codec = _Labels()
    encoded = [None if lab is None else codec.encode(lab, f"labels[{i}]") for i, lab in enumerate(labels)]
    learner = ActiveLearner(X, strategy=strategy, random_state=random_state, _codec=codec)
    learner._labels = encoded
    return learner.query(int(batch_size))


class ActiveLearner:
    """A pool of embeddings, the labels taught so far, and the round that picks what to label next.

    embeddings: (n, d) pool; strategy: a registered strategy name; head: None for the product's calibrated
    logistic regression (penalty by cross-validation, balanced classes, temperature scaling), or any
    scikit-learn classifier (fit / predict_proba / classes_), cloned at every fit; stopping: a stopping
    criterion spec ("default", "budget:labels=500", "stabilizing_predictions:threshold=0.99,window=3", ...;
    see `al_backend.stopping`); random_state: int or None.
    """

    def __init__(
        self,
        embeddings: Any,
        strategy: str = "default",
        head: Any = None,
        stopping: str = "default",
        random_state: int | None = None,
        *,
        budget: int | None = None,
        _codec: _Labels | None = None,
    ):
        from .round import Round
        from .store import Store

        self.embeddings = _check_embeddings(embeddings)
        self.random_state = _random_state(random_state)
        self.strategy = strategy
        self.stopping = stopping
        self.budget = budget
        self._criterion = _parse_stopping(stopping)
        self._codec = _codec or _Labels()
        self._labels: list[str | None] = [None] * self.embeddings.shape[0]
        self._ids = [str(i) for i in range(self.embeddings.shape[0])]
        self.config = _config(strategy, self.random_state)
        if budget is not None:
            self.config.stopping.budget = int(budget)
        self.config.stopping.criterion = stopping
        task = None
        if head is not None:
            from .tasks.estimator import EstimatorTask

            task = EstimatorTask(head)
        self._round = Round(self.config, Store.memory(), task=task, progress=False)

    # ------------------------------------------------------------------ labels
    def teach(self, indices: Sequence[int], labels: Sequence[Any]) -> ActiveLearner:
        """Record labels for pool rows. indices: (m,) ints into the pool; labels: (m,) str or int. Returns self."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise InputError(f"indices must be a 1-d sequence of ints; got {idx.dtype} with shape {idx.shape}")
        labels = list(labels)
        if len(labels) != idx.size:
            raise InputError(f"{idx.size} indices but {len(labels)} labels")
        n = len(self._labels)
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise InputError(f"index {int(bad[0])} is outside the pool of {n} rows")
        encoded = [self._codec.encode(lab, f"labels[{j}]") for j, lab in enumerate(labels)]
        for i, lab in zip(idx.tolist(), encoded):
            self._labels[i] = lab
        return self

    @property
    def labeled_indices(self) -> np.ndarray:
        """(m,) int64 rows labeled so far, ascending."""
        return np.flatnonzero(np.fromiter((lab is not None for lab in self._labels), bool, count=len(self._labels)))

    def _pool(self) -> Pool:
        return Pool(
            ids=self._ids,
            texts=self._ids,
            labels=list(self._labels),
            vectors=self.embeddings,
            source="ActiveLearner pool",
        )

    # ------------------------------------------------------------------ the round
    def query(self, n: int) -> np.ndarray:
        """(k,) int64 pool rows to label next, best first, k = min(n, unlabeled rows); never a labeled row."""
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise InputError(f"n must be a positive int; got {n!r}")
        try:
            ranking = self._round.run(self._pool(), batch_size=int(n))
        except EmptyPoolError:
            raise EmptyPoolError("every row of the pool is labeled: nothing left to query") from None
        return np.asarray([int(i) for i in ranking.ids[: ranking.batch_size]], dtype=np.int64)

    def _head(self) -> Any:
        rows = self.labeled_indices
        # the head learns on what the round's head sees: the pool's smoothed features once a round has run
        F = self._round.pool_features if self._round.pool_features is not None else self.embeddings
        head, _ = self._round.fit(F[rows], [self._ids[i] for i in rows], [self._labels[i] for i in rows])
        return head

    @property
    def classes_(self) -> list[Any]:
        """The classes seen so far, in the column order of predict_proba."""
        head = self._head()
        if head is None:
            raise InputError("no model yet: teach labels of at least two classes first")
        return [self._codec.decode(c) for c in head.classes_]

    def predict_proba(self, embeddings: Any) -> np.ndarray:
        """(m, C) class probabilities for embeddings (m, d) from a head fitted on the labels taught so far;
        columns in `classes_` order. With the default graph-smoothed head, each row is first averaged with its
        nearest pool rows, as the pool's own rows are."""
        X = _check_embeddings(embeddings)
        if X.shape[1] != self.embeddings.shape[1]:
            raise InputError(f"embeddings have {X.shape[1]} dimensions; the pool has {self.embeddings.shape[1]}")
        head = self._head()
        if head is None:
            raise InputError("no model yet: teach labels of at least two classes first")
        # rows outside the pool are smoothed against the pool like the pool's own rows (Round.features)
        probs = self._round.task.outputs(head, self._round.features(X), committee=False).probs
        if probs is None:  # tasks give probabilities whenever there is a head
            raise InputError("no model yet: teach labels of at least two classes first")
        return probs

    def predict(self, embeddings: Any) -> list[Any]:
        """(m,) predicted labels (your label values)."""
        proba = self.predict_proba(embeddings)
        classes = self.classes_
        return [classes[j] for j in proba.argmax(axis=1)]

    def stop_decision(self):
        """Whether to stop labeling now, by the stopping criterion: the evidence of the rounds queried so far
        plus that of a model fitted on every label taught until now (nothing is recorded).
        Returns a `StopDecision` with `stop`, `criterion`, `reason` and `evidence`."""
        from .stopping import StopDecision

        try:
            ranking = self._round.run(self._pool(), batch_size=1, dry_run=True)
        except EmptyPoolError:
            return StopDecision(True, "pool_exhausted", "every row of the pool is labeled", {})
        return (
            StopDecision(**ranking.stopping)
            if ranking.stopping
            else StopDecision(False, self.stopping, "no evidence yet", {})
        )


def _parse_stopping(spec: str):
    from . import stopping

    if not isinstance(spec, str):
        raise InputError(f"stopping must be a criterion spec (str); got {type(spec).__name__}")
    return stopping.parse_criterion(spec)
