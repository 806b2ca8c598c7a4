"""``lai export``: a run's kept training samples as a Hugging Face dataset with a card.

The dataset is a ``DatasetDict`` with one ``train`` split, saved with ``save_to_disk``;
that is also the shape ``load_dataset(repo)`` returns after ``--push-to-hub``, so code
reading the export works the same on both. Beside it lie ``README.md`` (the dataset
card: YAML front matter plus the run's provenance) and ``lai_export.json`` (which run
the folder was exported from, so a re-export of the same run may replace it).

One job per module: :mod:`lai.export.rows` (which samples, each as a row),
:mod:`lai.export.card` (the dataset card), :mod:`lai.export.hub` (the upload); this
module puts the folder together (:func:`export_dataset`). Only kept samples are exported
unless ``include_dropped`` is set.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from lai import __version__, runlock
from lai.errors import LaiError
from lai.export.card import card_text, render_card
from lai.export.hub import hub_token, push
from lai.export.rows import SPLIT, dataset_row, features, read_samples
from lai.manifest import now
from lai.store import read_json, require_run_dir, saved_config
from lai.tasks import get_task
from lai.tasks.base import Task

#: The file that marks a folder as an export, and of which run.
MARKER = "lai_export.json"

__all__ = ["MARKER", "SPLIT", "ExportSummary", "export_dataset", "run_identity"]


@dataclass(frozen=True)
class ExportSummary:
    out_dir: Path
    run_name: str
    rows: int
    kept: int
    dropped: int
    iterations: list[int]
    card: Path
    replaced: bool = False  # an earlier export of the same run was overwritten
    repo: str | None = None  # where it was pushed, if it was
    sources: dict[int, str] = field(default_factory=dict)  # iteration -> the JSONL file its rows came from


# ---- reading the run ------------------------------------------------------------------------


def _read_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    require_run_dir(run_dir)
    try:
        return read_json(run_dir / "manifest.json", default={}) or {}, saved_config(run_dir)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise LaiError(f"cannot read {run_dir}: {' '.join(str(error).split())}") from None


def run_identity(run_dir: Path, manifest: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """What makes two exports "of the same run": the run's name, start time and config hash."""
    return {
        "name": config.get("name", run_dir.name),
        "created": manifest.get("created"),
        "config_sha256": manifest.get("config_sha256"),
    }


# ---- the output folder ----------------------------------------------------------------------


def _check_out_dir(out_dir: Path, identity: dict[str, Any]) -> bool:
    """True when ``out_dir`` holds an earlier export of this run (to be replaced)."""
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise LaiError(f"{out_dir} exists and is not a folder", hint="pass a new or empty folder as OUT_DIR")
    if not any(out_dir.iterdir()):
        return False
    marker = read_json(out_dir / MARKER, default=None) if (out_dir / MARKER).is_file() else None
    if isinstance(marker, dict) and marker.get("run") == identity:
        return True
    if isinstance(marker, dict):
        other = (marker.get("run") or {}).get("name", "?")
        raise LaiError(
            f"{out_dir} holds an export of another run ({other})", hint="pass a new or empty folder, or delete that one"
        )
    raise LaiError(
        f"{out_dir} exists and is not empty",
        hint="pass a new or empty folder; lai only overwrites its own earlier export of the same run",
    )


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Move the finished export to ``out_dir``, replacing an earlier one.

    A folder cannot be renamed over a non-empty one, so the old export is renamed aside
    first and deleted last; if the second rename fails, the old one is put back.
    """
    if out_dir.is_dir() and any(out_dir.iterdir()):
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out_dir, old)
        try:
            os.rename(tmp, out_dir)
        except BaseException:
            os.rename(old, out_dir)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)  # absent, or an empty folder


# ---- export ---------------------------------------------------------------------------------


def export_dataset(
    run_dir: Path,
    out_dir: Path,
    *,
    include_dropped: bool = False,
    push_to_hub: str | None = None,
    private: bool = True,
) -> ExportSummary:
    """Save a run's kept samples (all with ``include_dropped``) as a dataset with a card.

    ``push_to_hub`` also uploads both to that Hub repo (created private unless
    ``private`` is false); the token comes from the ``HF_TOKEN`` environment variable
    only. The local export is complete before anything is sent.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if importlib.util.find_spec("datasets") is None:  # before anything is read or locked
        raise LaiError("lai export writes a Hugging Face dataset and needs the datasets package", hint="pip install 'lai[train]'")
    manifest, config = _read_run(run_dir)
    # A run that a lai process is writing has samples not yet verified: refuse, naming it.
    key = runlock.acquire(run_dir)
    runlock.release(key)
    token = hub_token(push_to_hub) if push_to_hub else None
    identity = run_identity(run_dir, manifest, config)
    dest = out_dir.resolve()  # "." or "x/.." have no name to put a temporary folder beside
    replacing = _check_out_dir(dest, identity)

    samples, sources = read_samples(run_dir)
    if not samples:
        raise LaiError(
            f"{run_dir} has no generated samples yet (no iteration reached the parse stage)",
            hint="run more of the loop first",
        )
    # The folder names the iteration; older records may lack the field.
    chosen = [replace(s, iteration=k) for k in sorted(samples) for s in samples[k] if include_dropped or s.kept]
    if not chosen:
        total = sum(len(v) for v in samples.values())
        raise LaiError(
            f"{run_dir} has no kept samples to export (all {total} generated samples were dropped)",
            hint="--include-dropped exports them with their drop reasons",
        )
    tasks: dict[str, Task] = {}
    rows = []
    for sample in chosen:
        if sample.task not in tasks:
            tasks[sample.task] = get_task(sample.task)
        rows.append(dataset_row(tasks[sample.task], sample, include_dropped))

    import datasets

    dataset = datasets.DatasetDict({SPLIT: datasets.Dataset.from_list(rows, features=features(include_dropped))})
    metadata, body = render_card(
        run_dir, manifest, config, samples, sources, chosen, include_dropped, repo=push_to_hub, location=str(out_dir)
    )
    text = card_text(metadata, body)

    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as error:
        error.filename = str(dest)  # the folder the user named, not lai's temporary one
        raise
    try:
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            dataset.save_to_disk(str(tmp))
        finally:
            if bars:
                datasets.enable_progress_bars()
        # Plain writes: nobody sees the temporary folder before it is complete.
        (tmp / "README.md").write_text(text, encoding="utf-8")
        kept = sum(s.kept for s in chosen)
        marker = {
            "run": identity, "run_dir": str(run_dir.resolve()), "exported": now(), "lai_version": __version__,
            "include_dropped": include_dropped, "rows": len(chosen), "kept": kept,
            "iterations": sorted(samples), "sources": {str(k): v for k, v in sorted(sources.items())},
        }  # fmt: skip
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _swap_in(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

    if push_to_hub:
        push(dataset, metadata, body, push_to_hub, token or "", private, out_dir)
    return ExportSummary(
        out_dir=out_dir, run_name=identity["name"], rows=len(chosen), kept=kept, dropped=len(chosen) - kept,
        iterations=sorted(samples), card=out_dir / "README.md", replaced=replacing, repo=push_to_hub,
        sources=dict(sources),
    )  # fmt: skip
