"""The `al-backend` command line: prioritize, seed, status, embed, and the feature commands."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import click
import typer
import typer.core
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..config import Config, load_config
from ..errors import ALBackendError
from ..redact import install_logging_filter, redact, redact_obj

console = Console(stderr=True)
out = Console()

EXIT_CODES = """Exit codes: 0 done; 1 unexpected error; 2 bad configuration; 3 bad input (file, task, vector);
4 unusable state file (or one of another pool / embedding space); 5 labeling tool unreachable or refused a call;
6 nothing left to prioritise; 73 a path to write (output, state, lock) cannot be written;
75 another run holds the project's lock (try again later, or pass --wait). Add --debug (before the command) or
set AL_DEBUG=1 to see a traceback instead of a one-line error."""

_DEBUG = {"on": False}


def debug_enabled() -> bool:
    return _DEBUG["on"] or os.environ.get("AL_DEBUG", "").lower() in {"1", "true", "yes", "on"}


# What the guard lets through to typer: exits, aborts and usage errors (typer prints those, exit code 2).
# typer >= 0.29 has its own copy of click (typer._click, whose ClickException is a typer.TyperException);
# older releases use click itself.
_PASS_THROUGH: tuple[type[BaseException], ...] = (
    typer.Exit,
    typer.Abort,
    click.exceptions.Exit,
    click.ClickException,
    click.exceptions.Abort,
    KeyboardInterrupt,
    SystemExit,
) + ((typer.TyperException,) if hasattr(typer, "TyperException") else ())


class GuardedGroup(typer.core.TyperGroup):
    """Every command runs inside this guard: an al-backend error becomes its one-line message and exit code,
    anything unexpected one line and exit code 1. No traceback reaches a user unless --debug / AL_DEBUG=1."""

    def invoke(self, ctx: Any) -> Any:  # the Context of typer's click: typer._click's (>= 0.29) or click's
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except ALBackendError as e:
            if debug_enabled():
                raise
            fail(e)
        except Exception as e:  # noqa: BLE001 - the last line of defence
            if debug_enabled():
                raise
            if isinstance(e, OSError) and e.filename:
                what = f"{e.filename}: {e.strerror or e}"
            else:
                what = f"{type(e).__name__}: {e}"
            console.print(
                Text("error: ", style="bold red")
                + Text(
                    redact(
                        f"unexpected {what} (rerun with `al-backend --debug ...` for the traceback, and "
                        "please report it)"
                    )
                ),
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=GuardedGroup,
    name="al-backend",
    help=(
        "Active learning for the labeling tools you already use.\n\n"
        "Each round embeds the tasks (cached), fits a classifier on the labels so far, and ranks the unlabeled "
        "tasks so the most informative, non-redundant ones are labeled first. Before a model exists it seeds "
        "the project by clustering the pool.\n\n"
        "Quick start:\n\n"
        "  al-backend prioritize --input examples/tasks.jsonl --output ranked.jsonl\n\n" + EXIT_CODES
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error (also AL_DEBUG=1)."),
) -> None:
    _DEBUG["on"] = debug


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("error_type", "exit_code"):  # set by fail(): the run's final error, for alerting on
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_text:
            entry["error"] = redact(record.exc_text)
        elif record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry)


def setup_logging(log_format: str = "text", verbose: bool = False) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif log_format == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        raise typer.BadParameter(f"--log-format must be text or json, got {log_format!r}")
    root.addHandler(handler)
    install_logging_filter()  # credentials scrubbed from every line, exception text included
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("httpx", "httpcore", "sentence_transformers", "urllib3", "faiss", "argilla"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(err: ALBackendError, as_json: bool = False) -> None:
    """Print a clean message (never a traceback) and exit with the error's code."""
    message = redact(str(err))
    if as_json:
        out.print_json(json.dumps({"error": type(err).__name__, "message": message, "exit_code": err.exit_code}))
    if any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers):
        # --log-format json: the final error is a log line like the others, so collectors parse every line
        logging.getLogger("al_backend.cli").error(
            "%s", message, extra={"error_type": type(err).__name__, "exit_code": err.exit_code}
        )
    else:
        console.print(Text("error: ", style="bold red") + Text(message), highlight=False, soft_wrap=True)
    raise typer.Exit(err.exit_code)


