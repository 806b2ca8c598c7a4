"""Task registrations as data, to hand to another process (a Ray worker): the user task
files and the lm-eval tasks this process registered, which ``get_task`` needs to give a
name the same meaning there."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskSetup:
    """What gives this process's task names their meaning beyond the built-ins: the user
    task files and the lm-eval tasks a config registered. Another process (a Ray worker)
    applies it before it builds a task by name, so ``get_task`` means the same there."""

    files: tuple[str, ...] = ()
    lm_eval: tuple[Any, ...] = ()  # lai.tasks.lm_eval_task.LmEvalSpec


def task_setup() -> TaskSetup:
    from lai.tasks.from_file import user_task_files

    lm_eval = sys.modules.get("lai.tasks.lm_eval_task")  # registered only where a config names one
    return TaskSetup(tuple(str(p) for p in user_task_files()), tuple(lm_eval.registered_specs()) if lm_eval else ())


def apply_task_setup(setup: TaskSetup) -> None:
    from lai.tasks.from_file import register_task_file

    for path in setup.files:
        register_task_file(path)
    if setup.lm_eval:
        from lai.tasks import lm_eval_task

        for spec in setup.lm_eval:
            lm_eval_task.register(spec)
