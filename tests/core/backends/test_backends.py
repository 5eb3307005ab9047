"""Choosing a backend: by name, and 'auto' by measurement."""

from __future__ import annotations

import numpy as np
import pytest

from patchkit.core import backends
from patchkit.core.backends.tensorflow import TensorflowBackend
from patchkit.errors import UnknownBackendError
from patchkit.core.sources import as_source

from ...helpers import random_image


@pytest.mark.parametrize("name, expected", [("numpy", "numpy"), ("NumPy", "numpy"), ("tensorflow", "tensorflow")])
def test_by_name(name, expected, image):
    """Names are case-insensitive."""
    assert backends.get_backend(name, as_source(image)).name == expected


@pytest.mark.parametrize("name", ["torch", "", None, 3])
def test_unknown(name, image):
    """Anything else is refused with the list of backends."""
    with pytest.raises(UnknownBackendError, match="use one of auto, cupy, numpy, tensorflow"):
        backends.get_backend(name, as_source(image))


def test_auto_host_arrays_use_numpy(image):
    """Host arrays on a machine without a GPU take numpy without importing anything."""
    assert backends.get_backend("auto", as_source(image)).name == "numpy"


def test_auto_measures_for_tensors(tf, image, monkeypatch):
    """For a tensor, auto times both backends on the device once and caches the faster."""
    monkeypatch.setattr(backends, "_CHOICES", {})
    calls = []
    real = TensorflowBackend.extract
    monkeypatch.setattr(TensorflowBackend, "extract", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    chosen = backends.get_backend("auto", as_source(tf.constant(image)))
    assert chosen.name in ("numpy", "tensorflow") and calls  # TensorFlow really ran
    assert list(backends.auto_choices().values()) == [chosen.name]
    calls.clear()
    backends.get_backend("auto", as_source(tf.constant(image)))
    assert not calls  # cached


@pytest.mark.parametrize("dtype", ["float32", "bool", "bfloat16", "complex64"])
def test_to_tensor_round_trip(tf, dtype):
    """to_tensor keeps values and dtype; DLPack shares memory unless a copy is asked for."""
    array = random_image((1, 3, 4, 2), dtype)
    shared, copied = backends.to_tensor(array), backends.to_tensor(array, copy=True)
    assert shared.dtype.name == dtype
    np.testing.assert_array_equal(backends.tensor_to_numpy(copied), array)
