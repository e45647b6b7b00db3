"""Single-label classification: one label per text, a calibrated multinomial logistic-regression head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from .base import Head, ModelOutputs


class SingleLabel:
    """Labels are strings; the head is `al_backend.head.Head`; strategies score its (n, C) probabilities."""

    name = "single_label"

    def check_labels(
        self, ids: Sequence[str], labels: Sequence[Any], label_set: Sequence[str] | None, source: str
    ) -> None:
        allowed = set(label_set) if label_set else None
        for tid, lab in zip(ids, labels):
            if lab is None:
                continue
            if not isinstance(lab, str):
                raise InputError(
                    f"{source}: task {tid!r} has label {lab!r} of type {type(lab).__name__}; expected text"
                )
            if allowed is not None and lab not in allowed:
                raise InputError(f"{source}: task {tid!r} has unknown label {lab!r} (allowed: {sorted(allowed)})")

    def encode(self, labels: Sequence[Any]) -> list[Any]:
        return [str(lab) for lab in labels]

    def make_head(self, config: Any, label_set: Sequence[str] | None, *, committee: bool, random_state: int) -> Head:
        from ..head import Head as LogisticHead

        return LogisticHead(
            classes=list(label_set) if label_set else None,
            class_weight=None if config.head.class_weight == "none" else config.head.class_weight,
            calibrate=config.head.calibrate,
            # the bootstrap committee costs ~20 % of a fit: only committee strategies ask for it
            committee_size=config.head.committee_size if committee else 0,
            random_state=random_state,
        )

    def head_from_state(self, state: dict[str, Any]) -> Head:
        from ..head import Head as LogisticHead

        return LogisticHead.from_state_dict(state)

    def outputs(self, head: Head, X: np.ndarray, *, committee: bool) -> ModelOutputs:
        probs = head.predict_proba(X)
        return ModelOutputs(probs=probs, committee=head.committee_proba(X) if committee else None)

    def uncertainty(self, outputs: ModelOutputs) -> np.ndarray:
        from ..scoring import margin

        if outputs.probs is None:
            raise ValueError("no model outputs to reduce")
        return margin(outputs.probs)

    def predictions(self, head: Head, outputs: ModelOutputs) -> tuple[list[Any], np.ndarray]:
        p = outputs.probs
        assert p is not None
        top = p.argmax(axis=1)
        return [head.classes_[j] for j in top], p[np.arange(len(p)), top]
