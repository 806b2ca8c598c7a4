"""``lai export``: a run's kept training samples as a Hugging Face dataset with a card.

The dataset is a ``DatasetDict`` with one ``train`` split, saved with ``save_to_disk``;
that is also the shape ``load_dataset(repo)`` returns after ``--push-to-hub``, so code
reading the export works the same on both. Beside it lie ``README.md`` (the dataset
card: YAML front matter plus the run's provenance) and ``lai_export.json`` (which run
the folder was exported from, so a re-export of the same run may replace it).

Each row is one generated sample: the question, solution and answer the instructor
wrote, a ready-to-train ``messages`` chat (the task's prompt for the question, then the
assistant turn the pipeline's train stage teaches; lai computes the loss on that last
turn only), and the sample's provenance. Only kept samples are exported unless
``include_dropped`` is set; then every sample is, with ``kept``, ``drop_reason`` and
``raw`` columns.

Iterations whose ``verified.jsonl`` is missing (runs made before the verify stage, or
stopped before it) fall back to ``generated.jsonl``; the card says so.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from lai import __version__, runlock
from lai.config import EMBEDDED_MODEL
from lai.errors import LaiError
from lai.manifest import now
from lai.records import GeneratedSample
from lai.report.paired import VERDICT_NOTE, change_tests, verdict_cell
from lai.report.vocabulary import (
    KEPT_AFTER_PARSE,
    KEPT_AFTER_VERIFY,
    PARSED,
    REQUESTS,
    TRAINED_ON,
    WELL_FORMED,
    change_points,
    contamination_rows,
    dedup_embedder,
    glossary_markdown,
    local_server_name,
    markdown_table,
    points_text,
    reasons_cell,
    strategy_description,
    strategy_label,
    strategy_name,
    trains_on_real_rows,
    well_formed,
)
from lai.store import (
    RunStore,
    load_summaries,
    read_json,
    read_records,
    require_run_dir,
    saved_config,
)
from lai.tasks import get_task
from lai.tasks.base import Task

#: The file that marks a folder as an export, and of which run.
MARKER = "lai_export.json"
SPLIT = "train"
TAGS = ["synthetic", "lai", "llms-as-instructors"]


@dataclass(frozen=True)
class ExportSummary:
    out_dir: Path
    run_name: str
    rows: int
    kept: int
    dropped: int
    iterations: list[int]
    card: Path
    replaced: bool = False  # an earlier export of the same run was overwritten
    repo: str | None = None  # where it was pushed, if it was
    sources: dict[int, str] = field(default_factory=dict)  # iteration -> the JSONL file its rows came from


# ---- reading the run ------------------------------------------------------------------------


def _read_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    require_run_dir(run_dir)
    try:
        return read_json(run_dir / "manifest.json", default={}) or {}, saved_config(run_dir)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise LaiError(f"cannot read {run_dir}: {' '.join(str(error).split())}") from None


def run_identity(run_dir: Path, manifest: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """What makes two exports "of the same run": the run's name, start time and config hash."""
    return {
        "name": config.get("name", run_dir.name),
        "created": manifest.get("created"),
        "config_sha256": manifest.get("config_sha256"),
    }


def read_samples(run_dir: Path) -> tuple[dict[int, list[GeneratedSample]], dict[int, str]]:
    """Every generated sample by iteration, and the file each iteration's came from."""
    store = RunStore(run_dir)
    samples, sources = {}, {}
    for k in store.iterations():
        for name in ("verified.jsonl", "generated.jsonl"):
            path = store.path(k, name)
            if path.is_file():
                try:
                    samples[k] = read_records(path, GeneratedSample)
                except (ValueError, TypeError) as error:
                    raise LaiError(f"{path} is damaged: {error}") from None
                sources[k] = name
                break
    return samples, sources


def training_messages(task: Task, sample: GeneratedSample) -> list[dict[str, str]]:
    """The chat the train stage teaches: the task's prompt, then the target's answer.

    Built as ``Pipeline.train`` builds its ``TrainExample`` (prompt, completion), with the
    completion as the final assistant turn.
    """
    prompt = task.prompt(task.training_sample(sample.question))
    turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    return [*turns, {"role": "assistant", "content": task.training_target(sample.solution, sample.answer)}]


