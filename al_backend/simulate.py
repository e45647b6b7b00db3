"""Oracle simulation: replay active learning on a fully labeled dataset and measure what labels buy.

For every repeat the data is split once (a held-out test set, the rest is the pool the oracle answers
from). Each strategy then runs the product's own round (`al_backend.round.Round` over an in-memory state)
until the budget: the first batch of `seed_size` is the round's cold-start seeding (the same for every
strategy of a repeat), or random labels with `start=random`; then round after round the head is fitted
and evaluated on the test set, the strategy selects a batch and the oracle reveals its labels.

Strategy specs are a registry name with optional `+option`s, e.g. `margin`, `margin+eps=0.1`,
`margin+start=random`, `margin+uncalibrated`, `entropy+unweighted+outliers=0.05`:

    eps=F          epsilon-greedy exploration (a fraction F of each batch drawn at random)
    start=S        seeded (cold-start seeding, the default) or random first labels
    uncalibrated   head without temperature scaling
    unweighted     head without balanced class weights
    outliers=Q     drop the lowest-density quantile Q from the candidates
    plain          head on the raw embeddings (no graph smoothing: [head] smoothing = 0)
    smooth=A       graph smoothing weight A in [0, 1] ([head] smoothing)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics
from .config import Config
from .errors import InputError
from .head import Head
from .pool import Pool


@dataclass(frozen=True)
class StrategySpec:
    """One simulated arm: a registry strategy plus head and start options. `label` is the spec as written."""

    label: str
    name: str
    epsilon: float = 0.0
    start: str = "seeded"
    calibrate: bool = True
    class_weight: str | None = "balanced"
    outlier_quantile: float | None = None
    smoothing: float | None = None  # None: the product's default ([head] smoothing)


def parse_strategy(spec: str) -> StrategySpec:
    """'margin+eps=0.1+start=random' -> StrategySpec. Raises InputError naming the bad part."""
    parts = [p.strip() for p in spec.strip().split("+")]
    if not parts[0]:
        raise InputError(f"strategy {spec!r}: empty name")
    opts: dict[str, Any] = {}
    for part in parts[1:]:
        key, _, value = part.partition("=")
        try:
            if key in ("eps", "epsilon"):
                opts["epsilon"] = float(value)
                if not 0 <= opts["epsilon"] <= 1:
                    raise ValueError
            elif key == "start" and value in ("seeded", "random"):
                opts["start"] = value
            elif key == "uncalibrated" and not value:
                opts["calibrate"] = False
            elif key == "unweighted" and not value:
                opts["class_weight"] = None
            elif key == "plain" and not value:
                opts["smoothing"] = 0.0
            elif key == "smooth":
                opts["smoothing"] = float(value)
                if not 0 <= opts["smoothing"] <= 1:
                    raise ValueError
            elif key == "outliers":
                opts["outlier_quantile"] = float(value)
                if not 0 < opts["outlier_quantile"] < 1:
                    raise ValueError
            else:
                raise ValueError
        except ValueError:
            raise InputError(
                f"strategy {spec!r}: bad option {part!r} (options: eps=F, start=seeded|random, uncalibrated, "
                "unweighted, outliers=Q, plain, smooth=A)"
            ) from None
    return StrategySpec(label=spec.strip(), name=parts[0], **opts)


@dataclass
class SimulationConfig:
    strategies: list[str] = field(default_factory=lambda: ["random", "default"])
    seed_size: int | None = None  # None: 2 x number of classes
    batch_size: int = 20
    budget: int | None = None  # None: min(500, pool size)
    repeats: int = 3
    test_fraction: float = 0.3
    label_noise: float = 0.0
    seed: int = 0
    committee_size: int = 5
    record_batches: bool = False
    reference: str | None = None  # the spec ratios are measured against (default: "random", else the first random)


def _check_config(cfg: SimulationConfig, n: int, n_classes: int) -> tuple[int, int, int]:
    if n_classes < 2:
        raise InputError(f"simulate: the data needs at least 2 classes, found {n_classes}")
    if not 0 < cfg.test_fraction < 1:
        raise InputError(f"simulate: --test-fraction must be in (0, 1), got {cfg.test_fraction}")
    if not 0 <= cfg.label_noise < 1:
        raise InputError(f"simulate: --label-noise must be in [0, 1), got {cfg.label_noise}")
    if cfg.repeats < 1 or cfg.batch_size < 1:
        raise InputError("simulate: --repeats and --batch-size must be at least 1")
    n_test = int(round(n * cfg.test_fraction))
    n_pool = n - n_test
    if n_test < n_classes or n_pool < 4:
        raise InputError(f"simulate: {n} rows are too few for a {cfg.test_fraction:.0%} test split")
    seed_size = cfg.seed_size if cfg.seed_size is not None else 2 * n_classes
    budget = cfg.budget if cfg.budget is not None else min(500, n_pool)
    if not 1 <= seed_size <= n_pool:
        raise InputError(f"simulate: --seed-size must be in [1, {n_pool}], got {seed_size}")
    if budget < seed_size or budget > n_pool:
        raise InputError(
            f"simulate: --budget must be in [{seed_size}, {n_pool}] (seed size .. pool size), got {budget}"
        )
    return n_test, seed_size, budget


def _split(n: int, n_test: int, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified test split: each class contributes round(share x n_test) rows (at least one)."""
    test: list[np.ndarray] = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        take = min(len(rows) - 1, max(1, int(round(n_test * len(rows) / n)))) if len(rows) > 1 else 0
        test.append(rng.choice(rows, size=take, replace=False))
    test_idx = np.sort(np.concatenate(test))
    pool_idx = np.setdiff1d(np.arange(n), test_idx)
    return pool_idx, test_idx


