"""lm-evaluation-harness tasks as lai benchmarks and pools (the optional extra ``lai[lm-eval]``).

A config names an lm-eval task (``evaluate.benchmarks: [{lm_eval_task: NAME}]``,
``select.pools: [{lm_eval_task: NAME, n: 32}]``); lai runs it through its own target
backend while lm-eval itself does everything that defines the task:

- the prompts: lm-eval's ``build_all_requests`` builds every context of the evaluation
  split (``fewshot_context``: description, few-shot examples drawn with lm-eval's seeded
  sampler, the document's ``doc_to_text``) in lm-eval's order, with lm-eval's default
  few-shot seed (1234), so the prompts are the ones ``lm_eval`` sends;
- generation: ``generation_kwargs.until`` are the stop strings, ``max_gen_toks`` the
  length (greedy, as lm-eval's HF model decodes by default);
- multiple choice: the (context, continuation) pairs of lm-eval's ``construct_requests``,
  answered by lai's log-likelihood path;
- scoring: the responses go through the task's filter ensembles (``filter_list``) and
  ``process_results``, per item; the record keeps every metric as ``"metric,filter"``
  (lm-eval's own names) and ``correct`` is the first metric of the first filter.

lai's task name is ``lm_eval:NAME``. Its pools are the task's splits: ``train``
(``training_split``), ``validation`` and ``test``. A training pool's rows are prompted
like evaluation rows (a row never sees itself among its few-shot examples); the
instructor writes new documents in the rendered form ``{"question": the doc_to_text
prompt, "answer": the target}``, taught as one chat turn (see :meth:`LmEvalTask.prompt`).

Limits: only ``generate_until`` and ``multiple_choice`` tasks (not groups, tags,
``loglikelihood_rolling``, ``acc_mutual_info`` or multiple-input tasks); per-item metrics
only (corpus-level ones such as BLEU or F1 are averaged per item, or dropped when not a
number); a multiple-choice ``exact_match`` (it needs lm-eval's greedy check) is dropped;
sampling settings in ``generation_kwargs`` are ignored (lai decodes greedily). Nothing of
lm-eval is imported until a config names such a task.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from lai.data import PoolSource
from lai.errors import ConfigError, DataError
from lai.records import Sample, Score
from lai.tasks.base import Choices, GenerationSpec, Prompt, SampleRejected, Task

log = logging.getLogger(__name__)

PREFIX = "lm_eval:"
#: lm-eval's default ``fewshot_random_seed`` (``simple_evaluate``).
FEWSHOT_SEED = 1234
#: lai's pool names for lm-eval's split keys.
SPLITS = {"train": "training_split", "validation": "validation_split", "test": "test_split"}
OUTPUT_TYPES = ("generate_until", "multiple_choice")
INSTALL_HINT = "install the extra: pip install 'lai[lm-eval]'"


@dataclass(frozen=True)
class LmEvalSpec:
    """One lm-eval task as a config names it: the task, where custom YAMLs live, and the
    ``dataset_kwargs`` that override the task's own (JSON text, so the spec is hashable)."""

    task: str
    include_path: str | None = None
    dataset_kwargs: str | None = None
    num_fewshot: int | None = None

    @property
    def lai_name(self) -> str:
        return PREFIX + self.task

    def overrides(self) -> dict[str, Any]:
        return {"dataset_kwargs": json.loads(self.dataset_kwargs)} if self.dataset_kwargs else {}


def make_spec(
    task: str, include_path: str | Path | None = None, dataset_kwargs: dict[str, Any] | None = None, num_fewshot: int | None = None
) -> LmEvalSpec:
    return LmEvalSpec(
        task=task,
        include_path=str(include_path) if include_path else None,
        dataset_kwargs=json.dumps(dataset_kwargs, sort_keys=True) if dataset_kwargs else None,
        num_fewshot=num_fewshot,
    )


#: lai task name -> the spec the config gave it (one per name in a process).
_SPECS: dict[str, LmEvalSpec] = {}


def register(spec: LmEvalSpec) -> str:
    """Make ``get_task(spec.lai_name)`` build this spec in this process (the config read
    last decides; one config may not give one task two settings, :func:`check_consistent`)."""
    _SPECS[spec.lai_name] = spec
    return spec.lai_name


