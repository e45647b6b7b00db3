"""Single-label classification with the caller's own scikit-learn classifier (the Python API's `head=`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from .base import Head
from .single_label import SingleLabel


class EstimatorHead:
    """Wraps a scikit-learn classifier (fit / predict_proba / classes_) in the Head protocol. It lives in
    memory only: its state_dict names it, and the task keeps the fitted object (never pickled)."""

    def __init__(self, estimator: Any):
        self.estimator = estimator
        self.classes_: list[str] = []
        self.is_fitted = False
        self._version = "unfitted"

    def fit(self, X: np.ndarray, y: Sequence[Any]) -> EstimatorHead:
        labels = [str(v) for v in y]
        if len(set(labels)) < 2:
            return self
        self.estimator.fit(X, labels)
        self.classes_ = [str(c) for c in self.estimator.classes_]
        self.is_fitted = True
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(X, dtype=np.float32).tobytes())
        h.update(repr(labels).encode())
        self._version = h.hexdigest()[:12]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(X), dtype=np.float64)

    def committee_proba(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X)[None]

    @property
    def version(self) -> str:
        return self._version

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "estimator", "version": self._version, "classes": list(self.classes_)}

    def summary(self) -> dict[str, Any]:
        return {"version": self._version, "estimator": type(self.estimator).__name__}


class EstimatorTask(SingleLabel):
    """SingleLabel with a user-given classifier, cloned (sklearn.base.clone) at every fit."""

    name = "single_label_estimator"

    def __init__(self, estimator: Any):
        for attr in ("fit", "predict_proba"):
            if not callable(getattr(estimator, attr, None)):
                raise InputError(
                    f"head must be a classifier with fit() and predict_proba(); {type(estimator).__name__} has no {attr}()"
                )
        self.estimator = estimator
        self._fitted: dict[str, EstimatorHead] = {}

    def make_head(self, config: Any, label_set: Sequence[str] | None, *, committee: bool, random_state: int) -> Head:
        from sklearn.base import clone

        head = _Remembered(clone(self.estimator), self._fitted)
        return head

    def head_from_state(self, state: dict[str, Any]) -> Head:
        head = self._fitted.get(state.get("version", ""))
        if head is None:
            raise InputError("this head was fitted in another process: an external classifier is not persisted")
        return head


class _Remembered(EstimatorHead):
    def __init__(self, estimator: Any, registry: dict[str, EstimatorHead]):
        super().__init__(estimator)
        self._registry = registry

    def fit(self, X: np.ndarray, y: Sequence[Any]) -> EstimatorHead:
        super().fit(X, y)
        if self.is_fitted:
            self._registry[self._version] = self
        return self
