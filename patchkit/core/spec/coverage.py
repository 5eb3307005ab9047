"""Which pixels of the image the patch grid samples: per axis, per patch and for the whole grid.

Pure functions of a :class:`~patchkit.core.spec.PatchSpec` and an image shape, by the spec's geometry:
patch ``i`` along an axis of length ``n`` samples ``i s - before + a r`` for ``a`` in ``0 .. k - 1``;
positions outside ``[0, n)`` are padding and are never counted. Nothing here reads or allocates
image data: costs are at most linear in the grid's sides (plus ``O(k)`` slice writes of ``O(out)``
for :func:`covered` when windows leave gaps).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

__all__ = ["axis_covered", "covered", "coverage", "axis_taps_inside", "taps_inside", "clipped"]


@functools.lru_cache(maxsize=256)
def axis_covered(n: int, k: int, s: int, r: int, before: int, out: int) -> int:
    """How many of the ``n`` input positions along one axis at least one of ``out`` patches samples.

    Parameters
    ----------
    n : int
        Axis length.
    k, s, r : int
        Kernel size, stride and rate along the axis.
    before : int
        Padding before the first pixel (``padding_amounts(...)[0]``).
    out : int
        Patches along the axis (``output_size``); 0 covers nothing.

    Returns
    -------
    int
        Count in ``[0, n]``. Windows that touch or overlap (rate 1, stride at most the kernel) cover
        one run from the first start to the last end, clipped to the image.
    """
    if out <= 0:
        return 0
    if r == 1 and s <= k:
        first, last = -before, (out - 1) * s - before + k
        return max(0, min(last, n) - max(first, 0))
    mask = np.zeros(n, bool)
    for a in range(k):
        start = a * r - before
        i0 = -(start // s) if start < 0 else 0  # first patch whose tap a is inside: ceil(-start / s)
        i1 = min(out - 1, (n - 1 - start) // s)
        if i1 >= i0:
            mask[start + i0 * s: start + i1 * s + 1: s] = True
    return int(mask.sum())


def _axes(spec, shape: Sequence[int]) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """``(n, k, s, r, before, out)`` of the row and column axes, from the spec's public geometry."""
    hw = (shape[0], shape[1]) if len(shape) == 2 else (shape[1], shape[2])
    grid = spec.grid_shape(shape)
    pads = spec.padding_amounts(shape)
    return tuple((int(hw[a]), spec.sizes[a], spec.strides[a], spec.rates[a], pads[a][0], grid[a]) for a in (0, 1))


def covered(spec, shape: Sequence[int]) -> tuple[int, int]:
    """Input rows and input columns that at least one patch samples: ``(rows, cols)``.

    ``shape`` is ``(height, width)`` or ``(batch, height, width, channels)``. The patches form a full
    grid, so the sampled pixels are exactly these rows crossed with these columns.
    """
    rows, cols = _axes(spec, shape)
    return axis_covered(*rows), axis_covered(*cols)


def coverage(spec, shape: Sequence[int]) -> float:
    """The share of the image's pixels that at least one patch samples, in ``[0, 1]``.

    Stride larger than the kernel (or rates above 1) leaves gaps; padding is not counted.

    Examples
    --------
    >>> from patchkit.core.spec import PatchSpec
    >>> coverage(PatchSpec(4, 8), (16, 16))   # every other 4-pixel run of rows and of columns
    0.25
    """
    (h, *_), (w, *_) = _axes(spec, shape)
    rows, cols = covered(spec, shape)
    return rows * cols / (h * w)


def axis_taps_inside(n: int, k: int, s: int, r: int, before: int, idx: np.ndarray) -> np.ndarray:
    """For patches ``idx`` along one axis: how many of their ``k`` taps fall inside ``[0, n)``.

    Arguments as :func:`axis_covered`; ``idx`` are patch indices (any integer array). The rest of
    each patch's ``k`` taps are padding.
    """
    start = np.asarray(idx, np.int64) * s - before
    first = np.where(start < 0, -(start // r), 0)  # first tap at or after 0: ceil(-start / r)
    last = np.minimum(k - 1, (n - 1 - start) // r)
    return np.clip(last - first + 1, 0, k)


def taps_inside(spec, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Taps inside the image of every patch row and every patch column: ``(rows[out_rows], cols[out_cols])``.

    A patch ``(i, j)`` samples ``rows[i] * cols[j]`` image pixels of its ``kh * kw``; the rest is padding.
    """
    return tuple(axis_taps_inside(*axis[:5], np.arange(axis[5])) for axis in _axes(spec, shape))  # type: ignore[return-value]


def clipped(window, shape: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The part of a :class:`~patchkit.core.spec.Window` inside the image: ``((row0, row1), (col0, col1))``.

    Half-open ranges of image pixels (what a reader fetches); an empty range (``row1 <= row0``) when
    the window lies wholly in the padding.
    """
    h, w = (shape[0], shape[1]) if len(shape) == 2 else (shape[1], shape[2])
    rows = (max(window.row_off, 0), min(window.row_off + window.height, h))
    cols = (max(window.col_off, 0), min(window.col_off + window.width, w))
    return rows, cols
