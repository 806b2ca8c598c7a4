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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lai.errors import DataError

log = logging.getLogger(__name__)

_CHECKOUT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PoolSource:
    """Where one pool of a task lives, locally and on the hub."""

    files: tuple[str, ...]  # relative to the data folder; the first that exists wins
    required: tuple[str, ...]  # fields every row must have
    hub: tuple[str, str | None, str] | None = None  # (dataset, config name, split)


def default_data_dir() -> Path | None:
    env = os.environ.get("LAI_DATA_DIR")
    if env:
        return Path(env).expanduser()
    for candidate in (_CHECKOUT_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None


def read_jsonl_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    """Read a JSONL file, naming the line and the field when a row is malformed."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number} is not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number} must be a JSON object, got {type(row).__name__}")
            missing = [name for name in required if name not in row]
            if missing:
                raise DataError(
                    f"{path}:{number} is missing field {missing[0]!r}",
                    hint=f"each row needs the fields {', '.join(required)}",
                )
            rows.append(row)
    return rows


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
        if not path.is_file():
            raise DataError(f"data file for {task}/{pool} not found: {path}", hint="fix the path in the config")
        return read_jsonl_rows(path, source.required), str(path)

    looked: list[str] = []
    folder = Path(data_dir).expanduser() if data_dir else default_data_dir()
    if folder is not None:
        for relative in source.files:
            candidate = folder / relative
            looked.append(str(candidate))
            if candidate.is_file():
                return read_jsonl_rows(candidate, source.required), str(candidate)
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
                missing = [f for f in source.required if rows and f not in rows[0]]
                if missing:
                    raise DataError(f"{where} rows lack field {missing[0]!r}")
                return rows, where
        else:
            looked.append(f"{where} (skipped: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set)")

    raise DataError(
        f"no data for {task}/{pool}; looked in: " + "; ".join(looked),
        hint="set LAI_DATA_DIR to a folder laid out like ../shared/data, or give a path in the config",
    )
