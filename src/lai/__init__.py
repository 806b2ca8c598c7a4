"""lai: language models that improve by learning from their own mistakes.

An implementation of "LLMs-as-Instructors" (Ying et al., EMNLP 2024 Findings):
a target model answers benchmark training questions, an instructor model studies
the wrong answers and writes new training samples, the target is fine-tuned on them,
and the loop repeats from the improved model.
"""

import os

from lai.processes import short_openmp_spins

__version__ = "0.1.0"

# Before torch is imported: libgomp reads its wait policy once, when it loads.
short_openmp_spins(os.environ)
