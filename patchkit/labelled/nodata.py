"""The share of nodata in every patch, counted without extracting a patch.

A value is nodata when it equals the raster's nodata value or ``_FillValue``, when it is NaN, or when it
lies in padding. The share of a patch is over all its values (every image of the batch, every channel,
every sampled pixel). Counting reads the image once, one row band at a time (the bands of
:meth:`PatchSpec.plan`): per band, the nodata values of each input pixel are counted, then summed
over the rows and the columns each patch samples. No patch is made.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..errors import PatchkitValueError, shown
from ..core.budget import DEFAULT_MAX_MEMORY
from ..core.sources import Source, as_source
from ..core.spec import PatchSpec

__all__ = ["nodata_values", "check_fraction", "nodata_counts", "nodata_fractions"]


def check_fraction(value: Any, name: str = "max_nodata_fraction") -> float | None:
    """``value`` as a float in ``[0, 1]`` (or None); anything else is a :class:`PatchkitValueError`."""
    if value is None:
        return None
    try:
        fraction = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond a float
        fraction = float("nan")
    if isinstance(value, (bool, np.bool_)) or not 0.0 <= fraction <= 1.0:
        raise PatchkitValueError(
            f"{name}={shown(value)} must be a share between 0.0 and 1.0 (0.0 keeps only patches without "
            "nodata, 1.0 keeps all); pass e.g. 0.25, or None to keep every patch"
        )
    return fraction


def nodata_values(obj: Any) -> tuple:
    """The nodata markers of a DataArray: ``_FillValue``, ``nodata`` or ``missing_value`` in attrs or encoding.

    NaN is always nodata for floating-point data and is not listed.
    """
    found: list = []
    for mapping in (obj.attrs, obj.encoding):
        for key in ("_FillValue", "nodata", "missing_value"):
            for value in np.atleast_1d(mapping.get(key, [])).tolist():
                if value is not None and value == value and value not in found:  # NaN != NaN
                    found.append(value)
    return tuple(found)


def _representable(values: Iterable, dtype: np.dtype) -> list:
    """The markers that exist in ``dtype`` (-9999 cannot occur in uint8 data)."""
    out = []
    for value in values:
        with np.errstate(invalid="ignore", over="ignore"):
            try:
                cast = np.asarray(value).astype(dtype)
            except (OverflowError, ValueError, TypeError):
                continue
        if cast == value:
            out.append(cast)
    return out


def _missing_per_pixel(pixels: np.ndarray, markers: list) -> np.ndarray:
    """Number of nodata values at each pixel of ``[b, h, w, c]``, summed over batch and channels."""
    b, h, w, c = pixels.shape
    count = np.zeros((h, w), np.int32)
    floating = pixels.dtype.kind in "fcV"
    for i in range(b):
        for k in range(c):
            plane = pixels[i, :, :, k]
            if floating:
                try:
                    count += np.isnan(plane)
                except TypeError:  # a dtype without NaN
                    floating = False
            for marker in markers:
                count += plane == marker
    return count


def nodata_fractions(images: Any, spec: PatchSpec, markers: Iterable = (), *, max_memory: int | str = DEFAULT_MAX_MEMORY) -> np.ndarray:
    """The share of nodata in every patch of ``images``: an array ``[out_rows, out_cols]`` of floats.

    ``counts / total`` of :func:`nodata_counts`, whose arguments it takes.
    """
    counts, total = nodata_counts(images, spec, markers, max_memory=max_memory)
    return counts / total


def nodata_counts(images: Any, spec: PatchSpec, markers: Iterable = (), *, max_memory: int | str = DEFAULT_MAX_MEMORY) -> tuple[np.ndarray, int]:
    """The number of nodata values in every patch of ``images``, and the number of values in a patch.

    Parameters
    ----------
    images : array-like, dask array or :class:`~patchkit.core.sources.Source`, ``[batch, height, width, channels]``
    spec : PatchSpec
    markers : values that mark nodata (NaN always does for floating-point data)
    max_memory : bound on the bands read at once (as :func:`patchkit.iter_patches`)

    Notes
    -----
    The work is that of reading the image once, whatever the kernel: a patch's count is a sum over
    the pixels it samples inside the image, taken from sums along every ``rate``-th row and column
    (:func:`_tap_sums`), plus ``batch x channels`` for each padded cell it samples.
    """
    source = as_source(images)
    spec.check(source.shape)
    shape = source.shape
    b, h, w, c = shape
    full = b * c
    markers = _representable(markers, source.dtype)
    plan = spec.plan(shape, source.dtype, max_memory, lazy=source.lazy, chunks=source.chunks)
    (kh, kw), (rh, rw) = spec.sizes, spec.rates
    row_starts, col_starts = spec.starts(shape)
    counts = np.empty(spec.grid_shape(shape), np.int64)
    for rows in plan.bands:
        ya, yb = spec.input_rows(rows, shape, clip=True)
        missing = _missing_per_pixel(_read(source, ya, yb), markers)
        by_rows, rows_in = _tap_sums(missing, row_starts[rows] - ya, kh, rh, axis=0)
        inside, cols_in = _tap_sums(by_rows, col_starts, kw, rw, axis=1)
        counts[rows] = inside + (kh * kw - rows_in[:, None] * cols_in[None, :]) * full
    return counts, kh * kw * full


def _tap_sums(values: np.ndarray, starts: np.ndarray, k: int, r: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``values`` over the taps ``start + a r`` (``a < k``) of every patch that lie inside ``values``.

    Along ``axis``; ``starts`` are relative to the first entry of ``values`` (and may be negative, or
    past its end: taps outside are padding, left out). Returns the sums (``len(starts)`` along
    ``axis``) and how many taps of each patch lie inside. The taps of a patch are a run of every
    ``r``-th entry, so the sum is a difference of running sums along every ``r``-th entry: the cost
    does not depend on ``k``.
    """
    n = values.shape[axis]
    a0 = np.clip(-(starts // r), 0, k)  # the first tap at or after 0: ceil(-start / r)
    a1 = np.clip((n - 1 - starts) // r + 1, 0, k)  # one past the last tap before n
    count = np.maximum(a1 - a0, 0)
    moved = np.moveaxis(values, axis, 0).astype(np.int64)
    if r < n:  # running sums along every r-th entry: one column of [ceil(n / r), r] per residue
        m = -(-n // r)
        padded = np.zeros((m * r,) + moved.shape[1:], np.int64)
        padded[:n] = moved
        moved = np.cumsum(padded.reshape((m, r) + moved.shape[1:]), axis=0).reshape(padded.shape)[:n]
    some = count > 0
    first = np.where(some, starts + a0 * r, 0)
    last = np.where(some, starts + (a1 - 1) * r, 0)
    before = first - r
    sums = moved[last] - np.where((before >= 0)[(...,) + (None,) * (moved.ndim - 1)], moved[np.maximum(before, 0)], 0)
    sums[~some] = 0
    return np.moveaxis(sums, 0, axis), count


def _read(source: Source, start: int, stop: int) -> np.ndarray:
    return source.read_rows(start, stop) if source.lazy else source.numpy()[:, start:stop]
