"""The ``lai`` command line.

Errors a user can fix print as one line and exit with status 2; ``--debug`` shows the
traceback. Progress bars and tables are drawn here and nowhere else.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lai.errors import LaiError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="LLMs-as-Instructors: models that learn from their mistakes.")
console = Console(stderr=True)
_state = {"debug": False}


class RichStage:
    def __init__(self, progress: Progress, label: str, total: int | None) -> None:
        self.progress = progress
        self.task_id = progress.add_task(label, total=total)

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task_id, n)

    def close(self) -> None:
        self.progress.stop_task(self.task_id)


class RichProgress:
    """One bar per stage with counts, rate and ETA."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def start(self, label: str, total: int | None) -> RichStage:
        return RichStage(self.progress, label, total)


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks and debug logs")] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=debug, show_time=False)],
    )
    for noisy in ("httpx", "httpx2", "openai", "urllib3", "datasets", "transformers", "filelock"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="YAML config; optional when --run-dir holds one")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a setting: key.path=value")] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="where to write (default runs/<name>)")] = None,
) -> None:
    """Run the loop; rerun the same command to resume an interrupted run."""
    from lai.config import load_config
    from lai.pipeline import Pipeline

    if config is None:
        if run_dir is None or not (run_dir / "config.yaml").exists():
            raise LaiError("no config given", hint="lai run CONFIG, or lai run --run-dir DIR for a run that has one")
        config = run_dir / "config.yaml"
    cfg = load_config(config, set_ or [])
    run_dir = run_dir or Path("runs") / cfg.name
    console.print(f"[bold]lai run[/] {cfg.name}: {cfg.iterations} iteration(s) -> {run_dir}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        report = Pipeline(cfg, run_dir, RichProgress(progress)).run()
    _print_summary(run_dir)
    console.print(f"[green]done.[/] report: {report}")


def _print_summary(run_dir: Path) -> None:
    from rich.table import Table

    from lai.pipeline import load_summaries

    table = Table(title="scores")
    for column in ("iteration", "benchmark", "score", "n"):
        table.add_column(column)
    for k, stages in sorted(load_summaries(run_dir).items()):
        for bench, result in stages.get("evaluate", {}).get("scores", {}).items():
            table.add_row(str(k), bench, f"{100 * result['score']:.1f}%", str(result["n"]))
    console.print(table)


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help="YAML config")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a setting: key.path=value")] = None,
) -> None:
    """Check a config without running anything."""
    from lai.config import load_config

    cfg = load_config(config, set_ or [])
    console.print(f"[green]ok[/]: {config} ({cfg.iterations} iteration(s), target {cfg.target.model})")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory")]) -> None:
    """Rebuild report.md from a run directory."""
    from lai.report.markdown import write_report

    if not (run_dir / "manifest.json").exists():
        raise LaiError(f"{run_dir} is not a lai run directory (no manifest.json)", hint="pass the folder lai run wrote")
    console.print(f"report: {write_report(run_dir)}")


@app.command()
def tasks() -> None:
    """List the benchmarks and their pools."""
    from lai.tasks import TASKS

    for name in TASKS.names():
        print(f"{name}: {', '.join(TASKS.get(name).pools)}")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds through every `finally`, so servers are stopped and files closed.
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        app(standalone_mode=False)
    except LaiError as error:
        if _state["debug"]:
            console.print_exception()
        console.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        console.print("[yellow]interrupted[/]: rerun the same command to resume")
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - the last line of defence for users
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        if _state["debug"]:
            raise
        console.print(f"[red]internal error:[/] {type(error).__name__}: {error} (rerun with --debug for the traceback)", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
