"""Diagnoses are checked like samples (issue 18, item 1).

In the demo all 13 replies repeated the prompt template's example diagnosis, and the
report grouped the 13 errors under it as if the instructor had found that weakness.
"""

from __future__ import annotations

import json
from pathlib import Path

from lai.config import build_config
from lai.embedding import build_embedder
from lai.pipeline import Pipeline
from lai.quality.diagnoses import (
    COPIED_EXAMPLE,
    NO_DIAGNOSIS,
    NO_USABLE_DIAGNOSIS,
    REPEATS_QUESTION,
    diagnosis_problem,
    example_diagnoses,
    group_by_diagnosis,
)
from lai.quality.parse import normalize_text
from lai.records import Attempt, GeneratedSample
from lai.report.markdown import render_report
from tests.helpers.markdown import table_rows
from tests.pipeline.test_loop import fake_config

TEMPLATE_EXAMPLE = "The student added the two amounts when the problem needed them multiplied."


def error(i: int, question: str) -> Attempt:
    return Attempt(f"gsm8k/train/{i}", "gsm8k", question, "12", [], "The answer is 7.", "7", False, "wrong")


def sample(i: int, diagnosis: str) -> GeneratedSample:
    return GeneratedSample(
        id=f"r{i}#0", request_id=f"r{i}", source_ids=[f"gsm8k/train/{i}"], task="gsm8k", question=f"New question {i}?",
        solution="...", answer="3", kept=True, diagnosis=diagnosis, error_id=f"gsm8k/train/{i}",
        template="le_math", template_hash="h",
    )  # fmt: skip


def test_the_example_diagnosis_is_read_from_the_template() -> None:
    assert normalize_text(TEMPLATE_EXAMPLE) in example_diagnoses(["le_math", "lec_math"])
    assert example_diagnoses(["no_such_template"]) == set()


def test_copies_of_the_example_or_the_question_are_flagged() -> None:
    examples = example_diagnoses(["le_math"])
    question = "Tom has 3 boxes with 4 apples in each box. How many apples does Tom have?"
    assert diagnosis_problem(TEMPLATE_EXAMPLE, question, examples) == COPIED_EXAMPLE
    # A few words changed is still a copy, as for samples.
    assert diagnosis_problem("The student added the two numbers when the problem needed them multiplied.", question, examples) == COPIED_EXAMPLE
    assert diagnosis_problem(question, question, examples) == REPEATS_QUESTION
    assert diagnosis_problem("The student counted the boxes but forgot to multiply by the apples per box.", question, examples) is None


def test_copied_diagnoses_are_grouped_as_no_usable_diagnosis() -> None:
    questions = [f"Question {i}: a farmer sells {i} eggs a day for {i + 2} dollars each. How much per week?" for i in range(5)]
    errors = [error(i, q) for i, q in enumerate(questions)]
    samples = [sample(0, TEMPLATE_EXAMPLE), sample(1, TEMPLATE_EXAMPLE + " "), sample(2, questions[2]),
               sample(3, "The student forgot that a week has seven days.")]  # fmt: skip
    grouped = group_by_diagnosis(errors, samples, {"gsm8k/train/1"}, build_embedder("hashing"))
    by_label = {g["label"]: g for g in grouped["groups"]}
    assert TEMPLATE_EXAMPLE not in by_label  # never presented as the instructor's finding
    unusable = by_label[NO_USABLE_DIAGNOSIS]
    assert unusable["n"] == 3 and unusable["fixed"] == 1
    assert sorted(e["diagnosis_problem"] for e in unusable["errors"]) == [COPIED_EXAMPLE, COPIED_EXAMPLE, REPEATS_QUESTION]
    assert by_label["The student forgot that a week has seven days."]["n"] == 1
    assert by_label[NO_DIAGNOSIS]["n"] == 1  # error 4 had no sample at all
    # Real diagnoses first, then the two groups that are not diagnoses.
    assert [g["label"] for g in grouped["groups"]][-2:] == [NO_USABLE_DIAGNOSIS, NO_DIAGNOSIS]


def test_the_report_flags_the_copies_instead_of_grouping_under_them(data_dir: Path, tmp_path: Path) -> None:
    config = fake_config(data_dir, tmp_path / "requests.log", iterations=1)
    run = tmp_path / "run"
    Pipeline(build_config(config), run).run()
    # What the demo's instructor did: every reply repeats the template's example diagnosis.
    path = run / "iter_01" / "instruct.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row["reply"] = row["reply"].replace("The student adds the wrong quantities.", TEMPLATE_EXAMPLE)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("parse", "verify", "train", "evaluate", "retest"):
        (run / "iter_01" / f"{name}.done").unlink()
    Pipeline(build_config(config), run).run()

    text = render_report(run)
    diagnoses = text[text.index("## Errors by diagnosis") :]
    diagnoses = diagnoses[: diagnoses.index("\n## ")]
    (row,) = table_rows(diagnoses, NO_USABLE_DIAGNOSIS)
    assert int(row[1]) > 0
    assert table_rows(diagnoses, TEMPLATE_EXAMPLE) == []
    assert f'error(s): {COPIED_EXAMPLE}: "{TEMPLATE_EXAMPLE}"' in diagnoses
