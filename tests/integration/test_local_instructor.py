"""The real instructor path: llama.cpp's OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lai.config import LocalInstructorConfig, build_config
from lai.instructor.async_client import AsyncOpenAIInstructor as OpenAIInstructor
from lai.instructor.local_server import LocalInstructorServer
from lai.instructor.reply_json import parse_reply
from lai.pipeline import Pipeline
from lai.records import Attempt
from lai.store import load_summaries
from lai.strategies.le import LearningFromErrors
from lai.tasks import get_task

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python[server] not installed"),
]


def wrong_attempt() -> Attempt:
    return Attempt(
        id="gsm8k/train/0", task="gsm8k",
        question="Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?",
        reference="72", prompt=[], response="She sold 48 + 2 = 50 clips. The answer is 50.",
        extracted="50", correct=False, reason="final answer 50, expected 72",
    )  # fmt: skip


def test_server_starts_answers_with_schema_constrained_json_and_stops(tmp_path: Path) -> None:
    request = LearningFromErrors(budget=2).plan([wrong_attempt()], {"gsm8k": get_task("gsm8k")})[0]
    with LocalInstructorServer(LocalInstructorConfig(enabled=True), tmp_path / "server.log") as server:
        process = server.process
        instructor = OpenAIInstructor(
            base_url=server.base_url, model=server.model_alias, max_tokens=400, seed=1,
            structured_output="json_object", max_retries=0,
        )  # fmt: skip
        instructor.check()
        record = instructor.complete(request)
    assert process is not None and process.poll() is not None, "the server must be stopped"
    assert record.status == "ok" and record.completion_tokens > 0 and record.prompt_tokens > 100
    if record.finish_reason == "stop":
        reply = json.loads(record.reply)  # the grammar guarantees JSON of the requested shape
        assert len(reply["samples"]) == request.n_requested
    assert parse_reply(record.reply).items or record.finish_reason == "length"


def test_instruct_stage_through_the_local_server(data_dir: Path, tmp_path: Path) -> None:
    config = build_config(
        {
            "name": "real-instructor",
            "data_dir": str(data_dir),
            "target": {"backend": "scripted", "model": "fake"},
            "select": {"pools": [{"task": "gsm8k", "pool": "train", "n": 2}]},
            "instructor": {
                "backend": "openai", "model": "x", "max_tokens": 300, "seed": 1, "concurrency": 1,
                "structured_output": "json_object", "local": {"enabled": True},
            },
            "strategy": {"name": "le", "budget": 2},
            "train": {"backend": "noop"},
            "evaluate": {"baseline": False, "benchmarks": [{"task": "gsm8k", "pool": "test", "limit": 2}]},
        }
    )  # fmt: skip
    Pipeline(config, tmp_path / "run").run()
    summary = load_summaries(tmp_path / "run")[1]
    assert summary["instruct"]["requests"] == summary["collect"]["wrong"] > 0
    assert summary["instruct"]["ok"] == summary["instruct"]["requests"]
    assert summary["instruct"]["models"] and summary["instruct"]["completion_tokens"] > 0
    assert summary["parse"]["parsed"] + summary["parse"]["drop_reasons"].get("unparseable reply", 0) > 0
    assert "the instructor in this run is weak" in (tmp_path / "run" / "report.md").read_text()


# ---- the build runs on this CPU -----------------------------------------------------------


def advertised_cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


# llama.cpp's system-info names -> /proc/cpuinfo flags a CPU must advertise to run them.
NEEDS = {
    "AVX": {"avx"}, "AVX2": {"avx2"}, "F16C": {"f16c"}, "FMA": {"fma"}, "BMI2": {"bmi2"},
    "AVX512": {"avx512f"}, "AVX512_VBMI": {"avx512vbmi"}, "AVX512_VNNI": {"avx512_vnni"},
    "AVX512_BF16": {"avx512_bf16"}, "AVX_VNNI": {"avx_vnni"},
    "AMX_INT8": {"never"}, "AMX_BF16": {"never"}, "AMX_TILE": {"never"},  # some CPUs fault on AMX they advertise
}  # fmt: skip


@pytest.mark.skipif(Path("/proc/cpuinfo").exists() is False or not advertised_cpu_flags(), reason="no /proc/cpuinfo")
def test_the_llama_cpp_build_uses_only_advertised_features_and_never_amx() -> None:
    """The default (GGML_NATIVE) build compiles AMX on CPUs that advertise it, and some of those
    fault on it (SIGILL): scripts/build-llama-cpp.sh builds without native and without AMX."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode()
    compiled = {name for name, value in (part.split("=") for part in _features(info)) if value.strip() == "1"}
    flags = advertised_cpu_flags()
    unsafe = sorted(name for name in compiled if name in NEEDS and not NEEDS[name] <= flags)
    assert not unsafe, f"llama.cpp was built with {unsafe}, which this CPU must not run: {info}"


def _features(info: str) -> list[str]:
    return [part.strip() for part in info.replace("|", "\n").splitlines() if "=" in part and part.split("=")[0].strip().isupper()]


def test_a_prompt_of_a_few_hundred_tokens_gets_a_reply(tmp_path: Path) -> None:
    """A one-token prompt worked even on the build that crashed; a long one ran the kernels that faulted."""
    from openai import OpenAI

    question = " ".join(f"Shelf {i} holds {i * 3} books and {i + 2} magazines." for i in range(1, 41))
    with LocalInstructorServer(LocalInstructorConfig(enabled=True), tmp_path / "server.log") as server:
        client = OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=300)
        reply = client.chat.completions.create(
            model=server.model_alias, max_tokens=16, temperature=0,
            messages=[{"role": "user", "content": question + " How many books are on shelf 7?"}],
        )  # fmt: skip
        assert server.death() is None, server.death()
    assert reply.usage is not None and reply.usage.prompt_tokens >= 300
    assert reply.choices[0].message.content
