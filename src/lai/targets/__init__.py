"""Target backends (the model being improved), registered lazily by name."""

from lai.registry import Registry
from lai.targets.base import Target

TARGETS: Registry[type[Target]] = Registry("target backend")
TARGETS.register("hf", "lai.targets.hf:HFTarget")
TARGETS.register("scripted", "lai.targets.scripted:ScriptedTarget")
TARGETS.register("vllm", "lai.targets.vllm:VLLMTarget")  # CUDA; pip install 'lai[vllm]'
