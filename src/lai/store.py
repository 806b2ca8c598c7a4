"""The run directory: append-only JSONL records, atomic files, and stage markers.

Resume rests on three rules:
1. records are appended one line at a time and fsynced, each with a stable ``id``;
2. a stage writes its ``<stage>.done`` marker only after all its records are on disk;
3. a torn last line (the process was killed mid-write) is cut off when the file is
   next opened, so only whole records count.
A rerun therefore skips finished stages and, inside an unfinished one, the ids already
written: at most the records in flight are redone, none is duplicated.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lai.errors import RunDirError, too_big
from lai.records import from_dict, to_dict

log = logging.getLogger(__name__)


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only set it, and
    setting it even for a moment races with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: the classic read-by-setting, restored at once
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file.

    The file gets the mode a plain ``open(path, "w")`` would give (0666 less the umask),
    not mkstemp's 0600: people sharing a run folder must be able to read its report.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        error.filename = str(path)  # not the temporary name the user never chose
        raise
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        _name(error, path, tmp)
        raise


def _name(error: BaseException, path: Path, tmp: str | None = None) -> None:
    """Attach the path to an OS error that lacks one (a full disk says ENOSPC, not where),
    or that names lai's temporary file instead, so the CLI's one line names the user's path."""
    if isinstance(error, OSError) and (error.filename is None or (tmp is not None and str(error.filename) == tmp)):
        error.filename = str(path)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def require_run_dir(run_dir: Path) -> None:
    """A one-line error unless ``run_dir`` is a folder ``lai run`` wrote (it has a manifest)."""
    from lai.errors import LaiError

    if not (Path(run_dir) / "manifest.json").is_file():
        raise LaiError(f"{run_dir} is not a lai run directory (no manifest.json)", hint="pass folders lai run wrote")


def saved_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config a run saved (``config.yaml``) as a plain dict; {} when absent.

    Readers of a run (reports, export) use it as written, not validated, so that a run
    made by another lai version still renders.
    """
    import yaml

    path = Path(run_dir) / "config.yaml"
    try:
        return (yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None) or {}
    except yaml.YAMLError:
        raise RunDirError(f"{path} is damaged (not valid YAML)", hint="restore it; lai validate names the line") from None


def read_json(path: Path, default: Any = None) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunDirError(
            f"{path}:{error.lineno} is damaged ({error.msg})", hint="delete it and rerun; lai validate names every damaged file"
        ) from None


def repair_jsonl(path: Path) -> int:
    """Cut a torn final line left by a killed writer; return how many bytes were dropped."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as handle:
        handle.truncate(keep)
    dropped = len(data) - keep
    log.warning("dropped a torn last record (%d bytes) in %s", dropped, path)
    return dropped


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    repair_jsonl(path)
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise RunDirError(
                        f"{path}:{number} is damaged (not valid JSON: {error.msg})",
                        hint="delete that line and rerun: its record is redone",
                    ) from None
                except (ValueError, RecursionError) as error:  # int-digits and nesting limits
                    raise RunDirError(
                        f"{path}:{number} is damaged (it holds {too_big(error)})",
                        hint="delete that line and rerun: its record is redone",
                    ) from None
    return rows


def read_records(path: Path, cls: type[Any]) -> list[Any]:
    return [from_dict(cls, row) for row in read_jsonl(path)]


class JsonlWriter:
    """Appends records durably; one fsync per call to :meth:`write`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_jsonl(path)
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, records: Iterable[Any]) -> None:
        text = to_jsonl(records)
        if not text:
            return
        # One write call per batch: a kill leaves at most a torn tail, never interleaving.
        try:
            self._handle.write(text)
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as error:
            _name(error, self.path)
            raise

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_dict(record: Any) -> dict[str, Any]:
    return record if isinstance(record, dict) else to_dict(record)


def to_jsonl(records: Iterable[Any]) -> str:
    return "".join(json.dumps(_as_dict(r), ensure_ascii=False) + "\n" for r in records)


def eval_file(key: str) -> str:
    """Where iteration k's per-item records of benchmark ``key`` live, under ``iter_k/``;
    the reports read them back for the paired test of a change."""
    return f"eval/{key.replace('/', '-').replace('@', '-')}.jsonl"


def load_summaries(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Every finished stage's summary, by iteration (what the report is built from)."""
    store = RunStore(run_dir)
    summaries: dict[int, dict[str, Any]] = {}
    for k in store.iterations():
        for marker in sorted(store.iteration_dir(k).glob("*.done")):
            summaries.setdefault(k, {})[marker.stem] = read_json(marker, default={}) or {}
    return summaries


class RunStore:
    """Paths and markers inside one run directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def iteration_dir(self, iteration: int) -> Path:
        return self.root / f"iter_{iteration:02d}"

    def path(self, iteration: int, name: str) -> Path:
        return self.iteration_dir(iteration) / name

    def is_done(self, iteration: int, stage: str) -> bool:
        return self.path(iteration, f"{stage}.done").exists()

    def mark_done(self, iteration: int, stage: str, summary: dict[str, Any] | None = None) -> None:
        atomic_write_json(self.path(iteration, f"{stage}.done"), summary or {})

    def summary(self, iteration: int, stage: str) -> dict[str, Any]:
        return read_json(self.path(iteration, f"{stage}.done"), default={}) or {}

    def iterations(self) -> Iterator[int]:
        for child in sorted(self.root.glob("iter_*")):
            suffix = child.name.removeprefix("iter_")
            if child.is_dir() and suffix.isdigit():
                yield int(suffix)
