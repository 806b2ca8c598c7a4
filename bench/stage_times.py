"""Print the wall time of every stage of a run as a markdown table (from its manifest.json).

Usage: python bench/stage_times.py RUN_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    total = 0.0
    print("| stage | status | wall seconds |")
    print("|---|---|---|")
    for key, entry in manifest["stages"].items():
        total += entry["seconds"]
        print(f"| {key} | {entry['status']} | {entry['seconds']:.1f} |")
    print(f"| **all stages** | | **{total:.1f}** ({total / 60:.1f} min) |")
    print()
    print("packages:", json.dumps(manifest.get("packages", {})))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
