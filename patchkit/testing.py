"""Assertions for checking patches against TensorFlow, the ones patchkit's own tests use.

>>> import numpy as np
>>> from patchkit.testing import assert_matches_tensorflow
>>> assert_matches_tensorflow(np.ones((1, 8, 8, 3), np.float32), sizes=4, strides=2)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .spec import PatchSpec

__all__ = ["reference_patches", "assert_patches_equal", "assert_matches_tensorflow"]


def reference_patches(images: Any, sizes, strides, rates=1, padding: str = "VALID") -> np.ndarray:
    """What ``tf.image.extract_patches`` returns, as an ndarray (bool goes through uint8: TF has no bool kernel)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    spec = PatchSpec(sizes, strides, rates, padding)
    images = np.asarray(images)
    is_bool = images.dtype == np.bool_
    out = tf.image.extract_patches(
        images.astype(np.uint8) if is_bool else images,
        sizes=[1, *spec.sizes, 1],
        strides=[1, *spec.strides, 1],
        rates=[1, *spec.rates, 1],
        padding=spec.padding,
    ).numpy()
    return out.astype(bool) if is_bool else out


def assert_patches_equal(actual: Any, expected: Any) -> None:
    """Assert same shape, same dtype and the same bytes (NaN payloads and signed zeros included)."""
    actual = np.ascontiguousarray(np.asarray(actual))
    expected = np.ascontiguousarray(np.asarray(expected))
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}"
    per_element = actual.dtype.itemsize
    differs = (actual.view(np.uint8) != expected.view(np.uint8)).reshape(-1, per_element).any(axis=1)
    if differs.any():
        first = np.unravel_index(int(np.argmax(differs)), actual.shape)
        raise AssertionError(
            f"patches differ at {int(differs.sum())} of {actual.size} elements; first at {first}: "
            f"{actual[first]!r} != {expected[first]!r}"
        )


def assert_matches_tensorflow(images: Any, sizes, strides, rates=1, padding: str = "VALID", backend: str = "auto") -> None:
    """Assert :func:`patchkit.extract_patches` equals ``tf.image.extract_patches`` bit for bit."""
    from .extract import extract_patches

    assert_patches_equal(
        extract_patches(images, sizes, strides, rates, padding, backend=backend),
        reference_patches(images, sizes, strides, rates, padding),
    )
