"""The transformers backend and the SFT trainer on a tiny random Llama (fast, real code paths).

The model (``tiny_model_dir`` in tests/conftest.py) is random (2 layers, hidden 64) but
the tokenizer and chat template are SmolLM2's, read from the GGUF file the embedded
model ships in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lai.config import TrainConfig
from lai.targets.hf import HFTarget
from lai.train.base import TrainExample
from lai.train.sft import SFTTrainerBackend

# Every test here takes tiny_model_dir, which skips without torch and transformers; they are
# imported by the tests that use them, so collecting this file (every run) needs neither.

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
    import torch
    import transformers

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
    import transformers
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


def test_shared_prefix_cache_gives_the_same_text(tiny_model_dir: Path) -> None:
    shots = "".join(f"Q: What is {i} plus {i}?\nA: {i} + {i} = {2 * i}. The answer is {2 * i}.\n\n" for i in range(6))
    prompts = [shots + f"Q: What is {q}?\nA:" for q in ("7 plus 7", "a long question about 12 plus 30 apples", "1")]
    cached = HFTarget(str(tiny_model_dir), batch_size=2, prefix_cache=True)
    plain = HFTarget(str(tiny_model_dir), batch_size=2, prefix_cache=False)
    assert cached.generate(prompts, max_new_tokens=6) == plain.generate(prompts, max_new_tokens=6)
    assert cached._cached_prefix is not None and len(cached._cached_prefix[0]) >= 32


def test_stop_strings_cut_the_text(tiny_model_dir: Path) -> None:
    from lai.targets.hf import common_prefix_length
    from lai.targets.prompting import cut_at_stop

    assert cut_at_stop("The answer is 4.\n\nQ: next", ["Q:", "</s>"]) == "The answer is 4.\n\n"
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 1  # every row keeps a token
    target = HFTarget(str(tiny_model_dir))
    free = target.generate(PROMPTS[:1], max_new_tokens=12)[0]
    if len(free) > 2:
        marker = free[1:3]
        assert marker not in target.generate(PROMPTS[:1], max_new_tokens=12, stop=[marker])[0]


def test_continuous_batching_matches_one_batch_at_a_time(tiny_model_dir: Path) -> None:
    # More prompts than slots, of very different lengths, so rows leave and join mid-way.
    prompts: list = [[{"role": "user", "content": "word " * n}] for n in (1, 40, 3, 25, 7, 60, 2, 12, 30)]
    prompts += ["Q: raw prompt " * 5, "short"]
    continuous = HFTarget(str(tiny_model_dir), batch_size=3, continuous=True)
    assert continuous.continuous
    static = HFTarget(str(tiny_model_dir), batch_size=3, continuous=False)
    for stop in ((), ("e", "a")):
        expected = static.generate(prompts, max_new_tokens=10, stop=stop)
        assert continuous.generate(prompts, max_new_tokens=10, stop=stop) == expected


def test_raw_completions_keep_their_leading_whitespace(tiny_model_dir: Path) -> None:
    target = HFTarget(str(tiny_model_dir))
    raw = target.generate(["def f():\n"], max_new_tokens=8)[0]
    chat = target.generate([[{"role": "user", "content": "def f():"}]], max_new_tokens=8)[0]
    assert chat == chat.strip()
    from transformers import DynamicCache

    ids = target.tokenizer("def f():\n", add_special_tokens=False).input_ids
    tokens = target._generate_batch([ids], 0, lambda _n: DynamicCache(), 8, ())[0]
    # Exactly the decoded text, not stripped: HumanEval completions start with indentation.
    assert raw == target.tokenizer.decode(tokens, skip_special_tokens=True)


def test_rows_are_reported_as_they_finish(tiny_model_dir: Path) -> None:
    """Progress per item (issue 18): row_done hears of every row, continuous or not."""
    prompts: list = [[{"role": "user", "content": "word " * n}] for n in (1, 40, 3, 25, 7)]
    for continuous in (True, False):
        target = HFTarget(str(tiny_model_dir), batch_size=2, continuous=continuous)
        calls: list[int] = []
        target.row_done = calls.append
        target.generate(prompts, max_new_tokens=6, stop=("e",))
        assert sum(calls) == len(prompts) and len(calls) > 1, (continuous, calls)
