"""LoRA training throughput: lai's trainer against a plain TRL SFTTrainer script.

Same model (the embedded SmolLM2-135M-Instruct, fp32 on CPU), same 64 GSM8K training
rows (chosen to spread over the length range: every 8th of the first 512 rows sorted by
length), same settings (LoRA r=16 all-linear, lr 2e-4 cosine, batch 4, max length 512,
1 epoch, gradient checkpointing, completion-only loss, seed 0, fp32 unless named bf16).
Variants:

* ``trl``          a plain SFTTrainer script, default dynamic padding;
* ``trl_packed``   the same script with ``packing=True`` (TRL's bfd + padding-free: all
                   packs of a batch flattened into one row);
* ``lai``          ``lai.train.sft.SFTTrainerBackend`` (what ``lai run``'s train stage calls);
* ``lai_packed``   the same with ``train.packing: true`` (bfd packs, one per row);
* ``trl_bf16``     the TRL script with TRL's own default, bf16 autocast (also on a CPU);
* ``lai_packed_bf16`` lai with packing and ``train.precision: bf16``.

Every variant runs at the same time as the baseline (``trl``), each in its own process
with one torch thread and ``OMP_WAIT_POLICY=PASSIVE``, so both sides of a pair see the
same load from whatever else the shared machine runs; throughput is tokens per CPU
second of ``trainer.train()`` (time in ``trainer.train()`` only, on both sides). Tokens
are the examples' own tokens (prompt + answer, what the model must read); "slots" are
the positions the model computes (``input_ids.numel()``), so ``1 - tokens/slots`` is the
share of compute spent on padding. lai's whole call (load, train, merge, save) is in the
per-run rows as ``whole_call_seconds``.

Usage:  .venv/bin/python bench/train_throughput.py [--variants lai,lai_packed,trl_packed] [--repeats 1]
Writes: bench/results/train_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
SETTINGS = {
    "rows": 64,
    "batch_size": 4,
    "grad_accum": 1,
    "max_length": 512,
    "learning_rate": 2e-4,
    "epochs": 1,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "gradient_checkpointing": True,
    "seed": 0,
}


def examples() -> list[Any]:
    from lai.tasks import get_task
    from lai.train.base import TrainExample

    task = get_task("gsm8k")
    rows = task.load("train", path=DATA, limit=512)
    rows = sorted(rows, key=lambda s: len(s.question) + len(str(s.meta.get("solution", ""))))
    picked = rows[:: len(rows) // SETTINGS["rows"]][: SETTINGS["rows"]]
    out = []
    for sample in picked:
        question, solution, answer = task.reference_sample(sample)
        out.append(TrainExample(task.prompt(task.training_sample(question)), task.training_target(solution, answer)))
    return out


def run_trl(packed: bool, precision: str) -> dict[str, Any]:
    """The baseline: SFTTrainer as its documentation shows it, nothing from lai but the data."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from lai.config import EMBEDDED_MODEL
    from lai.locate import locate_model
    from lai.train.packing import TokenCounter

    folder = locate_model(EMBEDDED_MODEL).location  # the converted HF folder
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    dataset = Dataset.from_list(
        [{"prompt": e.prompt, "completion": [{"role": "assistant", "content": e.completion}]} for e in examples()]
    )
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(
            output_dir=tmp,
            num_train_epochs=SETTINGS["epochs"],
            per_device_train_batch_size=SETTINGS["batch_size"],
            gradient_accumulation_steps=SETTINGS["grad_accum"],
            learning_rate=SETTINGS["learning_rate"],
            lr_scheduler_type="cosine",
            max_length=SETTINGS["max_length"],
            activation_checkpointing=SETTINGS["gradient_checkpointing"],
            packing=packed,
            bf16=precision == "bf16",  # TRL's own default is bf16=True, even on a CPU
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=SETTINGS["seed"],
            use_cpu=True,
            disable_tqdm=True,
        )
        peft_config = LoraConfig(
            r=SETTINGS["lora_r"], lora_alpha=SETTINGS["lora_alpha"], lora_dropout=SETTINGS["lora_dropout"],
            target_modules="all-linear", task_type="CAUSAL_LM",
        )  # fmt: skip
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
        )
        counter = TokenCounter.attach(trainer)  # counts only; the batches are TRL's
        started, cpu_started = time.monotonic(), time.process_time()
        result = trainer.train()
        seconds, cpu_seconds = time.monotonic() - started, time.process_time() - cpu_started
    stats = counter.stats()
    return {
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
        "steps": result.global_step,
        "tokens": stats["tokens"],
        "slots": stats["slots"],
        "loss_tokens": stats["loss_tokens"],
        "last_loss": next((r["loss"] for r in reversed(trainer.state.log_history) if "loss" in r), None),
    }


