"""A refactor changes no behaviour: six fixed runs on fakes (every strategy, three pool
tasks, four benchmarks, export included) give the same run directories, byte for byte
after blanking what differs by nature (tests/helpers/golden_run.py).

When a change is *meant* to change what a run writes, regenerate the reference and say
why in the commit:

    python -m tests.helpers.golden_run /tmp/golden.txt && gzip -9c /tmp/golden.txt > tests/fixtures/golden/fake_runs.txt.gz
"""

from __future__ import annotations

import difflib
import gzip
from pathlib import Path

from tests.helpers import golden_run

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "fake_runs.txt.gz"


def test_fixed_fake_runs_write_the_same_run_directories(tmp_path: Path) -> None:
    out = tmp_path / "golden.txt"
    golden_run.run_all(out, tmp_path / "runs")
    expected = gzip.decompress(REFERENCE.read_bytes()).decode().splitlines()
    actual = out.read_text().splitlines()
    diff = list(difflib.unified_diff(expected, actual, "reference", "this checkout", n=2, lineterm=""))
    assert not diff, "the fake runs changed:\n" + "\n".join(line[:300] for line in diff[:80])
