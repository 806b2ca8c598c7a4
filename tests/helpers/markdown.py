"""Reading the markdown and HTML the reports and cards write, for assertions."""

from __future__ import annotations

from html.parser import HTMLParser


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """Rows of any markdown table in ``text`` whose first cell is ``first_cell``."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if cells[0] == first_cell:
                rows.append(cells)
    return rows


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def page_text(html: str) -> str:
    """The text a reader sees on an HTML page, on one line (tags dropped, spaces collapsed)."""
    parser = _Text()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())
