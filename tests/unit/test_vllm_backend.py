"""The vLLM target backend, without vLLM: registry, errors, prompts, and a fake engine.

vLLM needs a CUDA GPU, so most of this runs against a fake ``vllm`` module put in
``sys.modules``: one with canned outputs checks the requests the backend builds
(SamplingParams, token-id prompts) and how results map back; one backed by the tiny random
Llama of test_hf_tiny (greedy decoding and prompt log-probs computed with transformers,
as vLLM would) checks that the backend returns exactly what the hf backend returns for the
same rows, i.e. that prompts, stop strings, tidying and the context/continuation split are
the hf backend's. Only ``test_hf_and_vllm_agree_on_a_gpu`` runs real vLLM (marked gpu).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from lai.errors import ConfigError, ModelError
from lai.targets import TARGETS
from lai.targets.prompting import cut_at_stop, encode_pair, encode_prompt, render_prompt, tidy_reply
from lai.targets.vllm import engine_dtype, sum_prompt_logprobs
from tests.unit.test_cli import assert_clean_error, lai

REPO = Path(__file__).resolve().parents[2]

PROMPTS: list[Any] = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    "Q: What is 3 plus 4?\nA:",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A much longer question about apples and pears?"}],
    "def f():\n",
]


# ---- fakes ---------------------------------------------------------------------------


class Logprob:
    """vLLM's Logprob: the value, plus rank and decoded text we never read."""

    def __init__(self, logprob: float) -> None:
        self.logprob = logprob
        self.rank = 1


class FakeSamplingParams:
    def __init__(self, **fields: Any) -> None:
        self.fields = fields
        self.__dict__.update(fields)


@dataclass
class FakeCompletion:
    token_ids: list[int]
    text: str = "(engine text is not used)"


@dataclass
class FakeOutput:
    outputs: list[FakeCompletion]
    prompt_logprobs: list[Any] | None = None


@dataclass
class FakeState:
    engines: list[Any] = field(default_factory=list)
    respond: Any = None
    shutdowns: int = 0


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> FakeState:
    state = FakeState()

    class LLM:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs
            self.calls: list[tuple[list[dict[str, list[int]]], FakeSamplingParams]] = []
            self.llm_engine = SimpleNamespace(engine_core=SimpleNamespace(shutdown=self._shutdown))
            state.engines.append(self)

        def _shutdown(self) -> None:
            state.shutdowns += 1

        def generate(self, prompts: list[dict[str, list[int]]], sampling_params: Any = None, use_tqdm: bool = True) -> list[FakeOutput]:
            assert use_tqdm is False  # lai draws its own bars
            self.calls.append((prompts, sampling_params))
            return state.respond(prompts, sampling_params)

    module = ModuleType("vllm")
    module.LLM = LLM  # type: ignore[attr-defined]
    module.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    return state


@pytest.fixture(scope="session")
def tiny_dir(tiny_model_dir: Path) -> Path:
    """test_hf_tiny's model (tests/conftest.py)."""
    return tiny_model_dir


