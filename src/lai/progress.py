"""Progress reporting without printing: the pipeline calls these hooks, the CLI draws bars."""

from __future__ import annotations

from typing import Protocol


class StageProgress(Protocol):
    def advance(self, n: int = 1) -> None: ...
    def close(self) -> None: ...


class Progress(Protocol):
    def start(self, label: str, total: int | None) -> StageProgress: ...


class _NullStage:
    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    def start(self, label: str, total: int | None) -> StageProgress:
        return _NullStage()