def run_lai(packed: bool, precision: str) -> dict[str, Any]:
    from lai.config import EMBEDDED_MODEL, LoraConfig, TrainConfig
    from lai.train.sft import SFTTrainerBackend

    config = TrainConfig(
        method="lora",
        epochs=SETTINGS["epochs"],
        learning_rate=SETTINGS["learning_rate"],
        batch_size=SETTINGS["batch_size"],
        grad_accum=SETTINGS["grad_accum"],
        max_length=SETTINGS["max_length"],
        lr_scheduler="cosine",
        gradient_checkpointing=SETTINGS["gradient_checkpointing"],
        packing=packed,
        precision=precision,
        lora=LoraConfig(r=SETTINGS["lora_r"], alpha=SETTINGS["lora_alpha"], dropout=SETTINGS["lora_dropout"]),
    )
    data = examples()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        summary = SFTTrainerBackend(config, seed=SETTINGS["seed"]).train(EMBEDDED_MODEL, data, Path(tmp))
        whole = time.monotonic() - started
    return {
        "train_seconds": summary["train_seconds"],
        "train_cpu_seconds": summary["train_cpu_seconds"],
        "whole_call_seconds": whole,
        "steps": summary["steps"],
        "tokens": summary["tokens"],
        "slots": summary["slots"],
        "loss_tokens": summary["loss_tokens"],
        "last_loss": summary["last_loss"],
    }


VARIANTS = {
    "trl": lambda: run_trl(False, "fp32"),
    "trl_packed": lambda: run_trl(True, "fp32"),
    "lai": lambda: run_lai(False, "fp32"),
    "lai_packed": lambda: run_lai(True, "fp32"),
    "trl_bf16": lambda: run_trl(False, "bf16"),
    "lai_packed_bf16": lambda: run_lai(True, "bf16"),
}


def one(variant: str, out: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    row = VARIANTS[variant]()
    row["tokens_per_second"] = row["tokens"] / row["train_seconds"]
    row["tokens_per_cpu_second"] = row["tokens"] / row["train_cpu_seconds"]
    row["padding_fraction"] = 1 - row["tokens"] / row["slots"]
    out.write_text(json.dumps(row))


def launch(variant: str, out: Path, threads: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        # waiting OpenMP threads sleep instead of spinning: CPU seconds count work only
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    return subprocess.Popen([sys.executable, __file__, "--one", variant, "--one-out", str(out)], env=env)


def run_together(variants: list[str], threads: int) -> list[dict[str, Any]]:
    """Run the variants at the same time (each in its own process); their rows, in order."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"{i}.json" for i in range(len(variants))]
        started = time.monotonic()
        processes = [launch(v, out, threads) for v, out in zip(variants, outs, strict=True)]
        if any(p.wait() != 0 for p in processes):
            raise SystemExit(f"a variant failed: {variants}")
        rows = [json.loads(out.read_text()) for out in outs]
    for row in rows:
        row["process_seconds"] = time.monotonic() - started
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants", default="lai,lai_packed,trl_packed", help=f"compared with --baseline; some of {','.join(VARIANTS)}"
    )
    parser.add_argument("--baseline", default="trl")
    parser.add_argument("--repeats", type=int, default=1, help="pairs per variant")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per process (the pair shares the machine)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_throughput.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--one-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one, args.one_out)
        return
    pairs: dict[str, list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        for variant in args.variants.split(","):
            base_row, row = run_together([args.baseline, variant], args.threads)
            ratio = row["tokens_per_cpu_second"] / base_row["tokens_per_cpu_second"]
            pairs.setdefault(variant, []).append({"baseline": base_row, "variant": row, "ratio": ratio})
            print(
                f"pair {repeat + 1}: {variant:15s} {row['tokens_per_cpu_second']:6.1f} tok/cpu-s "
                f"(padding {row['padding_fraction']:.1%}, {row['steps']} steps) vs {args.baseline} "
                f"{base_row['tokens_per_cpu_second']:6.1f} (padding {base_row['padding_fraction']:.1%}, "
                f"{base_row['steps']} steps): x{ratio:.3f}",
                flush=True,
            )
    summary: dict[str, Any] = {}
    for variant, rows in pairs.items():
        summary[variant] = {
            f"vs_{args.baseline}_median": round(statistics.median(r["ratio"] for r in rows), 3),
            f"vs_{args.baseline}_runs": [round(r["ratio"], 3) for r in rows],
            "tokens_per_cpu_second": [round(r["variant"]["tokens_per_cpu_second"], 1) for r in rows],
            f"{args.baseline}_tokens_per_cpu_second": [
                round(r["baseline"]["tokens_per_cpu_second"], 1) for r in rows
            ],
            "padding_fraction": round(rows[0]["variant"]["padding_fraction"], 4),
            f"{args.baseline}_padding_fraction": round(rows[0]["baseline"]["padding_fraction"], 4),
            "steps": rows[0]["variant"]["steps"],
            "tokens": rows[0]["variant"]["tokens"],
            "slots": rows[0]["variant"]["slots"],
        }
    result = {
        "settings": {**SETTINGS, "threads_per_process": args.threads},
        "model": "embedded:smollm2-135m-instruct (fp32, CPU)",
        "machine": f"{os.cpu_count()} cores, CPU only, shared with other jobs",
        "method": f"each variant runs at the same time as {args.baseline} (one process each, "
        f"{args.threads} thread(s), OMP_WAIT_POLICY=PASSIVE); throughput = tokens / CPU seconds of "
        "trainer.train(), so both sides of a pair see the same machine load",
        "date": time.strftime("%Y-%m-%d"),
        "summary": summary,
        "pairs": pairs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
