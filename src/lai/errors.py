"""User-facing errors, and the one place where other exceptions become them.

Anything a user can fix (a bad config, a missing file, an unreachable endpoint) is raised
as :class:`LaiError` with a message that names the problem and the fix. The CLI prints
those as one line and exits with status 2; everything else is a bug and gets a traceback
only with ``--debug``.

Some fixable problems surface as plain Python exceptions deep inside a library (a full
disk while appending a record, a folder where a file was expected). :func:`user_error`
turns those into a :class:`LaiError` that names the path, says the cause in plain words
and the fix, so the CLI needs only one ``except`` for "the user can fix this".
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path


class LaiError(Exception):
    """A problem the user can fix; ``hint`` says how."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(LaiError):
    """The config file is missing, malformed or inconsistent."""


class DataError(LaiError):
    """A data set could not be found or a file is in the wrong format."""


class ModelError(LaiError):
    """A model could not be located or loaded."""


class InstructorError(LaiError):
    """The instructor endpoint is unreachable or keeps failing."""


class RunDirError(LaiError):
    """A run (or output) directory cannot be written, or holds a damaged file."""


# errno -> (the cause in plain words, the fix). "{path}" is filled in with the path.
_OS_CAUSES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", "free some space there, then rerun the same command to resume"),
    errno.EDQUOT: ("the disk quota is exhausted", "free some space there, then rerun the same command to resume"),
    errno.EROFS: ("the file system is read-only", "choose a writable location (e.g. --run-dir or --out)"),
    errno.EACCES: ("permission denied", "make it accessible to this user, or choose another location"),
    errno.EPERM: ("operation not permitted", "make it accessible to this user, or choose another location"),
    errno.ENOTDIR: ("a part of this path is a file, not a folder", "choose a path whose parents are folders"),
    errno.EISDIR: ("it is a folder, not a file", "give the path of a file"),
    errno.EEXIST: ("a file is in the way where a folder is needed", "remove that file or choose another path"),
    errno.ENOENT: ("it does not exist", "check the path"),
    errno.ENAMETOOLONG: ("the path is too long", "choose a shorter path"),
    errno.ELOOP: ("the path has a symbolic-link loop", "fix the links or choose another path"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) and rerun the same command"),
    errno.EIO: ("an input/output error from the device", "check the disk, then rerun the same command"),
}


def os_error(error: OSError, path: str | os.PathLike[str] | None = None, doing: str = "") -> RunDirError:
    """One line for an OS error: what, where, why in plain words, and the fix."""
    where = path if path is not None else error.filename
    cause, fix = _OS_CAUSES.get(error.errno or -1, (error.strerror or str(error), "check the path and retry"))
    subject = f"{doing} {where}".strip() if where is not None else (doing or "a file operation")
    if where is None:
        # A write that fails with ENOSPC names no file; say so instead of inventing one.
        subject += " (the system did not say which file)"
    return RunDirError(f"{subject}: {cause}", hint=fix)


def decode_error(path: str | os.PathLike[str], data: bytes, error: UnicodeDecodeError, what: str = "file") -> DataError:
    """One line for text that is not UTF-8, with the line and the offending byte."""
    line = data.count(b"\n", 0, error.start) + 1
    byte = data[error.start : error.start + 1].hex()
    return DataError(
        f"{path}:{line}: the {what} is not UTF-8 text (byte 0x{byte})",
        hint="save it as UTF-8, e.g. with iconv -f latin1 -t utf-8; a binary file cannot be used here",
    )


def read_text(path: str | os.PathLike[str], what: str = "file", hint: str | None = None) -> str:
    """A UTF-8 text file's contents, or a one-line :class:`LaiError` naming the path.

    ``what`` names the file in messages ("config file", "data file"); ``hint`` replaces
    the default fix for a missing file.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a {what}", hint=hint or f"give the path of the {what} itself")
    if not path.exists():
        raise DataError(f"{what} not found: {path}", hint=hint or "check the path")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise os_error(error, path, f"cannot read the {what}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise decode_error(path, data, error, what) from None


def user_error(error: BaseException) -> LaiError | None:
    """The :class:`LaiError` a fixable exception stands for, or None for a real bug.

    This is the one mapping the CLI applies to anything that is not already a LaiError.
    """
    if isinstance(error, LaiError):
        return error
    if isinstance(error, OSError):  # includes PermissionError, FileNotFoundError, ...
        return os_error(error)
    if isinstance(error, UnicodeDecodeError):
        return DataError(
            f"a file is not UTF-8 text ({error.reason} at byte {error.start})",
            hint="save it as UTF-8; rerun with --debug to see which file",
        )
    if isinstance(error, json.JSONDecodeError):
        return DataError(
            f"a JSON file is damaged (line {error.lineno}: {error.msg})",
            hint="rerun with --debug to see which file; lai validate names it",
        )
    if isinstance(error, RecursionError) or (isinstance(error, ValueError) and "digits" in str(error)):
        return DataError(f"a file holds {too_big(error)}", hint="rerun with --debug to see which file; lai validate names it")
    return None


def too_big(error: BaseException) -> str:
    """A decoder's ValueError or RecursionError in plain words (Python's int and nesting limits)."""
    if isinstance(error, RecursionError):
        return "values nested too deep"
    text = str(error)
    if "digits" in text:
        return "a number with more than 4,300 digits"
    return one_line(text)[:200]


def one_line(text: str) -> str:
    """Collapse a message onto one line (library messages often span several)."""
    return " ".join(text.split())
