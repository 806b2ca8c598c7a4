"""Benchmarks, one module each, registered by name."""

from lai.registry import Registry
from lai.tasks.base import Task

TASKS: Registry[type[Task]] = Registry("task")
TASKS.register("gsm8k", "lai.tasks.gsm8k:GSM8K")


def get_task(name: str) -> Task:
    return TASKS.get(name)()
