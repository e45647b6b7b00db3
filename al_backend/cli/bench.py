"""`al-backend bench ...`: benchmarks that print ratios against a reference measured in the same run."""

from __future__ import annotations

import json

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
        same = "same picks, same order" if result["same_picks"] else f"{result['same_set']}/{batch_size} picks shared"
        table.add_row("k-center reference (numpy loop)", f"{result['reference_s']:.2f}", f"{result['speedup']:.1f}x slower; {same}")
    table.add_row("scores (margin)", f"{result['scores_s']:.2f}", "")
    if "density_s" in result:
        table.add_row("kNN density (k=10)", f"{result['density_s']:.2f}", "")
    table.add_row("hybrid (additive, alpha 0.5)", f"{result['hybrid_s']:.2f}", "")
    table.add_row("end to end (scores + density + hybrid)", f"{result['end_to_end_s']:.2f}", "")
    table.add_row("peak memory", f"{result['peak_memory_mb']:,.0f} MB", "")
    Console().print(table)
