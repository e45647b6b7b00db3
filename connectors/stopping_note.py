"""The round's stopping decision as one human line, for the note a connector keeps in its tool.

Label Studio shows it as a marked line of the project description, Argilla as a marked block of the dataset
guidelines (each connector places it). The line holds the verdict, the round, the labels and the deciding
criterion's reason: numbers and criterion names only, never a URL, key or task text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_REASON = 300  # characters of the reason kept (Label Studio's project card shows about three lines)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

__all__ = ["MAX_REASON", "labels_in", "stopping_summary"]


def labels_in(evidence: Any) -> int | None:
    """The labeled count a decision's evidence names (`labels`, also inside a combination's per-criterion
    evidence), or None."""
    if not isinstance(evidence, Mapping):
        return None
    value = evidence.get("labels")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    for sub in evidence.values():
        found = labels_in(sub)
        if found is not None:
            return found
    return None


def stopping_summary(decision: Any, *, round_id: int | None = None, labels: int | None = None) -> str | None:
    """ "Keep labeling (round 12, 240 labels): stabilizing_predictions: mean kappa 0.962 < 0.99 ..." or
    "You can stop labeling (...): budget: 240 labels reached the budget of 240"; one line.

    `decision` is `Ranking.stopping` ({"stop", "criterion", "reason", "evidence"}); None (no decision yet, or
    not one) gives None: the caller then leaves its note as it is. The labels come from the decision's
    evidence, else `labels` (what the connector pulled)."""
    if not isinstance(decision, Mapping) or "stop" not in decision:
        return None
    criterion = _one_line(str(decision.get("criterion") or ""))
    reason = _one_line(str(decision.get("reason") or ""))
    if criterion and "|" not in criterion and not reason.startswith(f"{criterion}:"):
        reason = f"{criterion}: {reason}" if reason else criterion
    # a combination that did not stop lists every criterion's reason, each already named
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 1].rstrip() + "…"
    n = labels_in(decision.get("evidence"))
    if n is None:
        n = labels
    facts = []
    if round_id is not None:
        facts.append(f"round {int(round_id)}")
    if n is not None:
        facts.append(f"{int(n)} label{'' if n == 1 else 's'}")
    verdict = "You can stop labeling" if decision.get("stop") else "Keep labeling"
    head = f"{verdict} ({', '.join(facts)})" if facts else verdict
    return f"{head}: {reason}" if reason else head


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", _CONTROL.sub(" ", text)).strip()
