"""The LLM judge (``llm_judge``, issue 16 item 3), against a real HTTP server on 127.0.0.1.

The test judge reads the rubric it is sent and says "correct" when the graded answer
holds the reference's number: a deterministic stand-in for a model, so the tests check
what lai does with verdicts (rubric rendering, structured output, caching, reasoning in
the records, agreement with exact match in ``lai eval``), not a model's quality.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lai import judge as judging
from lai.errors import ConfigError
from lai.judge import Judge, JudgeEndpoint, LLMJudge, agreement, parse_verdict
from lai.records import Attempt, Sample
from tests.helpers.openai_server import JSONHandler


class JudgeServer:
    """An OpenAI-compatible chat endpoint that grades by the rule above."""

    def __init__(self, reply: str | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.reply = reply  # a fixed reply instead of the rule (for unreadable ones)
        server = self

        class Handler(JSONHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                server.requests.append(body)
                text = body["messages"][-1]["content"]
                reference = re.search(r"## The reference answer\n(.*?)\n", text).group(1).strip()  # type: ignore[union-attr]
                graded = re.search(r"## The answer to grade\n(.*?)\n\n", text, re.S).group(1)  # type: ignore[union-attr]
                right = re.search(rf"(?<![\d.]){re.escape(reference)}(?![\d])", graded) is not None
                verdict = {"reasoning": f"the answer {'gives' if right else 'does not give'} {reference}", "verdict": "correct" if right else "incorrect"}
                content = server.reply if server.reply is not None else json.dumps(verdict)
                payload = {
                    "id": "x", "object": "chat.completion", "created": 0, "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30},
                }  # fmt: skip
                self._send(200, json.dumps(payload).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        # Polls for shutdown every 20 ms (the default 0.5 s is half a second of every test here).
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[JudgeServer]:
    judging.set_default_endpoint(None)
    running = JudgeServer()
    yield running
    running.close()
    judging.set_default_endpoint(None)


def endpoint(server: JudgeServer, tmp_path: Path) -> JudgeEndpoint:
    return JudgeEndpoint(base_url=server.url, model="judge-model", cache_path=str(tmp_path / "judge.sqlite"))


def test_verdicts_with_reasoning_cached_by_the_exact_request(server: JudgeServer, tmp_path: Path) -> None:
    judge = Judge(endpoint(server, tmp_path))
    items = [("What is 2 + 3?", "5", "It is 5."), ("What is 2 + 3?", "5", "It is 6."), ("What is 2 + 3?", "5", "It is 5.")]
    verdicts = judge.judge_many(items)
    assert [v.correct for v in verdicts] == [True, False, True]
    assert verdicts[1].reasoning == "the answer does not give 5" and verdicts[1].model == "judge-model"
    assert len(server.requests) == 2  # the repeated item is asked once
    sent = server.requests[0]
    assert sent["temperature"] == 0.0 and sent["response_format"]["type"] == "json_schema"
    assert "What is 2 + 3?" in sent["messages"][0]["content"]
    again = Judge(endpoint(server, tmp_path)).judge_many(items)  # a rerun reads the cache
    assert [v.correct for v in again] == [True, False, True] and len(server.requests) == 2


def test_an_unreadable_reply_is_no_verdict(tmp_path: Path) -> None:
    server = JudgeServer(reply="I would rather not say.")
    try:
        verdict = Judge(endpoint(server, tmp_path)).judge("q", "5", "5")
    finally:
        server.close()
    assert verdict.correct is None and "could not be read" in verdict.reasoning


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"reasoning": "same number", "verdict": "correct"}', True),
        ('```json\n{"reasoning": "no", "verdict": "Incorrect"}\n```', False),
        ('Sure: {"verdict": "correct", "reasoning": "ok"} hope that helps', True),
        ('{"correct": false, "reasoning": "off by one"}', False),
        ("incorrect.", False),
        ('{"reasoning": "hmm"}', None),
        ("maybe", None),
    ],
)
def test_reading_a_verdict(reply: str, expected: bool | None) -> None:
    assert parse_verdict(reply)[0] is expected


def test_a_rubric_of_ones_own(server: JudgeServer, tmp_path: Path) -> None:
    rubric = "Grade it.\n## The reference answer\n$reference\n## The answer to grade\n$response\n\nCosts $5 to ask. JSON only."
    verdict = Judge(endpoint(server, tmp_path), rubric).judge("q", "7", "seven, i.e. 7")
    assert verdict.correct is True
    assert server.requests[0]["messages"][0]["content"].endswith("Costs $5 to ask. JSON only.")


def test_the_metric_needs_an_endpoint_and_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    judging.set_default_endpoint(None)
    monkeypatch.delenv("LAI_JUDGE_BASE_URL", raising=False)
    metric = LLMJudge()  # built when a task file is read: nothing contacted yet
    with pytest.raises(ConfigError, match="no endpoint") as caught:
        metric.verdict("5", Sample("t/test/0", "t", "q", "5"))
    assert "--judge-base-url" in (caught.value.hint or "")
    with pytest.raises(ValueError, match="no prompt template named"):
        LLMJudge(rubric="no_such_rubric")


def test_the_metric_batches_and_keeps_the_reasoning(server: JudgeServer, tmp_path: Path) -> None:
    judging.set_default_endpoint(endpoint(server, tmp_path))
    samples = [Sample(f"t/test/{i}", "t", f"What is {i} + {i}?", str(2 * i)) for i in range(4)]
    verdicts = LLMJudge().verdict_many(["0", None, "4", "7"], samples, ["", "", "", ""])
    assert [v.correct if v else None for v in verdicts] == [True, None, True, False]
    assert verdicts[3] is not None and verdicts[3].reason == "judge judge-model: incorrect (the answer does not give 6)"
    assert len(server.requests) == 3  # nothing asked where nothing was extracted


def test_agreement_counts_items_scored_both_ways() -> None:
    def attempt(judge: bool, exact: bool, reason: str = "") -> Attempt:
        return Attempt("i", "t", "q", "r", "p", "x", "x", judge, reason, metrics={"llm_judge,whole": judge, "exact_match,whole": exact})

    # The last item's judge gave no readable verdict: it scores "not correct", but agreeing
    # with exact match on it would make a judge that never answers look in agreement.
    silent = attempt(False, False, "judge j: no verdict (the judge's reply could not be read: maybe)")
    found = agreement([attempt(True, True), attempt(True, False), attempt(False, False), attempt(False, True), silent])
    assert found == {"llm_judge,whole": {"exact_match": "exact_match,whole", "n": 4, "agree": 2, "rate": 0.5, "judge_only": 1, "exact_only": 1, "no_verdict": 1}}
    assert agreement([Attempt("i", "t", "q", "r", "p", "x", "x", True, "", metrics={"exact_match,a": True})]) == {}


TASK_FILE = """\
task: judged_sums
output_type: generate_until
dataset_path: json
dataset_kwargs:
  data_files: {test: test.jsonl}
