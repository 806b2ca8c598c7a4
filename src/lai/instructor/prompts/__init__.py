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


@cache
def template_text(name: str) -> str:
    try:
        return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no prompt template named {name!r}") from None


def render(name: str, **values: object) -> str:
    return Template(template_text(name)).substitute({k: str(v) for k, v in values.items()})


def template_hash(name: str) -> str:
    return hashlib.sha256(template_text(name).encode()).hexdigest()[:12]
