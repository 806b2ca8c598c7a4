"""docs/architecture.md's module table names modules that exist, and every module of
src/lai is in it: a contributor finds the room for a change in one reading."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "lai"


def table_cells() -> list[str]:
    text = (REPO / "docs" / "architecture.md").read_text()
    table = text[text.index("## Modules") : text.index("\n\n", text.index("| module | job |"))]
    return [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]


def test_every_module_the_table_names_exists() -> None:
    for cell in table_cells():
        for name in re.findall(r"`([^`]+)`", cell):
            assert (PACKAGE / name).exists(), f"docs/architecture.md names {name}, which is not in src/lai"


def test_every_top_level_module_and_package_is_in_the_table() -> None:
    named = {name.split("/")[0].removesuffix(".py") for cell in table_cells() for name in re.findall(r"`([^`]+)`", cell)}
    present = {p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    present |= {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    missing = sorted(present - named)
    assert not missing, f"not in docs/architecture.md's module table: {missing}"