def registered_specs() -> list[LmEvalSpec]:
    """The specs registered in this process (lai.tasks.task_setup hands them on)."""
    return list(_SPECS.values())


def check_consistent(specs: list[LmEvalSpec]) -> None:
    """One lai task name means one lm-eval task definition within a config."""
    seen: dict[str, LmEvalSpec] = {}
    for spec in specs:
        if seen.setdefault(spec.lai_name, spec) != spec:
            raise ConfigError(
                f"lm_eval_task {spec.task} is named twice with different settings (include_path, dataset_kwargs or num_fewshot)",
                hint="give every entry of the same lm-eval task the same settings",
            )
        register(spec)


def require_lm_eval() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ConfigError("lm_eval_task needs lm-evaluation-harness, which is not installed", hint=INSTALL_HINT) from None


@cache
def _task_manager(include_path: str | None, defaults: bool) -> Any:
    import lm_eval.tasks

    logging.getLogger("lm_eval").setLevel(logging.WARNING)  # lm-eval logs every step at INFO
    if include_path is not None and not Path(include_path).exists():
        raise ConfigError(f"include_path {include_path} does not exist", hint="give the folder of your lm-eval task YAMLs")
    return lm_eval.tasks.TaskManager(include_path=include_path, include_defaults=defaults)


def _entry(spec: LmEvalSpec) -> tuple[Any, Any]:
    """(task manager, index entry) of the spec's task: the include_path alone first (fast),
    then with lm-eval's own catalogue."""
    require_lm_eval()
    if spec.include_path:
        manager = _task_manager(spec.include_path, False)
        if (entry := manager.task_index.get(spec.task)) is not None:
            return manager, entry
    manager = _task_manager(spec.include_path, True)
    entry = manager.task_index.get(spec.task)
    if entry is None:
        where = f" (nor in {spec.include_path})" if spec.include_path else ""
        raise ConfigError(
            f"unknown lm-eval task {spec.task!r}{where}",
            hint="`lm-eval ls tasks` lists lm-eval's tasks; a task of your own needs include_path: FOLDER",
        )
    return manager, entry


def task_config(spec: LmEvalSpec) -> dict[str, Any]:
    """The task's full lm-eval config (YAML with its includes, and the spec's overrides);
    reads no data."""
    manager, entry = _entry(spec)
    kind = getattr(entry.kind, "name", str(entry.kind)).lower()
    if kind in ("group", "tag"):
        raise ConfigError(f"lm-eval {spec.task!r} is a {kind}, not a task", hint="name one of its tasks")
    config = manager._factory._load_full_config(entry, spec.overrides())
    output_type = config.get("output_type", "generate_until")
    if output_type not in OUTPUT_TYPES:
        raise ConfigError(
            f"lm-eval task {spec.task!r} is a {output_type} task", hint=f"lai runs {' and '.join(OUTPUT_TYPES)} tasks"
        )
    return config


def pools_of(config: dict[str, Any]) -> list[str]:
    return [pool for pool, key in SPLITS.items() if config.get(key)]


def eval_pool(config: dict[str, Any]) -> str:
    """The split lm-eval evaluates on: test if the task has one, else validation."""
    return "test" if config.get("test_split") else "validation"


def check_spec(spec: LmEvalSpec, pool: str | None) -> str:
    """Validate a config entry (one-line errors); return the pool it reads."""
    config = task_config(spec)
    pools = pools_of(config)
    pool = pool or eval_pool(config)
    if pool not in pools:
        raise ConfigError(f"lm-eval task {spec.task!r} has no {pool} split; it has {pools or 'none'}")
    return pool


def get_lm_eval_task(name: str) -> LmEvalTask:
    """The task for a lai name ``lm_eval:NAME``: the registered spec, or lm-eval's own
    catalogue entry with no overrides."""
    return _build(_SPECS.get(name) or LmEvalSpec(task=name.removeprefix(PREFIX)))


@cache
def _build(spec: LmEvalSpec) -> LmEvalTask:
    return LmEvalTask(spec)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _number(value: Any) -> float | None:
    if isinstance(value, bool | int | float):
        return float(value)
    try:  # numpy scalars
        return float(value)
    except (TypeError, ValueError):
        return None