@pytest.fixture(scope="session")
def tokenizer(tiny_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


def transformers_engine(model_dir: Path) -> Any:
    """What vLLM computes, computed with transformers: greedy tokens, or prompt log-probs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    eos = model.generation_config.eos_token_id
    eos_ids = {tok.eos_token_id, *(eos if isinstance(eos, list) else [eos])}

    def respond(prompts: list[dict[str, list[int]]], params: FakeSamplingParams) -> list[FakeOutput]:
        outputs = []
        for prompt in prompts:
            ids = list(prompt["prompt_token_ids"])
            if getattr(params, "prompt_logprobs", None):
                with torch.inference_mode():
                    logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
                entries: list[Any] = [None]
                for i in range(1, len(ids)):  # the prompt's token and the top-1, as vLLM returns them
                    row = logprobs[i - 1]
                    top = int(row.argmax())
                    entries.append({top: Logprob(float(row[top])), ids[i]: Logprob(float(row[ids[i]]))})
                outputs.append(FakeOutput([FakeCompletion([0])], entries))
                continue
            generated: list[int] = []
            for _ in range(params.max_tokens):
                with torch.inference_mode():
                    token = int(model(torch.tensor([ids + generated])).logits[0, -1].argmax())
                generated.append(token)
                if token in eos_ids:
                    break
                # vLLM checks stop strings on the detokenized output and keeps every token id.
                if params.stop and any(s in tok.decode(generated, skip_special_tokens=True) for s in params.stop):
                    break
            outputs.append(FakeOutput([FakeCompletion(generated)]))
        return outputs

    return respond


# ---- without any engine ----------------------------------------------------------------


def test_registered_lazily_and_never_imported_by_cli_or_config() -> None:
    assert "vllm" in TARGETS.names()
    code = (
        "import sys, lai.cli, lai.targets.vllm\n"
        "from lai.config import build_config\n"
        "cfg = build_config({'target': {'backend': 'vllm', 'model': 'org/model', 'options': {'tensor_parallel_size': 2}},"
        " 'instructor': {'backend': 'scripted', 'local': {'server': 'vllm'}}, 'train': {'backend': 'noop'}})\n"
        "assert cfg.target.backend == 'vllm' and cfg.instructor.local.server == 'vllm'\n"
        "assert 'vllm' not in sys.modules and 'torch' not in sys.modules, 'imported at validation'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert lai("--help").returncode == 0


def test_missing_vllm_is_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ModuleNotFoundError, installed or not
    with pytest.raises(ModelError) as caught:
        TARGETS.build("vllm", "org/model", batch_size=4)
    message = str(caught.value)
    assert "pip install 'lai[vllm]'" in message and "CUDA GPU" in message and "\n" not in message


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_cli_without_vllm_exits_2_with_one_line(tmp_path: Path) -> None:
    result = lai("eval", "--model", "org/model", "--tasks", "gsm8k", "--backend", "vllm", "--out", str(tmp_path / "e"))
    assert_clean_error(result, "pip install 'lai[vllm]'")


def test_settings_are_checked_before_anything_loads(fake_vllm: FakeState) -> None:
    with pytest.raises(ConfigError, match="no setting threads"):
        TARGETS.build("vllm", "org/model", threads=4)
    with pytest.raises(ConfigError, match="CUDA GPUs"):
        TARGETS.build("vllm", "org/model", device="cpu")
    assert not fake_vllm.engines
    assert engine_dtype("auto") == "bfloat16" and engine_dtype("float32") == "float32"


def test_the_hf_backend_refuses_unknown_options_too() -> None:
    # The same config error for either backend, before any model is looked up.
    with pytest.raises(ConfigError, match="hf backend has no setting tensor_parallel_size"):
        TARGETS.build("hf", "org/no-such-model", tensor_parallel_size=2)


def test_gguf_files_are_refused(fake_vllm: FakeState, tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="does not load .gguf"):
        TARGETS.build("vllm", str(tmp_path / "m.gguf"))


def test_prompts_render_exactly_as_the_hf_backend(tokenizer: Any) -> None:
    from lai.targets.hf import HFTarget

    hf_like = SimpleNamespace(tokenizer=tokenizer)
    for prompt in PROMPTS:
        assert render_prompt(tokenizer, prompt) == HFTarget.render(hf_like, prompt)  # type: ignore[arg-type]
    chat = render_prompt(tokenizer, PROMPTS[0])
    assert "<|im_start|>user" in chat and chat.rstrip().endswith("<|im_start|>assistant")
    assert render_prompt(tokenizer, PROMPTS[1]) == PROMPTS[1]
    assert encode_prompt(tokenizer, PROMPTS[1]) == tokenizer(PROMPTS[1], add_special_tokens=False).input_ids
    # Both backends cut with this one function (hf.py imports it), so check what it does.
    for text, stop, expected in [
        ("The answer is 4.\n\nQ: next", ["Q:", "</s>"], "The answer is 4.\n\n"),
        ("a</s>b Q: c", ["Q:", "</s>"], "a"),  # the earliest marker wins, whatever the order
        ("no marker", ["Q:"], "no marker"),
        ("", ["x"], ""),
        ("keep all", [], "keep all"),
    ]:
        assert cut_at_stop(text, stop) == expected
    assert tidy_reply([{"role": "user", "content": "x"}], "  4.\n") == "4." and tidy_reply("raw", "    return 1\n") == "    return 1\n"


def test_context_trailing_space_moves_to_the_continuation(tokenizer: Any) -> None:
    whole, n_context = encode_pair(tokenizer, "Question: 2 + 2?\nAnswer: ", "4")
    together, n = encode_pair(tokenizer, "Question: 2 + 2?\nAnswer:", " 4")
    assert (whole, n_context) == (together, n)
    assert whole == tokenizer("Question: 2 + 2?\nAnswer: 4", add_special_tokens=False).input_ids
    assert encode_pair(tokenizer, "", "x")[1] == 1  # at least one context token


# ---- against a fake engine ------------------------------------------------------------


def test_requests_and_result_mapping(fake_vllm: FakeState, tiny_dir: Path, tokenizer: Any) -> None:
    replies = {i: f"  reply {i} STOP tail {i}\n" for i in range(len(PROMPTS))}
    rows = [encode_prompt(tokenizer, p) for p in PROMPTS]

    def respond(prompts: list[dict[str, list[int]]], params: FakeSamplingParams) -> list[FakeOutput]:
        # Each reply names the prompt it answers, so a mix-up in order shows.
        return [FakeOutput([FakeCompletion(tokenizer(replies[rows.index(p["prompt_token_ids"])]).input_ids)]) for p in prompts]

    fake_vllm.respond = respond
    target = TARGETS.build(
        "vllm", str(tiny_dir), dtype="float32", device="auto", batch_size=8,
        tensor_parallel_size=2, gpu_memory_utilization=0.5, max_model_len=2048, engine_args={"enforce_eager": True},
    )  # fmt: skip
    engine = fake_vllm.engines[0]
    assert engine.kwargs == {
        "model": str(tiny_dir), "dtype": "float32", "tensor_parallel_size": 2, "gpu_memory_utilization": 0.5,
        "seed": 0, "max_model_len": 2048, "enforce_eager": True,
    }  # fmt: skip
    texts = target.generate(PROMPTS, max_new_tokens=7, stop=["STOP", "\n\n"])
    sent, params = engine.calls[0]
    assert sent == [{"prompt_token_ids": row} for row in rows]  # token ids, rendered as hf renders them
    assert params.fields == {"temperature": 0.0, "max_tokens": 7, "stop": ["STOP", "\n\n"]}
    # Cut at the stop string; chat replies stripped, raw completions kept as generated.
    assert texts == ["reply 0", "  reply 1 ", "reply 2", "  reply 3 "]
    assert target.generate([], max_new_tokens=3) == [] and len(engine.calls) == 1
    assert target.generate(PROMPTS[:1], max_new_tokens=3) == ["reply 0 STOP tail 0"]  # no stop: nothing cut
    assert engine.calls[-1][1].fields["stop"] == []
    assert len(target.fingerprint()) == 16


def test_loglikelihood_requests_and_sums(fake_vllm: FakeState, tiny_dir: Path, tokenizer: Any) -> None:
    pairs: list[tuple[Any, str]] = [("Question: 2 + 2?\nAnswer: ", "4"), (PROMPTS[0], " The answer is 4"), ("ctx", "")]
    encoded = [encode_pair(tokenizer, render_prompt(tokenizer, c), x) for c, x in pairs]

    def respond(prompts: list[dict[str, list[int]]], params: FakeSamplingParams) -> list[FakeOutput]:
        out = []
        for p in prompts:
            ids = p["prompt_token_ids"]
            # log p(token i) = -i/100; a decoy (another token, more likely) sits beside it.
            entries = [None] + [{ids[i]: Logprob(-i / 100), ids[i] + 1: Logprob(-0.001)} for i in range(1, len(ids))]
            out.append(FakeOutput([FakeCompletion([1])], entries))
        return out

    fake_vllm.respond = respond
    target = TARGETS.build("vllm", str(tiny_dir))
    scores = target.loglikelihood(pairs)
    sent, params = fake_vllm.engines[0].calls[0]
    assert sent == [{"prompt_token_ids": tokens} for tokens, _ in encoded]
    assert params.fields == {"temperature": 0.0, "max_tokens": 1, "prompt_logprobs": 1, "detokenize": False}
    expected = [sum(-i / 100 for i in range(n, len(tokens))) for tokens, n in encoded]
    assert scores == pytest.approx(expected) and scores[2] == 0.0
    # vLLM before 0.4 returned plain floats
    assert sum_prompt_logprobs([None, {5: -0.5}, {6: -0.25}], [4, 5, 6], 1) == -0.75


def test_close_frees_the_engine(fake_vllm: FakeState, tiny_dir: Path) -> None:
    target = TARGETS.build("vllm", str(tiny_dir))
    target.close()
    target.close()
    assert fake_vllm.shutdowns == 1 and target.llm is None
    with pytest.raises(ModelError, match="closed"):
        target.generate(PROMPTS[:1], max_new_tokens=2)


def test_same_answers_as_the_hf_backend_on_the_same_weights(fake_vllm: FakeState, tiny_dir: Path) -> None:
    """Engine maths aside (the fake computes it with transformers), every step around the
    model is the hf backend's: the per-item texts and log-likelihoods must be equal."""
    from lai.targets.hf import HFTarget

    fake_vllm.respond = transformers_engine(tiny_dir)
    hf = HFTarget(str(tiny_dir), batch_size=3)
    vllm = TARGETS.build("vllm", str(tiny_dir), dtype="float32")
    free = hf.generate(PROMPTS, max_new_tokens=10)
    assert vllm.generate(PROMPTS, max_new_tokens=10) == free
    markers = sorted({text[2:4] for text in free if len(text.strip()) > 4})[:2]
    assert markers, free
    cut = hf.generate(PROMPTS, max_new_tokens=10, stop=markers)
    assert cut != free and vllm.generate(PROMPTS, max_new_tokens=10, stop=markers) == cut
    pairs: list[tuple[Any, str]] = [
        ("Question: What is 2 + 2?\nAnswer: ", "4"),
        ("Question: What is 2 + 2?\nAnswer:", " four"),
        (PROMPTS[0], "The answer is 4."),
        (PROMPTS[2], " Apples"),
        ("The capital of France is", ""),
    ]
    assert vllm.loglikelihood(pairs) == pytest.approx(hf.loglikelihood(pairs), abs=1e-4)


# ---- real vLLM ------------------------------------------------------------------------


def _records(folder: Path, task: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / f"{task}.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.gpu
@pytest.mark.slow
def test_hf_and_vllm_agree_on_a_gpu(data_dir: Path, tmp_path: Path) -> None:
    """The embedded model, the same rows, both backends in float32: compare every item."""
    pytest.importorskip("vllm")
    from lai.eval_command import evaluate_model

    runs = {}
    for backend, options in (
        ("hf", {"device": "cuda", "dtype": "float32"}),
        ("vllm", {"dtype": "float32", "gpu_memory_utilization": 0.4, "max_model_len": 4096}),
    ):
        for task, protocol in (("gsm8k", "paper"), ("arc_challenge", "lm-eval")):
            out = tmp_path / f"{backend}-{task}"
            evaluate_model(
                "embedded:smollm2-135m-instruct", [task], out, protocol=protocol, limit=32, backend=backend,
                batch_size=16, max_new_tokens=256, data_dir=data_dir, target_options=options,
            )  # fmt: skip
            runs[backend, task] = _records(out, task)
    report = []
    for task in ("gsm8k", "arc_challenge"):
        hf, vl = runs["hf", task], runs["vllm", task]
        assert [r["id"] for r in hf] == [r["id"] for r in vl]
        same_text = sum(a["response"] == b["response"] for a, b in zip(hf, vl, strict=True)) / len(hf)
        same_answer = sum(a["extracted"] == b["extracted"] for a, b in zip(hf, vl, strict=True)) / len(hf)
        report.append(f"{task}: identical responses {same_text:.0%}, identical answers {same_answer:.0%}")
        for a, b in zip(hf, vl, strict=True):
            if a["response"] != b["response"]:
                report.append(f"  {a['id']}: hf {a['response'][:80]!r} | vllm {b['response'][:80]!r}")
        if task == "arc_challenge":  # "A=-1.234 B=..." per option: the log-likelihoods themselves
            gaps = [
                abs(float(x.split("=")[1]) - float(y.split("=")[1]))
                for a, b in zip(hf, vl, strict=True)
                for x, y in zip(a["response"].split(), b["response"].split(), strict=True)
            ]
            report.append(f"  log-likelihood |hf - vllm|: max {max(gaps):.4f}")
            assert sorted(gaps)[len(gaps) // 2] < 0.01, "\n".join(report)
        assert same_answer >= 0.9, "\n".join(report)
        assert same_text >= 0.75, "\n".join(report)
    print("\n".join(report))
