"""lai: language models that improve by learning from their own mistakes.

An implementation of "LLMs-as-Instructors" (Ying et al., EMNLP 2024 Findings):
a target model answers benchmark training questions, an instructor model studies
the wrong answers and writes new training samples, the target is fine-tuned on them,
and the loop repeats from the improved model.
"""

import os

__version__ = "0.1.0"

# OpenMP threads (torch's and llama.cpp's) spin-wait for each other by default. Beside one
# CPU-bound neighbour on 2 cores, a thread spins while the one it waits for is descheduled:
# a torch matmul loop took 17x longer (233 s against 14 s with PASSIVE, bench/README.md,
# "Busy machines"). Set before torch is imported, since libgomp reads it once at load;
# a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
