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
# Task files shipped with lai (lai/tasks/files/): the same machinery as a user's task file.
TASKS.register("gsm8k_yaml", "lai.tasks.from_file:gsm8k_yaml")
TASKS.register("arc_challenge_yaml", "lai.tasks.from_file:arc_challenge_yaml")


def get_task(name: str) -> Task:
    if name.startswith("lm_eval:"):  # an lm-evaluation-harness task (lai[lm-eval]), built on demand
        from lai.tasks.lm_eval_task import get_lm_eval_task

        return get_lm_eval_task(name)
    return TASKS.get(name)()
