"""A tiny registry of named implementations, resolved lazily.

Heavy backends (transformers, vLLM, TRL) are registered as ``"module:attribute"``
strings, the way lm-evaluation-harness registers its models, so importing the registry,
validating a config or running ``lai --help`` never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any, Generic, TypeVar

from lai.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a name to a class or factory, given directly or as an import path."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, str | T] = {}

    def register(self, name: str, target: str | T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = target

    def unregister(self, name: str) -> None:
        """Forget a name (user task files are registered per run; tests start afresh)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(
                f"unknown {self.kind} {name!r}",
                hint=f"choose one of: {', '.join(self.names())}",
            )
        target = self._entries[name]
        if isinstance(target, str):
            module_name, _, attribute = target.partition(":")
            target = getattr(importlib.import_module(module_name), attribute)
            self._entries[name] = target
        return target  # type: ignore[return-value]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

