"""The instructor side: clients for instructor models, prompt templates, reply parsing."""

from lai.instructor.base import Instructor, InstructRequest
from lai.registry import Registry

INSTRUCTORS: Registry[type[Instructor]] = Registry("instructor backend")
INSTRUCTORS.register("openai", "lai.instructor.async_client:AsyncOpenAIInstructor")
INSTRUCTORS.register("scripted", "lai.instructor.scripted:ScriptedInstructor")

__all__ = ["INSTRUCTORS", "InstructRequest", "Instructor"]
