"""Supervised fine-tuning with TRL's SFTTrainer: LoRA (PEFT) or full fine-tune.

Examples go in as conversational prompt/completion pairs, so TRL applies the model's
chat template and, with ``completion_only_loss``, computes the loss on the answer
tokens only. Without packing, batches are padded dynamically (the collator pads to the
longest row), which keeps a 135M model's CPU step at about half the memory of fixed
512-token padding. With ``train.packing`` whole examples are packed into rows of
``max_length`` tokens (TRL's best-fit decreasing) and kept apart by ``position_ids``
(see :mod:`lai.train.packing`).

Precision (``train.precision``): ``auto`` is bf16 on a GPU that supports it and fp32
otherwise. LoRA loads the frozen base in half precision; a full fine-tune loads fp32
master weights and computes under autocast (pure-bf16 weights would round away most
updates at the paper's learning rate of 5e-6), then saves in half precision.

``train.distributed`` other than ``none`` runs the same code in ``num_processes`` workers
under ``accelerate launch`` (:mod:`lai.train.launch` starts them; each runs :func:`main`).

LoRA adapters are merged into the weights before saving, so every iteration's model is
a plain HF folder the next iteration (or any other tool) loads directly; the adapter is
saved beside it. A killed training run restarts from scratch on resume; the model
folder appears only when complete (written under a temporary name, then renamed, by one
process).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from lai.config import TrainConfig
from lai.errors import LaiError
from lai.processes import usable_cpus
from lai.progress import Progress, note
from lai.train.base import SUMMARY_FILE, Trainer, TrainExample
from lai.train.launch import ERROR_MARK, launch_distributed, one_line

log = logging.getLogger(__name__)

def _checkpointing(config_class: Any, enabled: bool) -> dict[str, bool]:
    """transformers 5.x renamed gradient_checkpointing to activation_checkpointing; use what exists."""
    import inspect

    if "activation_checkpointing" in inspect.signature(config_class).parameters:
        return {"activation_checkpointing": enabled}
    return {"gradient_checkpointing": enabled}


class SFTTrainerBackend(Trainer):
    def train(self, model: str, examples: list[TrainExample], out_dir: Path) -> dict[str, Any]:
        from lai.train.accelerate_configs import check_runtime

        check_runtime(self.config)
        if self.config.distributed != "none":
            # The workers are other processes: a spinner here, their steps in log_history.jsonl.
            spinner = self.progress.start(f"{self.label} ({self.config.distributed}, accelerate launch)", None)
            try:
                return launch_distributed(self.config, self.seed, model, examples, out_dir)
            finally:
                spinner.close()
        return run_training(self.config, self.seed, model, examples, out_dir, progress=self.progress, label=self.label)


def step_progress(progress: Progress, label: str) -> Any:
    """A transformers callback that moves a bar per optimizer step and shows the last loss."""
    from transformers import TrainerCallback

    class StepProgress(TrainerCallback):  # type: ignore[misc]
        bar: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.bar = progress.start(label, int(state.max_steps) or None)
            self.bar.advance(0)  # nothing found on disk: a killed training restarts from scratch

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.advance(1)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            if self.bar is not None and logs and "loss" in logs:
                note(self.bar, f"(loss {float(logs['loss']):.3f})")

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.close()

    return StepProgress()


def _dtypes(cfg: TrainConfig, precision: str) -> tuple[Any, Any]:
    """(dtype to load the model in, dtype to save the trained model in)."""
    import torch

    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if half is None:
        return torch.float32, torch.float32
    # FSDP and DeepSpeed keep fp32 shards and cast for compute themselves.
    frozen_base_in_half = cfg.method == "lora" and cfg.distributed in ("none", "ddp")
    return (half if frozen_base_in_half else torch.float32), half


def run_training(
    cfg: TrainConfig,
    seed: int,
    model: str,
    examples: list[TrainExample],
    out_dir: Path,
    launched: bool = False,
    source: Any = None,
    progress: Progress | None = None,
    label: str = "train",
) -> dict[str, Any]:
    """Train in this process (``launched``: as one of accelerate's workers) and save.

    ``source``: ``model`` already resolved (the launcher resolves it once for all workers).

    Every process trains; the model folder, ``log_history.jsonl`` and the summary are
    written by the main process only. Returns the summary (on the main process).
    """
    import datasets
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from lai.locate import locate_model
    from lai.targets.hf import load_model_and_tokenizer
    from lai.train.accelerate_configs import cuda_devices, resolve_precision
    from lai.train.packing import (
        FLASH_IMPLEMENTATIONS,
        PackedRowsCollator,
        TokenCounter,
        check_isolation,
    )

    datasets.disable_progress_bars()  # lai draws its own progress; TRL's would interleave
    # TRL/PEFT still call transformers' deprecated is_gradient_checkpointing; nothing a
    # user can act on, and it printed in the middle of every run's progress bars.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    # CPU threads: OMP_NUM_THREADS when set (lai's launcher sets it to share the cores out
    # between CPU workers; torchrun sets it too), else every core.
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS") or 0) or usable_cpus()))
    on_gpu = cuda_devices() > 0
    precision = resolve_precision(cfg.precision, on_gpu)
    load_dtype, save_dtype = _dtypes(cfg, precision)
    # Launched workers load on the CPU; the Trainer (DDP) or FSDP/DeepSpeed place the model.
    device = "cuda" if on_gpu and not launched else "cpu"
    source = source or locate_model(model)
    base, tokenizer = load_model_and_tokenizer(source, load_dtype, device)
    if cfg.attn_implementation != "auto":
        base.set_attn_implementation(cfg.attn_implementation)
    flash = base.config._attn_implementation in FLASH_IMPLEMENTATIONS
    tokenizer.padding_side = "right"  # training pads on the right; generation on the left
    base.config.use_cache = False  # a KV cache in the forward disables the packed-sequence mask
    base.train()

    dataset = Dataset.from_list(
        [{"prompt": e.prompt, "completion": [{"role": "assistant", "content": e.completion}]} for e in examples]
    )
    work = out_dir / "checkpoints"
    args = SFTConfig(
        output_dir=str(work),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps,
        max_length=cfg.max_length,
        completion_only_loss=True,
        packing=cfg.packing,
        packing_strategy="bfd",
        # FSDP checkpoints activations itself (fsdp_activation_checkpointing in the accelerate config)
        **_checkpointing(SFTConfig, cfg.gradient_checkpointing and cfg.distributed != "fsdp"),
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not on_gpu,
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    peft_config = None
    if cfg.method == "lora":
        peft_config = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules,
            task_type="CAUSAL_LM",
        )
    trainer = SFTTrainer(
        model=base, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
    )
    trainer.remove_callback(PrinterCallback)  # losses go to log_history.jsonl, not stdout
    if progress is not None and not launched:
        trainer.add_callback(step_progress(progress, label))
    if cfg.packing and not flash:
        # TRL's padding-free collator flattens the whole batch into one row: right for
        # flash-attn's varlen kernels, (batch x max_length)^2 masked attention for sdpa.
        trainer.data_collator = PackedRowsCollator(pad_token_id=tokenizer.pad_token_id)
    counter = TokenCounter.attach(trainer)
    if cfg.packing:
        isolation = check_isolation(trainer.model, counter.collator)
        log.debug("packing isolation check: relative logit difference %.2g", isolation)

    started, cpu_started = time.monotonic(), time.process_time()
    result = trainer.train()
    seconds, cpu_seconds = time.monotonic() - started, time.process_time() - cpu_started
    rank = trainer.args.process_index
    counter.write(out_dir / "ranks" / f"rank_{rank}.json", rank)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)

    partial = out_dir / "model.partial"
    final = out_dir / "model"
    if launched:
        # save_model gathers FSDP/DeepSpeed shards (a collective: every rank calls it);
        # the main process then merges or casts and renames the folder into place.
        gathered = work / "final"
        trainer.save_model(str(gathered))
        trainer.accelerator.wait_for_everyone()
        if not trainer.is_world_process_zero():
            return {}
        shutil.rmtree(partial, ignore_errors=True)
        trained = _reload_trained(cfg, source, gathered, out_dir, save_dtype)
    else:
        shutil.rmtree(partial, ignore_errors=True)
        trained = trainer.model
        if cfg.method == "lora":
            trained.save_pretrained(out_dir / "adapter")
            trained = trained.merge_and_unload()
        trained = trained.to(save_dtype)
    trained.config.use_cache = True
    trained.save_pretrained(partial)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(partial)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    shutil.rmtree(work, ignore_errors=True)

    history = trainer.state.log_history
    with open(out_dir / "log_history.jsonl", "w", encoding="utf-8") as handle:
        for row in history:
            handle.write(json.dumps(row) + "\n")
    losses = [row["loss"] for row in history if "loss" in row]
    tokens = _token_totals(out_dir / "ranks", trainer.args.world_size)
    summary = {
        "model": str(final),
        "examples": len(examples),
        "steps": int(result.global_step),
        "trained": True,
        "method": cfg.method,
        "precision": precision,
        "packing": cfg.packing,
        "attn_implementation": base.config._attn_implementation,
        "distributed": cfg.distributed,
        "accelerate_mode": str(trainer.accelerator.distributed_type).rsplit(".", 1)[-1],
        "num_processes": trainer.args.world_size,
        "effective_batch_size": cfg.batch_size * cfg.grad_accum * trainer.args.world_size,
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),  # this process, all its threads (rank 0)
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "trainable_parameters": trainable,
        **tokens,
        "tokens_per_second": round(tokens["tokens"] / seconds, 1) if seconds > 0 else None,
    }
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    return summary


def _reload_trained(cfg: TrainConfig, source: Any, gathered: Path, out_dir: Path, dtype: Any) -> Any:
    """Main process, after a launched run: the saved adapter merged into a fresh base, or the full model."""
    from lai.locate import ModelSource
    from lai.targets.hf import load_model_and_tokenizer

    if cfg.method == "lora":
        from peft import PeftModel

        adapter = out_dir / "adapter"
        shutil.rmtree(adapter, ignore_errors=True)
        shutil.copytree(gathered, adapter)
        base, _ = load_model_and_tokenizer(source, dtype, "cpu")
        return PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    model, _ = load_model_and_tokenizer(ModelSource(str(gathered)), dtype, "cpu")
    return model


def _token_totals(ranks_dir: Path, world_size: int) -> dict[str, Any]:
    from lai.train.packing import merge_rank_stats

    rows = [json.loads((ranks_dir / f"rank_{r}.json").read_text()) for r in range(world_size)]
    return merge_rank_stats(rows)


def main(argv: list[str] | None = None) -> int:
    """One worker: ``python -m lai.train.sft launch_spec.json`` (started by :mod:`lai.train.launch`)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m lai.train.sft LAUNCH_SPEC.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    spec = json.loads(Path(argv[0]).read_text())
    cfg = TrainConfig.model_validate(spec["config"])
    examples = [TrainExample(**row) for row in spec["examples"]]
    from lai.locate import ModelSource

    source = ModelSource(**spec["source"])
    try:
        run_training(cfg, int(spec["seed"]), spec["model"], examples, Path(spec["out_dir"]), True, source)
    except LaiError as error:
        print(f"{ERROR_MARK}{one_line(str(error))}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
