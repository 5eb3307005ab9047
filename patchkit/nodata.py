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

from .errors import PatchkitValueError
from .sources import Source, as_source
from .spec import PatchSpec

__all__ = ["nodata_values", "check_fraction", "nodata_counts", "nodata_fractions"]


def check_fraction(value: Any, name: str = "max_nodata_fraction") -> float | None:
    """``value`` as a float in ``[0, 1]`` (or None); anything else is a :class:`PatchkitValueError`."""
    if value is None:
        return None
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = float("nan")
    if isinstance(value, bool) or not 0.0 <= fraction <= 1.0:
        raise PatchkitValueError(
            f"{name}={value!r} must be a share between 0.0 and 1.0 (0.0 keeps only patches without "
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


def nodata_fractions(images: Any, spec: PatchSpec, markers: Iterable = (), *, max_memory: int | str = "512MiB") -> np.ndarray:
    """The share of nodata in every patch of ``images``: an array ``[out_rows, out_cols]`` of floats.

    ``counts / total`` of :func:`nodata_counts`, whose arguments it takes.
    """
    counts, total = nodata_counts(images, spec, markers, max_memory=max_memory)
    return counts / total


def nodata_counts(images: Any, spec: PatchSpec, markers: Iterable = (), *, max_memory: int | str = "512MiB") -> tuple[np.ndarray, int]:
    """The number of nodata values in every patch of ``images``, and the number of values in a patch.

    Parameters
    ----------
    images : array-like or dask array, ``[batch, height, width, channels]``
    spec : PatchSpec
    markers : values that mark nodata (NaN always does for floating-point data)
    max_memory : bound on the bands read at once (as :func:`patchkit.iter_patches`)
    """
    source = as_source(images)
    spec.check(source.shape)
    shape = source.shape
    b, h, w, c = shape
    (_, _), (left, right) = spec.padding_amounts(shape)
    row_pos, col_pos = spec.positions(shape)
    oh, ow = spec.grid_shape(shape)
    full = b * c
    markers = _representable(markers, source.dtype)
    plan = spec.plan(shape, source.dtype, max_memory, lazy=source.lazy, chunks=source.chunks)
    counts = np.empty((oh, ow), np.int64)
    cols = col_pos + left
    for rows in plan.bands:
        start, stop = spec.input_rows(rows, shape)
        ya, yb = max(start, 0), min(stop, h)
        padded = np.full((stop - start, w + left + right), full, np.int32)
        padded[ya - start: yb - start, left: left + w] = _missing_per_pixel(_read(source, ya, yb), markers)
        by_rows = np.zeros((rows.stop - rows.start, padded.shape[1]), np.int64)
        for a in range(spec.sizes[0]):
            by_rows += padded[row_pos[rows, a] - start]
        band = np.zeros((rows.stop - rows.start, ow), np.int64)
        for k in range(spec.sizes[1]):
            band += by_rows[:, cols[:, k]]
        counts[rows] = band
    return counts, spec.sizes[0] * spec.sizes[1] * full


def _read(source: Source, start: int, stop: int) -> np.ndarray:
    return source.read_rows(start, stop) if source.lazy else source.numpy()[:, start:stop]
