"""Active learning from Python on a real dataset: BBC News paragraphs, five topics.

    python examples/python_api.py                  # 2,000 paragraphs, batches of 20 up to 300 labels
    python examples/python_api.py --rows 600 --budget 120

The texts are embedded once with the bundled MiniLM model (cached under ~/.cache/al-backend), then an
`ActiveLearner` runs the same round as `al-backend prioritize`: seeding first, then the default strategy.
The true labels play the annotator. Each round prints the accuracy on a held-out quarter of the data and the
stopping criterion's decision.
"""

from __future__ import annotations

import argparse

import numpy as np

import al_backend
from al_backend.datasets import embed_texts, load_bbc
from al_backend.errors import InputError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="BBC paragraphs to use (a seeded sample)")
    parser.add_argument("--batch", type=int, default=20, help="labels per round")
    parser.add_argument("--budget", type=int, default=300, help="stop after this many labels")
    args = parser.parse_args()

    texts, labels = load_bbc("paragraph", n=args.rows, seed=0)
    X = embed_texts(texts, progress=True)  # (n, 384) float32
    y = np.asarray(labels)
    rng = np.random.default_rng(0)
    test = rng.choice(len(y), size=len(y) // 4, replace=False)
    pool = np.setdiff1d(np.arange(len(y)), test)

    learner = al_backend.ActiveLearner(X[pool], random_state=0, budget=args.budget)
    labeled = 0
    while labeled < args.budget:
        rows = learner.query(min(args.batch, args.budget - labeled))  # indices into X[pool]
        learner.teach(rows, y[pool][rows])  # the "annotator" answers
        labeled += len(rows)
        decision = learner.stop_decision()
        try:
            accuracy = float(np.mean(np.asarray(learner.predict(X[test])) == y[test]))
        except InputError:
            accuracy = float("nan")  # fewer than two classes labeled yet
        print(f"{labeled:4d} labels  test accuracy {accuracy:.3f}  stop: {decision.stop}  ({decision.reason})")
        if decision.stop:
            break
    print("classes:", learner.classes_)


if __name__ == "__main__":
    main()
