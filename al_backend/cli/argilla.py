"""`al-backend argilla ...`: watch an Argilla dataset and reprioritise as answers arrive; check a connection.

One round (`al-backend prioritize --source argilla`) lives in main.py; this module adds the loop around it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import ALBackendError, ConfigError

if TYPE_CHECKING:
    from connectors.argilla import ArgillaConnector

log = logging.getLogger(__name__)
console = Console(stderr=True)

argilla_app = typer.Typer(
    help="Argilla: keep a dataset's al_priority up to date as annotators submit responses.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

EXAMPLES = (
    "Examples:\n\n"
    "  export ARGILLA_API_URL=http://localhost:6900 ARGILLA_API_KEY=owner.apikey\n\n"
    "  al-backend argilla check --dataset news --workspace team\n\n"
    "  al-backend argilla watch --dataset news --workspace team --every 60 --min-new 20\n\n"
    "Annotators then sort the pending queue by the metadata property al_priority, descending."
)


def register(app: typer.Typer) -> None:
    """Add the `argilla` command group to the main app."""
    app.add_typer(argilla_app, name="argilla", help="Argilla: watch a dataset and reprioritise as answers arrive.")


def baseline_key(cfg) -> str:
    return f"watch.argilla.{cfg.argilla.workspace or '-'}.{cfg.argilla.dataset}"


def _argilla_connector(cfg: Any) -> ArgillaConnector:
    """The configured 'argilla' connector. These commands read more than the Connector protocol (its dataset,
    question, counters, last pull), so it must be an ArgillaConnector (a subclass registered in its place is)."""
    from connectors import make_connector
    from connectors.argilla import ArgillaConnector

    connector = make_connector("argilla", cfg)
    if not isinstance(connector, ArgillaConnector):
        raise ConfigError(
            f"the argilla commands need an ArgillaConnector (connectors/argilla.py); the connector "
            f"registered as 'argilla' built {type(connector).__name__}"
        )
    return connector


def make_watcher(
    cfg, connector, *, min_new: int, wait: float = 60.0, progress: bool = False, track_records: bool = True
):
    """A Watcher over one Argilla dataset: counters from the dataset's progress, rounds through the same
    round as `prioritize`, the baseline kept in the project's state file (a restart does not retrain)."""
    from ..round import run_project_round
    from ..store import Store, project_lock
    from ..watch import Watcher, baseline_from_store, save_baseline_to_store

    key = baseline_key(cfg)

    from ..errors import ConnectorError

    def fresh_on_error(fn):
        # after a failure (Argilla restarted, dataset re-created) look the dataset up again at the next poll
        def call():
            try:
                return fn()
            except ConnectorError:
                connector.reset()
                raise

        return call

    @fresh_on_error
    def poll() -> dict[str, int]:
        return connector.counters()

    @fresh_on_error
    def run_round() -> dict[str, Any]:
        return run_project_round(cfg, connector, wait=wait, progress=progress)

    def save(counters: dict[str, int]) -> None:
        with project_lock(cfg.state.path, wait=wait), Store.open(cfg.state.path) as store:
            save_baseline_to_store(store, key, counters)

    baseline = None
    if Path(cfg.state.path).exists():
        with Store.open(cfg.state.path, create=False) as store:
            baseline = baseline_from_store(store, key)
    return Watcher(
        poll=poll,
        run_round=run_round,
        min_new=min_new,
        baseline=baseline,
        save_baseline=save,
        track_records=track_records,
    )


