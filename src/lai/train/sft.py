"""Supervised fine-tuning with TRL's SFTTrainer: LoRA (PEFT) or full fine-tune.

Examples go in as conversational prompt/completion pairs, so TRL applies the model's
chat template and, with ``completion_only_loss``, computes the loss on the answer
tokens only. Batches are padded dynamically (the collator pads to the longest row), which
keeps a 135M model's CPU step at about half the memory of fixed 512-token padding.

LoRA adapters are merged into the weights before saving, so every iteration's model is
a plain HF folder the next iteration (or any other tool) loads directly; the adapter is
saved beside it. A killed training run restarts from scratch on resume; the model
folder appears only when complete (written under a temporary name, then renamed).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from lai.train.base import Trainer, TrainExample

log = logging.getLogger(__name__)


def _checkpointing(config_class: Any, enabled: bool) -> dict[str, bool]:
    """transformers 5.x renamed gradient_checkpointing to activation_checkpointing; use what exists."""
    import inspect

    if "activation_checkpointing" in inspect.signature(config_class).parameters:
        return {"activation_checkpointing": enabled}
    return {"gradient_checkpointing": enabled}


class SFTTrainerBackend(Trainer):
    def train(self, model: str, examples: list[TrainExample], out_dir: Path) -> dict[str, Any]:
        import datasets
        import torch
        from datasets import Dataset
        from peft import LoraConfig
        from transformers.trainer_callback import PrinterCallback
        from trl import SFTConfig, SFTTrainer

        from lai.models.hf import load_model_and_tokenizer, pick_device
        from lai.models.resolve import resolve_model

        cfg = self.config
        datasets.disable_progress_bars()  # lai draws its own progress; TRL's would interleave
        torch.set_num_threads(os.cpu_count() or 1)
        device = pick_device("auto")
        on_gpu = device.startswith("cuda")
        dtype = torch.bfloat16 if on_gpu else torch.float32
        base, tokenizer = load_model_and_tokenizer(resolve_model(model), dtype, device)
        tokenizer.padding_side = "right"  # training pads on the right; generation on the left
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
            **_checkpointing(SFTConfig, cfg.gradient_checkpointing),
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=self.seed,
            data_seed=self.seed,
            bf16=on_gpu,
            use_cpu=not on_gpu,
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
        started = time.monotonic()
        result = trainer.train()
        seconds = time.monotonic() - started
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)

        trained = trainer.model
        partial = out_dir / "model.partial"
        final = out_dir / "model"
        shutil.rmtree(partial, ignore_errors=True)
        if cfg.method == "lora":
            trained.save_pretrained(out_dir / "adapter")
            trained = trained.merge_and_unload()
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
        return {
            "model": str(final),
            "examples": len(examples),
            "steps": int(result.global_step),
            "trained": True,
            "method": cfg.method,
            "train_seconds": round(seconds, 1),
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "trainable_parameters": trainable,
        }