def _features(include_dropped: bool) -> Any:
    from datasets import Features, Value

    # List literals (not ``datasets.List``, new in 4.0) mean "list of" in every supported version.
    text = Value("string")
    columns: dict[str, Any] = {
        "id": text, "iteration": Value("int32"), "task": text, "question": text, "solution": text, "answer": text,
        "messages": [{"role": text, "content": text}],
        "strategy": text, "error_id": text, "source_ids": [text], "neighbour_ids": [text], "row_id": text,
        "diagnosis": text, "instructor_model": text, "template": text, "template_hash": text, "checks": text,
    }  # fmt: skip
    if include_dropped:
        columns.update(kept=Value("bool"), drop_reason=text, raw=text)
    return Features(columns)


def _row(task: Task, sample: GeneratedSample, include_dropped: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": sample.id, "iteration": sample.iteration, "task": sample.task, "question": sample.question,
        "solution": sample.solution, "answer": sample.answer, "messages": training_messages(task, sample),
        "strategy": sample.strategy, "error_id": sample.error_id, "source_ids": list(sample.source_ids),
        "neighbour_ids": list(sample.neighbour_ids), "row_id": sample.row_id, "diagnosis": sample.diagnosis,
        "instructor_model": sample.instructor_model, "template": sample.template,
        "template_hash": sample.template_hash, "checks": json.dumps(sample.checks, ensure_ascii=False, sort_keys=True),
    }  # fmt: skip
    if include_dropped:
        row.update(kept=sample.kept, drop_reason=sample.drop_reason, raw=sample.raw)
    return row


# ---- the output folder ----------------------------------------------------------------------