class LmEvalTask(Task):
    """One lm-eval task, its documents read and scored by lm-eval."""

    name = "lm_eval"
    pools: ClassVar[dict[str, PoolSource]] = {}
    sample_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
        "required": ["question", "answer"],
    }
    instructor_templates: ClassVar[dict[str, str]] = {"le": "le_lm_eval", "lec": "lec_lm_eval", "random": "random_lm_eval"}

    def __init__(self, spec: LmEvalSpec) -> None:
        self.spec = spec
        self.name = spec.lai_name  # type: ignore[misc]
        self.config = task_config(spec)
        self.output_type: str = self.config.get("output_type", "generate_until")
        self.pools = {pool: PoolSource((), ()) for pool in pools_of(self.config)}  # type: ignore[misc]
        self._lm_task: Any = None
        #: sample id -> (document, the request arguments lm-eval built for it)
        self._docs: dict[str, tuple[dict[str, Any], list[tuple[Any, ...]]]] = {}
        self._samples: dict[str, list[Sample]] = {}

    # ---- lm-eval's task object ------------------------------------------------------

    def lm_task(self) -> Any:
        """lm-eval's task object (reads the dataset on first use)."""
        if self._lm_task is None:
            manager, entry = _entry(self.spec)
            try:
                task = manager._factory.build(entry, overrides=self.spec.overrides() or None, registry=manager.task_index)
            except (FileNotFoundError, ConnectionError, OSError, ValueError) as error:
                first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
                raise DataError(
                    f"lm-eval task {self.spec.task!r}: could not read its data: {first}",
                    hint="offline, point the task at local files with dataset_kwargs: {data_files: {...}}",
                ) from None
            except KeyError as error:  # a split the task reads (its few-shot split, ...) has no data
                raise DataError(
                    f"lm-eval task {self.spec.task!r}: its split {error.args[0]!r} has no data",
                    hint="dataset_kwargs replaces the task's own: give data_files for every split the task "
                    "reads (training, test and few-shot splits)",
                ) from None
            if task.get_config("num_fewshot") is None:
                task.set_config(key="num_fewshot", value=0)
            if self.spec.num_fewshot is not None and task.get_config("num_fewshot") != 0:
                task.set_config(key="num_fewshot", value=self.spec.num_fewshot)  # as simple_evaluate does
            if task.get_config("output_type") == "multiple_choice" and (
                "acc_mutual_info" in task._metric_fn_list or task.multiple_input
            ):
                raise ConfigError(f"lm-eval task {self.spec.task!r}: acc_mutual_info and multiple-input tasks are not supported")
            self._lm_task = task
        return self._lm_task

    def _split_docs(self, pool: str) -> list[dict[str, Any]]:
        task = self.lm_task()
        docs = {"train": task.training_docs, "validation": task.validation_docs, "test": task.test_docs}[pool]()
        return list(docs)

    def _requests(self, pool: str) -> list[tuple[int, dict[str, Any], list[Any]]]:
        """(doc id, doc, lm-eval's instances) for every document of ``pool``, in order."""
        task = self.lm_task()
        task.set_fewshot_seed(seed=FEWSHOT_SEED)  # each pool's contexts are drawn afresh, as lm-eval does
        if pool == eval_pool(self.config):  # exactly lm-eval's own pass over its evaluation docs
            task.build_all_requests(limit=None, rank=0, world_size=1)
            by_doc: dict[int, list[Any]] = {}
            for instance in task.instances:
                by_doc.setdefault(instance.doc_id, []).append(instance)
            return [(doc_id, group[0].doc, sorted(group, key=lambda i: i.idx)) for doc_id, group in by_doc.items()]
        sampler = getattr(task, "sampler", None)
        requests = []
        for doc_id, doc in enumerate(self._split_docs(pool)):
            if sampler is not None:  # a row of this split must not see itself as an example
                original = type(sampler).sample
                sampler.sample = lambda n, eval_doc=None, _doc=doc, _s=sampler, _o=original, **kw: _o(_s, n, eval_doc=_doc, **kw)
            try:
                context = task.fewshot_context(
                    doc, num_fewshot=task.get_config("num_fewshot") or 0, gen_prefix=task.doc_to_prefix(doc)
                )
            finally:
                if sampler is not None:
                    del sampler.sample
            instances = task.construct_requests(doc=doc, ctx=context, metadata=(self.spec.task, doc_id, 1))
            requests.append((doc_id, doc, instances if isinstance(instances, list) else [instances]))
        return requests

    # ---- reading documents ----------------------------------------------------------

    def read_pool(
        self, pool: str, *, path: Path | None, data_dir: Path | None, strict: bool, skipped: list[str]
    ) -> list[Sample]:
        """The pool's documents as samples (lm-eval reads the data; ``path`` and
        ``data_dir`` do not apply: lm-eval's ``dataset_kwargs`` say where the data is)."""
        if pool not in self.pools:
            raise ConfigError(f"lm-eval task {self.spec.task!r} has no {pool} split", hint=f"it has {', '.join(self.pools)}")
        if pool not in self._samples:
            samples = []
            for doc_id, doc, instances in self._requests(pool):
                sample_id = f"{self.name}/{pool}/{doc_id}"
                arguments = [instance.arguments for instance in instances]
                self._docs[sample_id] = (doc, arguments)
                samples.append(self._sample(sample_id, doc, arguments))
            self._samples[pool] = samples
        return list(self._samples[pool])

    def to_sample(self, row: dict[str, Any], index: int, pool: str) -> Sample:
        raise NotImplementedError("lm-eval reads the rows of an lm-eval task")

    def _sample(self, sample_id: str, doc: dict[str, Any], arguments: list[tuple[Any, ...]]) -> Sample:
        task = self.lm_task()
        context = arguments[0][0]
        meta: dict[str, Any] = {"context": context}
        if self.output_type == "multiple_choice":
            meta["continuations"] = [argument[1] for argument in arguments]
            meta["gold"] = self._gold(doc)
        return Sample(
            id=sample_id,
            task=self.name,
            question=_text(task.doc_to_text(doc)),
            reference=self._target_text(doc),
            meta=meta,
        )

    def _choices(self, doc: dict[str, Any]) -> list[str] | None:
        task = self.lm_task()
        return list(task.doc_to_choice(doc)) if task.config.doc_to_choice is not None else None

    def _gold(self, doc: dict[str, Any]) -> int:
        """The gold choice's index (the first, for tasks with several right choices)."""
        gold = self.lm_task().doc_to_target(doc)
        if isinstance(gold, list):
            gold = gold[0] if gold else -1
        if isinstance(gold, str):
            choices = self._choices(doc) or []
            gold = choices.index(gold) if gold in choices else -1
        return int(gold)

    def _target_text(self, doc: dict[str, Any]) -> str:
        """The target as text: the gold choice's text for tasks with choices."""
        target = self.lm_task().doc_to_target(doc)
        choices = self._choices(doc)
        if isinstance(target, list):
            target = target[0] if target else ""
        if choices is not None and isinstance(target, int) and 0 <= target < len(choices):
            return choices[target]
        return _text(target)

    def _doc(self, sample: Sample) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
        if sample.id not in self._docs:
            pool = sample.id.removeprefix(self.name + "/").split("/")[0]
            self.load(pool)
        return self._docs[sample.id]

    # ---- the target's side ----------------------------------------------------------

    def prompt(self, sample: Sample, protocol: str = "paper") -> Prompt:
        """lm-eval's context, a plain string sent as is. A written training sample (no
        context) is one chat turn: its rendered prompt, answered by its target."""
        context = sample.meta.get("context")
        if context is None:
            return [{"role": "user", "content": sample.question}]
        return context

    def check_protocol(self, protocol: str) -> None:
        super().check_protocol(protocol)  # either protocol: the prompts are lm-eval's

    def generation(self, protocol: str = "paper") -> GenerationSpec:
        kwargs = dict(self.config.get("generation_kwargs") or {})
        until = kwargs.get("until") or []
        if isinstance(until, str):
            until = [until]
        if kwargs.get("do_sample") or (kwargs.get("temperature") or 0) > 0:
            log.warning("lm-eval task %s asks for sampling; lai decodes greedily", self.spec.task)
        maximum = kwargs.get("max_gen_toks")
        return GenerationSpec(stop=tuple(str(u) for u in until if u), max_new_tokens=int(maximum) if maximum else None)

    def scoring_mode(self, protocol: str = "paper") -> str:
        return "loglikelihood" if self.output_type == "multiple_choice" else "generate"

    def choices(self, sample: Sample, protocol: str = "paper") -> Choices | None:
        if self.output_type != "multiple_choice":
            return None
        _, arguments = self._doc(sample)
        return Choices(context=arguments[0][0], continuations=[a[1] for a in arguments], gold=self._gold(self._doc(sample)[0]))

    # ---- scoring: lm-eval's filters and process_results -----------------------------

    def _results(self, samples: list[Sample], responses: list[list[Any]], request_type: str) -> list[Score]:
        """Each sample's responses (one per request) through the filter ensembles and
        ``process_results``, as lm-eval's evaluator does."""
        from lm_eval.api.instance import Instance

        task = self.lm_task()
        groups = []
        for sample, resps in zip(samples, responses, strict=True):
            doc, arguments = self._doc(sample)
            doc_id = int(sample.id.rsplit("/", 1)[1])
            group = [
                Instance(request_type=request_type, doc=doc, arguments=argument, idx=i, metadata=(self.spec.task, doc_id, 1))
                for i, argument in enumerate(arguments)
            ]
            for instance, resp in zip(group, resps, strict=True):
                instance.resps.append(resp)
            groups.append(group)
        flat = [instance for group in groups for instance in group]
        for ensemble in getattr(task, "_filters", []):
            ensemble.apply(flat)
        scores = []
        for sample, group in zip(samples, groups, strict=True):
            metrics: dict[str, Any] = {}
            first: tuple[str, str, float, Any] | None = None
            for key in group[0].filtered_resps:
                results = task.process_results(group[0].doc, [instance.filtered_resps[key] for instance in group])
                for metric, value in results.items():
                    number = _number(value)
                    if number is None or (request_type == "loglikelihood" and metric == "exact_match"):
                        continue
                    metrics[f"{metric},{key}"] = number
                    if first is None:
                        first = (metric, key, number, group[0].filtered_resps[key])
            if first is None:
                scores.append(Score(False, None, "lm-eval gave no per-item metric for this item"))
                continue
            metric, key, value, filtered = first
            if request_type == "loglikelihood":
                lls = [float(resp[0]) for resp in (instance.filtered_resps[key] for instance in group)]
                best = max(range(len(lls)), key=lls.__getitem__)
                extracted = _letter(best)
                said = f"chose {extracted} (log-likelihood {lls[best]:.2f}), expected {_letter(sample.meta.get('gold', -1))}"
            else:
                extracted = _text(filtered)
                said = f"filter {key} gave {extracted[:80]!r}, target {sample.reference[:80]!r}"
            scores.append(Score(value >= 1.0, extracted, f"{said}; {metric} = {value:g}", metrics=metrics))
        return scores

    def score(self, sample: Sample, response: str, protocol: str = "paper") -> Score:
        return self.score_many([sample], [response], protocol)[0]

    def score_many(self, samples: list[Sample], responses: list[str], protocol: str = "paper") -> list[Score]:
        return self._results(samples, [[r] for r in responses], "generate_until")

    def score_loglikelihoods(self, sample: Sample, item: Choices, logliks: list[float], protocol: str = "paper") -> Score | None:
        # lai's targets report no greedy flag; lm-eval's multiple-choice acc/acc_norm do not use it.
        return self._results([sample], [[(ll, False) for ll in logliks]], "loglikelihood")[0]

    # ---- the instructor's side ------------------------------------------------------

    def check_generated(self, item: dict[str, Any]) -> tuple[str, str, str]:
        question = item.get("question")
        answer = item.get("answer")
        if not isinstance(question, str) or not question.strip():
            raise SampleRejected("no question")
        if answer is None or not str(answer).strip():
            raise SampleRejected("no answer")
        return question.strip(), "", str(answer).strip()

    def training_target(self, solution: str, answer: str) -> str:
        return answer

    def reference_sample(self, sample: Sample) -> tuple[str, str, str] | None:
        return (sample.question, "", sample.reference) if sample.reference else None

    def training_sample(self, question: str) -> Sample:
        return Sample(id="generated", task=self.name, question=question, reference="")

    def normalize_answer(self, text: str) -> str | None:
        return text.strip() or None


def _letter(index: int) -> str:
    letters = "ABCDEFGHIJ"
    return letters[index] if 0 <= index < len(letters) else str(index)
