"""Benchmarks, one module each, registered by name."""

from lai.registry import Registry
from lai.tasks.base import Task

TASKS: Registry[type[Task]] = Registry("task")
TASKS.register("gsm8k", "lai.tasks.gsm8k:GSM8K")
TASKS.register("gsm8k_plus", "lai.tasks.gsm8k_plus:GSMPlus")
TASKS.register("mbpp", "lai.tasks.code:MBPP")
TASKS.register("humaneval", "lai.tasks.code:HumanEval")
TASKS.register("mmlu", "lai.tasks.choice:MMLU")
TASKS.register("arc_challenge", "lai.tasks.choice:ARCChallenge")
TASKS.register("bbh", "lai.tasks.bbh:BBH")


def get_task(name: str) -> Task:
    return TASKS.get(name)()
