"""The README's config reference names every config key, so the docs cannot fall behind the code."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from lai.config import RunConfig

README = Path(__file__).resolve().parents[2] / "README.md"


def config_keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the leaf keys; a nested section is walked, a dict of models is a leaf."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if typing.get_origin(annotation) is dict:
            yield prefix + name
            continue
        sections = [a for a in (annotation, *typing.get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if sections:
            yield from config_keys(sections[0], f"{prefix}{name}.")
        else:
            yield prefix + name


def documented_names() -> set[str]:
    text = README.read_text()
    section = text[text.index("## Config reference") : text.index("## Benchmarks and protocols")]
    names: set[str] = set()
    # rows name keys as `train.lora.r` / `alpha` / `dropout`: a later name shares the first's section
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        cells = row.split("|")
        parts = [p for cell in re.findall(r"`([^`]+)`", cells[1]) for p in cell.split(" / ")]
        if parts[0].endswith("[]"):  # a list of sections: its keys are named in the meaning column
            names.update(f"{parts[0][:-2]}.{key}" for key in re.findall(r"`([a-z_]+)`", cells[3]))
            continue
        section_prefix = parts[0].rsplit(".", 1)[0] + "." if "." in parts[0] else ""
        for part in parts:
            names.add(part if "." in part else section_prefix + part)
    return names


def test_every_config_key_is_in_the_readme() -> None:
    documented = documented_names()
    keys = list(config_keys(RunConfig))
    assert len(keys) > 60  # the walk really reaches the nested sections
    missing = [key for key in keys if key not in documented]
    assert not missing, f"README.md's config reference does not mention: {missing}"
