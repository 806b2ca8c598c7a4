"""Target backends (the model being improved), registered lazily by name."""

from lai.models.base import Target
from lai.registry import Registry

TARGETS: Registry[type[Target]] = Registry("target backend")
TARGETS.register("hf", "lai.models.hf:HFTarget")
TARGETS.register("scripted", "lai.models.scripted:ScriptedTarget")
TARGETS.register("vllm", "lai.models.vllm:VLLMTarget")  # CUDA; pip install 'lai[vllm]'
