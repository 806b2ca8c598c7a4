"""User-facing errors.

Anything a user can fix (a bad config, a missing file, an unreachable endpoint) is raised
as :class:`LaiError` with a message that names the problem and the fix. The CLI prints
those as one line and exits non-zero; everything else is a bug and gets a traceback
only with ``--debug``.
"""

from __future__ import annotations


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