def _check_out_dir(out_dir: Path, identity: dict[str, Any]) -> bool:
    """True when ``out_dir`` holds an earlier export of this run (to be replaced)."""
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise LaiError(f"{out_dir} exists and is not a folder", hint="pass a new or empty folder as OUT_DIR")
    if not any(out_dir.iterdir()):
        return False
    marker = read_json(out_dir / MARKER, default=None) if (out_dir / MARKER).is_file() else None
    if isinstance(marker, dict) and marker.get("run") == identity:
        return True
    if isinstance(marker, dict):
        other = (marker.get("run") or {}).get("name", "?")
        raise LaiError(
            f"{out_dir} holds an export of another run ({other})", hint="pass a new or empty folder, or delete that one"
        )
    raise LaiError(
        f"{out_dir} exists and is not empty",
        hint="pass a new or empty folder; lai only overwrites its own earlier export of the same run",
    )


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Move the finished export to ``out_dir``, replacing an earlier one.

    A folder cannot be renamed over a non-empty one, so the old export is renamed aside
    first and deleted last; if the second rename fails, the old one is put back.
    """
    if out_dir.is_dir() and any(out_dir.iterdir()):
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out_dir, old)
        try:
            os.rename(tmp, out_dir)
        except BaseException:
            os.rename(old, out_dir)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)  # absent, or an empty folder


# ---- the dataset card -----------------------------------------------------------------------


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` rows."""
    bands = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
    for limit, label in (*bands, (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "10M<n<100M"


def card_metadata(run_name: str, rows: int) -> dict[str, Any]:
    return {
        # The samples are an instructor model's outputs about benchmark training questions:
        # their terms depend on that model's licence and the source data sets', not on lai's.
        "license": "unknown",
        "language": ["en"],
        "task_categories": ["text-generation"],
        "tags": list(TAGS),
        "size_categories": [size_category(rows)],
        "pretty_name": f"lai training samples: {run_name}",
    }


def _instructor_line(config: dict[str, Any], strategy: str) -> str:
    instructor = config.get("instructor") or {}
    local = instructor.get("local") or {}
    if trains_on_real_rows(config.get("strategy")):
        return f"none (strategy `{strategy}` trains on real training rows, no instructor)"
    if local.get("enabled"):
        return f"`{local.get('model')}` on a local {local_server_name(local)} server started by lai"
    where = f" at {instructor['base_url']}" if instructor.get("base_url") else ""
    return (
        f"`{instructor.get('model', '?')}`{where} (backend {instructor.get('backend', '?')}, "
        f"temperature {instructor.get('temperature', '?')}, max_tokens {instructor.get('max_tokens', '?')})"
    )


def _checks_lines(config: dict[str, Any], summaries: dict[int, dict[str, Any]]) -> list[str]:
    verify = config.get("verify") or {}
    resolve, dedup, decon = verify.get("resolve") or {}, verify.get("dedup") or {}, verify.get("decontaminate") or {}
    ran = sorted({c for s in summaries.values() for c in (s.get("verify") or {}).get("checks", [])})
    lines = [
        f"- format (parse stage): {'on' if verify.get('format', True) else 'off'}",
        f"- verify stage, checks run: {', '.join(ran) or 'none'}",
    ]
    if resolve:
        lines.append(
            f"- re-solve: {'on' if resolve.get('enabled') else 'off'}"
            + (f" (n={resolve.get('n')}, temperature {resolve.get('temperature')})" if resolve.get("enabled") else "")
        )
    if dedup:
        lines.append(
            f"- near duplicates: {'on' if dedup.get('enabled') else 'off'}"
            + (f" (cosine >= {dedup.get('threshold')}, against the pools too: {dedup.get('against_pool')})" if dedup.get("enabled") else "")
        )
    if decon:
        lines.append(
            f"- decontamination: {'on' if decon.get('enabled') else 'off'}"
            + (f" (word {decon.get('ngram')}-grams, embedding cosine >= {decon.get('threshold')})" if decon.get("enabled") else "")
        )
    if "execute" in verify:
        lines.append(f"- code execution of reference solutions: {'on' if verify.get('execute') else 'off'}")
    embedder = dedup_embedder(config)
    if embedder:
        lines.append(f"- embedder for near duplicates and copies: `{embedder}`")
    return lines


def _limitations(
    config: dict[str, Any], strategy: str, sources: dict[int, str], include_dropped: bool, benchmarks: list[str]
) -> list[str]:
    instructor = config.get("instructor") or {}
    local = instructor.get("local") or {}
    verify = config.get("verify") or {}
    notes = []
    if not trains_on_real_rows(config.get("strategy")):
        if local.get("enabled") and local.get("model") == EMBEDDED_MODEL:
            notes.append(
                "The instructor is the embedded SmolLM2-135M-Instruct (135M parameters), chosen because it "
                "runs with no network, not for quality: it often copies the prompt or writes wrong or "
                "nonsensical samples. Treat this data set as a demonstration, not as training data."
            )
        if instructor.get("backend") == "scripted":
            notes.append("The instructor is lai's scripted test fake: the samples are canned text, not model output.")
        notes.append(
            "The samples are synthetic, written by a language model and checked automatically, never by a "
            "person; a kept sample can still be wrong."
        )
        if not (verify.get("resolve") or {}).get("enabled", False):
            notes.append("Re-solving was off: no kept answer was checked by solving the question again.")
        else:
            notes.append(
                "Re-solving checks an answer only against the instructor's own solutions; where the "
                "instructor is consistently wrong, the sample is kept anyway."
            )
    if not (verify.get("decontaminate") or {}).get("enabled", False):
        notes.append("Decontamination was off: samples were not checked against any evaluation set.")
    elif benchmarks:
        notes.append(
            "Samples were checked for overlap only with the evaluation sets of this run ("
            + ", ".join(f"`{b}`" for b in benchmarks)
            + "); other benchmarks may contain them or their sources."
        )
    unverified = sorted(k for k, name in sources.items() if name != "verified.jsonl")
    if unverified:
        notes.append(
            f"Iteration(s) {', '.join(map(str, unverified))} have no verified.jsonl (an older run, or one "
            "stopped before the verify stage): their samples come from generated.jsonl and passed the parse "
            "stage's format checks only."
        )
    if include_dropped:
        notes.append(
            "This export includes dropped samples (`kept` is false, `drop_reason` says why); filter on "
            "`kept` before training."
        )
    notes.append(
        "Licence unknown: the samples are outputs of the instructor model, about questions from the "
        "source data sets listed above; check both sets of terms before redistributing or training on them."
    )
    return [f"- {note}" for note in notes]


def _effect_section(run_dir: Path, summaries: dict[int, dict[str, Any]]) -> str:
    """What training on these samples did to the target, with the paired test of each change.

    A data set card that only said "+5 points" would invite reuse on a change that is
    noise; every change here carries the verdict the run's report gives it.
    """
    tests = change_tests(run_dir)
    baseline = (summaries.get(0, {}).get("evaluate") or {}).get("scores", {})
    rows = []
    for (k, bench), test in sorted(tests.items()):
        result = (summaries[k].get("evaluate") or {}).get("scores", {}).get(bench) or {}
        base = baseline.get(bench) or {}
        rows.append(
            [bench, k, f"{base.get('correct', '?')}/{base.get('n', '?')}", f"{result.get('correct', '?')}/{result.get('n', '?')}",
             points_text(change_points(test.after / test.items, test.before / test.items)), verdict_cell(test)]  # fmt: skip
        )
    if not rows:
        return ""
    return (
        "## Effect on the target\n\nThe target's score on each benchmark before training (iteration 0) and "
        "after each iteration that trained on these samples, with the change in points and whether it is "
        "more than noise.\n\n"
        + markdown_table(["benchmark", "iteration", "iteration 0", "after", "change (points)", "paired test vs iteration 0"], rows)
        + "\n\n"
        + VERDICT_NOTE
    )


def render_card(
    run_dir: Path,
    manifest: dict[str, Any],
    config: dict[str, Any],
    samples: dict[int, list[GeneratedSample]],
    sources: dict[int, str],
    exported: list[GeneratedSample],
    include_dropped: bool,
    repo: str | None = None,
    location: str = "EXPORT_DIR",
) -> tuple[dict[str, Any], str]:
    """(front-matter metadata, markdown body) of the dataset card."""
    summaries = load_summaries(run_dir)
    name = config.get("name", run_dir.name)
    strategy_cfg = config.get("strategy") or {}
    strategy = strategy_name(strategy_cfg)
    target = config.get("target") or {}
    models = manifest.get("models") or {}
    start = models.get("iter_00") or (models[min(models)] if models else {})
    pools = [f"`{p.get('task')}/{p.get('pool')}` ({p.get('n')} per iteration)" for p in (config.get("select") or {}).get("pools", [])]
    benchmarks = sorted(
        {b for s in summaries.values() for b in ((s.get("verify") or {}).get("contamination") or {})}
    ) or [f"{b.get('task')}/{b.get('pool')}" for b in (config.get("evaluate") or {}).get("benchmarks", [])]
    seen_models = sorted({s.instructor_model for s in exported if s.instructor_model})
    what = "every generated sample, kept or dropped" if include_dropped else "the kept samples (those lai trains on)"
    iterations = sorted({s.iteration for s in exported})
    load = f'load_dataset("{repo}")' if repo else f'load_from_disk("{location}")'
    loader = "load_dataset" if repo else "load_from_disk"

    parts = [
        f"# lai training samples: `{name}`",
        f"Training samples from run `{name}` of lai "
        "(an implementation of *LLMs-as-Instructors*, Ying et al., EMNLP 2024 Findings): "
        f"{len(exported)} rows, {what}, from iteration(s) {', '.join(map(str, iterations))}. "
        f"Built by `lai export` {__version__} on {now()}.",
        "## How it was made\n\n"
        + (
            f"Each iteration the target model `{target.get('model', '?')}` answered training questions from "
            f"{', '.join(pools) or 'its training pools'}. "
            + (
                f"Strategy `{strategy}` ({strategy_description(strategy_cfg)}) then picked real training rows "
                "with their reference solutions, "
                if trains_on_real_rows(strategy_cfg)
                else f"The instructor read the questions the target got wrong (strategy `{strategy}`: "
                f"{strategy_description(strategy_cfg)}) and wrote new practice samples, each with a "
                "solution and a final answer, "
            )
            + "and every sample went through the checks listed below; the target was fine-tuned on the "
            "samples that passed, and the next iteration started from the fine-tuned model. The `messages` "
            "column is exactly the chat lai trained on: the task's prompt for the question as the user "
            "turn, and the solution ending in the task's answer line as the assistant turn (lai computes the "
            "loss on the assistant turn only)."
        ),
        "## Usage\n\n```python\nfrom datasets import "
        + loader
        + f"\n\nrows = {load}[\"{SPLIT}\"]\nchat = rows[0][\"messages\"]  # user turn, then the assistant turn to learn\n```",
        "## Columns\n\n"
        + markdown_table(
            ["column", "meaning"],
            [
                ["id", "`<request id>#<k>`: the instructor request and the sample's place in its reply"],
                ["iteration", "the loop iteration that produced the sample"],
                ["task", "the lai task (benchmark family) the sample is for"],
                ["question, solution, answer", "what the instructor wrote (answer: the final answer alone)"],
                ["messages", "ready-to-train chat: user prompt, then the assistant target"],
                ["strategy", "the strategy that asked for the sample"],
                ["error_id", "the target's wrong answer the sample addresses (empty for baselines)"],
                ["source_ids", "the training-pool rows shown to the instructor"],
                ["neighbour_ids", "LEC: the similar questions the target got right, shown for contrast"],
                ["row_id", "real-row baselines: the pool row the sample is (or imitates)"],
                ["diagnosis", "the instructor's account of what the target got wrong"],
                ["instructor_model", "the model that wrote the sample, as the endpoint named it"],
                ["template, template_hash", "the prompt template the request was rendered from, and its hash"],
                ["checks", "JSON object: the evidence of each check, e.g. the re-solve agreement"],
            ]
            + (
                [["kept, drop_reason, raw", "the verdict, why a sample was dropped, and the unparsed reply"]]
                if include_dropped
                else []
            ),
        ),
    ]

    provenance = [
        f"- **Run:** `{name}` (created {manifest.get('created', '?')}, config sha256 `{manifest.get('config_sha256', '?')}`, "
        f"{config.get('iterations', '?')} iteration(s) configured)",
        f"- **Target model:** `{target.get('model', '?')}` (backend {target.get('backend', '?')}; fingerprint "
        f"`{start.get('fingerprint', '?')}`)",
        f"- **Instructor:** {_instructor_line(config, strategy)}"
        + (f"; models that wrote the exported samples: {', '.join(f'`{m}`' for m in seen_models)}" if seen_models else ""),
        f"- **Strategy:** `{strategy_label(strategy_cfg)}`: budget {strategy_cfg.get('budget', '?')} samples per iteration, "
        f"k={strategy_cfg.get('k', '?')}, embedder `{strategy_cfg.get('embedder', '?')}`, "
        f"control fraction {strategy_cfg.get('control_fraction', '?')}"
        + (f", mix {json.dumps(strategy_cfg.get('mix'))}" if strategy == "mix" else ""),
        f"- **Seed:** {manifest.get('seed', config.get('seed', '?'))}",
        f"- **Software:** lai {manifest.get('lai_version', '?')}, Python {manifest.get('python', '?')}",
        f"- **Training pools:** {', '.join(pools) or '-'}",
    ]
    effect = _effect_section(run_dir, summaries)
    if effect:
        parts.append(effect)
    parts.append("## Provenance\n\n" + "\n".join(provenance))
    parts.append("### Checks\n\n" + "\n".join(_checks_lines(config, summaries)))

    rows = []
    for k in sorted(samples):
        s = summaries.get(k, {})
        parse, verify, instruct, train = (s.get(stage) or {} for stage in ("parse", "verify", "instruct", "train"))
        rows.append(
            [
                k, sources[k], instruct.get("requests", instruct.get("direct_samples", "-")), parse.get("parsed", "-"),
                "-" if (formed := well_formed(parse)) is None else formed, parse.get("kept", "-"),
                reasons_cell(parse.get("drop_reasons")), verify.get("kept", "-"), reasons_cell(verify.get("drop_reasons")),
                train.get("examples", "-"), sum(1 for e in exported if e.iteration == k),
            ]
        )  # fmt: skip
    parts.append(
        "### Per iteration\n\nCounts from the run's stage summaries (`parse.done`, `verify.done`, ...), "
        "in the words of the run's report, defined below the table.\n\n"
        + markdown_table(
            ["iteration", "source file", REQUESTS, PARSED, WELL_FORMED, KEPT_AFTER_PARSE, "dropped at parse",
             KEPT_AFTER_VERIFY, "dropped at verify", TRAINED_ON, "rows here"],  # fmt: skip
            rows,
        )
        + "\n\n"
        + glossary_markdown()
    )
    contamination = contamination_rows(summaries)
    if contamination:
        parts.append(
            f"### Contamination\n\nSamples that overlap an evaluation set of the run (word n-grams or an "
            f"embedding near copy), among every {WELL_FORMED} sample; contaminated samples were dropped.\n\n"
            + markdown_table(["iteration", "benchmark", f"{WELL_FORMED} samples checked", "contaminated", "rate"], contamination)
        )
    templates = manifest.get("templates") or {}
    used: dict[tuple[str, str], int] = {}
    for sample in exported:
        if sample.template:
            used[(sample.template, sample.template_hash)] = used.get((sample.template, sample.template_hash), 0) + 1
    template_rows = [[f"`{t}`", f"`{h}`", used.get((t, h), 0)] for t, h in sorted(templates.items())]
    template_rows += [[f"`{t}`", f"`{h}` (not in the manifest)", n] for (t, h), n in sorted(used.items()) if templates.get(t) != h]
    if template_rows:
        parts.append(
            "### Prompt templates\n\n" + markdown_table(["template", "hash", "rows written from it"], template_rows)
        )
    if models:
        parts.append(
            "### Target models by iteration\n\n"
            + markdown_table(
                ["iteration", "model", "fingerprint"],
                [[key.removeprefix("iter_"), f"`{m.get('model')}`", f"`{m.get('fingerprint')}`"] for key, m in sorted(models.items())],
            )
        )
    packages = manifest.get("packages") or {}
    if packages:
        parts.append(
            "### Package versions\n\n"
            + markdown_table(["package", "version"], [[p, v] for p, v in sorted(packages.items())])
        )
    parts.append("## Limitations\n\n" + "\n".join(_limitations(config, strategy, sources, include_dropped, benchmarks)))
    return card_metadata(name, len(exported)), "\n\n".join(parts) + "\n"


def card_text(metadata: dict[str, Any], body: str) -> str:
    return "---\n" + yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True) + "---\n\n" + body


# ---- export ---------------------------------------------------------------------------------


def export_dataset(
    run_dir: Path,
    out_dir: Path,
    *,
    include_dropped: bool = False,
    push_to_hub: str | None = None,
    private: bool = True,
) -> ExportSummary:
    """Save a run's kept samples (all with ``include_dropped``) as a dataset with a card.

    ``push_to_hub`` also uploads both to that Hub repo (created private unless
    ``private`` is false); the token comes from the ``HF_TOKEN`` environment variable
    only. The local export is complete before anything is sent.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    manifest, config = _read_run(run_dir)
    # A run that a lai process is writing has samples not yet verified: refuse, naming it.
    key = runlock.acquire(run_dir)
    runlock.release(key)
    token = _hub_token(push_to_hub) if push_to_hub else None
    identity = run_identity(run_dir, manifest, config)
    dest = out_dir.resolve()  # "." or "x/.." have no name to put a temporary folder beside
    replacing = _check_out_dir(dest, identity)

    samples, sources = read_samples(run_dir)
    if not samples:
        raise LaiError(
            f"{run_dir} has no generated samples yet (no iteration reached the parse stage)",
            hint="run more of the loop first",
        )
    # The folder names the iteration; older records may lack the field.
    chosen = [replace(s, iteration=k) for k in sorted(samples) for s in samples[k] if include_dropped or s.kept]
    if not chosen:
        total = sum(len(v) for v in samples.values())
        raise LaiError(
            f"{run_dir} has no kept samples to export (all {total} generated samples were dropped)",
            hint="--include-dropped exports them with their drop reasons",
        )
    tasks: dict[str, Task] = {}
    rows = []
    for sample in chosen:
        if sample.task not in tasks:
            tasks[sample.task] = get_task(sample.task)
        rows.append(_row(tasks[sample.task], sample, include_dropped))

    import datasets

    dataset = datasets.DatasetDict({SPLIT: datasets.Dataset.from_list(rows, features=_features(include_dropped))})
    metadata, body = render_card(
        run_dir, manifest, config, samples, sources, chosen, include_dropped, repo=push_to_hub, location=str(out_dir)
    )
    text = card_text(metadata, body)

    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as error:
        error.filename = str(dest)  # the folder the user named, not lai's temporary one
        raise
    try:
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            dataset.save_to_disk(str(tmp))
        finally:
            if bars:
                datasets.enable_progress_bars()
        # Plain writes: nobody sees the temporary folder before it is complete.
        (tmp / "README.md").write_text(text, encoding="utf-8")
        kept = sum(s.kept for s in chosen)
        marker = {
            "run": identity, "run_dir": str(run_dir.resolve()), "exported": now(), "lai_version": __version__,
            "include_dropped": include_dropped, "rows": len(chosen), "kept": kept,
            "iterations": sorted(samples), "sources": {str(k): v for k, v in sorted(sources.items())},
        }  # fmt: skip
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _swap_in(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

    if push_to_hub:
        _push(dataset, metadata, body, push_to_hub, token or "", private, out_dir)
    return ExportSummary(
        out_dir=out_dir, run_name=identity["name"], rows=len(chosen), kept=kept, dropped=len(chosen) - kept,
        iterations=sorted(samples), card=out_dir / "README.md", replaced=replacing, repo=push_to_hub,
        sources=dict(sources),
    )  # fmt: skip


# ---- the Hub --------------------------------------------------------------------------------


def _hub_token(repo: str) -> str:
    """Check what a push needs before any work is done; the token itself is only ever passed on."""
    from huggingface_hub import constants
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as error:
        raise LaiError(f"--push-to-hub {repo!r} is not a valid repo id: {' '.join(str(error).split())}") from None
    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise LaiError(
            "--push-to-hub needs a Hugging Face token in the HF_TOKEN environment variable",
            hint="export HF_TOKEN=... (a token with write access); lai never stores it",
        )
    if constants.HF_HUB_OFFLINE:
        raise LaiError("cannot push to the Hub: HF_HUB_OFFLINE is set", hint="unset HF_HUB_OFFLINE to push")
    return token


def _push(dataset: Any, metadata: dict[str, Any], body: str, repo: str, token: str, private: bool, out_dir: Path) -> None:
    """Upload the dataset, then the card with the Hub's own metadata (data files, features) kept."""
    from huggingface_hub import DatasetCard

    try:
        dataset.push_to_hub(repo, private=private, token=token, commit_message="lai export: training samples")
        try:
            hub_meta = DatasetCard.load(repo, repo_type="dataset", token=token).data.to_dict()
        except Exception:  # noqa: BLE001 - no card on the Hub yet: ours alone is fine
            hub_meta = {}
        merged = {**hub_meta, **metadata}
        DatasetCard(card_text(merged, body)).push_to_hub(
            repo, token=token, repo_type="dataset", commit_message="lai export: dataset card with provenance"
        )
    except Exception as error:  # noqa: BLE001 - network, auth and repo errors alike are the user's to fix
        detail = " ".join(str(error).split())[:300] or "no details"
        raise LaiError(
            f"pushing to the Hugging Face Hub repo {repo} failed ({type(error).__name__}: {detail}); "
            f"the local export in {out_dir} is complete",
            hint="check the network, HF_TOKEN and the repo name, then rerun",
        ) from None
