"""Learning-curve metrics for simulations: area under the curve and labels needed to reach a target.

A curve is two aligned sequences: label counts (increasing) and the accuracy measured at each count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InputError


def _curve(labels: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(labels, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise InputError(f"curve: labels and values must be 1-d, aligned and non-empty (got {x.shape}, {y.shape})")
    if np.any(np.diff(x) <= 0):
        raise InputError("curve: label counts must be strictly increasing")
    return x, y


def aulc(
    labels: Sequence[float], accuracy: Sequence[float], start: float | None = None, budget: float | None = None
) -> float:
    """Area under the accuracy curve over [start, budget], divided by (budget - start): in [0, 1].

    Trapezoids between measured points; before the first point the first accuracy holds, after the last
    point the last accuracy holds (a run that stops early keeps its last model). start defaults to the
    first label count, budget to the last. A single point (or start == budget) gives that accuracy.
    """
    x, y = _curve(labels, accuracy)
    lo = x[0] if start is None else float(start)
    hi = x[-1] if budget is None else float(budget)
    if hi < lo:
        raise InputError(f"aulc: budget {hi} is below start {lo}")
    if hi == lo:
        return float(np.interp(lo, x, y))
    # clip the curve to [lo, hi] with flat extension, then integrate piecewise-linearly
    inner = (x > lo) & (x < hi)
    xs = np.concatenate([[lo], x[inner], [hi]])
    ys = np.interp(xs, x, y)  # np.interp extends flat beyond the ends
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))
    return area / (hi - lo)


def labels_to_reach(labels: Sequence[float], accuracy: Sequence[float], target: float) -> float | None:
    """The first label count at which the curve reaches target, interpolating linearly between the two
    measured points around the first crossing; None when it never does."""
    x, y = _curve(labels, accuracy)
    hit = np.flatnonzero(y >= target)
    if hit.size == 0:
        return None
    i = int(hit[0])
    if i == 0 or y[i] == y[i - 1]:
        return float(x[i])
    frac = (target - y[i - 1]) / (y[i] - y[i - 1])
    return float(x[i - 1] + frac * (x[i] - x[i - 1]))


def reduction_ratio(
    labels: Sequence[float], accuracy: Sequence[float], random_labels: Sequence[float], random_accuracy: Sequence[float]
) -> tuple[float | None, float | None]:
    """(labels this curve needs to reach random's final accuracy, that divided by the labels random itself
    first needed to reach it). Below 1 = fewer labels than random; None when the curve never gets there.

    Random's own count is taken on its curve too (its first crossing of its final value), so random scores
    exactly 1.0 even when its curve plateaus before the budget.
    """
    target = float(np.asarray(random_accuracy, dtype=np.float64)[-1])
    needed = labels_to_reach(labels, accuracy, target)
    random_needed = labels_to_reach(random_labels, random_accuracy, target)
    if needed is None or not random_needed:
        return needed, None
    return needed, needed / random_needed