@argilla_app.command(epilog=EXAMPLES)
def watch(
    every: float = typer.Option(60.0, "--every", help="Seconds between polls of the dataset's progress."),
    min_new: int = typer.Option(
        10, "--min-new", help="Retrain and reprioritise once this many new responses are submitted."
    ),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name ([argilla] dataset)."),
    workspace: Optional[str] = typer.Option(None, "--workspace", help="Workspace name ([argilla] workspace)."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", "-k", help="How many records form the batch to label next."
    ),
    strategy: Optional[str] = typer.Option(
        None, "--strategy", help="Selection strategy (see `al-backend strategies`)."
    ),
    state: Optional[Path] = typer.Option(
        None, "--state", help="Project state file. Default: .al-state/argilla-<workspace>-<dataset>.sqlite"
    ),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML configuration file."),
    max_rounds: Optional[int] = typer.Option(
        None, "--max-rounds", help="Stop after this many rounds (default: run until stopped)."
    ),
    ignore_new_records: bool = typer.Option(
        False, "--ignore-new-records", help="Do not run a round when records are added or deleted."
    ),
    wait: float = typer.Option(60.0, "--wait", help="Wait up to SECONDS for another run's lock on the state."),
    log_format: str = typer.Option("text", "--log-format", help="Log lines as 'text' or 'json'."),
) -> None:
    """Poll the dataset every --every seconds; once --min-new responses have been submitted since the last
    round, retrain and push new priorities. The first poll runs a round at once. Stop with Ctrl-C or SIGTERM."""
    from .main import build_config, fail, setup_logging

    setup_logging(log_format)
    stop = threading.Event()

    def on_signal(signum, frame):  # docker stop / systemd: finish the current step, then exit
        console.print(f"[yellow]signal {signum}: stopping after the current step[/]")
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        cfg = build_config(
            config,
            "argilla",
            dataset=dataset,
            workspace=workspace,
            batch_size=batch_size,
            strategy=strategy,
            state=state,
        )
        connector = _argilla_connector(cfg)
        counters = connector.counters()  # fail fast: URL, key, dataset, question
        watcher = make_watcher(
            cfg,
            connector,
            min_new=min_new,
            wait=wait,
            progress=console.is_terminal,
            track_records=not ignore_new_records,
        )
        console.print(
            escape(
                f"watching {connector.describe()} (question {connector.question_name!r}, text {connector.text_field_name!r}): "
                f"{counters['submitted']} responses, {counters['records']} records; a round every {min_new} new "
                f"responses, polling every {every:g} s; state {cfg.state.path}"
            ),
            highlight=False,
        )
        status = console.status("", spinner="dots") if console.is_terminal else None
        last_new: int | None = None  # the last count of new responses printed (without a status line)

        def on_poll(res) -> None:
            nonlocal last_new
            stamp = time.strftime("%H:%M:%S")
            if res.ran:
                r = res.result
                console.print(
                    f"{stamp} round {r['round']} ({res.reason}, {res.new_submitted} new): {r['labeled']} labeled, "
                    f"{r['ranked']} ranked, batch {r['batch_size']}, {r['strategy']} ({r['phase']}), "
                    f"pushed {r['pushed']} in {r['seconds']:.1f} s",
                    highlight=False,
                )
            elif res.reason == "error":
                console.print(
                    f"{stamp} [red]poll failed, retrying in {every:g} s:[/] {escape(res.error or '')}", highlight=False
                )
            elif res.reason == "nothing pending":
                console.print(f"{stamp} every record is labeled; waiting for new records", highlight=False)
            elif status is None and res.new_submitted and res.new_submitted != last_new:
                console.print(f"{stamp} {res.new_submitted}/{min_new} new responses", highlight=False)
            last_new = res.new_submitted
            if status is not None:
                status.update(
                    f"{res.new_submitted}/{min_new} new responses since the last round · "
                    f"{watcher.rounds} rounds · next poll in {every:g} s"
                )

        if status is not None:
            status.start()
        try:
            watcher.run(every, max_rounds=max_rounds, stop=stop, on_poll=on_poll)
        except KeyboardInterrupt:
            pass
        finally:
            if status is not None:
                status.stop()
        console.print(f"stopped after {watcher.rounds} rounds and {watcher.polls} polls", highlight=False)
    except ALBackendError as e:
        fail(e)
    finally:
        signal.signal(signal.SIGTERM, previous)


@argilla_app.command(epilog=EXAMPLES)
def check(
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name ([argilla] dataset)."),
    workspace: Optional[str] = typer.Option(None, "--workspace", help="Workspace name ([argilla] workspace)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML configuration file."),
) -> None:
    """Check the connection, the dataset and its question; print what a round would see."""
    from .main import build_config, fail, out

    try:
        cfg = build_config(config, "argilla", dataset=dataset, workspace=workspace)
        connector = _argilla_connector(cfg)
        pool = connector.pull()
        counters = connector.counters()
        have = {p.name for p in connector.dataset.settings.metadata}
    except ALBackendError as e:
        fail(e)
        return
    lp = connector.last_pull
    out.print(f"[bold]{escape(connector.describe())}[/]", highlight=False)
    out.print(
        f"text field {connector.text_field_name!r}; label question {connector.question_name!r}: "
        f"{', '.join(connector.label_set() or [])}",
        highlight=False,
    )
    out.print(
        f"{len(pool)} records in the pool: {lp.get('pending', 0)} pending, {lp.get('labeled', 0)} labeled "
        f"({lp.get('disagreements', 0)} with annotator disagreement); {counters['submitted']} submitted "
        f"responses; {len(connector.skipped)} records without text",
        highlight=False,
    )
    missing = [m for m in ("al_priority", "al_rank", "al_round", "al_cluster") if m not in have]
    out.print(
        "al_* metadata properties: "
        + ("present" if not missing else f"missing {', '.join(missing)} (the first round adds them)"),
        highlight=False,
    )
