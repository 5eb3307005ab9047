"""Shared fixtures: random images of every dtype, TensorFlow (skipped where absent), lazy sources."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", os.environ.get("PATCHKIT_TEST_GPU", "-1"))

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from .helpers import random_image

settings.register_profile(
    "patchkit", deadline=None, max_examples=120, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("ci", parent=settings.get_profile("patchkit"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "patchkit")


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, on the CPU unless PATCHKIT_TEST_GPU names a GPU (tests skip without TensorFlow)."""
    return pytest.importorskip("tensorflow")


@pytest.fixture
def image() -> np.ndarray:
    """A small float32 batch with odd sizes, so SAME padding splits unevenly."""
    return random_image((2, 37, 41, 3), "float32")
