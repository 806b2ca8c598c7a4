"""Training at scale: precision, packing isolation, accelerate configs, the launch path.

The packing tests run a tiny random Llama (2 layers, hidden 64, SmolLM2's tokenizer)
through the real collators and TRL's own ``compute_loss``. The data-parallel test starts
2 real processes (gloo) through ``accelerate launch`` and is marked slow (~30 s).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from lai.config import TrainConfig, load_config
from lai.errors import ConfigError
from lai.train.accelerate_configs import (
    accelerate_config,
    check_runtime,
    render_yaml,
    resolve_precision,
)
from lai.train.base import TrainError, TrainExample
from lai.train.launch import ERROR_MARK, failure_cause, run_logged

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- config validation


def test_defaults_keep_the_single_process_behaviour() -> None:
    config = TrainConfig()
    assert (config.precision, config.packing, config.distributed, config.num_processes) == ("auto", False, "none", 1)
    assert config.attn_implementation == "auto"
    assert config.effective_batch_size == config.batch_size * config.grad_accum


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ("num_processes: 2", r"train: num_processes is 2 but distributed is none; choose ddp, fsdp or deepspeed_zero2"),
        ("distributed: zero3", r"train\.distributed: Input should be 'none', 'ddp', 'fsdp' or 'deepspeed_zero2'"),
        ("precision: fp8", r"train\.precision: Input should be 'auto', 'bf16', 'fp16' or 'fp32'"),
        ("num_processes: 0", r"train\.num_processes: Input should be greater than or equal to 1"),
        ("{backend: noop, packing: true}", r"packing is only implemented by the sft backend"),
        ("attn_implementation: flash", r"train\.attn_implementation: Input should be"),
    ],
)
def test_bad_combinations_are_one_clear_line(tmp_path: Path, train: str, message: str) -> None:
    text = f"train: {train}\n" if train.startswith("{") else f"train:\n  {train}\n"
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(write(tmp_path, text))
    assert "\n" not in str(caught.value)


def test_effective_batch_counts_every_process() -> None:
    config = TrainConfig(batch_size=2, grad_accum=2, distributed="ddp", num_processes=8)
    assert config.effective_batch_size == 32


@pytest.mark.parametrize("name", ["paper_mistral7b.yaml", "paper_llama3_8b.yaml"])
def test_paper_configs_carry_the_papers_training_settings(name: str) -> None:
    config = load_config(REPO / "configs" / name)
    train = config.train
    assert train.method == "full" and train.learning_rate == 5e-6 and train.epochs == 1
    assert train.effective_batch_size == 32 and train.max_length == 512
    assert train.lr_scheduler == "cosine" and train.warmup_steps == 100
    assert train.precision == "bf16" and train.gradient_checkpointing
    assert train.distributed in ("deepspeed_zero2", "fsdp") and train.num_processes == 8
    assert config.strategy.name == "le" and config.instructor.api_key_env == "OPENAI_API_KEY"
    assert config.instructor.base_url == "https://api.openai.com/v1"
    assert {p.task for p in config.select.pools} == {"gsm8k", "mbpp", "mmlu"}
    benchmarks = {b.task for b in config.evaluate.benchmarks}
    assert benchmarks == {"gsm8k", "mbpp", "mmlu", "humaneval", "bbh", "arc_challenge", "gsm8k_plus"}


# ---------------------------------------------------------------- precision and hardware


@pytest.mark.parametrize(
    ("precision", "on_gpu", "bf16_ok", "expected"),
    [
        ("auto", False, False, "fp32"),
        ("auto", True, True, "bf16"),
        ("auto", True, False, "fp32"),  # e.g. a V100 or T4: no bf16
        ("bf16", False, False, "bf16"),  # CPU autocast, if asked for explicitly
        ("fp16", True, False, "fp16"),
        ("fp32", True, True, "fp32"),
    ],
)
def test_precision_resolution(precision: str, on_gpu: bool, bf16_ok: bool, expected: str) -> None:
    assert resolve_precision(precision, on_gpu, bf16_supported=bf16_ok) == expected


def test_impossible_precisions_are_refused() -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", on_gpu=False)
    with pytest.raises(ConfigError, match="bf16 is not supported by this GPU"):
        resolve_precision("bf16", on_gpu=True, bf16_supported=False)


def test_runtime_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real_find_spec(name, *a)
    )
    zero2 = TrainConfig(distributed="deepspeed_zero2", num_processes=2)
    with pytest.raises(ConfigError, match=r"pip install deepspeed"):
        check_runtime(zero2, gpus=8)
    with pytest.raises(ConfigError, match="fsdp needs CUDA GPUs"):
        check_runtime(TrainConfig(distributed="fsdp", num_processes=2), gpus=0)
    with pytest.raises(ConfigError, match=r"num_processes is 8 but only 4 GPU\(s\) are visible"):
        check_runtime(TrainConfig(distributed="ddp", num_processes=8), gpus=4)
    with pytest.raises(ConfigError, match="flash_attention_2 needs a CUDA GPU"):
        check_runtime(TrainConfig(attn_implementation="flash_attention_2"), gpus=0)
    check_runtime(TrainConfig(distributed="ddp", num_processes=2), gpus=0)  # data parallel on CPU is fine
    check_runtime(TrainConfig(distributed="fsdp", num_processes=8), gpus=8)


# ---------------------------------------------------------------- accelerate configs


def generated(tmp_path: Path, **train: object) -> dict:
    """Render, write and read back the config the way accelerate itself does."""
    pytest.importorskip("accelerate", reason="accelerate is part of the train extra (pip install 'lai[train]')")
    from accelerate.commands.config.config_args import load_config_from_file

    config = TrainConfig(**train)
    text = render_yaml(accelerate_config(config, "bf16", use_cpu=False, port=29512))
    assert text.startswith("#")
    path = tmp_path / "accelerate_config.yaml"
    path.write_text(text)
    loaded = load_config_from_file(str(path))  # accelerate's own parser accepts it
    assert loaded.num_processes == config.num_processes and loaded.main_process_port == 29512
    return yaml.safe_load(text)


def test_ddp_config(tmp_path: Path) -> None:
    config = generated(tmp_path, distributed="ddp", num_processes=4)
    assert config["distributed_type"] == "MULTI_GPU" and config["num_processes"] == 4
    assert config["mixed_precision"] == "bf16" and config["use_cpu"] is False
    assert "fsdp_config" not in config and "deepspeed_config" not in config


def test_fsdp_config(tmp_path: Path) -> None:
    config = generated(tmp_path, distributed="fsdp", num_processes=8, gradient_checkpointing=True)
    assert config["distributed_type"] == "FSDP"
    fsdp = config["fsdp_config"]
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_reshard_after_forward"] is True and fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert fsdp["fsdp_activation_checkpointing"] is True  # FSDP checkpoints, not the model


def test_deepspeed_zero2_config(tmp_path: Path) -> None:
    config = generated(tmp_path, distributed="deepspeed_zero2", num_processes=8, grad_accum=4)
    assert config["distributed_type"] == "DEEPSPEED"
    assert config["deepspeed_config"] == {
        "zero_stage": 2,
        "gradient_accumulation_steps": 4,  # must equal the trainer's
        "gradient_clipping": 1.0,
        "offload_optimizer_device": "none",
        "offload_param_device": "none",
        "zero3_init_flag": False,
    }


def test_fp32_on_cpu_is_no_mixed_precision() -> None:
    config = accelerate_config(TrainConfig(distributed="ddp", num_processes=2), "fp32", use_cpu=True, port=1)
    assert config["mixed_precision"] == "no" and config["use_cpu"] is True


# ---------------------------------------------------------------- the launch path's errors


def test_a_failing_worker_is_one_line_naming_the_log(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "print('step 1 loss 2.3')\n"
        "print('Traceback (most recent call last):', file=sys.stderr)\n"
        "print('  File \"x.py\", line 1', file=sys.stderr)\n"
        "print('[rank1]: RuntimeError: Gloo connectFullMesh failed\\n', file=sys.stderr)\n"
        "print('torch.distributed.elastic.multiprocessing.errors.ChildFailedError: boom', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    log_path = tmp_path / "train" / "train.log"
    with pytest.raises(TrainError) as caught:
        run_logged([sys.executable, "-c", script], log_path, "ddp training with 2 processes")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("ddp training with 2 processes failed (exit status 3)")
    assert "RuntimeError: Gloo connectFullMesh failed" in message and str(log_path) in message
    assert "step 1 loss 2.3" in log_path.read_text()  # everything the workers printed is kept


def test_a_launcher_killed_by_a_signal_is_named_and_restarted_once(tmp_path: Path) -> None:
    from lai.train.launch import run_restarting_once

    log_path = tmp_path / "train.log"
    marker = tmp_path / "crashed"
    # Dies of SIGKILL the first time only: the restart finishes the job.
    once = (
        "import os, pathlib, signal\n"
        f"m = pathlib.Path({str(marker)!r})\n"
        "if not m.exists():\n    m.touch(); print('loading shards', flush=True); os.kill(os.getpid(), signal.SIGKILL)\n"
        "print('trained')\n"
    )
    run_restarting_once([sys.executable, "-c", once], log_path, "ddp training")
    assert marker.exists() and "trained" in log_path.read_text()
    # Dies every time: one line with the signal in words and the log, after exactly one restart.
    always = "import os, signal\nprint('step', flush=True)\nos.kill(os.getpid(), signal.SIGSEGV)\n"
    with pytest.raises(TrainError) as caught:
        run_restarting_once([sys.executable, "-c", always], log_path, "ddp training")
    message = str(caught.value)
    assert message.startswith("ddp training failed (killed by SIGSEGV (segmentation fault))")
    assert message.endswith("it crashed again after a restart") and str(log_path) in message and "\n" not in message
    # A Python error (an exit status) is not retried: it would only repeat.
    starts = tmp_path / "starts"
    failing = f"open({str(starts)!r}, 'a').write('x')\nraise SystemExit(3)\n"
    with pytest.raises(TrainError, match=r"failed \(exit status 3\)"):
        run_restarting_once([sys.executable, "-c", failing], log_path, "ddp training")
    assert starts.read_text() == "x"


def test_stopping_lai_stops_the_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import time

    import lai.train.launch as launch

    pid_file = tmp_path / "pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); print('up', flush=True); time.sleep(120)"

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt  # what Ctrl-C (or the CLI's SIGTERM handler) does mid-training

    monkeypatch.setattr(launch.log, "debug", interrupted)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_logged([sys.executable, "-c", script], tmp_path / "train.log", "test")
    assert time.monotonic() - started < 30
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_a_worker_lai_error_wins_over_the_wrappers() -> None:
    lines = [
        f"{ERROR_MARK}could not load model /x: no such folder (check target.model)",
        "Traceback (most recent call last):",
        "subprocess.CalledProcessError: Command '['python', '-m', 'lai.train.launch']' returned non-zero exit status 1.",
    ]
    assert failure_cause(lines) == "could not load model /x: no such folder (check target.model)"
    assert failure_cause(["no exception here"]) == ""
    assert len(failure_cause([f"ValueError: {'x' * 1000}"])) == 300


def test_a_clean_run_passes(tmp_path: Path) -> None:
    run_logged([sys.executable, "-c", "print('ok')"], tmp_path / "train.log", "test")
    assert (tmp_path / "train.log").read_text() == "ok\n"


def test_worker_entry_point_usage() -> None:
    from lai.train.sft import main

    assert main([]) == 2


# ---------------------------------------------------------------- packing (tiny random Llama)

# torch and transformers are imported by the tests that use them (the tests above need
# neither, and run on a base install); the tiny model's tests skip without them.


def test_packed_rows_collator_layout() -> None:
    pytest.importorskip("torch")
    from lai.train.packing import PackedRowsCollator

    batch = PackedRowsCollator(pad_token_id=0)(
        [
            {"input_ids": [5, 6, 7, 8, 9], "labels": [-100, 6, 7, -100, 9], "seq_lengths": [3, 2]},
            {"input_ids": [1, 2, 3], "labels": [1, 2, 3], "seq_lengths": [3]},
        ]
    )
    assert "attention_mask" not in batch  # a mask would switch the packed-sequence detection off
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 0, 0]]
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [1, 2, 3, 0, 0]]
    # first token of every example never learns from its neighbour; padding never learns
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9], [-100, 2, 3, -100, -100]]


def tokenized(model_dir: Path) -> tuple:
    """A TRL trainer (no packing) over two conversational rows, and the two tokenized rows."""
    import transformers
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    rows = [
        {"prompt": [{"role": "user", "content": "What is 3 + 3?"}],
         "completion": [{"role": "assistant", "content": "3 + 3 = 6.\nThe answer is 6."}]},
        {"prompt": [{"role": "user", "content": "A longer question about apples and pears: how many in all?"}],
         "completion": [{"role": "assistant", "content": "Seven apples and five pears make 12.\nThe answer is 12."}]},
    ]  # fmt: skip
    args = SFTConfig(
        output_dir="/tmp/unused", report_to="none", use_cpu=True, max_length=256, completion_only_loss=True,
        activation_checkpointing=False, bf16=False,  # TRL defaults to bf16, even on a CPU
    )  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    return trainer, model, trainer.train_dataset[0], trainer.train_dataset[1]


def packed_after(first: dict, second: dict, learn_first: bool = False) -> dict:
    """``first`` then ``second`` in one pack; only ``second`` learns unless ``learn_first``."""
    first_labels = first["labels"] if learn_first else [-100] * len(first["input_ids"])
    return {
        "input_ids": first["input_ids"] + second["input_ids"],
        "labels": first_labels + second["labels"],
        "seq_lengths": [len(first["input_ids"]), len(second["input_ids"])],
    }


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_example_gets_its_logits_alone(tiny_model_dir: Path, attention: str) -> None:
    import torch

    from lai.train.packing import PackedRowsCollator

    _, model, short, long = tokenized(tiny_model_dir)
    model.set_attn_implementation(attention)
    model.train()  # dropout is 0 in Llama; train mode is how the trainer runs it
    collate = PackedRowsCollator(pad_token_id=0)
    packed = collate([packed_after(long, short)])
    alone = collate([{"input_ids": short["input_ids"], "labels": short["labels"]}])
    n, offset = len(short["input_ids"]), len(long["input_ids"])
    with torch.no_grad():
        together = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits
        single = model(input_ids=alone["input_ids"], position_ids=alone["position_ids"], use_cache=False).logits
        # The pitfall the trainer avoids: with a KV cache (use_cache defaults to True in
        # the config) transformers skips the packed-sequence mask, and examples mix.
        leaky = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=True).logits
    torch.testing.assert_close(together[0, offset : offset + n], single[0, :n], atol=1e-5, rtol=1e-5)
    assert (leaky[0, offset : offset + n] - single[0, :n]).abs().max() > 1e-3


def test_packed_loss_through_trls_compute_loss_equals_the_loss_alone(tiny_model_dir: Path) -> None:
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from lai.train.packing import PackedRowsCollator

    trainer, model, short, long = tokenized(tiny_model_dir)
    model.train()
    with torch.no_grad():
        alone = trainer.compute_loss(model, dict(trainer.data_collator([short])))
        rows = trainer.compute_loss(model, dict(PackedRowsCollator(pad_token_id=0)([packed_after(long, short)])))
        # TRL's own padding-free layout (every pack of the batch in one row) isolates too
        flat_collator = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
        flat = trainer.compute_loss(model, dict(flat_collator([packed_after(long, short)])))
        # a negative control: an all-ones attention mask disables the boundaries
        broken = dict(PackedRowsCollator(pad_token_id=0)([packed_after(long, short)]))
        broken["attention_mask"] = torch.ones_like(broken["input_ids"])
        leaky = trainer.compute_loss(model, broken)
    assert rows.item() == pytest.approx(alone.item(), abs=1e-5)
    assert flat.item() == pytest.approx(alone.item(), abs=1e-5)
    assert abs(leaky.item() - alone.item()) > 1e-4


def test_isolation_check_catches_a_leaking_layout(tiny_model_dir: Path) -> None:
    import torch

    from lai.train.packing import PackedRowsCollator, check_isolation

    _, model, _, _ = tokenized(tiny_model_dir)
    assert check_isolation(model, PackedRowsCollator(pad_token_id=0)) < 1e-4

    def leaking(examples: list[dict]) -> dict:
        batch = PackedRowsCollator(pad_token_id=0)(examples)
        batch["attention_mask"] = torch.ones_like(batch["input_ids"])
        return batch

    with pytest.raises(ConfigError, match="packed examples attend to each other"):
        check_isolation(model, leaking, tolerance=1e-6)


def examples(n: int = 12) -> list[TrainExample]:
    return [
        TrainExample(
            [{"role": "user", "content": f"What is {i} + {i}?" + " Explain briefly." * (i % 4)}],
            f"{i} + {i} = {2 * i}.\nThe answer is {2 * i}.",
        )
        for i in range(n)
    ]


def test_packed_training_spends_no_compute_on_padding(tiny_model_dir: Path, tmp_path: Path) -> None:
    from lai.train.sft import SFTTrainerBackend

    config = TrainConfig(
        method="lora", max_steps=2, batch_size=2, max_length=128, learning_rate=5e-3,
        gradient_checkpointing=False, packing=True,
    )  # fmt: skip
    summary = SFTTrainerBackend(config, seed=0).train(str(tiny_model_dir), examples(), tmp_path)
    assert summary["packing"] and summary["precision"] == "fp32" and summary["steps"] == 2
    assert summary["tokens"] > 0 and summary["padding_fraction"] < 0.1
    assert summary["sequences"] > 2 * 2  # rows hold several examples each
    saved = json.loads((tmp_path / "train_summary.json").read_text())
    assert saved["model"] == summary["model"] and (Path(summary["model"]) / "config.json").exists()
    assert not (tmp_path / "model.partial").exists()


# ---------------------------------------------------------------- real data parallel (2 processes)


def weights(folder: Path) -> dict:
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(folder).state_dict()


@pytest.mark.slow
def test_ddp_on_cpu_trains_with_two_real_processes(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch

    from lai.train.sft import SFTTrainerBackend

    config = TrainConfig(
        method="lora", max_steps=2, batch_size=2, learning_rate=5e-3, gradient_checkpointing=False,
        distributed="ddp", num_processes=2,
    )  # fmt: skip
    data = examples(8)
    summary = SFTTrainerBackend(config, seed=0).train(str(tiny_model_dir), data, tmp_path)
    assert summary["steps"] == 2 and summary["num_processes"] == 2
    assert summary["accelerate_mode"] == "MULTI_CPU"  # gloo process group
    assert summary["effective_batch_size"] == 4
    generated_config = yaml.safe_load((tmp_path / "accelerate_config.yaml").read_text())
    assert generated_config["num_processes"] == 2 and generated_config["use_cpu"] is True

    # each rank saw its own half of the data: global batch = 2 x per-device batch
    ranks = [json.loads((tmp_path / "ranks" / f"rank_{r}.json").read_text()) for r in (0, 1)]
    assert [r["sequences"] for r in ranks] == [2 * 2, 2 * 2]  # steps x per-device batch
    assert not set(ranks[0]["digests"]) & set(ranks[1]["digests"])
    assert summary["sequences"] == 8

    # the merged model exists, reloads and differs from the base; the adapter is beside it
    model = Path(summary["model"])
    assert model == tmp_path / "model" and not (tmp_path / "model.partial").exists()
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    before, after = weights(tiny_model_dir), weights(model)
    assert any(not torch.equal(after[name], before[name]) for name in before)
    assert (tmp_path / "log_history.jsonl").read_text().count('"loss"') == 2
    assert (tmp_path / "train.log").exists()


@pytest.mark.slow
def test_ddp_worker_failure_is_one_line_naming_the_log(tmp_path: Path) -> None:
    from lai.errors import ModelError
    from lai.train.sft import SFTTrainerBackend

    config = TrainConfig(max_steps=1, distributed="ddp", num_processes=2)
    # A missing model fails in the parent, before any worker starts...
    with pytest.raises(ModelError, match="model path does not exist"):
        SFTTrainerBackend(config).train(str(tmp_path / "no-such-model"), examples(2), tmp_path / "train")
    # ...a model folder without tokenizer or weights fails in the workers.
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(TrainError) as caught:
        SFTTrainerBackend(config).train(str(broken), examples(2), tmp_path / "train")
    message = str(caught.value)
    log_path = tmp_path / "train" / "train.log"
    assert "\n" not in message and message.startswith("ddp training with 2 processes failed (exit status")
    assert "ValueError: Couldn't instantiate the backend tokenizer" in message
    assert message.endswith(f"full log: {log_path}") and "Traceback" in log_path.read_text()
    assert not (tmp_path / "train" / "model").exists()
