"""Assertions for checking patches against TensorFlow, the ones patchkit's own tests use.

>>> import numpy as np
>>> from patchkit.testing import assert_matches_tensorflow
>>> assert_matches_tensorflow(np.ones((1, 8, 8, 3), np.float32), sizes=4, strides=2)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .core.dtypes import SUPPORTED_DTYPES, check_dtype
from .errors import InvalidImageError, PatchkitValueError, UnsupportedDtypeError, shown
from .core.spec import PatchSpec

__all__ = ["reference_patches", "assert_patches_equal", "assert_matches_tensorflow", "lazy_scene"]


def reference_patches(images: Any, sizes, strides, rates=1, padding: str = "VALID") -> np.ndarray:
    """What ``tf.image.extract_patches`` returns, as an ndarray (bool goes through uint8: TF has no bool kernel)."""
    spec = PatchSpec(sizes, strides, rates, padding)  # checked before TensorFlow is imported
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

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
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape} != {expected.shape}")
    if actual.dtype != expected.dtype:
        raise AssertionError(f"dtype {actual.dtype} != {expected.dtype}")
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
    from .core.extract import extract_patches

    assert_patches_equal(
        extract_patches(images, sizes, strides, rates, padding, backend=backend),
        reference_patches(images, sizes, strides, rates, padding),
    )


def lazy_scene(shape: tuple[int, int, int, int], dtype="uint16", chunks: tuple[int, int] = (1024, 4096)):
    """A dask scene of ``shape`` that exists only chunk by chunk: for testing streams under a budget.

    Pixel ``(y, x, band)`` is ``31 y + 17 x + 7 band``, wrapping in ``dtype``; every batch image is the
    same. ``chunks`` are ``(rows, cols)``; batch and bands are one chunk. Generating a chunk allocates
    the chunk and nothing more, so the memory a consumer measures is its own.
    """
    import dask.array as da

    from .core.sources import _normalize_chunks

    shape = _positive(shape, 4, "shape", "(1, 4096, 4096, 3)")
    dtype = _scene_dtype(dtype)
    chunks = _positive(chunks, 2, "chunks", "(1024, 4096)")
    b, _, _, c = shape
    return da.map_blocks(
        _scene_block,
        dtype=dtype,
        chunks=_normalize_chunks((b, *chunks, c), shape),
        meta=np.empty((0, 0, 0, 0), dtype),
    )


def _positive(values: Any, count: int, name: str, example: str) -> tuple[int, ...]:
    """``values`` as ``count`` positive ints, or the patchkit error naming ``name`` (shape or chunks)."""
    try:
        items = tuple(values)
        ok = len(items) == count and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in items)
    except TypeError:
        ok = False
    if not ok:
        error = InvalidImageError if name == "shape" else PatchkitValueError
        raise error(f"{name}={shown(values)} must be {count} positive integers; pass e.g. {name}={example}")
    return tuple(int(v) for v in items)


def _scene_dtype(dtype: Any) -> np.dtype:
    """``dtype`` as a numpy dtype that extraction accepts, or :class:`UnsupportedDtypeError` naming it."""
    try:
        return check_dtype(dtype, "dtype")
    except UnsupportedDtypeError:
        raise UnsupportedDtypeError(
            f"dtype={shown(dtype)} is not one tf.image.extract_patches accepts; pass one of {', '.join(SUPPORTED_DTYPES)}"
        ) from None


def _scene_block(block_info=None) -> np.ndarray:
    """One chunk of :func:`lazy_scene`, written in place in the chunk's dtype."""
    info = block_info[None]
    (b0, b1), (y0, y1), (x0, x1), (c0, c1) = info["array-location"]
    dtype = np.dtype(info["dtype"])
    out = np.empty((b1 - b0, y1 - y0, x1 - x0, c1 - c0), dtype)
    np.add(_ramp(y0, y1, 31, dtype)[:, None, None], _ramp(x0, x1, 17, dtype)[None, :, None], out=out)
    out += _ramp(c0, c1, 7, dtype)
    return out


def _ramp(start: int, stop: int, step: int, dtype: np.dtype) -> np.ndarray:
    """``step * [start, stop)`` cast (wrapping) to ``dtype``."""
    return (np.arange(start, stop, dtype=np.int64) * step).astype(dtype)
