"""The ``lai`` command line.

Errors a user can fix print as one line and exit with status 2; ``--debug`` shows the
traceback. Progress bars are drawn here and nowhere else; so are the tables, except the
scores table printed at the end of ``lai run``, which report/terminal.py builds (with rich)
for this module to print.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from lai.errors import LaiError, one_line, user_error

if TYPE_CHECKING:
    from lai.config import RunConfig
    from lai.report.compare import RunRow

#: --include-path, on every command that names tasks.
IncludePath = Annotated[
    list[Path] | None,
    typer.Option("--include-path", help="a folder of task files (or one task file); repeatable. See docs/task_files.md"),
]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="LLMs-as-Instructors: models that learn from their mistakes.")
console = Console(stderr=True)
_state = {"debug": False}


class RichStage:
    """One bar. Its first ``advance`` is what was found on disk (lai.progress), so the rate
    counts only the items done since: a resumed stage does not claim the old ones as speed."""

    def __init__(self, progress: Progress, label: str, total: int | None) -> None:
        self.progress = progress
        self.label = label
        self.task_id = progress.add_task(label, total=total, rate=None, since=None)
        self.found: int | None = None
        self.started = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task_id, n)
        now = time.monotonic()
        if self.found is None:
            self.found, self.started = n, now
            return
        task = self.progress.tasks[self.progress.task_ids.index(self.task_id)]
        elapsed = now - self.started
        if elapsed > 0:
            self.progress.update(self.task_id, rate=(task.completed - self.found) / elapsed, since=now)

    def note(self, text: str) -> None:
        self.progress.update(self.task_id, description=f"{self.label} {text}")

    def close(self) -> None:
        task = self.progress.tasks[self.progress.task_ids.index(self.task_id)]
        if task.total is None:  # a spinner: show it done, not spinning on
            self.progress.update(self.task_id, total=max(task.completed, 1), completed=max(task.completed, 1))
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
    for noisy in ("httpx", "httpx2", "openai", "urllib3", "datasets", "transformers", "filelock", "sentence_transformers", "faiss", "ray"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="YAML config; optional when --run-dir holds one")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a setting: key.path=value")] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="where to write (default runs/<name>)")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="collect errors, then estimate instructor requests, tokens and cost; send nothing")
    ] = False,
    max_cost: Annotated[float | None, typer.Option("--max-cost", help="stop the instruct stage at this spend (USD)")] = None,
    include_path: IncludePath = None,
) -> None:
    """Run the loop; rerun the same command to resume an interrupted run."""
    from lai.pipeline import Pipeline

    if config is None:
        if run_dir is None or not (run_dir / "config.yaml").exists():
            raise LaiError("no config given", hint="lai run CONFIG, or lai run --run-dir DIR for a run that has one")
        config = run_dir / "config.yaml"
    overrides = list(set_ or [])
    if max_cost is not None:
        overrides.append(f"instructor.max_cost={max_cost}")
    cfg = _load_with_includes(config, overrides, include_path)
    run_dir = run_dir or Path("runs") / cfg.name
    from lai.preflight import preflight

    preflight(cfg, run_dir)  # data, models, URLs, the run dir: before anything is loaded or paid
    if dry_run:
        with Progress(*_columns(), console=console) as progress:
            bill = Pipeline(cfg, run_dir, RichProgress(progress)).dry_run()
        console.print(
            f"[bold]dry run[/], iteration 1: {bill['requests']} requests to {bill['instructor']} "
            f"({bill['instruct']['requests']} to write samples, at most {bill['verify']['requests']} to re-solve them; "
            f"{bill['control_errors']} errors held back as the control group), "
            f"at most {bill['calls']} paid calls (corrective retries included), "
            f"~{bill['prompt_tokens']:,} prompt tokens, at most {bill['completion_tokens']:,} completion tokens, "
            f"at most ${bill['cost']:.4f} (prices from instructor.prices). Nothing was sent."
        )
        return
    with Progress(*_columns(), console=console) as progress:
        pipeline = Pipeline(cfg, run_dir, RichProgress(progress))  # takes the run dir's lock: a second run stops here
        console.print(f"[bold]lai run[/] {cfg.name}: {cfg.iterations} iteration(s) -> {run_dir}")
        report = pipeline.run()
    _print_summary(run_dir)
    console.print(f"[green]done.[/] report: {report}")


def _print_summary(run_dir: Path) -> None:
    from lai.report.terminal import run_summary

    console.print(run_summary(run_dir))


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help="YAML config")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a setting: key.path=value")] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="the run directory to check (default runs/<name>)")] = None,
    online: Annotated[bool, typer.Option("--online", help="also check that the instructor endpoint answers and lists the model")] = False,
    include_path: IncludePath = None,
) -> None:
    """Check a config and everything it names (data files, models, embedders, URLs, the run
    directory) without loading a model or sending a request; what lai run checks first.
    Given a task file (a YAML file with a top-level task: key), check that instead."""
    from lai.preflight import preflight

    if _is_task_file(config):
        _validate_task_file(config)
        return
    cfg = _load_with_includes(config, set_ or [], include_path)
    for note in preflight(cfg, run_dir or Path("runs") / cfg.name, online=online):
        console.print(f"  {note}", highlight=False, soft_wrap=True)
    console.print(f"[green]ok[/]: {config} ({cfg.iterations} iteration(s), target {cfg.target.model})")


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="one or more run directories")],
    html: Annotated[bool, typer.Option("--html/--no-html", help="also write report.html (self-contained)")] = True,
    out: Annotated[
        Path | None, typer.Option("--out", help="with several runs: where the comparison page goes (default: beside the first run)")
    ] = None,
) -> None:
    """Rebuild report.md (and report.html) of each run; with several runs, also a comparison page."""
    from lai.preflight import check_run_files
    from lai.report.html import write_html
    from lai.report.markdown import write_report
    from lai.store import require_run_dir

    for run_dir in run_dirs:
        require_run_dir(run_dir)
        check_run_files(run_dir)
    for run_dir in run_dirs:
        console.print(f"report: {write_report(run_dir)}")
        if html:
            console.print(f"report: {write_html([run_dir])}")
    if html and len(run_dirs) > 1:
        console.print(f"comparison: {write_html(run_dirs, out)}")


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories to put side by side")],
    out: Annotated[Path | None, typer.Option("--out", help="also write the table as markdown to this file")] = None,
) -> None:
    """Compare runs: strategy, samples trained on, scores vs iteration 0, fix rate, cost."""
    from lai.preflight import check_run_files
    from lai.report.compare import compare_runs, render_markdown
    from lai.store import atomic_write_text, require_run_dir

    for run_dir in run_dirs:  # the same checks as lai report: one line for a damaged run
        require_run_dir(run_dir)
        check_run_files(run_dir)
    rows = compare_runs(run_dirs)
    _print_comparison(rows)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, render_markdown(rows))
        console.print(f"markdown: {out}")


def _print_comparison(rows: list[RunRow]) -> None:
    from rich.table import Table
    from rich.text import Text

    from lai.report.compare import PAIRS_NOTES, comparison_table, pair_tests, pairs_table

    header, cells = comparison_table(rows)
    table = Table(title="runs compared (scores: last evaluated iteration, change vs iteration 0 in points)")
    for column in header:
        table.add_column(column, overflow="fold")
    for row in cells:
        table.add_row(*(Text(cell) for cell in row))
    Console().print(table)
    pairs = pair_tests(rows)
    if pairs:
        header, cells = pairs_table(pairs)
        table = Table(title="is the difference more than noise? (each pair of runs, same items)", caption=PAIRS_NOTES.replace("*", ""))
        for column in header:
            table.add_column(column, overflow="fold")
        for row in cells:
            table.add_row(*(Text(cell) for cell in row))
        Console().print(table)


@app.command("eval")
def eval_(
    model: Annotated[str, typer.Option("--model", help="embedded:smollm2-135m-instruct, an HF folder, a .gguf file, a hub id")],
    tasks: Annotated[str, typer.Option("--tasks", help="comma-separated task names (see lai tasks)")],
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="items per task")] = None,
    protocol: Annotated[str, typer.Option("--protocol", help="paper or lm-eval")] = "paper",
    out: Annotated[Path | None, typer.Option("--out", help="output folder (default runs/eval-<protocol>)")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="draw a seeded random subset instead of the first rows")] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="pool to score (default: test)")] = None,
    scoring: Annotated[str, typer.Option("--scoring", help="auto, generate or loglikelihood")] = "auto",
    backend: Annotated[str, typer.Option("--backend", help="target backend")] = "hf",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 256,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="local benchmark folder")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="a data row a task cannot read stops the evaluation (default: skipped and counted)")] = False,
    include_path: IncludePath = None,
    judge_base_url: Annotated[str | None, typer.Option("--judge-base-url", help="an OpenAI-compatible endpoint for tasks scored by llm_judge")] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="the judge's model name at --judge-base-url")] = None,
    judge_api_key_env: Annotated[str | None, typer.Option("--judge-api-key-env", help="NAME of the variable with the judge's key")] = None,
    lm_eval_include_path: Annotated[Path | None, typer.Option("--lm-eval-include-path", help="a folder of lm-eval task YAMLs for --tasks lm_eval:NAME")] = None,
) -> None:
    """Evaluate a model on benchmarks; per-item JSONL and summary.json in --out.

    lm-evaluation-harness tasks (lai[lm-eval]) are named lm_eval:NAME."""
    from rich.table import Table

    from lai.eval_command import evaluate_model

    _register_includes(include_path)

    names = [name.strip() for name in tasks.split(",") if name.strip()]
    if not names:
        raise LaiError(f"--tasks {tasks!r} names no task", hint="e.g. --tasks gsm8k,arc_challenge; lai tasks lists them")
    if scoring not in {"auto", "generate", "loglikelihood"}:
        raise LaiError(f"unknown --scoring {scoring!r}", hint="auto, generate or loglikelihood")
    if lm_eval_include_path is not None or any(name.startswith("lm_eval:") for name in names):
        from lai.tasks import lm_eval_task

        for name in (n for n in names if n.startswith("lm_eval:")):
            spec = lm_eval_task.make_spec(name.removeprefix("lm_eval:"), lm_eval_include_path.resolve() if lm_eval_include_path else None)
            lm_eval_task.check_spec(spec, pool)
            lm_eval_task.register(spec)
    out = out or Path("runs") / f"eval-{protocol}"
    judge = None
    if judge_base_url or judge_model:
        if not (judge_base_url and judge_model):
            raise LaiError("--judge-base-url and --judge-model go together", hint="give both, or neither")
        from lai.judge import JudgeEndpoint

        judge = JudgeEndpoint(base_url=judge_base_url, model=judge_model, api_key_env=judge_api_key_env)
    with Progress(*_columns(), console=console) as progress:
        summary = evaluate_model(
            model, names, out, protocol=protocol, limit=limit, seed=seed, pool=pool, scoring=scoring,
            backend=backend, batch_size=batch_size, max_new_tokens=max_new_tokens, data_dir=data_dir,
            progress=RichProgress(progress), strict=strict, judge=judge,
        )  # fmt: skip
    table = Table(title=f"{model} ({protocol})")
    for column in ("task", "score", "n", "other metrics", "scoring"):
        table.add_column(column)
    for name, result in summary["tasks"].items():
        extra = {k: v for k, v in result.items() if isinstance(v, float) and k not in {"score", "seconds"}}
        table.add_row(
            name, f"{100 * result['score']:.1f}%", str(result["n"]),
            ", ".join(f"{k} {100 * v:.1f}%" for k, v in extra.items()), result["scoring"],
        )  # fmt: skip
    console.print(table)
    for name, result in summary["tasks"].items():
        for key, agreed in result.get("judge_agreement", {}).items():
            console.print(
                f"{name}: {key} agrees with {agreed['exact_match']} on {agreed['agree']} of {agreed['n']} items "
                f"({100 * agreed['rate']:.1f}%; judge only right: {agreed['judge_only']}, exact match only: {agreed['exact_only']})"
                + (f"; left out: {agreed['no_verdict']} item(s) the judge gave no readable verdict on" if agreed.get("no_verdict") else "")
            )
        if result.get("skipped"):
            console.print(f"{name}: skipped {result['skipped']} row(s) it cannot read (see the warnings; --strict stops instead)")
    console.print(f"per-item records and summary.json in {out}")


class RateColumn(ProgressColumn):
    """Items per second (or seconds per item when slower than one a second), averaged over
    the items done since the stage started; rich's own speed, a 30 s window, has no
    value at all when items take longer than that."""

    def render(self, task: Task) -> Text:
        speed = task.fields.get("rate") or task.finished_speed or task.speed
        if not speed:
            return Text("-/s", style="progress.data.speed")
        label = f"{speed:.1f} it/s" if speed >= 1 else f"{1 / speed:.1f} s/it"
        return Text(label, style="progress.data.speed")


class EtaColumn(ProgressColumn):
    """Time left at that rate, counted down between items."""

    def render(self, task: Task) -> Text:
        rate, since = task.fields.get("rate"), task.fields.get("since")
        if task.finished or task.total is None or not rate or since is None:
            return Text("-:--:--" if not task.finished else "0:00:00", style="progress.remaining")
        left = max(0.0, (task.total - task.completed) / rate - (time.monotonic() - since))
        return Text(f"{int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}", style="progress.remaining")


def _columns() -> tuple[object, ...]:
    return (
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
        TimeElapsedColumn(), EtaColumn(),
    )  # fmt: skip


@app.command()
def tasks(include_path: IncludePath = None) -> None:
    """List the benchmarks, their pools, how they are scored, and where each comes from."""
    from lai.tasks import TASKS
    from lai.tasks.from_file import origin_of

    _register_includes(include_path)
    for name in TASKS.names():
        task = TASKS.get(name)()
        modes = ", ".join(f"{p}: {task.scoring_mode(p)}" for p in ("paper", "lm-eval"))
        print(f"{name:20} pools: {', '.join(task.pools):17} scoring: {modes:42} from: {origin_of(name)}")


def _register_includes(include_path: list[Path] | None) -> list[str]:
    from lai.tasks.from_file import register_task_files

    return register_task_files(include_path or [])


def _load_with_includes(config: Path, overrides: list[str], include_path: list[Path] | None) -> RunConfig:
    """The config, with --include-path's folders registered first (the config's task names
    are checked against them) and added to its include_path, so the config.yaml saved
    with the run names them and a resume finds the same tasks."""
    from lai.config import load_config

    _register_includes(include_path)
    cfg = load_config(config, overrides)
    if not include_path:
        return cfg
    extra = [p.resolve() for p in include_path if p.resolve() not in cfg.include_path]
    return cfg.model_copy(update={"include_path": [*cfg.include_path, *extra]})


def _is_task_file(path: Path) -> bool:
    import yaml

    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return False
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(raw, dict) and "task" in raw and "select" not in raw


def _validate_task_file(path: Path) -> None:
    """Read the task file, build its task, read every pool it can reach offline."""
    from lai.data import default_data_dir
    from lai.errors import DataError
    from lai.tasks.from_file import task_class

    cls = task_class(path)
    task = cls()
    folder = default_data_dir()
    notes = []  # printed once every pool has been read: a failure is the only line
    for pool, source in task.pools.items():
        local = pool in cls.local_files or (folder is not None and any((folder / f).is_file() for f in source.files))
        if not local and source.hub:
            notes.append(f"{pool}: hub dataset {source.hub[0]} (not downloaded to check)")
            continue
        samples = task.load(pool)
        skipped = task.skipped(pool)
        note = f", {len(skipped)} row(s) it cannot read (e.g. {', '.join(skipped[:3])})" if skipped else ""
        if not samples:
            raise DataError(f"{path}: no row of {pool} could be read", hint="see the warnings above for why")
        for protocol in task.spec.lai.prompt:  # a prompt template is rendered only at eval time otherwise
            task.prompt(samples[0], protocol)
        notes.append(f"{pool}: {len(samples)} rows{note}")
    for note in notes:
        console.print(f"  {note}", highlight=False, soft_wrap=True)
    instructor = "the instructor can write samples for it" if task.instructor_templates else "evaluation only"
    console.print(f"[green]ok[/]: {path} (task {cls.name}, {task.spec.output_type}; {instructor})", highlight=False, soft_wrap=True)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds through every `finally`, so servers are stopped and files closed.
    raise SystemExit(128 + signum)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    out_dir: Annotated[Path, typer.Argument(help="new (or empty) folder for the dataset; an earlier export of the same run is replaced")],
    include_dropped: Annotated[bool, typer.Option("--include-dropped", help="also the dropped samples, with kept/drop_reason columns")] = False,
    push_to_hub: Annotated[str | None, typer.Option("--push-to-hub", help="also upload to this Hub dataset repo (token from HF_TOKEN)")] = None,
    public: Annotated[bool, typer.Option("--public", help="create the Hub repo public (default: private)")] = False,
) -> None:
    """Export a run's kept training samples as a Hugging Face dataset with a provenance card."""
    from lai.export import export_dataset
    from lai.preflight import check_run_files
    from lai.store import require_run_dir

    require_run_dir(run_dir)
    check_run_files(run_dir)  # a damaged record is named by file and line, as lai report does
    done = export_dataset(run_dir, out_dir, include_dropped=include_dropped, push_to_hub=push_to_hub, private=not public)
    what = "samples (kept and dropped)" if include_dropped else "kept samples"
    pushed = f", pushed to {done.repo} ({'public' if public else 'private'})" if done.repo else ""
    console.print(
        f"exported {done.rows} {what} from iteration(s) {', '.join(map(str, done.iterations))} of run {done.run_name} "
        f"-> {done.out_dir} (card: README.md){pushed}",
        highlight=False, soft_wrap=True,
    )  # fmt: skip


