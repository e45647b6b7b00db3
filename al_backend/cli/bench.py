"""`al-backend bench ...`: benchmarks that print ratios against a reference measured in the same run."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

bench_app = typer.Typer(
    help="Benchmarks that print ratios against a reference measured in the same run.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


@bench_app.callback()
def _bench() -> None:
    """Benchmarks that print ratios against a reference measured in the same run."""


@bench_app.command("selection")
def selection_cmd(
    pool_size: int = typer.Option(1_000_000, "--pool-size", min=1, help="Rows in the synthetic pool."),
    dim: int = typer.Option(384, "--dim", min=1, help="Embedding dimensions."),
    batch_size: int = typer.Option(1000, "--batch-size", min=1, help="Rows to select (k)."),
    labeled: int = typer.Option(100, "--labeled", min=1, help="Labeled rows the picks keep away from."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the synthetic data."),
    reference: bool = typer.Option(True, "--reference/--no-reference", help="Time the plain numpy loop too."),
    with_density: bool = typer.Option(True, "--density/--no-density", help="Time kNN density too."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """k-center, hybrid selection and kNN density on random unit vectors, next to a plain numpy k-center loop."""
    from ..bench.selection import bench_selection

    if batch_size > pool_size:
        raise typer.BadParameter(f"--batch-size {batch_size} exceeds --pool-size {pool_size}")
    err = Console(stderr=True)
    log = (lambda _: None) if as_json else (lambda msg: err.print(f"[dim]{msg}...[/dim]"))
    result = bench_selection(
        pool_size, dim, batch_size, labeled=labeled, seed=seed, reference=reference, with_density=with_density, log=log
    )
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"selection: {pool_size:,} x {dim}, k = {batch_size:,}, {labeled} labeled")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("note")
    table.add_row("k-center (lazy exact greedy)", f"{result['kcenter_s']:.2f}", "")
    if "reference_s" in result:
        if result["same_picks"]:
            same = "same picks, same order"
        else:
            diff = result["first_difference"]
            same = (
                f"{result['same_set']}/{batch_size} picks shared; order first differs at pick {diff['position']} "
                f"(exact distances {diff['ours_distance']:.10f} ours vs {diff['reference_distance']:.10f})"
            )
        table.add_row(
            "k-center reference (numpy loop)",
            f"{result['reference_s']:.2f}",
            f"{result['speedup']:.1f}x slower; {same}",
        )
    table.add_row("scores (margin)", f"{result['scores_s']:.2f}", "")
    if "density_s" in result:
        table.add_row("kNN density (k=10)", f"{result['density_s']:.2f}", "")
    table.add_row("hybrid (additive, alpha 0.5)", f"{result['hybrid_s']:.2f}", "")
    table.add_row("end to end (scores + density + hybrid)", f"{result['end_to_end_s']:.2f}", "")
    table.add_row("peak memory", f"{result['peak_memory_mb']:,.0f} MB", "")
    Console().print(table)


@bench_app.command("labelstudio")
def labelstudio_cmd(
    url: str = typer.Option(None, "--url", envvar="LABEL_STUDIO_URL", help="Label Studio URL (LABEL_STUDIO_URL)."),
    token: str = typer.Option(
        None,
        "--token",
        envvar="LABEL_STUDIO_API_KEY",
        show_default=False,
        help="API key, personal access token or legacy (LABEL_STUDIO_API_KEY).",
    ),
    n: int = typer.Option(10000, "--n", min=1, help="Tasks in the scratch project."),
    repeats: int = typer.Option(2, "--repeats", min=1, help="Timed repetitions per side (best counts)."),
    keep_project: bool = typer.Option(False, "--keep-project", help="Leave the scratch project in Label Studio."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Pull and push N tasks through the connector, next to the fastest raw HTTP calls (same server, same run)."""
    from ..bench.labelstudio import bench_labelstudio
    from ..errors import ALBackendError

    if not url or not token:
        raise typer.BadParameter("set --url and --token (or LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)")
    err = Console(stderr=True)
    log = (lambda _: None) if as_json else (lambda msg: err.print(f"[dim]{msg}[/dim]"))
    try:
        result = bench_labelstudio(url, token, n, repeats=repeats, keep_project=keep_project, log=log)
    except ALBackendError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(e.exit_code) from None
    if as_json:
        print(json.dumps(result, default=str))
        return
    table = Table(title=f"Label Studio connector vs raw HTTP: {n:,} tasks ({url})")
    for col in ("operation", "raw HTTP (s)", "connector (s)", "connector / raw"):
        table.add_column(col, justify="right" if col != "operation" else "left")
    for op in ("pull", "push"):
        r = result[op]
        table.add_row(op, f"{r['raw_s']:.2f}", f"{r['connector_s']:.2f}", f"{r['ratio']:.2f}x")
    Console().print(table)
    verdict = "within" if result["ok"] else "OVER"
    Console().print(
        f"target: connector <= {result['target_ratio']:.2f}x raw: {verdict}; deleting one old version "
        f"took {result['prune_one_version_s']:.1f} s (housekeeping after the push)"
    )


