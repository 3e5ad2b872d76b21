"""Shared test setup: the project root on sys.path, and one thread per process.

The models in these tests are tiny: one thread is faster than two fighting over a 2-core CI machine,
and subprocesses the tests start inherit OMP_NUM_THREADS."""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

torch.set_num_threads(1)