@app.command("serve-instructor", context_settings={"allow_extra_args": True})
def serve_instructor(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="llama_cpp: a .gguf file or embedded:smollm2-135m-instruct; vllm: an HF folder or hub id")],
    server: Annotated[str, typer.Option("--server", help="llama_cpp (CPU) or vllm (CUDA GPU)")] = "llama_cpp",
    port: Annotated[int, typer.Option("--port", help="port on 127.0.0.1; 0 picks a free one")] = 8000,
    n_ctx: Annotated[int, typer.Option("--n-ctx", help="context length (vLLM: --max-model-len)")] = 4096,
    n_threads: Annotated[int | None, typer.Option("--n-threads", help="llama_cpp: CPU threads (default: the CPUs lai may use)")] = None,
    startup_timeout: Annotated[float | None, typer.Option("--startup-timeout", help="seconds to wait for the server (default 120 llama_cpp, 1200 vllm)")] = None,
    log_path: Annotated[Path, typer.Option("--log", help="the server's log file")] = Path("runs") / "serve-instructor.log",
    launcher: Annotated[
        str | None, typer.Option("--launcher", help="command that starts the server, e.g. '/opt/vllm/bin/python -m vllm.entrypoints.openai.api_server' (default: this Python)")
    ] = None,
) -> None:
    """Start a local instructor server in the foreground and print how to use it; Ctrl-C stops it.

    Flags after -- go to the server as they are: lai serve-instructor MODEL --server vllm -- --tensor-parallel-size 2
    """
    import time

    from pydantic import ValidationError

    from lai.config import LocalInstructorConfig, format_validation_error
    from lai.errors import ConfigError, InstructorError
    from lai.instructor.local_server import LocalInstructorServer, client_snippet

    try:
        cfg = LocalInstructorConfig(
            enabled=True, server=server, model=model, port=port, n_ctx=n_ctx, n_threads=n_threads,  # type: ignore[arg-type]
            startup_timeout_s=startup_timeout, extra_args=list(ctx.args), launcher=_split_launcher(launcher),
        )  # fmt: skip
    except ValidationError as error:
        raise ConfigError(f"invalid serve-instructor options: {format_validation_error(error)}") from None
    from lai.preflight import check_local_instructor, check_writable

    check_local_instructor(cfg, "MODEL")  # a missing or wrong file is named before a server starts
    check_writable(log_path.parent, "--log folder")
    instance = LocalInstructorServer(cfg, log_path)
    try:
        instance.start()
        typer.echo(f"base_url: {instance.base_url}\nmodel: {instance.model_alias}\n\n{client_snippet(instance.base_url, server)}")
        console.print("[green]serving[/]; Ctrl-C (or SIGTERM) stops the server", highlight=False)
        while (notice := instance.death()) is None and instance.process is not None:
            time.sleep(0.5)
        if notice is not None:  # how it died and its log's last line, as lai run says it
            raise InstructorError(f"the instructor server stopped on its own: {notice}")
    except KeyboardInterrupt:
        console.print("stopping the instructor server")
    finally:
        instance.stop()