@bench_app.command("predict")
def predict_cmd(
    url: str = typer.Option(
        None,
        "--url",
        help="A running al-backend serve (e.g. http://127.0.0.1:9090). "
        "Left out: a state with a model is built from --input and a server started here.",
    ),
    concurrency: int = typer.Option(32, "--concurrency", min=1, help="Requests in flight at once."),
    tasks_per_request: int = typer.Option(10, "--tasks-per-request", min=1, help="Tasks in each /predict call."),
    requests: int = typer.Option(None, "--requests", min=1, help="Timed requests in all (default 10 x concurrency)."),
    input: str = typer.Option(
        None,
        "--input",
        "-i",
        help="JSONL tasks (id, text[, label]) whose texts are sent; "
        "default examples/tasks.jsonl. Self-contained mode trains on its labels.",
    ),
    project: int = typer.Option(1, "--project", min=1, help="Label Studio project id the calls name."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Latency of /predict under concurrent load (embeddings cached): p50 and p99, next to one call at a time.

    Basic auth or a bearer token for --url come from AL_BASIC_AUTH_USER / AL_BASIC_AUTH_PASS or AL_API_TOKEN.
    """
    import os
    from pathlib import Path

    from ..bench.predict_load import bench_predict
    from ..errors import ALBackendError

    err = Console(stderr=True)
    log = (lambda _: None) if as_json else (lambda msg: err.print(f"[dim]{msg}[/dim]", highlight=False))
    auth: tuple[str, str] | Callable[[Any], Any] | None = None  # httpx: (user, password) or a request editor
    if url and os.environ.get("AL_BASIC_AUTH_USER") and os.environ.get("AL_BASIC_AUTH_PASS"):
        auth = (os.environ["AL_BASIC_AUTH_USER"], os.environ["AL_BASIC_AUTH_PASS"])
    elif url and os.environ.get("AL_API_TOKEN"):
        token = os.environ["AL_API_TOKEN"]

        def bearer(request: Any, token: str = token) -> Any:
            request.headers["Authorization"] = f"Bearer {token}"
            return request

        auth = bearer
    try:
        result = bench_predict(
            url,
            concurrency=concurrency,
            tasks_per_request=tasks_per_request,
            requests=requests,
            tasks_file=Path(input) if input else None,
            project=project,
            auth=auth,
            log=log,
        )
    except ALBackendError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(e.exit_code) from None
    if as_json:
        print(json.dumps(result, default=str))
        return
    load, ref = result["load"], result["reference"]
    table = Table(
        title=f"/predict: {load['requests']} requests x {tasks_per_request} tasks, {concurrency} concurrent "
        f"({result['url']}, {result['cpu_count']} CPUs)"
    )
    for col in ("", "p50 ms", "p90 ms", "p99 ms", "max ms", "req/s", "errors"):
        table.add_column(col, justify="right" if col else "left")
    for name, r in (("one at a time (reference)", ref), (f"{concurrency} at once", load)):
        table.add_row(
            name,
            f"{r['p50_s'] * 1000:.1f}",
            f"{r['p90_s'] * 1000:.1f}",
            f"{r['p99_s'] * 1000:.1f}",
            f"{r['max_s'] * 1000:.1f}",
            f"{r['requests_per_s']:.1f}",
            str(r["errors"]),
        )
    Console().print(table)
    verdict = "met" if result["ok"] else "NOT met"
    Console().print(
        f"p99 under load = {result['p99_vs_single_p50']:.1f}x a single call's p50; "
        f"target p99 < {result['target_p99_ms']:.0f} ms with no errors: {verdict}"
    )
    if load["error_examples"]:
        Console().print(f"errors, e.g.: {load['error_examples'][0]}", highlight=False)


@bench_app.command("round")
def round_cmd(
    pool_size: int = typer.Option(1_000_000, "--pool-size", min=2, help="Tasks in the synthetic pool."),
    dim: int = typer.Option(384, "--dim", min=1, help="Embedding dimensions."),
    batch_size: int = typer.Option(1000, "--batch-size", min=1, help="Batch size of each round."),
    labeled: int = typer.Option(300, "--labeled", min=2, help="Labeled tasks (spread over --classes)."),
    classes: int = typer.Option(5, "--classes", min=2, help="Classes among the labeled tasks."),
    strategy: str = typer.Option("default", "--strategy", help="Strategy to run (margin_density adds kNN density)."),
    rounds: int = typer.Option(2, "--rounds", min=1, help="Rounds to run; the last is the steady state."),
    compare_plain: bool = typer.Option(
        False,
        "--compare-plain",
        help="Also run the same rounds with the plain head ([head] smoothing = 0, the "
        "earlier default) and print both, measured in one run.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Whole prioritisation rounds from cached vectors (validate, cluster, fit, score, select, record the state),
    next to one scoring pass of the head over the pool measured in the same run.

    Examples:  al-backend bench round --pool-size 1000000 --batch-size 1000

               al-backend bench round --pool-size 100000 --labeled 1000 --batch-size 50 --compare-plain
    """
    from ..bench.round import bench_round

    result = bench_round(pool_size, dim, batch_size, labeled, classes, strategy, rounds)
    plain = (
        bench_round(pool_size, dim, batch_size, labeled, classes, strategy, rounds, smoothing=0.0)
        if compare_plain
        else None
    )
    if as_json:
        typer.echo(json.dumps(result if plain is None else {"default": result, "plain_head": plain}))
        return
    table = Table(title=f"engine rounds: {pool_size:,} x {dim}, batch {batch_size}, {result['strategy']}")
    steps = (
        "validate_s",
        "embed_s",
        "items_s",
        "clusters_s",
        "density_s",
        "features_s",
        "head_s",
        "score_s",
        "select_s",
        "rank_s",
        "stopping_s",
        "record_s",
        "other_s",
    )
    table.add_column("seconds")  # one column a round: the steps fit an 80-column terminal
    for r in result["rounds"]:
        table.add_column(f"round {r['round']}", justify="right")
    table.add_row("total", *(f"{r['seconds']:.2f}" for r in result["rounds"]))
    for k in steps:
        table.add_row(k[: -len("_s")], *(f"{r.get(k, 0):.2f}" for r in result["rounds"]))
    table.add_row("head reused", *("yes" if r.get("head_reused") else "no" for r in result["rounds"]))
    out = Console()
    out.print(table)
    out.print(
        f"reference, one scoring pass of the head over the pool: {result['reference_scoring_pass_s']:.2f} s; "
        f"steady round = {result['steady_round_vs_reference']:.1f}x that; peak memory {result['peak_rss_mb']:.0f} MB"
    )
    if plain is not None:
        out.print(
            "plain head (the earlier default), same pool: rounds "
            + ", ".join(f"{r['seconds']:.2f} s" for r in plain["rounds"])
            + "; the default's rounds: "
            + ", ".join(f"{r['seconds']:.2f} s" for r in result["rounds"])
            + f" ({result['rounds'][0]['seconds'] / max(plain['rounds'][0]['seconds'], 1e-9):.1f}x first, "
            f"{result['rounds'][-1]['seconds'] / max(plain['rounds'][-1]['seconds'], 1e-9):.1f}x steady)"
        )
