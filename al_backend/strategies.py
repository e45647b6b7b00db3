"""Selection strategies declared by name: a scorer, optional density weighting, a selector, parameters.

``select_batch(name, ctx, k, rng=...)`` is the one entry point the engine calls. Every strategy
returns its picks and every score it used (over all rows) so that a ranking can explain itself.
Exploration (``epsilon``) and outlier exclusion (``outlier_quantile``) wrap any strategy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from . import density as density_mod
from . import scoring, selection
from .errors import ALBackendError, EmptyPoolError

__all__ = [
    "DEFAULT_STRATEGY",
    "Strategy",
    "STRATEGIES",
    "SelectionContext",
    "ModelRequiredError",
    "select_batch",
    "rank_pool",
    "full_order",
    "get_strategy",
    "list_strategies",
    "resolve_name",
    "needs_density",
    "primary_score",
    "registry",
    "plugin_strategies",
]

# The alias "default" resolves to this name; one line to change once strategies are measured on real data.
DEFAULT_STRATEGY = "margin"

full_order = selection.full_order


class ModelRequiredError(ALBackendError, ValueError):
    """A model-based strategy was asked to select before any model (or committee) exists."""


_PROB_SCORERS = ("least_confidence", "margin", "entropy", "egl")
_COMMITTEE_SCORERS = ("vote_entropy", "kl_consensus", "bald")
_SCORERS = ("random", "none") + _PROB_SCORERS + _COMMITTEE_SCORERS
_SELECTORS = ("top_k", "kcenter", "hybrid", "diverse", "typiclust")
# parameters each selector accepts (plus "density_beta"/"density_k" for every strategy)
# parameters select_batch accepts for any strategy; each strategy uses those that apply to it
_ALL_PARAMS = ("alpha", "form", "m_factor", "method", "seed", "beta", "density_beta", "density_k")


ScoreFunction = Callable[["SelectionContext"], np.ndarray]


@dataclass(frozen=True)
class Strategy:
    """A declared composition: score with ``scorer``, weight by density**density_beta if set, then
    pick with ``selector`` using ``params``. ``primary`` names the component that orders the rest of
    the pool after the batch.

    ``scorer`` is a built-in scorer name, or (for third-party strategies) a function ``ctx -> (n,) scores``
    (higher = ask first); such a function declares what it reads with ``needs_probs`` / ``needs_committee``.
    What a strategy needs (probabilities, committee, embeddings, density, batch awareness) is declared here
    once: the round, `simulate` and `al-backend strategies` all read it from the registry.
    """

    name: str
    scorer: str | ScoreFunction
    selector: str = "top_k"
    density_beta: float | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    description: str = ""
    uses_probs: bool | None = None  # for function scorers: whether they read ctx.probs (built-ins: from the name)
    uses_committee: bool = False

    def __post_init__(self) -> None:
        if not callable(self.scorer) and self.scorer not in _SCORERS:
            raise ValueError(
                f"unknown scorer {self.scorer!r}; valid: {', '.join(_SCORERS)} or a function ctx -> scores"
            )
        if self.selector not in _SELECTORS:
            raise ValueError(f"unknown selector {self.selector!r}; valid: {', '.join(_SELECTORS)}")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def scorer_name(self) -> str:
        return self.scorer if isinstance(self.scorer, str) else self.name

    @property
    def needs_probs(self) -> bool:
        if callable(self.scorer):
            return bool(self.uses_probs)
        return self.scorer in _PROB_SCORERS

    @property
    def needs_committee(self) -> bool:
        if callable(self.scorer):
            return self.uses_committee
        return self.scorer in _COMMITTEE_SCORERS

    @property
    def needs_model(self) -> bool:
        """Whether selection needs a fitted head (probabilities or a committee)."""
        return self.needs_probs or self.needs_committee

    @property
    def needs_density(self) -> bool:
        return self.density_beta is not None

    @property
    def needs_embeddings(self) -> bool:
        """Whether the selector reads the embeddings themselves (distances), not only scores."""
        return self.selector != "top_k"

    @property
    def batch_aware(self) -> bool:
        """Whether a pick depends on the picks before it (diversity within the batch)."""
        return self.selector != "top_k"

    def needs(self) -> dict[str, bool]:
        return {
            "probabilities": self.needs_probs,
            "committee": self.needs_committee,
            "embeddings": self.needs_embeddings,
            "density": self.needs_density,
            "batch_aware": self.batch_aware,
        }

    @property
    def primary(self) -> str:
        """Name of the component that ranks the rows after the batch."""
        if self.selector == "typiclust":
            return "typicality"
        if self.scorer == "none":
            return "distance"
        if self.density_beta is not None:
            return "information_density"
        return self.scorer_name


def _s(name: str, scorer: str, description: str, **kw: Any) -> Strategy:
    return Strategy(name=name, scorer=scorer, description=description, **kw)


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        _s("random", "random", "uniformly random order"),
        _s("least_confidence", "least_confidence", "1 - max probability"),
        _s("margin", "margin", "1 - (top1 - top2) probability: breaking ties; best measured on real text"),
        _s("entropy", "entropy", "predictive entropy"),
        _s("vote_entropy", "vote_entropy", "entropy of the committee's hard votes"),
        _s("kl_consensus", "kl_consensus", "mean KL divergence of members from the committee mean"),
        _s("bald", "bald", "mutual information between label and committee member (BALD)"),
        _s("egl", "egl", "expected gradient length of the softmax head (closed form)"),
        _s("margin_density", "margin", "margin x kNN density (information density, beta 1)", density_beta=1.0),
        _s("kcenter", "none", "greedy k-center / core-set on embeddings", selector="kcenter"),
        _s(
            "typiclust",
            "none",
            "TypiClust: the most typical item of the least covered, largest k-means clusters (|L| + B clusters)",
            selector="typiclust",
        ),
        _s(
            "hybrid",
            "margin",
            "0.5 normalised margin + 0.5 normalised distance to labeled/picked rows, greedy",
            selector="hybrid",
            params={"alpha": 0.5, "form": "additive"},
        ),
        _s(
            "hybrid_mult",
            "margin",
            "normalised margin x normalised distance to labeled/picked rows, greedy",
            selector="hybrid",
            params={"form": "multiplicative"},
        ),
        _s(
            "margin_kcenter",
            "margin",
            "k-center among the 10k most uncertain (diversity serving uncertainty)",
            selector="diverse",
            params={"method": "kcenter", "m_factor": 10},
        ),
        _s(
            "margin_cluster",
            "margin",
            "k-means on the 10k most uncertain, most uncertain of each cluster in turn",
            selector="diverse",
            params={"method": "cluster", "m_factor": 10},
        ),
    )
}


ENTRY_POINT_GROUP = "al_backend.strategies"


def plugin_strategies() -> dict[str, Strategy]:
    """Strategies other packages register under the entry-point group ``al_backend.strategies``: each entry
    point names a `Strategy` object (its registry name is the Strategy's ``name``). Imported once, on first
    use (al_backend.plugins caches them); built-in names never trigger a plugin import."""
    from .errors import ConfigError
    from .plugins import load_entry_points

    found: dict[str, Strategy] = {}
    for ep_name, obj in load_entry_points(ENTRY_POINT_GROUP).items():
        if not isinstance(obj, Strategy):
            raise ConfigError(
                f"strategy plugin {ep_name!r} ({ENTRY_POINT_GROUP}) is a {type(obj).__name__}, "
                "not an al_backend.strategies.Strategy"
            )
        if obj.name in STRATEGIES or obj.name == "default":
            raise ConfigError(f"strategy plugin {ep_name!r} reuses the built-in name {obj.name!r}")
        found[obj.name] = obj
    return found


def registry() -> dict[str, Strategy]:
    """Every strategy by name: the built-ins, then the plugins."""
    return {**STRATEGIES, **plugin_strategies()}


def get_strategy(name: str) -> Strategy:
    """The Strategy registered under name ("default" resolves to DEFAULT_STRATEGY)."""
    resolved = DEFAULT_STRATEGY if name == "default" else name
    if resolved in STRATEGIES:
        return STRATEGIES[resolved]
    plugins = plugin_strategies()
    if resolved in plugins:
        return plugins[resolved]
    valid = ", ".join(["default", *STRATEGIES, *plugins])
    raise ValueError(f"unknown strategy {name!r}; valid strategies: {valid}")


def resolve_name(name: str) -> str:
    """The registered name behind name ("default" -> DEFAULT_STRATEGY); ValueError listing valid names."""
    return get_strategy(name).name


def needs_density(name: str) -> bool:
    """Whether the strategy weights by kNN density (the engine then provides ctx.density, cached)."""
    return get_strategy(name).density_beta is not None


def primary_score(
    name: str, components: Mapping[str, np.ndarray], n: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """(n,) score that orders the pool after the batch: the strategy's primary component, or a random
    order (from rng) when the components lack it."""
    key = get_strategy(name).primary
    if key in components:
        return np.asarray(components[key], dtype=np.float64)
    return (rng or np.random.default_rng(0)).random(n)


def list_strategies() -> dict[str, str]:
    """name -> one-line description, "default" first (for --help and docs)."""
    out = {"default": f"alias of {DEFAULT_STRATEGY!r}"}
    out.update({name: s.description for name, s in registry().items()})
    return out


@dataclass
class SelectionContext:
    """What a strategy may look at. Rows are the unlabeled pool, in the engine's order."""

    X: np.ndarray  # (n, d) unlabeled embeddings, float32
    probs: np.ndarray | None  # (n, C) head probabilities, None before any model
    committee: np.ndarray | None  # (m, n, C) or None
    X_labeled: np.ndarray | None  # (M, d)
    density: np.ndarray | None = None  # (n,) cached density; computed (and stored here) when needed

    def validate(self) -> None:
        X = np.asarray(self.X)
        if X.ndim != 2:
            raise ValueError(f"ctx.X must be 2-d (n, d), got shape {X.shape}")
        n, d = X.shape
        if self.probs is not None and (np.ndim(self.probs) != 2 or np.shape(self.probs)[0] != n):
            raise ValueError(f"ctx.probs must have shape ({n}, C), got {np.shape(self.probs)}")
        if self.committee is not None and (np.ndim(self.committee) != 3 or np.shape(self.committee)[1] != n):
            raise ValueError(f"ctx.committee must have shape (m, {n}, C), got {np.shape(self.committee)}")
        if self.X_labeled is not None and (np.ndim(self.X_labeled) != 2 or np.shape(self.X_labeled)[1] != d):
            raise ValueError(f"ctx.X_labeled must have shape (M, {d}), got {np.shape(self.X_labeled)}")
        if self.density is not None and np.shape(self.density) != (n,):
            raise ValueError(f"ctx.density must have shape ({n},), got {np.shape(self.density)}")

    def get_density(self, k: int = 10) -> np.ndarray:
        if self.density is None:
            self.density = density_mod.knn_density(self.X, k)
        return np.asarray(self.density, dtype=np.float64)


def _scores(strategy: Strategy, ctx: SelectionContext, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = len(ctx.X)
    scorer = strategy.scorer
    if strategy.needs_probs and ctx.probs is None:
        raise ModelRequiredError(
            f"strategy {strategy.name!r} needs model probabilities (ctx.probs) and there is no model yet: "
            "choose the first batch with seeding or strategy 'random'"
        )
    if strategy.needs_committee and ctx.committee is None:
        raise ModelRequiredError(
            f"strategy {strategy.name!r} needs committee probabilities (ctx.committee, shape (m, n, C)): "
            "use a head that provides committee_proba, or a single-model strategy such as 'margin'"
        )
    if callable(scorer):
        scores = np.asarray(scorer(ctx), dtype=np.float64)
        if scores.shape != (n,):
            raise ValueError(f"strategy {strategy.name!r}: its scorer returned shape {scores.shape}, expected ({n},)")
        return {strategy.name: scores}
    if scorer == "random":
        return {"random": scoring.random_scores(n, rng)}
    if scorer == "none":
        return {}
    if scorer == "egl":
        assert ctx.probs is not None  # egl needs_probs: checked above
        x_norms = np.sqrt(selection._row_sq_norms(np.asarray(ctx.X)))
        return {"egl": scoring.expected_gradient_length(ctx.probs, x_norms)}
    functions = {
        "least_confidence": scoring.least_confidence,
        "margin": scoring.margin,
        "entropy": scoring.entropy,
        "vote_entropy": scoring.vote_entropy,
        "kl_consensus": scoring.kl_to_consensus,
        "bald": scoring.bald,
    }
    source = ctx.committee if strategy.needs_committee else ctx.probs
    assert source is not None  # needs_committee / needs_probs: checked above
    return {scorer: functions[scorer](source)}


def select_batch(
    name: str,
    ctx: SelectionContext,
    k: int,
    *,
    rng: np.random.Generator,
    epsilon: float = 0.0,
    outlier_quantile: float | None = None,
    **params: Any,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Select a batch of k unlabeled rows with the named strategy.

    ctx: the pool (see SelectionContext); k: batch size, capped at the rows available (0 -> empty).
    epsilon: fraction of the batch replaced by uniformly random rows (selection.epsilon_greedy).
    outlier_quantile: rows whose kNN density is at or below this quantile are never picked by the
    strategy (exploration may still draw them), unless that would leave fewer than k rows. params override the strategy's own (alpha, form,
    m_factor, method, seed, density_beta, density_k).
    Returns (indices, components): (k,) distinct int64 row indices in pick order, and
    {name: (n,) float64} for every score used; the first component is the strategy's primary score
    (the order of the rest of the pool, see full_order). Raises ModelRequiredError when a model-based
    strategy gets no probabilities, ValueError on an unknown name or parameter.
    """
    strategy = get_strategy(name)
    ctx.validate()
    unknown = sorted(set(params) - set(_ALL_PARAMS))
    if unknown:
        raise ValueError(f"unknown strategy parameter(s) {', '.join(unknown)}; valid: {', '.join(_ALL_PARAMS)}")
    # every parameter is accepted for every strategy (one config serves all); those a strategy does not
    # use are ignored. "beta" is the density exponent of density-weighted strategies only.
    given = {key: v for key, v in params.items() if v is not None}
    opts = {**strategy.params, **given}
    density_beta = strategy.density_beta
    if density_beta is not None:
        density_beta = float(opts.get("density_beta", opts.get("beta", density_beta)))
    density_k = int(opts.get("density_k", 10))
    X = np.asarray(ctx.X)
    n = len(X)
    if n == 0 and k > 0:
        raise EmptyPoolError("no unlabeled rows left to select from")

    components = _scores(strategy, ctx, rng)
    eligible = None
    if outlier_quantile is not None:
        dens = ctx.get_density(density_k)
        eligible = ~density_mod.outlier_mask(dens, outlier_quantile)
        if eligible.sum() < min(int(k), n):
            # excluding would leave fewer rows than the batch needs (or none, when every density ties)
            eligible = None
    if density_beta is not None:
        dens = ctx.get_density(density_k)
        primary = components[strategy.scorer_name]
        components = {"information_density": scoring.information_density(primary, dens, density_beta), **components}
    if outlier_quantile is not None or density_beta is not None:
        components["density"] = ctx.get_density(density_k)

    n_eligible = n if eligible is None else int(eligible.sum())
    k = max(0, min(int(k), n_eligible))
    labeled = ctx.X_labeled if ctx.X_labeled is not None and len(ctx.X_labeled) else None
    if strategy.selector == "typiclust":
        rows = np.arange(n) if eligible is None else np.flatnonzero(eligible)
        local, typ = selection.typiclust(X[rows], k, labeled, seed=int(opts.get("seed", 0)))
        indices = rows[local]
        typicality = np.zeros(n)
        typicality[rows] = typ
        components = {"typicality": typicality, **components}
    elif strategy.selector == "kcenter":
        indices, distance = selection._k_center(X, k, labeled, eligible)
        components = {"distance": distance, **components}
    elif strategy.selector == "hybrid":
        score = components[strategy.primary]
        alpha, form = float(opts.get("alpha", 0.5)), opts.get("form", "additive")
        if form not in ("additive", "multiplicative"):
            raise ValueError(f"form must be 'additive' or 'multiplicative', got {form!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        indices, distance = selection._hybrid(score, X, k, labeled, alpha, form, eligible)
        components["distance"] = distance
    else:
        score = components[strategy.primary]
        masked = score if eligible is None else np.where(eligible, score, -np.inf)
        if strategy.selector == "top_k":
            indices = selection.top_k(masked, k)
        else:
            candidates = selection.top_k(masked, min(n_eligible, int(opts.get("m_factor", 10)) * k))
            # diverse_among_uncertain on the eligible top candidates only (outliers already removed)
            local = selection.diverse_among_uncertain(
                score[candidates],
                X[candidates],
                k,
                m_factor=int(opts.get("m_factor", 10)),
                method=opts.get("method", "kcenter"),
                labeled=labeled,
                seed=int(opts.get("seed", 0)),
            )
            indices = candidates[local]
    if epsilon:
        indices = selection.epsilon_greedy(indices, n, len(indices), epsilon, rng)
    return np.asarray(indices, dtype=np.int64), {key: np.asarray(v, dtype=np.float64) for key, v in components.items()}


def rank_pool(
    name: str, ctx: SelectionContext, k: int, *, rng: np.random.Generator, **options: Any
) -> tuple[np.ndarray, int, dict[str, np.ndarray]]:
    """select_batch, then the whole pool ordered: the batch in pick order, then the other rows by the
    strategy's primary score, descending. Returns (order (n,) int64, batch size, components)."""
    indices, components = select_batch(name, ctx, k, rng=rng, **options)
    primary = primary_score(name, components, len(ctx.X), rng)
    return full_order(indices, primary), len(indices), components