def default_state_path(cfg: Config, source: str) -> str:
    """Per-project default state file when [state] path is left at its default."""
    if cfg.state.path != Config().state.path:
        return cfg.state.path.replace("{project}", str(cfg.labelstudio.project or cfg.argilla.dataset or "default"))
    if source == "labelstudio" and cfg.labelstudio.project:
        return f".al-state/labelstudio-{cfg.labelstudio.project}.sqlite"
    if source == "argilla" and cfg.argilla.dataset:
        ws = cfg.argilla.workspace or "default"
        return f".al-state/argilla-{ws}-{cfg.argilla.dataset}.sqlite"
    if source == "file" and cfg.file.input:
        return f".al-state/{Path(cfg.file.input).stem}.sqlite"
    return cfg.state.path


def build_config(config: Optional[Path], source: str, **flags: Any) -> Config:
    mapping = {
        "batch_size": "strategy.batch_size",
        "strategy": "strategy.name",
        "epsilon": "strategy.epsilon",
        "seed": "strategy.seed",
        "stopping": "stopping.criterion",
        "budget": "stopping.budget",
        "input": "file.input",
        "output": "file.output",
        "labels": "file.labels",
        "vectors": "file.vectors",
        "text_field": "file.text_field",
        "project": "labelstudio.project",
        "dataset": "argilla.dataset",
        "workspace": "argilla.workspace",
        "model": "embedding.model",
        "state": "state.path",
    }
    overrides = {mapping[k]: (str(v) if isinstance(v, Path) else v) for k, v in flags.items() if k in mapping}
    cfg = load_config(config, overrides=overrides)
    cfg.state.path = default_state_path(cfg, source)
    return cfg


