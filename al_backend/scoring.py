"""Informativeness scorers: pure functions from probabilities to one float64 score per row.

Contract (docs/ARCHITECTURE.md): every scorer takes head probabilities ``(n, C)`` or committee
probabilities ``(m, n, C)`` and returns ``(n,)`` float64 where **higher = more informative**.
Nothing here materialises arrays larger than the input (no ``(n, C, C)``), so 1M-row pools are fine;
work is done in row chunks where a float64 temporary of the input's size would otherwise be needed.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "least_confidence",
    "margin",
    "entropy",
    "vote_entropy",
    "kl_to_consensus",
    "bald",
    "expected_gradient_length",
    "information_density",
    "random_scores",
]

# Rows processed at once where a float64 copy of the input is needed: bounds temporaries to ~tens of MB.
_CHUNK_ROWS = 65_536


def _check_probs(p: np.ndarray, name: str = "p") -> np.ndarray:
    p = np.asarray(p)
    if p.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array of probabilities (n, C), got shape {p.shape}")
    if p.shape[1] < 1:
        raise ValueError(f"{name} must have at least one class column, got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    return p


def _check_committee(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c)
    if c.ndim != 3:
        raise ValueError(f"committee probabilities must be a 3-d array (m, n, C), got shape {c.shape}")
    if c.shape[0] < 1 or c.shape[2] < 1:
        raise ValueError(f"committee needs at least one member and one class, got shape {c.shape}")
    if not np.issubdtype(c.dtype, np.floating):
        c = c.astype(np.float64)
    return c


def _xlogx_sum(p: np.ndarray) -> np.ndarray:
    """sum_c p_c log p_c over the last axis, with 0 log 0 = 0, float64."""
    p = np.asarray(p, dtype=np.float64)
    logp = np.log(np.where(p > 0.0, p, 1.0))
    return np.einsum("...c,...c->...", p, logp)


def least_confidence(p: np.ndarray) -> np.ndarray:
    """1 - max_c p_c. p: (n, C). Range [0, 1 - 1/C] for proper distributions."""
    p = _check_probs(p)
    return 1.0 - p.max(axis=1).astype(np.float64)


def margin(p: np.ndarray) -> np.ndarray:
    """1 - (p_top1 - p_top2). p: (n, C). Range [0, 1]; a single-class input scores 0 (nothing to break)."""
    p = _check_probs(p)
    n, n_classes = p.shape
    if n_classes == 1:
        return np.zeros(n, dtype=np.float64)
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, _CHUNK_ROWS):
        block = p[start : start + _CHUNK_ROWS]
        # partition puts the two largest in the last two columns without a full sort
        top2 = np.partition(block, n_classes - 2, axis=1)[:, -2:].astype(np.float64)
        out[start : start + len(block)] = 1.0 - (top2[:, 1] - top2[:, 0])
    return out


def entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats, -sum p log p with 0 log 0 = 0. p: (n, C). Range [0, log C]."""
    p = _check_probs(p)
    n = p.shape[0]
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, _CHUNK_ROWS):
        out[start : start + _CHUNK_ROWS] = -_xlogx_sum(p[start : start + _CHUNK_ROWS])
    return np.maximum(out, 0.0)


def vote_entropy(c: np.ndarray) -> np.ndarray:
    """Entropy (nats) of the committee's hard-vote distribution. c: (m, n, C). Range [0, log min(m, C)].

    Each member votes for its argmax class (ties to the lowest class index); the vote shares are the
    distribution whose entropy is returned.
    """
    c = _check_committee(c)
    m, n, n_classes = c.shape
    votes = c.argmax(axis=2)  # (m, n) int
    counts = np.zeros((n, n_classes), dtype=np.float64)
    rows = np.arange(n)
    for member_votes in votes:  # loop over members (few), not rows
        counts[rows, member_votes] += 1.0  # each row gets exactly one vote per member: no duplicates
    return entropy(counts / m)


def kl_to_consensus(c: np.ndarray) -> np.ndarray:
    """Mean over members of KL(member || committee mean), in nats. c: (m, n, C). Always >= 0.

    Equals H(mean) - mean_i H(member_i) (the same quantity as BALD) when members are proper distributions;
    computed directly here so that it stays the textbook definition.
    """
    c = _check_committee(c)
    m, n, _ = c.shape
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, _CHUNK_ROWS):
        block = c[:, start : start + _CHUNK_ROWS].astype(np.float64)
        mean = block.mean(axis=0)
        log_mean = np.log(np.where(mean > 0.0, mean, 1.0))
        # KL(q || mean) = sum q log q - sum q log mean; where q > 0 we have mean > 0
        cross = np.einsum("mnc,nc->n", block, log_mean) / m
        out[start : start + block.shape[1]] = _xlogx_sum(block).mean(axis=0) - cross
    return np.maximum(out, 0.0)


def bald(c: np.ndarray) -> np.ndarray:
    """Mutual information H(mean member) - mean H(member), in nats. c: (m, n, C). Range [0, log C]."""
    c = _check_committee(c)
    m, n, _ = c.shape
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, _CHUNK_ROWS):
        block = c[:, start : start + _CHUNK_ROWS].astype(np.float64)
        h_mean = -_xlogx_sum(block.mean(axis=0))
        mean_h = -_xlogx_sum(block).mean(axis=0)
        out[start : start + block.shape[1]] = h_mean - mean_h
    return np.maximum(out, 0.0)


def expected_gradient_length(p: np.ndarray, x_norms: np.ndarray) -> np.ndarray:
    """Expected gradient length of a softmax-linear head, in closed form (no backward passes).

    For label y the cross-entropy gradient w.r.t. the weight matrix is (p - e_y) x^T, whose Frobenius
    norm is ||p - e_y|| * ||x||, and ||p - e_y||^2 = ||p||^2 - 2 p_y + 1. So
    EGL = ||x|| * sum_y p_y sqrt(||p||^2 - 2 p_y + 1).

    p: (n, C) probabilities; x_norms: (n,) Euclidean norms of the head's input rows. Returns (n,) >= 0.
    """
    p = _check_probs(p)
    x_norms = np.asarray(x_norms, dtype=np.float64)
    if x_norms.shape != (p.shape[0],):
        raise ValueError(f"x_norms must have shape ({p.shape[0]},) to match p {p.shape}, got {x_norms.shape}")
    n = p.shape[0]
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, _CHUNK_ROWS):
        block = p[start : start + _CHUNK_ROWS].astype(np.float64)
        sq_norm = np.einsum("nc,nc->n", block, block)[:, None]
        dist = np.sqrt(np.maximum(sq_norm - 2.0 * block + 1.0, 0.0))
        out[start : start + len(block)] = np.einsum("nc,nc->n", block, dist)
    return out * x_norms


def information_density(score: np.ndarray, density: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """score * density**beta (Settles & Craven). score, density: (n,), density >= 0. Returns (n,) float64."""
    score = np.asarray(score, dtype=np.float64)
    density = np.asarray(density, dtype=np.float64)
    if score.ndim != 1 or score.shape != density.shape:
        raise ValueError(f"score and density must be 1-d of the same length, got {score.shape} and {density.shape}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if (density < 0).any():
        raise ValueError("density must be >= 0 (knn_density guarantees it)")
    return score * np.power(density, beta)


def random_scores(n: int, rng: np.random.Generator) -> np.ndarray:
    """n uniform scores in [0, 1): ranking by them is a uniformly random order."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return rng.random(n, dtype=np.float64)
