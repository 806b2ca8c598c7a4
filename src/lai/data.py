"""Finding benchmark data: an explicit path, the local data folder, or the hub.

Lookup order, as a user would expect:
1. a JSONL path given in the config;
2. the local data folder: ``LAI_DATA_DIR``, else ``../shared/data`` beside the
   checkout (or beside the working directory) when it exists;
3. the Hugging Face hub through ``datasets`` (skipped when ``HF_HUB_OFFLINE`` or
   ``HF_DATASETS_OFFLINE`` is set);
and otherwise a :class:`DataError` that lists every place it looked.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lai.errors import DataError, decode_error, os_error, too_big

log = logging.getLogger(__name__)

_CHECKOUT_ROOT = Path(__file__).resolve().parents[2]

#: JSON types by name, for messages ("field 'question' must be text, got a number").
_TYPE_NAMES = {str: "text", int: "a whole number", float: "a number", list: "a list", dict: "an object", bool: "true/false"}


@dataclass(frozen=True)
class PoolSource:
    """Where one pool of a task lives, locally and on the hub, and what its rows hold."""

    files: tuple[str, ...]  # relative to the data folder; the first that exists wins
    required: tuple[str, ...]  # fields every row must have
    hub: tuple[str, str | None, str] | None = None  # (dataset, config name, split)
    #: The JSON types a field may have when present (checked for every row, so a wrong
    #: row is refused with its line instead of becoming the reference answer "None").
    types: Mapping[str, tuple[type, ...]] = field(default_factory=dict, hash=False, compare=False)


def default_data_dir() -> Path | None:
    env = os.environ.get("LAI_DATA_DIR")
    if env:
        return Path(env).expanduser()
    for candidate in (_CHECKOUT_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def check_row(row: Any, required: tuple[str, ...], types: Mapping[str, tuple[type, ...]]) -> str | None:
    """Why a row cannot be used (missing field, null, wrong type), or None when it can."""
    if not isinstance(row, dict):
        return f"must be a JSON object, got {_type_name(row)}"
    for name in required:
        if name not in row:
            return f"is missing field {name!r} (each row needs {', '.join(required)})"
        if row[name] is None:
            return f"has null for field {name!r}"
    for name, allowed in types.items():
        value = row.get(name)
        if value is None:
            continue  # absent optional fields are the task's business
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in allowed)
            return f"field {name!r} must be {wanted}, got {_type_name(value)} ({json.dumps(value)[:40]})"
    return None


def read_jsonl_rows(
    path: Path, required: tuple[str, ...], types: Mapping[str, tuple[type, ...]] | None = None
) -> list[dict[str, Any]]:
    """Read a JSONL data file, naming the file, the line and the field when it is malformed.

    Every problem a user can fix is a :class:`DataError` of one line: a folder or an
    unreadable file, bytes that are not UTF-8, a line that is not JSON, a row without a
    field or with a field of the wrong type, a file without rows.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a data file", hint="give the path of a .jsonl file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise os_error(error, path, "cannot read the data file") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise decode_error(path, data, error, "data file") from None
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: JSON may hold U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            hint = "a data file holds one JSON object per line (JSONL)"
            if number == 1 and text.lstrip().startswith("["):
                hint = "this looks like one JSON array; write one object per line (JSONL)"
            raise DataError(f"{path}:{number} is not valid JSON ({error.msg})", hint=hint) from None
        except (ValueError, RecursionError) as error:  # Python's int-digits and nesting limits
            raise DataError(f"{path}:{number} holds {too_big(error)}", hint="fix or remove that row") from None
        if "\\ud" in line.lower() and _lone_surrogate(row):
            raise DataError(
                f"{path}:{number} holds a lone UTF-16 surrogate escape (e.g. \\ud800), which is not text",
                hint="fix or remove that row",
            )
        problem = check_row(row, required, types or {})
        if problem:
            raise DataError(f"{path}:{number} {problem}", hint="fix or remove that row")
        rows.append(row)
    if not rows:
        raise DataError(f"{path} holds no rows", hint="give a JSONL file with one JSON object per line")
    return rows


def _lone_surrogate(value: object) -> bool:
    """JSON may escape half a UTF-16 pair ("\\ud800"); Python reads it, but no file can hold it."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _hub_allowed() -> bool:
    return not any(os.environ.get(name) == "1" for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _load_from_hub(name: str, config: str | None, split: str) -> list[dict[str, Any]]:
    import datasets  # heavy; only for users with network

    dataset = datasets.load_dataset(name, config, split=split)
    return [dict(row) for row in dataset]


def load_pool_rows(
    task: str,
    pool: str,
    source: PoolSource,
    *,
    path: Path | None = None,
    data_dir: Path | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Return the rows of one pool and a description of where they came from."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.exists():
            raise DataError(f"data file for {task}/{pool} not found: {path}", hint="fix the path in the config")
        return read_jsonl_rows(path, source.required, source.types), str(path)

    looked: list[str] = []
    folder = Path(data_dir).expanduser() if data_dir else default_data_dir()
    if folder is not None:
        for relative in source.files:
            candidate = folder / relative
            looked.append(str(candidate))
            if candidate.is_file():
                return read_jsonl_rows(candidate, source.required, source.types), str(candidate)
    else:
        looked.append("no local data folder (LAI_DATA_DIR unset and ../shared/data absent)")

    if source.hub is not None:
        name, config, split = source.hub
        where = f"hub dataset {name}" + (f" ({config})" if config else "") + f" split {split}"
        if _hub_allowed():
            try:
                rows = _load_from_hub(name, config, split)
            except Exception as error:  # noqa: BLE001 - any hub failure means "not found there"
                looked.append(f"{where}: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
            else:
                for number, row in enumerate(rows):
                    if problem := check_row(row, source.required, source.types):
                        raise DataError(f"{where} row {number} {problem}")
                if not rows:
                    raise DataError(f"{where} holds no rows")
                return rows, where
        else:
            looked.append(f"{where} (skipped: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set)")

    raise DataError(
        f"no data for {task}/{pool}; looked in: " + "; ".join(looked),
        hint="set LAI_DATA_DIR to a folder laid out like ../shared/data, or give a path in the config",
    )