def _noisy(labels: np.ndarray, classes: list[str], p: float, rng: np.random.Generator) -> np.ndarray:
    """Flip round(p x n) labels, each to a different class chosen uniformly."""
    out = labels.copy()
    if p <= 0:
        return out
    flip = rng.choice(len(out), size=int(round(p * len(out))), replace=False)
    for i in flip:
        others = [c for c in classes if c != out[i]]
        out[i] = others[int(rng.integers(len(others)))]
    return out


def _evaluate(head: Head, X_test: np.ndarray, y_test: np.ndarray, classes: list[str]) -> tuple[float, float]:
    """(accuracy, macro-F1 over all classes) on the test split. An unfitted head (fewer than two classes
    labeled) is uniform, so it predicts its first class everywhere: chance level, as a user would see."""
    from sklearn.metrics import f1_score

    proba = head.predict_proba(X_test)
    cols = head.classes_ if head.classes_ else classes
    pred = np.asarray(cols, dtype=object)[proba.argmax(axis=1)]
    acc = float(np.mean(pred == y_test))
    f1 = float(f1_score(y_test.astype(str), pred.astype(str), labels=classes, average="macro", zero_division=0))
    return acc, f1


def _arm_config(spec: StrategySpec, config: SimulationConfig, repeat: int) -> Config:
    """The product configuration one simulated arm runs with: the same typed Config users write."""
    cfg = Config()
    cfg.strategy.name = spec.name
    cfg.strategy.seed = config.seed + repeat  # repeat 0 runs with the --random-state given, as prioritize would
    cfg.strategy.epsilon = spec.epsilon
    cfg.strategy.outlier_quantile = spec.outlier_quantile or 0.0
    cfg.head.calibrate = spec.calibrate
    cfg.head.class_weight = spec.class_weight or "none"
    cfg.head.committee_size = config.committee_size
    if spec.smoothing is not None:
        cfg.head.smoothing = spec.smoothing
    return cfg


