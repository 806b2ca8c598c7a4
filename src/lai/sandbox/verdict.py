"""The verdict: lai's sentence about a run, from the worker's report and the program's stderr.

Only the worker's report (on a socket the program never holds) decides the status; the
program's own words (its exception, its last stderr line) appear quoted, cleaned of
control and format characters, and capped, so that a program can neither pass itself
off as a sandbox error nor steer the model that reads the reason.
"""

from __future__ import annotations

import os
import re
import signal
import unicodedata
from typing import Any, Protocol


class Limits(Protocol):
    memory_mb: int
    max_processes: int
    max_file_mb: int
    max_output_bytes: int
    max_disk_mb: int
    max_files: int
    timeout_s: float


RECURSION_CAP = 100_000  # the most sys.setrecursionlimit may set in the sandbox


_INVISIBLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]{0,79})(?::\s?(.*))?$")


def clean_output(raw: bytes) -> str:
    """The program's output as text, without control or format characters (tabs and
    newlines stay): a terminal escape or a right-to-left override could otherwise
    rewrite what a reader, human or model, thinks it says."""
    text = _INVISIBLE.sub("", raw.decode("utf-8", "replace"))
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def clean(text: str, limit: int) -> str:
    text = " ".join(clean_output(text.encode("utf-8", "replace")).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quote(text: str, limit: int = 200) -> str:
    """The program's words inside lai's sentence: cleaned, capped, in double quotes."""
    return '"' + clean(text, limit).replace('"', "'") + '"'


def verdict(
    report: dict[str, Any] | None, stderr: str, overflow: bool, lim: Limits
) -> tuple[str, str]:
    if report is None:
        return "error", "sandbox error: the sandbox ended without a report"
    if report["kind"] == "error":
        return "error", clean(str(report["message"]), 300)
    if overflow:
        return "error", f"output truncated: over {lim.max_output_bytes} bytes, program stopped"
    if report["outcome"] == "timeout":
        return "timeout", f"timed out after {lim.timeout_s:.1f} s"
    if report["outcome"] != "exited":  # "stopped" by lai, or "gone"
        return "error", "sandbox error: the run was stopped"
    if report["status"] is None:
        return "error", "sandbox error: the sandbox's init ended without the program's status"
    code = os.waitstatus_to_exitcode(int(report["status"]))
    if code == 0:
        if report["proof"]:
            return "passed", "passed"
        return "failed", "failed: exited before the tests finished (exit code 0)"
    if code > 0:
        return "failed", "failed: " + _exception(stderr, code, lim)
    if -code == signal.SIGXCPU:
        return "timeout", "timed out: CPU time limit exceeded"
    if report.get("oom"):
        return "failed", f"failed: killed at the memory limit ({lim.memory_mb} MB)"
    name = next((s.name for s in signal.Signals if s == -code), f"signal {-code}")
    return "failed", f"failed: killed by {name}"


def _exception(stderr: str, code: int, lim: Limits) -> str:
    """'Type: "message"' from the last traceback (or SyntaxError report) in stderr."""
    lines = stderr.rstrip().splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith(("Traceback (", '  File "'))]
    rest = lines[heads[-1] + 1 :] if heads else []
    while rest and (rest[0].startswith(" ") or not rest[0].strip()):
        rest.pop(0)  # the frame's source line and its ^^^ markers
    message: list[str] = []
    for line in rest:  # stop where another process's traceback begins
        if line.startswith((" ", "Traceback")):
            break
        message.append(line.strip())
    match = _EXCEPTION.match(message[0]) if message else None
    if match:
        kind, first = match[1], match[2] or ""
        text = " ".join([first, *message[1:]]).strip()
        hints = {"MemoryError": f"memory limit {lim.memory_mb} MB",
                 "RecursionError": f"recursion limit at most {RECURSION_CAP} in the sandbox",
                 "BlockingIOError": f"process limit {lim.max_processes}" if "[Errno 11]" in text else "",
                 "OSError": {"[Errno 27]": f"file size limit {lim.max_file_mb} MB",
                             "[Errno 28]": f"disk quota {lim.max_disk_mb} MB or {lim.max_files} files",
                             }.get(text[:10], "")}  # fmt: skip
        summary = f"{kind}: {_quote(text)}" if text else kind
        hint = hints.get(kind)
        return f"{summary} ({hint})" if hint else summary
    last = lines[-1] if lines else ""
    return f"exit code {code}" + (f" (stderr: {_quote(last)})" if last.strip() else "")