def _split_launcher(launcher: str | None) -> list[str]:
    import shlex

    from lai.errors import ConfigError

    try:
        return shlex.split(launcher or "")
    except ValueError as error:  # an unbalanced quote
        raise ConfigError(f"--launcher {launcher!r}: {error}", hint="quote the command as a shell would") from None


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        code = app(standalone_mode=False)
    except LaiError as error:
        _user_error_exit(error)
    except (typer.Abort, KeyboardInterrupt):
        _interrupted(130)
    except SystemExit as stop:
        if stop.code == 128 + signal.SIGTERM:
            _interrupted(stop.code)
        raise
    except Exception as error:  # noqa: BLE001 - the last line of defence for users
        if isinstance(error, _click_exceptions()):
            # A usage error is one line too: click's own shows usage, a hint and the error.
            context = getattr(error, "ctx", None)
            command = context.command_path if context is not None else "lai"
            message = one_line(error.format_message()) if hasattr(error, "format_message") else one_line(str(error))
            console.print(f"[red]error:[/] {escape(message)} (see {command} --help)", highlight=False, soft_wrap=True)
            sys.exit(error.exit_code)
        user = user_error(error)  # a full disk, a folder where a file goes, ...: fixable
        if user is not None:
            _user_error_exit(user)
        if _state["debug"]:
            raise
        console.print(f"[red]internal error:[/] {type(error).__name__}: {error} (rerun with --debug for the traceback)", highlight=False)
        sys.exit(1)
    # Under standalone_mode=False typer turns a Ctrl-C into a returned 130 (and
    # typer.Exit(n) into a returned n): an exit status, not a result to drop.
    if isinstance(code, int) and not isinstance(code, bool) and code:
        if code == 130:
            _interrupted(130)
        sys.exit(code)


def _interrupted(code: int) -> None:
    """Ctrl-C (130) or SIGTERM (143): everything written is kept; say so, in one line."""
    console.print("[yellow]interrupted[/]: rerun the same command to resume", highlight=False)
    sys.exit(code)


def _user_error_exit(error: LaiError) -> None:
    """Print a problem the user can fix as exactly one line on stderr; exit with status 2."""
    if _state["debug"]:
        console.print_exception()
    # Escaped: messages name things like lai[vllm] that rich would read as markup.
    console.print(f"[red]error:[/] {escape(one_line(str(error)))}", highlight=False, soft_wrap=True)
    sys.exit(2)


def _click_exceptions() -> tuple[type[Exception], ...]:
    """Usage errors: typer 0.2x raises its own vendored click's exceptions, older typer
    click's. click is not a dependency of lai (nor of a current typer), so a base install
    may lack it: each is looked up only if present."""
    kinds: list[type[Exception]] = []
    try:
        from typer import _click  # type: ignore[attr-defined]

        kinds.append(_click.ClickException)
    except (ImportError, AttributeError):
        pass
    try:
        import click

        kinds.append(click.ClickException)
    except ImportError:
        pass
    return tuple(kinds)


if __name__ == "__main__":
    main()
