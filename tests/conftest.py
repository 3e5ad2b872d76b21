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


import pytest  # noqa: E402


@pytest.fixture
def fp16_autocast():
    """Skips a test of the fp16 + GradScaler path (card 001's T4) where this CPU build has no float16 autocast."""
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            torch.ones(2, 2) @ torch.ones(2, 2)
    except RuntimeError as e:
        pytest.skip(f"this CPU build has no float16 autocast: {e}")
