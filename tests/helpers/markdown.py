"""Reading markdown the reports and cards write, for assertions."""

from __future__ import annotations


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """Rows of any markdown table in ``text`` whose first cell is ``first_cell``."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if cells[0] == first_cell:
                rows.append(cells)
    return rows
