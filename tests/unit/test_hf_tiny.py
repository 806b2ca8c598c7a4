"""The transformers backend and the SFT trainer on a tiny random Llama (fast, real code paths).

The model is random (2 layers, hidden 64) but the tokenizer and chat template are
SmolLM2's, read from the GGUF file the embedded model ships in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lai.config import TrainConfig  # noqa: E402
from lai.models.hf import HFTarget  # noqa: E402
from lai.models.resolve import embedded_gguf  # noqa: E402
from lai.train.base import TrainExample  # noqa: E402
from lai.train.sft import SFTTrainerBackend  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        gguf = embedded_gguf("smollm2-135m-instruct")
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"embedded model package missing: {error}")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


PROMPTS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "user", "content": "A much longer question about apples, pears and how many of each a farmer sells?"}],
    [{"role": "user", "content": "Hi"}],
]


def test_batched_left_padded_generation_matches_one_by_one(tiny_model_dir: Path) -> None:
    batched = HFTarget(str(tiny_model_dir), batch_size=3).generate(PROMPTS, max_new_tokens=8)
    single = HFTarget(str(tiny_model_dir), batch_size=1)
    one_by_one = [single.generate([p], max_new_tokens=8)[0] for p in PROMPTS]
    assert batched == one_by_one
    assert all(isinstance(text, str) for text in batched)


def test_chat_template_is_applied(tiny_model_dir: Path) -> None:
    target = HFTarget(str(tiny_model_dir))
    rendered = target.render(PROMPTS[0])
    assert "<|im_start|>user" in rendered and rendered.rstrip().endswith("<|im_start|>assistant")
    assert len(target.fingerprint()) == 16


def examples() -> list[TrainExample]:
    return [
        TrainExample([{"role": "user", "content": f"What is {i} + {i}?"}], f"{i} + {i} = {2 * i}.\nThe answer is {2 * i}.")
        for i in range(8)
    ]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_training_changes_the_weights_and_the_saved_model_reloads(tiny_model_dir: Path, tmp_path: Path, method: str) -> None:
    config = TrainConfig(method=method, max_steps=3, batch_size=4, learning_rate=5e-3, gradient_checkpointing=False)
    summary = SFTTrainerBackend(config, seed=0).train(str(tiny_model_dir), examples(), tmp_path)
    assert summary["trained"] and summary["steps"] == 3 and summary["examples"] == 8
    assert summary["first_loss"] is not None
    saved = Path(summary["model"])
    assert (saved / "config.json").exists() and not (tmp_path / "model.partial").exists()
    if method == "lora":
        assert (tmp_path / "adapter" / "adapter_config.json").exists()
    before = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    after = transformers.AutoModelForCausalLM.from_pretrained(saved)
    changed = [
        name for name, p in after.state_dict().items() if not torch.equal(p, before.state_dict()[name])
    ]
    assert changed, "training left every weight unchanged"
    # The trained folder is a plain HF model the backend loads for the next iteration.
    assert len(HFTarget(str(saved)).generate(PROMPTS[:1], max_new_tokens=4)) == 1


def test_loss_is_on_the_answer_tokens_only(tiny_model_dir: Path) -> None:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    example = examples()[3]
    dataset = Dataset.from_list([{"prompt": example.prompt, "completion": [{"role": "assistant", "content": example.completion}]}])
    args = SFTConfig(
        output_dir="/tmp/unused", completion_only_loss=True, report_to="none", use_cpu=True, max_length=256,
        activation_checkpointing=False,
    )  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels = batch["labels"][0]
    learned = tokenizer.decode(labels[labels != -100])
    assert "The answer is 6" in learned and "What is 3 + 3" not in learned
