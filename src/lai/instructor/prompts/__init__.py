"""Prompt templates, one file per strategy and task family, in our own words.

Templates use ``string.Template`` placeholders (``$question``) rather than f-strings
or ``str.format`` so that JSON examples inside them need no escaping. Their hash goes
into the run manifest: a changed prompt is a different experiment.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from string import Template

from lai.errors import ConfigError

#: Templates that do not ship as files here: a task file carries its own (lai.tasks).
_REGISTERED: dict[str, str] = {}


def register(name: str, text: str) -> None:
    """Make ``text`` the template ``name``; registering the same text twice is a no-op,
    another text under a taken name is an error (two tasks would share one prompt)."""
    if _REGISTERED.get(name, text) != text or (name not in _REGISTERED and _shipped(name) is not None):
        raise ConfigError(f"a different prompt template is already named {name!r}", hint="give the template another name")
    _REGISTERED[name] = text


@cache
def _shipped(name: str) -> str | None:
    try:
        return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def template_text(name: str) -> str:
    text = _REGISTERED.get(name)
    if text is None:
        text = _shipped(name)
    if text is None:
        raise ConfigError(f"no prompt template named {name!r}")
    return text


def render(name: str, **values: object) -> str:
    return Template(template_text(name)).substitute({k: str(v) for k, v in values.items()})


def template_hash(name: str) -> str:
    return hashlib.sha256(template_text(name).encode()).hexdigest()[:12]