# ---------------------------------------------------------------------- shared options
SourceOpt = typer.Option(
    "file", "--source", "-s", help="Where tasks live: file, labelstudio, argilla, or a connector plugin's name."
)
InputOpt = typer.Option(None, "--input", "-i", help="[file] tasks: .jsonl, .csv or .parquet with id, text[, label].")
OutputOpt = typer.Option(None, "--output", "-o", help="[file] where to write the ranking (.jsonl, .csv, .parquet).")
ProjectOpt = typer.Option(None, "--project", help="[labelstudio] project id.")
DatasetOpt = typer.Option(None, "--dataset", help="[argilla] dataset name.")
WorkspaceOpt = typer.Option(None, "--workspace", help="[argilla] workspace name.")
ConfigOpt = typer.Option(None, "--config", "-c", help="TOML configuration file (see deploy/al.example.toml).")
StateOpt = typer.Option(None, "--state", help="Project state file (SQLite). Default: .al-state/<project>.sqlite")
JsonOpt = typer.Option(False, "--json", help="Print a machine-readable JSON summary on stdout.")
LogOpt = typer.Option("text", "--log-format", help="Log lines as 'text' or 'json' (for log collectors).")
RandomStateOpt = typer.Option(
    None,
    "--random-state",
    help="Seed of everything random in a round (clusters, seeds, exploration); TOML [strategy] seed. "
    "The same pool, labels and seed give the same batch.",
)
ResetOpt = typer.Option(
    False,
    "--reset-state",
    help="Start the project's state over: move the existing state file aside (renamed to "
    "<state>.replaced-<time>, never deleted) first. For a state built from another pool or embedding space.",
)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  al-backend prioritize --input examples/tasks.jsonl --output ranked.jsonl\n\n"
        "  al-backend prioritize --input tasks.csv --labels labels.csv --output ranked.csv --batch-size 50\n\n"
        "  al-backend prioritize --source labelstudio --project 3       # LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY\n\n"
        "  al-backend prioritize --source argilla --dataset news --workspace team   # ARGILLA_API_URL / ARGILLA_API_KEY\n\n"
        "  */10 * * * *  al-backend prioritize --source labelstudio --project 3 --log-format json   # cron\n\n"
        + EXIT_CODES
    )
)
def prioritize(
    source: str = SourceOpt,
    input: Optional[Path] = InputOpt,
    output: Optional[Path] = OutputOpt,
    labels: Optional[Path] = typer.Option(
        None, "--labels", help="[file] a separate file of id,label that overrides the input's labels."
    ),
    vectors: Optional[Path] = typer.Option(
        None, "--vectors", help="[file] precomputed embeddings (.npy, one row per input row): skips the model."
    ),
    project: Optional[int] = ProjectOpt,
    dataset: Optional[str] = DatasetOpt,
    workspace: Optional[str] = WorkspaceOpt,
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", "-k", help="How many tasks form the batch to label next."
    ),
    strategy: Optional[str] = typer.Option(
        None, "--strategy", help="Selection strategy (see `al-backend strategies`); 'default' is the measured best."
    ),
    epsilon: Optional[float] = typer.Option(
        None, "--epsilon", help="Fraction of the batch replaced by random exploration picks (0..1)."
    ),
    random_state: Optional[int] = RandomStateOpt,
    stopping: Optional[str] = typer.Option(
        None, "--stopping", help="Stopping criterion spec (see `al-backend strategies`); TOML [stopping] criterion."
    ),
    budget: Optional[int] = typer.Option(
        None, "--budget", help="Labels you can afford: the stopping decision says stop there; TOML [stopping] budget."
    ),
    state: Optional[Path] = StateOpt,
    config: Optional[Path] = ConfigOpt,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Compute and print the ranking; push nothing and record nothing."
    ),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Skip malformed tasks with a warning and a count instead of stopping."
    ),
    wait: float = typer.Option(
        0.0, "--wait", help="Wait up to SECONDS for another run's lock instead of exiting with code 75."
    ),
    reset_state: bool = ResetOpt,
    as_json: bool = JsonOpt,
    log_format: str = LogOpt,
    show: int = typer.Option(10, "--show", help="How many top tasks to print."),
) -> None:
    """Run one active-learning round: pull tasks, rank the unlabeled ones, push the ranking back."""
    setup_logging(log_format)
    from ..preflight import check_round
    from ..round import make_connector, run_project_round

    try:
        cfg = build_config(
            config,
            source,
            input=input,
            output=output,
            labels=labels,
            vectors=vectors,
            project=project,
            dataset=dataset,
            workspace=workspace,
            batch_size=batch_size,
            strategy=strategy,
            epsilon=epsilon,
            seed=random_state,
            stopping=stopping,
            budget=budget,
            state=state,
        )
        check_round(cfg, source, dry_run=dry_run)  # paths to read and write, before the lock and the round
        connector = make_connector(cfg, source, skip_invalid=skip_invalid)
        result = run_project_round(
            cfg, connector, dry_run=dry_run, wait=wait, progress=not as_json, reset_state=reset_state
        )
    except ALBackendError as e:
        fail(e, as_json)
        return
    ranking = result["ranking"]
    if as_json:
        summary = {k: v for k, v in result.items() if k != "ranking"}
        summary["top"] = ranking.rows()[: max(show, ranking.batch_size)] if dry_run else ranking.rows()[:show]
        out.print_json(json.dumps(summary, default=str))
        return
    table = Table(
        title=f"round {ranking.round_id} · {ranking.strategy} · {result['phase']} · batch {ranking.batch_size}"
    )
    for col in ("rank", "id", "priority", "predicted", "confidence", "text"):
        table.add_column(col, overflow="fold")
    for row, text in zip(ranking.rows()[:show], result["texts"][:show]):
        conf = "" if row["confidence"] is None else f"{row['confidence']:.2f}"
        table.add_row(
            str(row["rank"]),
            Text(row["id"]),
            f"{row['priority']:.4f}",
            Text(row["predicted"] or ""),
            conf,
            Text(text[:70]),
        )
    out.print(table)
    pushed = "dry run: nothing pushed or recorded" if dry_run else f"pushed {result['pushed']} to {result['target']}"
    console.print(
        f"{result['pool_size']} tasks, {result['labeled']} labeled, {len(ranking)} ranked; {pushed}; "
        f"{result['embedded']} texts embedded now; {result['seconds']:.1f} s"
    )
    if result.get("skipped"):
        console.print(f"[yellow]skipped {result['skipped']} invalid rows[/]")
    decision = ranking.stopping
    if decision:
        verdict = "[bold green]STOP labeling[/]" if decision["stop"] else "keep labeling"
        console.print(f"stopping ({decision['criterion']}): {verdict}: ", Text(decision["reason"]))


