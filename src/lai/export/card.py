"""The dataset card (``README.md`` of an export): YAML front matter plus the run's provenance.

Built from the same pieces as the run's report (:mod:`lai.report.vocabulary`: the
funnel's terms, the strategy's words, the change in points; :mod:`lai.report.paired`:
the verdict of each change), so the card and ``report.md`` say the same about a run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from lai import __version__
from lai.export.rows import SPLIT
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
    embedded_instructor,
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
from lai.store import load_summaries

TAGS = ["synthetic", "lai", "llms-as-instructors"]


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
    verify = config.get("verify") or {}
    notes = []
    if not trains_on_real_rows(config.get("strategy")):
        if embedded_instructor(config):
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
