"""Arguments as TensorFlow takes them, normalised and checked: sizes, strides, rates, padding, shapes, indices."""

from __future__ import annotations

import math
import operator
from typing import Sequence

import numpy as np

from ...errors import InvalidImageError, InvalidSpecError, PatchIndexError, PatchkitValueError, shown

__all__ = ["PADDINGS", "MAX_VALUE", "MAX_DEPTH", "normalize_padding"]

PADDINGS = ("VALID", "SAME")
#: The largest size, stride or rate: ``tf.image.extract_patches`` holds them in int32 and refuses more.
MAX_VALUE = 2**31 - 1
#: The most values a patch may hold (``kh * kw * channels``): numpy refuses axes whose bytes pass 2**63 - 1.
MAX_DEPTH = 2**59


def _as_int(name: str, value, item) -> int:
    """``item`` as an int: integers, and integral floats (TensorFlow takes ``[1, 2.0, 2.0, 1]``).

    NaN, infinity, fractions and bools are refused, naming ``name`` and the whole ``value``.
    """
    if isinstance(item, (float, np.floating)) and not isinstance(item, bool):
        if math.isfinite(item) and float(item).is_integer():
            return int(item)
        raise InvalidSpecError(
            f"{name}={shown(value)} must hold integers, got {shown(item)} (a fraction, NaN or infinity counts no "
            f"pixels); e.g. {name}=(16, 16)"
        )
    if isinstance(item, (bool, np.bool_)):
        raise InvalidSpecError(f"{name}={shown(value)} must hold integers, got {item!r}; e.g. {name}=(16, 16)")
    try:
        return operator.index(item)
    except TypeError:
        raise InvalidSpecError(
            f"{name}={shown(value)} must hold integers, got {shown(item)} ({type(item).__name__}); e.g. {name}=(16, 16)"
        ) from None


def _normalize_pair(name: str, value) -> tuple[int, int]:
    """Accept ``k``, ``(kh, kw)`` or TensorFlow's ``[1, kh, kw, 1]``; return ``(kh, kw)``."""
    if value is None:
        raise InvalidSpecError(f"{name} is required, got None; pass an integer, (rows, cols) or [1, rows, cols, 1]")
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # a tf.Tensor or Variable
        value = value.numpy()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (set, frozenset, dict)) or hasattr(value, "__iter__") and not isinstance(value, (Sequence, str, bytes)):
        raise InvalidSpecError(
            f"{name}={shown(value)} is a {type(value).__name__}, which has no order; pass an integer, (rows, cols) "
            "or [1, rows, cols, 1]"
        )
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        items = (_as_int(name, value, value),) * 2
    elif len(value) == 2:
        items = (_as_int(name, value, value[0]), _as_int(name, value, value[1]))
    elif len(value) == 4:
        ints = [_as_int(name, value, v) for v in value]
        if ints[0] != 1 or ints[3] != 1:
            raise InvalidSpecError(
                f"{name}={shown(list(value))}: in the 4-vector form the batch and depth entries must be 1 "
                f"(patches never span images or channels); use [1, {ints[1]}, {ints[2]}, 1]"
            )
        items = (ints[1], ints[2])
    else:
        raise InvalidSpecError(
            f"{name}={shown(value)} has length {len(value)}; pass an integer, (rows, cols) or [1, rows, cols, 1]"
        )
    for item in items:
        if item < 1:
            raise InvalidSpecError(f"{name}={shown(value)} must be positive, got {shown(item)}; use integers >= 1")
        if item > MAX_VALUE:
            raise InvalidSpecError(
                f"{name}={shown(value)} holds {shown(item)}, more than 2**31 - 1, the largest that "
                f"tf.image.extract_patches takes (its attrs are int32); use a value of at most {MAX_VALUE}"
            )
    return items


def normalize_padding(padding) -> str:
    """Return ``"VALID"`` or ``"SAME"`` for any capitalisation; raise for anything else."""
    if isinstance(padding, bytes):
        padding = padding.decode("utf-8", "replace")
    if not isinstance(padding, str) or padding.upper() not in PADDINGS:
        raise InvalidSpecError(f"padding={shown(padding)} is not supported; use 'VALID' or 'SAME' (any case)")
    return padding.upper()


def _rank_error(shape: tuple[int, ...]) -> InvalidImageError:
    return InvalidImageError(
        f"images has shape {shape} (rank {len(shape)}), but a 4-D [batch, height, width, channels] array "
        "is required; add a batch axis with images[np.newaxis] or a channel axis with images[..., np.newaxis]"
    )


def _spatial(shape: Sequence[int], allow_empty: bool = False) -> tuple[int, int]:
    """``(height, width)`` of a ``(height, width)`` or ``(batch, height, width, channels)`` shape.

    An axis of length 0 is refused unless ``allow_empty`` (TensorFlow's op takes empty images).
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) not in (2, 4):
        raise _rank_error(shape)
    if 0 in shape and not allow_empty:
        raise InvalidImageError(
            f"images has shape {shape}, which is empty; every axis "
            f"({'batch, height, width, channels' if len(shape) == 4 else 'height, width'}) needs at least one element"
        )
    return shape[-3:-1] if len(shape) == 4 else shape


def _four_d(shape: Sequence[int], allow_empty: bool = False) -> tuple[int, int, int, int]:
    """``shape`` as a validated 4-D ``(batch, height, width, channels)`` tuple (see :func:`_spatial`)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) != 4:
        raise _rank_error(shape)
    _spatial(shape, allow_empty)
    return shape  # type: ignore[return-value]


def _patch_index(name: str, index, count: int) -> tuple[int, int]:
    """``(k, k + 1)`` for patch index ``index`` (negative counts from the end) along an axis of ``count`` patches."""
    what = "row" if name == "i" else "column"
    try:
        k = None if isinstance(index, (bool, np.bool_)) else operator.index(index)
    except TypeError:
        k = None
    if k is None or not -count <= k < count:
        raise PatchIndexError(
            f"{name}={shown(index)} is out of range or not an integer: the grid has {count} patch {what}s; pass an "
            f"integer with {-count} <= {name} < {count}"
        )
    return k % count, k % count + 1


def _bounds(rows: slice | tuple[int, int]) -> tuple[int, int]:
    if isinstance(rows, slice):
        if rows.step not in (None, 1):
            raise PatchkitValueError(f"rows={rows!r} must be a contiguous slice (step 1); pass e.g. rows=slice(0, 8)")
        return int(rows.start or 0), int(rows.stop)
    i0, i1 = rows
    return int(i0), int(i1)