class _Arm:
    """One strategy replayed on one repeat's pool with the product's own `Round` over an in-memory state."""

    def __init__(
        self, spec: StrategySpec, config: SimulationConfig, repeat: int, X_pool: np.ndarray, classes: list[str]
    ):
        from .round import Round
        from .store import Store

        self.cfg = _arm_config(spec, config, repeat)
        self.round = Round(self.cfg, Store.memory(), progress=False)
        self.X = X_pool
        self.classes = classes
        self.ids = [str(i) for i in range(len(X_pool))]
        self.labels: list[str | None] = [None] * len(X_pool)

    def pool(self) -> Pool:
        return Pool(ids=self.ids, texts=self.ids, labels=list(self.labels), vectors=self.X, source="simulation pool")

    def select(self, k: int, strategy: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Run one round; returns the picked pool rows and the round's stopping evidence."""
        ranking = self.round.run(self.pool(), batch_size=k, strategy=strategy, label_set=self.classes)
        picks = np.asarray([int(i) for i in ranking.ids[: ranking.batch_size]], dtype=np.int64)
        last = self.round.store.last_round()
        return picks, (last.metrics.get("stopping") or {}) if last else {}

    def reveal(self, rows: np.ndarray, oracle: np.ndarray) -> None:
        for i in rows:
            self.labels[int(i)] = str(oracle[int(i)])

    def labeled(self) -> np.ndarray:
        return np.flatnonzero(np.fromiter((lab is not None for lab in self.labels), dtype=bool, count=len(self.labels)))

    def head(self) -> Head:
        """The head the last round fitted on the current labels; a fit of the same kind when no round ran since."""
        head = self.round.last_head
        rows = self.labeled()
        if head is None or getattr(head, "n_labels_", -1) != rows.size:
            F = self.round.pool_features if self.round.pool_features is not None else self.X
            fitted, _ = self.round.fit(
                F[rows], [self.ids[i] for i in rows], [self.labels[i] for i in rows], label_set=self.classes
            )
            head = fitted
        return head if head is not None else Head(self.classes, committee_size=0)


def simulate(
    X: np.ndarray,
    labels: Sequence[str],
    config: SimulationConfig,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every strategy `config.repeats` times; returns the JSON-able result (see `al-backend simulate`).

    Every batch is chosen by the product's own round (`al_backend.round.Round`, over an in-memory state), so
    what a simulation measures is the policy `prioritize` runs: cold-start seeding, the phase switch, the
    head, the strategy, ε-exploration. X: (n, d) float32 embeddings; labels: (n,) the true labels (the
    oracle; test labels stay clean under --label-noise). on_step is called once per evaluated round with the
    strategy label (for progress bars). With `config.record_batches`, result["batches"][label][repeat] lists
    every batch's pool rows (original row numbers) in pick order.
    """
    from . import strategies

    X = np.ascontiguousarray(X, dtype=np.float32)
    y = np.asarray([str(v) for v in labels], dtype=object)
    if X.ndim != 2 or X.shape[0] != len(y):
        raise InputError(f"simulate: {X.shape[0] if X.ndim == 2 else '?'} embeddings for {len(y)} labels")
    classes = sorted(set(y.tolist()))
    n = len(y)
    n_test, seed_size, budget = _check_config(config, n, len(classes))
    specs = [parse_strategy(s) for s in config.strategies]
    if not specs:
        raise InputError("simulate: no strategies given")
    for spec in specs:
        try:
            strategies.resolve_name(spec.name)  # unknown names fail before any work is done
        except ValueError as e:
            raise InputError(f"--strategies: {e}") from None

    cold_k = 2 * len(classes)
    runs: dict[str, list[list[dict[str, float]]]] = {s.label: [] for s in specs}
    evidence: dict[str, list[list[dict[str, Any]]]] = {s.label: [] for s in specs}
    batches: dict[str, list[list[list[int]]]] = {s.label: [] for s in specs}
    round_seconds: dict[str, list[float]] = {s.label: [] for s in specs}
    cold: dict[str, list[float]] = {"seeded": [], "random": []}
    for r in range(config.repeats):
        rng = np.random.default_rng([config.seed, r])
        pool_idx, test_idx = _split(n, n_test, y, rng)
        X_pool, X_test, y_test = X[pool_idx], X[test_idx], y[test_idx]
        oracle = _noisy(y[pool_idx], classes, config.label_noise, rng)
        random_start = np.random.default_rng([config.seed, r, 2]).choice(len(pool_idx), size=seed_size, replace=False)
        # cold start: accuracy at 2 x classes labels, the round's seeding vs random, same head
        seeded_arm = _Arm(parse_strategy("seed"), config, r, X_pool, classes)
        firsts = {
            "seeded": seeded_arm.select(cold_k, strategy="seed")[0],
            "random": np.random.default_rng([config.seed, r, 2]).choice(len(pool_idx), size=cold_k, replace=False),
        }
        for start, first in firsts.items():
            head = Head(classes, committee_size=0, random_state=r).fit(X_pool[first], oracle[first])
            cold[start].append(_evaluate(head, X_test, y_test, classes)[0])

        for spec in specs:
            arm = _Arm(spec, config, r, X_pool, classes)
            curve: list[dict[str, float]] = []
            arm_evidence: list[dict[str, Any]] = []
            arm_batches: list[list[int]] = []
            if spec.start == "random":
                first = random_start
            else:
                first, _ = arm.select(seed_size)
            arm.reveal(first, oracle)
            arm_batches.append(pool_idx[first].tolist())
            while True:
                t0 = time.perf_counter()
                n_labeled = int(arm.labeled().size)
                picks = None
                if n_labeled < budget:
                    picks, ev = arm.select(min(config.batch_size, budget - n_labeled))
                    arm_evidence.append(ev)
                acc, f1 = _evaluate(arm.head(), arm.round.features(X_test), y_test, classes)
                curve.append({"labels": n_labeled, "accuracy": acc, "macro_f1": f1})
                if on_step:
                    on_step(spec.label)
                if picks is None:
                    break
                arm.reveal(picks, oracle)
                arm_batches.append(pool_idx[picks].tolist())
                round_seconds[spec.label].append(time.perf_counter() - t0)
            runs[spec.label].append(curve)
            evidence[spec.label].append(arm_evidence)
            batches[spec.label].append(arm_batches)

    result: dict[str, Any] = {
        "dataset": {"rows": n, "classes": classes, "pool": n - n_test, "test": n_test},
        "config": {**asdict(config), "seed_size": seed_size, "budget": budget},
        "cold_start": {
            "labels": cold_k,
            "seeded_accuracy": float(np.mean(cold["seeded"])),
            "seeded_accuracy_std": float(np.std(cold["seeded"])),
            "random_accuracy": float(np.mean(cold["random"])),
            "random_accuracy_std": float(np.std(cold["random"])),
        },
        "strategies": {},
    }
    summaries = {label: _summarise(curves, seed_size, budget) for label, curves in runs.items()}
    reference: dict[str, Any] | None
    if config.reference is not None:
        if config.reference not in summaries:
            raise InputError(f"--reference {config.reference!r} is not one of --strategies ({', '.join(summaries)})")
        reference = summaries[config.reference]
        result["reference"] = config.reference
    else:
        ref_label = (
            "random"
            if "random" in summaries
            else next((lbl for lbl in summaries if parse_strategy(lbl).name == "random"), None)
        )
        reference = summaries.get(ref_label) if ref_label else None
        result["reference"] = ref_label
    for label, s in summaries.items():
        if reference is not None:
            xs = [p["labels"] for p in s["curve"]]
            ya = [p["accuracy"] for p in s["curve"]]
            rx = [p["labels"] for p in reference["curve"]]
            ra = [p["accuracy"] for p in reference["curve"]]
            s["labels_to_reach_random_final"], s["reduction_ratio"] = metrics.reduction_ratio(xs, ya, rx, ra)
        else:
            s["labels_to_reach_random_final"] = s["reduction_ratio"] = None
        s["seconds_per_round"] = float(np.mean(round_seconds[label])) if round_seconds[label] else 0.0
        s["stopping"] = _stopping_report(runs[label], evidence[label], budget)
        result["strategies"][label] = s
    if config.record_batches:
        result["batches"] = batches
    return result


STOPPING_REPORTED = (
    "default",
    "stabilizing_predictions",
    "classification_change",
    "overall_uncertainty",
    "target_accuracy",
)


def _stopping_report(
    curves: list[list[dict[str, float]]], evidence: list[list[dict[str, Any]]], budget: int
) -> dict[str, Any]:
    """For each stopping criterion: where it would have stopped in each repeat (labels), the test accuracy
    there and at the budget. Round i's evidence was recorded after the fit on curve[i]'s labels; a criterion
    that never says stop runs to the budget."""
    from . import stopping

    report: dict[str, Any] = {}
    for spec in STOPPING_REPORTED:
        criterion = stopping.parse_criterion(spec)
        stops, acc_stop, acc_budget = [], [], []
        for curve, rounds in zip(curves, evidence):
            history = [stopping.RoundEvidence.from_dict(ev["evidence"]) for ev in rounds if ev.get("evidence")]
            i = stopping.first_stop(history, criterion, budget=budget)
            point = curve[-1] if i is None else curve[i]
            stops.append(int(point["labels"]))
            acc_stop.append(float(point["accuracy"]))
            acc_budget.append(float(curve[-1]["accuracy"]))
        report[spec] = {
            "stopped_at_labels": stops,
            "stopped_before_budget": sum(1 for x in stops if x < budget),
            "mean_labels": float(np.mean(stops)),
            "accuracy_at_stop": float(np.mean(acc_stop)),
            "accuracy_at_budget": float(np.mean(acc_budget)),
            "accuracy_loss": float(np.mean(np.asarray(acc_budget) - np.asarray(acc_stop))),
        }
    return report


def _summarise(curves: list[list[dict[str, float]]], start: int, budget: int) -> dict[str, Any]:
    """Mean curve over repeats (every repeat evaluates at the same label counts) and AULC mean +- std."""
    xs = [p["labels"] for p in curves[0]]
    acc = np.array([[p["accuracy"] for p in c] for c in curves])
    f1 = np.array([[p["macro_f1"] for p in c] for c in curves])
    per_repeat = [metrics.aulc(xs, a, start=start, budget=budget) for a in acc]
    curve = [
        {
            "labels": int(x),
            "accuracy": float(acc[:, i].mean()),
            "accuracy_std": float(acc[:, i].std()),
            "macro_f1": float(f1[:, i].mean()),
            "macro_f1_std": float(f1[:, i].std()),
        }
        for i, x in enumerate(xs)
    ]
    return {
        "curve": curve,
        "aulc": float(np.mean(per_repeat)),
        "aulc_std": float(np.std(per_repeat)),
        "aulc_per_repeat": [float(v) for v in per_repeat],
        "final_accuracy": float(acc[:, -1].mean()),
        "final_accuracy_std": float(acc[:, -1].std()),
    }


# ---------------------------------------------------------------------------------------------- reports


def plot_curves(result: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """PNG learning curves: mean accuracy per strategy with a +-1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for label, s in result["strategies"].items():
        x = np.array([p["labels"] for p in s["curve"]])
        m = np.array([p["accuracy"] for p in s["curve"]])
        sd = np.array([p["accuracy_std"] for p in s["curve"]])
        style = "--" if parse_strategy(label).name == "random" else "-"
        (line,) = ax.plot(x, m, style, lw=1.6, label=f"{label} (AULC {s['aulc']:.3f})")
        ax.fill_between(x, m - sd, m + sd, color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xlabel("labels")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "learning curves (mean ± 1 std over repeats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown_report(result: dict[str, Any], title: str = "Simulation") -> str:
    cfg = result["config"]
    ds = result["dataset"]
    ref = result.get("reference") or "random"
    cold = result["cold_start"]
    lines = [
        f"# {title}",
        "",
        f"{ds['rows']} rows, {len(ds['classes'])} classes, pool {ds['pool']}, test {ds['test']}; seed {cfg['seed_size']} labels, "
        f"batches of {cfg['batch_size']} up to {cfg['budget']}, {cfg['repeats']} repeats, label noise {cfg['label_noise']}.",
        "",
        f"| strategy | AULC (± std) | final accuracy | labels to reach {ref}'s final | reduction ratio |",
        "|---|---|---|---|---|",
    ]
    for label, s in sorted(result["strategies"].items(), key=lambda kv: -kv[1]["aulc"]):
        need = "never" if s["labels_to_reach_random_final"] is None else f"{s['labels_to_reach_random_final']:.0f}"
        ratio = "-" if s["reduction_ratio"] is None else f"{s['reduction_ratio']:.2f}"
        lines.append(
            f"| {label} | {s['aulc']:.4f} ± {s['aulc_std']:.4f} | {s['final_accuracy']:.4f} | {need} | {ratio} |"
        )
    checkpoints = [
        n
        for n in (100, 200, 500, 1000, 2000, 4000)
        if any(p["labels"] == n for s in result["strategies"].values() for p in s["curve"])
    ]
    if checkpoints:
        lines += [
            "",
            "Accuracy / macro-F1 (mean ± std over repeats) at " + ", ".join(str(n) for n in checkpoints) + " labels:",
            "",
            "| strategy | " + " | ".join(f"{n}" for n in checkpoints) + " |",
            "|---|" + "---|" * len(checkpoints),
        ]
        for label, s in sorted(result["strategies"].items(), key=lambda kv: -kv[1]["aulc"]):
            at = {p["labels"]: p for p in s["curve"]}
            cells = [
                f"{at[n]['accuracy']:.3f} ± {at[n]['accuracy_std']:.3f} / {at[n]['macro_f1']:.3f} ± {at[n].get('macro_f1_std', 0.0):.3f}"
                if n in at
                else "-"
                for n in checkpoints
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Cold start at {cold['labels']} labels (2 × classes): seeded {cold['seeded_accuracy']:.3f} ± {cold['seeded_accuracy_std']:.3f}, "
        f"random {cold['random_accuracy']:.3f} ± {cold['random_accuracy_std']:.3f}.",
        "",
        "Stopping criteria (where each would have stopped, per strategy; accuracy there vs at the budget):",
        "",
        "| strategy | criterion | stopped at (labels, per repeat) | accuracy at stop | accuracy at budget |",
        "|---|---|---|---|---|",
    ]
    for label, s in result["strategies"].items():
        for spec, st in (s.get("stopping") or {}).items():
            lines.append(
                f"| {label} | {spec} | {', '.join(str(x) for x in st['stopped_at_labels'])} | "
                f"{st['accuracy_at_stop']:.4f} | {st['accuracy_at_budget']:.4f} |"
            )
    lines += [
        "",
        "![learning curves](learning_curves.png)",
        "",
    ]
    return "\n".join(lines)


def write_outputs(result: dict[str, Any], out_dir: str | Path, title: str = "Simulation") -> dict[str, Path]:
    """Write result.json, learning_curves.png and report.md into out_dir; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "result.json", "png": out / "learning_curves.png", "report": out / "report.md"}
    paths["json"].write_text(json.dumps(result, indent=2, default=_json_default))
    plot_curves(result, paths["png"], title=title)
    paths["report"].write_text(markdown_report(result, title=title))
    return paths


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if math.isnan(float(o)) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