@app.command(epilog="Example:\n\n  al-backend seed --input examples/tasks.jsonl --output seeds.jsonl --batch-size 10")
def seed(
    source: str = SourceOpt,
    input: Optional[Path] = InputOpt,
    output: Optional[Path] = OutputOpt,
    project: Optional[int] = ProjectOpt,
    dataset: Optional[str] = DatasetOpt,
    workspace: Optional[str] = WorkspaceOpt,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-k", help="How many seed tasks to pick."),
    random_state: Optional[int] = RandomStateOpt,
    state: Optional[Path] = StateOpt,
    config: Optional[Path] = ConfigOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the seeds; push and record nothing."),
    reset_state: bool = ResetOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Pick a cold-start batch by clustering the pool (size-proportional, spread across clusters), whatever the labels."""
    setup_logging("text")
    from ..preflight import check_round
    from ..round import make_connector, run_project_round

    try:
        cfg = build_config(
            config,
            source,
            input=input,
            output=output,
            project=project,
            dataset=dataset,
            workspace=workspace,
            batch_size=batch_size,
            seed=random_state,
            state=state,
        )
        cfg.strategy.name = "seed"
        check_round(cfg, source, dry_run=dry_run)
        result = run_project_round(
            cfg, make_connector(cfg, source), dry_run=dry_run, progress=not as_json, reset_state=reset_state
        )
    except ALBackendError as e:
        fail(e, as_json)
        return
    ranking = result["ranking"]
    seeds = [
        {"id": r["id"], "cluster": r["cluster"], "text": t}
        for r, t in zip(ranking.rows()[: ranking.batch_size], result["texts"])
    ]
    if as_json:
        out.print_json(json.dumps({"round": ranking.round_id, "seeds": seeds}))
        return
    table = Table(title=f"{len(seeds)} seed tasks across clusters")
    for col in ("#", "id", "cluster", "text"):
        table.add_column(col, overflow="fold")
    for i, s in enumerate(seeds, 1):
        table.add_row(str(i), Text(s["id"]), str(s["cluster"]), Text(s["text"][:80]))
    out.print(table)


@app.command(
    epilog="Examples:\n\n  al-backend status --state .al-state/tasks.sqlite\n\n  al-backend status --state .al-state/labelstudio-3.sqlite --json | jq .labeled"
)
def status(
    state: Path = typer.Option(Path(".al-state/project.sqlite"), "--state", help="Project state file."),
    as_json: bool = JsonOpt,
) -> None:
    """Where a project stands: pool, labels per class, cluster coverage, rounds, the last model."""
    from ..store import Store

    try:
        with Store.open(state, create=False) as store:
            summary = redact_obj(store.summary())
        last_metrics = (summary["last_round"] or {}).get("metrics") or {}
        summary["stopping"] = (last_metrics.get("stopping") or {}).get("decision")
    except ALBackendError as e:
        fail(e, as_json)
        return
    if as_json:
        out.print_json(json.dumps(summary, default=str))
        return
    last = summary["last_round"]
    out.print(Text(summary["state"], style="bold"))
    out.print(
        f"pool {summary['pool_size']} · labeled {summary['labeled']} · rounds {summary['rounds']} · "
        f"embeddings cached {summary['embeddings_cached']} · annotator disagreements {summary['disagreements']}"
    )
    n_clusters = len(summary["clusters"])
    out.print(f"clusters covered {summary['clusters_covered']} / {n_clusters}")
    if summary["classes"]:
        t = Table(title="labels per class")
        t.add_column("class")
        t.add_column("labels", justify="right")
        for c, n in sorted(summary["classes"].items()):
            t.add_row(Text(c), str(n))
        out.print(t)
    if last:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["finished_at"]))
        out.print(
            f"last round {last['round']} at {when} ({last['duration_s']} s): phase {last['phase']}, "
            f"strategy {last['strategy']}, batch {last['batch_size']}, version {last['model_version']}"
        )
        nxt = "model-based selection" if last["phase"] == "model" else "seeding (classes or clusters not yet covered)"
        out.print(f"next round: {nxt}")
        decision = (last.get("metrics") or {}).get("stopping", {}).get("decision")
        if decision:
            verdict = "[bold green]STOP labeling[/]" if decision["stop"] else "keep labeling"
            out.print(f"stopping ({decision['criterion']}): {verdict}: ", Text(decision["reason"]))


@app.command(epilog="Example:\n\n  al-backend embed --input examples/tasks.jsonl")
def embed(
    source: str = SourceOpt,
    input: Optional[Path] = InputOpt,
    project: Optional[int] = ProjectOpt,
    dataset: Optional[str] = DatasetOpt,
    workspace: Optional[str] = WorkspaceOpt,
    model: Optional[str] = typer.Option(None, "--model", help="sentence-transformers model name or path."),
    state: Optional[Path] = StateOpt,
    config: Optional[Path] = ConfigOpt,
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip malformed tasks."),
    as_json: bool = JsonOpt,
) -> None:
    """Warm the embedding cache: embed every task not cached yet (later rounds then start at once)."""
    setup_logging("text")
    from ..embedding import Embedder
    from ..round import make_connector
    from ..store import Store, project_lock

    try:
        cfg = build_config(
            config, source, input=input, project=project, dataset=dataset, workspace=workspace, model=model, state=state
        )
        from ..preflight import check_round

        check_round(cfg, source, dry_run=True)  # input readable, state and lock writable: before embedding
        connector = make_connector(cfg, source, skip_invalid=skip_invalid)
        pool = connector.pull()
        pool.validate()
        t0 = time.perf_counter()
        with project_lock(cfg.state.path), Store.open(cfg.state.path) as store:
            embedder = Embedder.from_config(cfg, store, progress=not as_json)
            before = store.embedding_count(embedder.model_id)
            X = embedder.embed(pool.texts)
            after = store.embedding_count(embedder.model_id)
    except ALBackendError as e:
        fail(e, as_json)
        return
    result = {
        "tasks": len(pool),
        "embedded_now": embedder.texts_encoded,
        "cached_before": before,
        "cached_after": after,
        "dim": int(X.shape[1]),
        "model": embedder.model_id,
        "seconds": round(time.perf_counter() - t0, 3),
        "state": cfg.state.path,
    }
    if as_json:
        out.print_json(json.dumps(result))
    else:
        out.print(
            f"{result['tasks']} tasks: {result['embedded_now']} embedded now, the rest from the cache "
            f"({result['cached_after']} vectors of {result['model']} in {result['state']}), {result['seconds']} s"
        )


@app.command("strategies", epilog="Example:\n\n  al-backend strategies --json | jq '.strategies.margin.needs'")
def list_strategies_cmd(as_json: bool = JsonOpt) -> None:
    """List the selection strategies (built-in and plugins), what each needs, and the stopping criteria."""
    from .. import stopping, strategies

    registry = strategies.registry()
    default = strategies.DEFAULT_STRATEGY
    if as_json:
        data = {
            "default": default,
            "strategies": {name: {"description": s.description, "needs": s.needs()} for name, s in registry.items()},
            "stopping": stopping.describe_criteria(),
        }
        out.print_json(json.dumps(data))
        return
    t = Table(title=f"strategies (--strategy NAME; 'default' is {default})")
    t.add_column("name")
    t.add_column("needs", overflow="fold")
    t.add_column("what it does", overflow="fold")
    for name, s in registry.items():
        needs = ", ".join(k for k, v in s.needs().items() if v) or "-"
        t.add_row(name + (" (default)" if name == default else ""), needs, s.description)
    out.print(t)
    c = Table(title="stopping criteria (\\[stopping] criterion = SPEC; several joined by | stop when any does)")
    c.add_column("name")
    c.add_column("when it stops [parameters]", overflow="fold")
    for name, doc in stopping.describe_criteria().items():
        c.add_row(name, doc)
    out.print(c)


def _register_features() -> None:
    """Feature commands live in their own modules."""
    from . import argilla as argilla_cli
    from . import bench as bench_cli
    from . import serve as serve_cli
    from . import simulate as simulate_cli

    app.add_typer(
        bench_cli.bench_app,
        name="bench",
        help="Benchmarks that print ratios against a reference measured in the same run.",
    )
    serve_cli.register(app)
    simulate_cli.register(app)
    argilla_cli.register(app)


_register_features()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
