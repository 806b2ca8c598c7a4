"""Precision, hardware checks, and the accelerate config file for each distributed mode.

``train.distributed`` picks one of:

* ``ddp``: plain data parallel (``torch.distributed.run`` under ``accelerate launch``;
  NCCL on GPUs, gloo on CPU). Every process holds the whole model.
* ``fsdp``: FSDP2, full sharding of parameters, gradients and optimizer state, wrapped
  per decoder layer (the model's ``_no_split_modules``). GPUs only: on CPU accelerate
  (1.15) keeps ``MULTI_CPU`` and silently trains plain data parallel, so lai refuses. Gradient checkpointing becomes
  FSDP's activation checkpointing; the final weights are gathered to rank 0
  (``FULL_STATE_DICT``) for saving.
* ``deepspeed_zero2``: DeepSpeed ZeRO stage 2 (optimizer state and gradients sharded,
  parameters replicated). Needs ``pip install deepspeed`` and GPUs.

The generated YAML is what ``accelerate config`` would write; it lands in the run's
train folder (``accelerate_config.yaml``) so a run can be relaunched by hand.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from lai.config import TrainConfig
from lai.errors import ConfigError

ACCELERATE_MIXED_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}


def cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_precision(precision: str, on_gpu: bool, bf16_supported: bool | None = None) -> str:
    """``auto`` -> bf16 on a GPU that supports it, else fp32; explicit choices are checked."""
    if bf16_supported is None:
        bf16_supported = False
        if on_gpu:
            import torch

            bf16_supported = bool(torch.cuda.is_bf16_supported())
    if precision == "auto":
        return "bf16" if on_gpu and bf16_supported else "fp32"
    if precision == "fp16" and not on_gpu:
        raise ConfigError("train.precision: fp16 needs a CUDA GPU", hint="use precision: auto (fp32 on CPU) or bf16")
    if precision == "bf16" and on_gpu and not bf16_supported:
        raise ConfigError(
            "train.precision: bf16 is not supported by this GPU", hint="use precision: fp16 or auto"
        )
    return precision


def check_runtime(cfg: TrainConfig, gpus: int | None = None) -> None:
    """Hardware and package checks that validation cannot do: one clear error before any work."""
    gpus = cuda_devices() if gpus is None else gpus
    if cfg.distributed == "deepspeed_zero2":
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError(
                "train.distributed: deepspeed_zero2 needs DeepSpeed, which is not installed",
                hint="pip install deepspeed (on a machine with CUDA), or use distributed: fsdp or ddp",
            )
        if gpus == 0:
            raise ConfigError("train.distributed: deepspeed_zero2 needs CUDA GPUs", hint="use distributed: ddp on CPU")
    if cfg.distributed == "fsdp" and gpus == 0:
        raise ConfigError(
            "train.distributed: fsdp needs CUDA GPUs (accelerate applies FSDP only on accelerators; on "
            "CPU it silently falls back to plain data parallel)",
            hint="use distributed: ddp to test data parallel on CPU",
        )
    if gpus and cfg.num_processes > gpus:
        raise ConfigError(
            f"train.num_processes is {cfg.num_processes} but only {gpus} GPU(s) are visible",
            hint=f"set train.num_processes: {gpus} (and raise grad_accum to keep the effective batch)",
        )
    if cfg.attn_implementation in ("flash_attention_2", "flash_attention_3"):
        package = "flash_attn" if cfg.attn_implementation == "flash_attention_2" else "flash_attn_interface"
        if gpus == 0 or importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"train.attn_implementation: {cfg.attn_implementation} needs a CUDA GPU and the {package} package",
                hint="pip install flash-attn --no-build-isolation, or use attn_implementation: auto (sdpa)",
            )


def accelerate_config(cfg: TrainConfig, precision: str, use_cpu: bool, port: int) -> dict[str, Any]:
    """The accelerate config (as ``accelerate config`` writes it) for ``cfg.distributed``."""
    mode = cfg.distributed if cfg.distributed != "none" else "ddp"
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "num_machines": 1,
        "machine_rank": 0,
        "num_processes": cfg.num_processes,
        "main_process_ip": "127.0.0.1",
        "main_process_port": port,
        "rdzv_backend": "static",
        "same_network": True,
        "mixed_precision": ACCELERATE_MIXED_PRECISION[precision],
        "downcast_bf16": "no",
        "use_cpu": use_cpu,
        "gpu_ids": "all",
        "main_training_function": "main",
        "tpu_env": [],
        "tpu_use_cluster": False,
        "tpu_use_sudo": False,
    }
    if mode == "ddp":
        # MULTI_GPU selects accelerate's torch.distributed.run launcher, which starts
        # num_processes workers; with use_cpu the workers join a gloo group instead of NCCL.
        config["distributed_type"] = "MULTI_GPU"
    elif mode == "fsdp":
        config["distributed_type"] = "FSDP"
        config["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # wraps the model's _no_split_modules
            "fsdp_reshard_after_forward": True,  # full shard (ZeRO-3-like)
            "fsdp_offload_params": False,
            "fsdp_state_dict_type": "FULL_STATE_DICT",  # rank 0 gets whole weights to save
            "fsdp_cpu_ram_efficient_loading": False,  # every rank loads the checkpoint itself
            "fsdp_activation_checkpointing": cfg.gradient_checkpointing,
        }
    elif mode == "deepspeed_zero2":
        config["distributed_type"] = "DEEPSPEED"
        config["deepspeed_config"] = {
            "zero_stage": 2,
            "gradient_accumulation_steps": cfg.grad_accum,
            "gradient_clipping": 1.0,  # the trainer's max_grad_norm
            "offload_optimizer_device": "none",
            "offload_param_device": "none",
            "zero3_init_flag": False,
        }
    else:  # pragma: no cover - pydantic restricts the values
        raise ConfigError(f"unknown train.distributed {cfg.distributed!r}")
    return config


def render_yaml(config: dict[str, Any]) -> str:
    import yaml

    return "# written by lai (lai.train.accelerate_configs); relaunch with accelerate launch --config_file\n" + (
        yaml.safe_dump(config, sort_keys=True)
    )
