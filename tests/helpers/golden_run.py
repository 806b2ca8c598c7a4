"""A fixed set of runs on fakes, dumped to one normalised text file, so that a refactor can
show it changed no behaviour: run it before and after and diff the two dumps.

    python -m tests.helpers.golden_run OUT.txt [--keep DIR]

Every strategy runs on the repository's tiny fixtures (gsm8k, mbpp and mmlu pools; gsm8k,
humaneval, arc and mmlu benchmarks) with the scripted target and instructor and the noop
trainer. The dump holds every record, summary, report and export file of each run
directory; only what differs between two runs by nature (wall time, dates, versions,
absolute paths) is blanked.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "fixtures" / "data"

VOLATILE_KEYS = {
    "seconds", "started", "finished", "created", "updated", "time", "elapsed", "wall_s", "heartbeat",
    "versions", "python", "platform", "host", "hostname", "pid", "started_at", "finished_at", "date",
    "history", "timestamp", "at", "lai_version", "git", "config_sha256",
}  # fmt: skip
VOLATILE_TEXT = [
    (re.compile(r"\d+(\.\d+)?\s?(s|min|ms)\b"), "<time>"),
    (re.compile(r"\d{4}-\d\d-\d\d[T ][\d:.]+(Z|[+-]\d\d:?\d\d)?"), "<date>"),
    (re.compile(r"\d+:\d\d(:\d\d)?"), "<clock>"),
    # the config holds the data and request-log paths, so its hash differs between checkouts
    (re.compile(r"config sha256 `[0-9a-f]+`"), "config sha256 <hash>"),
    # the stage-time tables: a stage's seconds follow its status
    (re.compile(r"(\|\s*(?:done|failed|running|killed|interrupted)\s*\|\s*)[\d.]+"), r"\1<seconds>"),
    (re.compile(r"(<td>(?:done|failed|running|killed|interrupted)</td>\s*<td>)[\d.]+"), r"\1<seconds>"),
]


def config_for(strategy: str, run_root: Path, log: Path) -> dict[str, Any]:
    options = {"k": 2} if strategy in ("lec", "mix") else {}
    return {
        "name": f"golden-{strategy}",
        "seed": 11,
        "iterations": 2 if strategy in ("le", "lec") else 1,
        "data_dir": str(DATA),
        "target": {"backend": "scripted", "model": "fake-model", "batch_size": 4},
        "select": {"pools": [
            {"task": "gsm8k", "pool": "train", "n": 10},
            {"task": "mbpp", "pool": "train", "n": 3},
            {"task": "mmlu", "pool": "train", "n": 4},
        ]},  # fmt: skip
        "instructor": {
            "backend": "scripted",
            "model": "fake-teacher",
            "concurrency": 1,
            "options": {"request_log": str(log), "garbage_every": 5},
        },
        "strategy": {"name": strategy, "budget": 12, "embedder": "hashing", **options},
        "train": {"backend": "noop"},
        "evaluate": {"benchmarks": [
            {"task": "gsm8k", "pool": "test", "limit": 6},
            {"task": "gsm8k", "pool": "test", "limit": 4, "protocol": "lm-eval"},
            {"task": "humaneval", "pool": "test", "limit": 2},
            {"task": "arc_challenge", "pool": "test", "limit": 4},
        ]},  # fmt: skip
    }


def normalise(value: Any, root: str) -> Any:
    if isinstance(value, dict):
        return {k: ("<volatile>" if k in VOLATILE_KEYS else normalise(v, root)) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [normalise(v, root) for v in value]
    if isinstance(value, str):
        return text(value, root)
    if isinstance(value, float):
        return round(value, 6)
    return value


def text(value: str, root: str) -> str:
    value = value.replace(root, "<run-root>").replace(str(REPO), "<repo>")
    for pattern, blank in VOLATILE_TEXT:
        value = pattern.sub(blank, value)
    return value


def dump_file(path: Path, root: str) -> list[str]:
    raw = path.read_text(errors="replace")
    if path.suffix == ".jsonl":
        rows = [normalise(json.loads(line), root) for line in raw.splitlines() if line.strip()]
        rows.sort(key=lambda r: json.dumps(r, sort_keys=True))
        return [json.dumps(r, sort_keys=True) for r in rows]
    if path.suffix == ".json":
        return json.dumps(normalise(json.loads(raw), root), indent=1, sort_keys=True).splitlines()
    if path.suffix == ".html":  # matplotlib's SVG differs between its versions; the words do not
        raw = re.sub(r"<svg.*?</svg>", "<svg/>", raw, flags=re.S)
        raw = re.sub(r'src="data:[^"]*"', 'src="<image>"', raw)
    return text(raw, root).splitlines()


def run_all(out: Path, keep: Path | None = None) -> None:
    from lai.config import build_config
    from lai.export import export_dataset
    from lai.pipeline import Pipeline

    root = keep or Path(tempfile.mkdtemp(prefix="lai-golden-"))
    lines: list[str] = []
    for strategy in ("le", "lec", "mix", "random", "original", "nearest"):
        run_dir = root / strategy
        log = root / f"{strategy}.requests.log"
        Pipeline(build_config(config_for(strategy, root, log)), run_dir).run()
        export_dataset(run_dir, root / f"{strategy}-export", include_dropped=True)
        for base in (run_dir, root / f"{strategy}-export"):
            for path in sorted(p for p in base.rglob("*") if p.is_file()):
                relative = path.relative_to(root)
                if path.name in (".lock", "spend.jsonl") or path.suffix in (".svg", ".png", ".arrow", ".parquet", ".db", ".sqlite"):
                    lines.append(f"=== {relative} (present)")
                    continue
                lines.append(f"=== {relative}")
                lines.extend(dump_file(path, str(root)))
    out.write_text("\n".join(lines) + "\n")
    print(f"{out}: {len(lines)} lines from {root}")


if __name__ == "__main__":
    keep = Path(sys.argv[sys.argv.index("--keep") + 1]) if "--keep" in sys.argv else None
    run_all(Path(sys.argv[1]), keep)