test_split: test
doc_to_text: "{{ question }}"
doc_to_target: "{{ answer }}"
filter_list:
  - name: whole
    filter: [{function: whole}]
metric_list:
  - metric: llm_judge
  - metric: exact_match
"""


def test_a_later_judge_keeps_its_reasoning_in_the_record(server: JudgeServer, tmp_path: Path) -> None:
    from lai.tasks.from_file import task_class

    judging.set_default_endpoint(endpoint(server, tmp_path))
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n")
    path = tmp_path / "later_judge.yaml"
    path.write_text(TASK_FILE.replace("judged_sums", "later_judge").replace(
        "  - metric: llm_judge\n  - metric: exact_match\n", "  - metric: exact_match\n  - metric: llm_judge\n"))
    task = task_class(path)()
    sample = task.load("test")[0]
    score = task.score(sample, "The sum is 2.")
    assert score.correct is False  # exact match decides: it is first
    assert score.metrics == {"exact_match,whole": False, "llm_judge,whole": True}
    assert score.reason.endswith("; llm_judge,whole: judge judge-model: correct (the answer gives 2)")


def test_lai_eval_scores_a_task_file_with_the_judge_and_reports_agreement(server: JudgeServer, tmp_path: Path) -> None:
    from lai.eval_command import evaluate_model
    from lai.tasks.from_file import register_task_files

    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "judged_sums.yaml").write_text(TASK_FILE)
    rows = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(6)]
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    register_task_files([folder])
    judge = JudgeEndpoint(base_url=server.url, model="judge-model")
    summary = evaluate_model("fake-model", ["judged_sums"], tmp_path / "out", backend="scripted", judge=judge, batch_size=3)
    records = [json.loads(line) for line in (tmp_path / "out" / "judged_sums.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(set(r["metrics"]) == {"llm_judge,whole", "exact_match,whole"} for r in records)
    for record in records:  # the scripted target says "...\nThe answer is N."; exact match never holds
        assert record["reason"].startswith("judge judge-model: ")
        assert record["metrics"]["exact_match,whole"] is False
        assert record["correct"] == record["metrics"]["llm_judge,whole"] == (f"is {record['reference']}." in record["response"])
    found = summary["tasks"]["judged_sums"]["judge_agreement"]["llm_judge,whole"]
    judged_right = sum(r["correct"] for r in records)
    assert found == {"exact_match": "exact_match,whole", "n": 6, "agree": 6 - judged_right, "rate": (6 - judged_right) / 6,
                     "judge_only": judged_right, "exact_only": 0, "no_verdict": 0}  # fmt: skip
    assert (tmp_path / "out" / "judge_cache.sqlite").is_file()
    asked = len(server.requests)
    evaluate_model("fake-model", ["judged_sums"], tmp_path / "again", backend="scripted", judge=judge, batch_size=3)
    assert len(server.requests) == 2 * asked  # another folder, another cache


def test_a_failing_judge_stops_lai_eval_and_a_rerun_with_a_working_one_resumes(server: JudgeServer, tmp_path: Path) -> None:
    """A request that failed (HTTP 401: a wrong key) is no verdict: scored "incorrect" it
    would give 0% with 100% agreement and exit 0, and its record would stick on a rerun."""
    from lai.errors import InstructorError
    from lai.eval_command import evaluate_model
    from lai.tasks.from_file import register_task_files
    from tests.helpers.openai_server import Behaviour, ScriptedOpenAIServer

    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "failing_judge.yaml").write_text(TASK_FILE.replace("judged_sums", "failing_judge"))
    rows = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(4)]
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    register_task_files([folder])
    out = tmp_path / "out"
    refusing = r"4 of 4 judge request\(s\) .* failed \(e\.g\. HTTP 401"
    with ScriptedOpenAIServer(Behaviour(status=401)) as wrong_key, pytest.raises(InstructorError, match=refusing):
        evaluate_model("fake-model", ["failing_judge"], out, backend="scripted", judge=JudgeEndpoint(base_url=wrong_key.base_url, model="judge-model"))
    assert not (out / "failing_judge.jsonl").read_text().strip()  # no record holds a verdict never given
    summary = evaluate_model("fake-model", ["failing_judge"], out, backend="scripted", judge=JudgeEndpoint(base_url=server.url, model="judge-model"))
    assert summary["tasks"]["failing_judge"]["n"] == 4 and len(server.requests) == 4


def test_a_dead_judge_is_named_as_the_judge(tmp_path: Path) -> None:
    from lai.errors import InstructorError

    dead = JudgeEndpoint(base_url="http://127.0.0.1:9/v1", model="m", max_retries=0, cache_path=str(tmp_path / "c.sqlite"))
    with pytest.raises(InstructorError, match=r"^lost the judge endpoint http://127\.0\.0\.1:9/v1"):
        Judge(dead).judge_many([("What is 1 + 1?", "2", "2")])
