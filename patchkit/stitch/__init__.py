"""Patches back to an image: the inverse of extraction, with blending where patches overlap.

Every patch pixel goes back to the input pixel it sampled (:meth:`PatchSpec.positions`: rows
``i * stride - pad_top + a * rate``, columns likewise); padded cells lie outside the image and are
dropped. Where several patches sample a pixel their values are blended (:data:`BLENDS`):

* ``"mean"``, ``"cosine"``, any ``scipy.signal.windows`` name (``"hamming"``, ``("tukey", 0.5)``,
  ``"hann"``...) and a callable add ``weight * value`` into a float64 (complex128 for complex
  data) accumulator and the weights into a second one, then divide. Weights may be 0 (windows
  with zero ends): a zero-weight tap adds nothing, so a pixel gets the weighted mean of its
  positive-weight taps. A pixel that no patch samples, or only zero-weight taps sample, gets
  ``fill_value``.
* ``"sum"``: every patch pixel's value is added into the pixel it sampled, with no division:
  TensorFlow's ``fold`` with reduction sum, and exactly the gradient of extraction
  (``tape.gradient(tf.image.extract_patches(x, ...), x, output_gradients=patches)``). Floats add
  up in float64 (complex128), integers and bool in int64 (exact, and wrapping like numpy's integer
  addition when the result does not fit the dtype; bool: any), then cast to the patches' dtype.
  Pixels no patch samples get 0, not ``fill_value``: the gradient there is 0.
* ``"none"``: the last write wins, in row-major patch order (the last patch ``(i, j)`` that samples
  the pixel), with no arithmetic.

Exactness: where every patch sampling a pixel holds the same value (as after extraction), the result
is that value bit for bit, for every blend but ``"sum"`` and every dtype (with zero weights: where
some positive weight samples the pixel). For dtypes that float64 holds exactly with room to spare
(floats of up to 32 bits, integers of up to 32 bits, bool) the weighted mean of equal values rounds
back to the value (integers are rounded, then cast). For float64, int64, uint64 and complex types
the accumulator holds deviations from the last-written value (of a positive-weight tap) instead of
the values, so equal values add up to exactly zero and the written value stays, NaN payloads
included. (Signalling NaNs of the narrower floats come back as quiet NaNs, with the same sign and
payload.)

Pixels are added through strided views, never one by one. Along each axis a step takes one patch
(its taps), one kernel tap (every patch's), or a group of ``stride // rate`` consecutive taps of
every patch wholly inside the band (no two of which share a pixel: with rate 1 they tile a run of
pixels), whichever makes the fewest steps; a band costs the product of the two axes' steps, each
one vectorised addition. Zero weights at a window's ends are dropped like a crop; zeros inside it
are masked out of each addition.

The image is made in bands of output rows under ``max_memory``: a band's accumulators, the rows of
patches it needs (read from a dask-backed array band by band) and the temporaries. With ``out`` a
``.tif``/``.tiff`` or ``.zarr`` path, each band is written as it is done and no image is held.
"""

from __future__ import annotations

import errno
import math
import operator
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from ..errors import (
    BudgetTooSmallError,
    DimensionError,
    MissingDependencyError,
    PatchkitError,
    PatchkitTypeError,
    PatchkitValueError,
    SinkWriteError,
    shown,
)
from ..core.budget import IN_MEMORY_BAND, Budget, largest, require_memory  # in-memory stitching works in bands of about this much accumulator
from ..core.dtypes import check_dtype
from ..labelled.geo import STEP_ATTR, crs_of, regular_step, source_transform
from ..labelled.layout import SPEC_ATTR, recorded_spec
from ..sinks._store import move_into_place, partial_path, remove, short_write
from ..core.spec import PatchSpec
from ..core.units import format_bytes

__all__ = ["stitch", "blend_weights", "normalize_crop", "register_window", "WINDOWS", "BLENDS"]

#: Output suffixes :func:`stitch` streams to.
SUFFIXES = (".tif", ".tiff", ".zarr")
#: Copies of a band each sink holds while writing it: the buffer, plus GDAL's copy for GeoTIFF, plus
#: zarr's serialised and compressed chunks (and slack for its codec pipeline) for Zarr.
BAND_COPIES = {None: 0, ".tif": 2, ".tiff": 2, ".zarr": 5}
#: Largest Zarr chunk (rows by the whole width) a streamed ``.zarr`` is written with.
ZARR_CHUNK = 32 * 2**20
#: numpy's buffers for a ufunc that casts or broadcasts: up to its default 8192 elements, 32 bytes each.
_UFUNC_ELEMENTS = 8192
#: Elements of one piece of a weighted step: its float64 scratch (1 MiB) stays in cache.
_STEP_ELEMENTS = 2**17
#: Elements of scale repeated along a channels-last axis at a time when a band is finished.
_FINISH_ELEMENTS = 2**13
#: Dtypes whose weighted means are accumulated as deviations from the last-written value: those
#: float64 cannot hold exactly, and complex types (a complex product turns inf * 0 into NaN parts).
_WIDE = frozenset({"float64", "int64", "uint64", "complex64", "complex128"})
#: Weights of a scipy window this far below zero, relative to its largest, are round-off of a zero.
_ROUND_OFF = 1e-12


# --------------------------------------------------------------------------------------------------
# Weights and crop
# --------------------------------------------------------------------------------------------------


def _cosine(k: int) -> np.ndarray:
    """``sin^2(pi (i + 0.5) / k)``: smooth, symmetric, largest in the middle, never zero."""
    return np.sin(np.pi * (np.arange(k) + 0.5) / k) ** 2


def _ones(k: int) -> np.ndarray:
    """Every tap weighs 1."""
    return np.ones(k)


#: The blend windows by name: ``name -> window(k)``, ``k`` taps along one axis; a patch's weights are
#: the outer product of its rows' and columns' windows. A new window is one function and one entry
#: (:func:`register_window`). ``"sum"`` is not a mean (TensorFlow's fold); ``"none"`` is the last write.
WINDOWS: dict[str, Callable[[int], np.ndarray]] = {"mean": _ones, "sum": _ones, "cosine": _cosine}
#: The blends patchkit names itself; registered windows, any ``scipy.signal.windows`` name or a callable also work.
BLENDS = (*WINDOWS, "none")


def register_window(name: str, window: Callable[[int], Any]) -> None:
    """Make ``blend=name`` the weighted mean under ``window`` (``k -> k`` weights, finite, at least 0).

    Raises
    ------
    PatchkitValueError
        When ``name`` is taken (by patchkit's own blends) or ``window`` is not callable.
    """
    if not isinstance(name, str) or name.lower() in BLENDS or not callable(window):
        raise PatchkitValueError(
            f"register_window({shown(name)}, {shown(window)}) needs a new name (not one of patchkit's own blends) "
            "and a callable k -> k weights; pass e.g. register_window('triangle', lambda k: 1 + np.minimum(np.arange(k), np.arange(k)[::-1]))"
        )
    WINDOWS[name.lower()] = window


def _scipy_window(blend, k: int) -> np.ndarray:
    """``scipy.signal.windows.get_window(blend, k, fftbins=False)``, with patchkit's errors.

    Round-off below zero at a window's zero ends (``"blackman"`` has ``-1.4e-17`` there) is set to
    0: weights within :data:`_ROUND_OFF` of the largest below zero count as the zeros they stand for.
    """
    try:
        from scipy.signal.windows import get_window
    except ImportError as err:
        raise MissingDependencyError(
            f"blend={shown(blend)} is a scipy.signal.windows name, which needs scipy; install it with "
            "`pip install scipy`, or use blend='cosine' or 'mean'"
        ) from err
    try:
        window = np.asarray(get_window(blend, k, fftbins=False), np.float64)
    except (ValueError, TypeError, IndexError, KeyError, OverflowError) as err:
        raise PatchkitValueError(
            f"blend={shown(blend)} is not a blend patchkit knows ({type(err).__name__}: {shown(err, 200)}); use one of {(*WINDOWS, 'none')}, a "
            "scipy.signal.windows name such as 'hamming' or ('tukey', 0.5), or a callable "
            "(kh, kw) -> weights of shape (kh, kw)"
        ) from None
    if window.size and np.isfinite(window).all():
        window[(window < 0) & (window >= -_ROUND_OFF * np.abs(window).max())] = 0.0
    return window


def _check_weights(weights: Any, blend, shape: tuple[int, int]) -> np.ndarray:
    """``weights`` as float64 of ``shape``, finite, at least 0 and not all 0, or a patchkit error naming ``blend``."""
    try:
        weights = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise PatchkitTypeError(f"blend={shown(blend)} returned {type(weights).__name__}, not an array of weights: {err}") from None
    if weights.shape != shape:
        raise PatchkitValueError(
            f"blend={shown(blend)} gave weights of shape {weights.shape}, but the patches (after crop) are "
            f"{shape}; a callable blend is called as blend(kh, kw) and must return an array of shape (kh, kw)"
        )
    good = np.isfinite(weights) & (weights >= 0)
    if not good.all():
        bad = weights[~good]
        raise PatchkitValueError(
            f"blend={shown(blend)} gives {bad.size} weights that are negative or not finite (e.g. {shown(bad.flat[0])}); "
            "every weight must be finite and at least 0 (zeros are fine: a pixel that only zero weights reach "
            "gets fill_value): clip them, e.g. lambda kh, kw: np.clip(my_weights(kh, kw), 0, None), or use "
            "blend='cosine' or a scipy.signal.windows name such as 'hann'"
        )
    if not weights.any():
        raise PatchkitValueError(
            f"blend={shown(blend)} gives only zero weights for patches of {shape[0]}x{shape[1]} pixels (after crop), "
            "so every pixel would be fill_value; use larger patches, a smaller crop, or blend='mean'"
        )
    return weights


def blend_weights(blend: str | tuple | Callable, shape: tuple[int, int]) -> np.ndarray | None:
    """The weight of every pixel of a (cropped) patch of ``shape`` under ``blend``; None for ``"none"``.

    Parameters
    ----------
    blend : str, tuple or callable
        ``"mean"`` and ``"sum"`` (all 1), ``"cosine"`` (patchkit's ``sin^2(pi (i + 0.5) / k)`` per
        axis, outer product: it hides seams and is never zero; note that scipy's own ``"cosine"``
        window is the square root of it), ``"none"``, any ``scipy.signal.windows`` name or
        ``(name, parameter)`` tuple (separable outer product of ``get_window(name, k,
        fftbins=False)``; round-off below zero at zero ends, as in ``"blackman"``, is taken as 0),
        or a callable ``(kh, kw) -> array of shape (kh, kw)``.
    shape : (int, int)
        Rows and columns of the part of a patch that is blended (the patch minus ``crop``).

    Returns
    -------
    ndarray or None
        float64 ``shape``, every weight finite and at least 0, some above 0. Zeros are allowed
        (``"hann"``, ``"bartlett"``, ``("tukey", 0.5)`` end in them): a zero-weight tap adds
        nothing, so a pixel gets the weighted mean of its positive-weight taps, and a pixel that
        only zero-weight taps sample gets ``fill_value`` (as ``tiler``'s ``Merger`` leaves it).

    Raises
    ------
    PatchkitValueError
        Unknown names (the message lists the choices), weights of the wrong shape, weights that are
        negative or not finite, or weights that are all zero (``"hann"`` on two pixels).
    PatchkitTypeError
        ``blend`` is neither a string, a tuple nor a callable.
    """
    kh, kw = shape
    if isinstance(blend, str) and blend.lower() == "none":
        return None
    if isinstance(blend, str) and blend.lower() in WINDOWS:
        window = WINDOWS[blend.lower()]
        return _check_weights(np.outer(window(kh), window(kw)), blend, shape)
    if isinstance(blend, (str, tuple)):
        return _check_weights(np.outer(_scipy_window(blend, kh), _scipy_window(blend, kw)), blend, shape)
    if callable(blend):
        return _check_weights(blend(kh, kw), blend, shape)
    raise PatchkitTypeError(
        f"blend={shown(blend)} (a {type(blend).__name__}) is not a blend; use one of {(*WINDOWS, 'none')}, a "
        "scipy.signal.windows name, or a callable (kh, kw) -> weights"
    )


def normalize_crop(crop: int | Sequence[int], sizes: tuple[int, int]) -> tuple[int, int]:
    """``crop`` as ``(rows, cols)`` dropped from each side of a patch; each must leave at least one tap.

    Raises
    ------
    PatchkitValueError
        A negative crop, one that is not an integer or a pair of them, or one that leaves nothing
        (``2 * crop >= kernel size``).
    """
    pair = (crop, crop) if isinstance(crop, (int, np.integer)) else tuple(crop) if isinstance(crop, Sequence) else None
    if pair is None or len(pair) != 2 or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in pair):
        raise PatchkitValueError(f"crop={shown(crop)} must be an integer or a (rows, cols) pair of integers, e.g. crop=8")
    for c, k, axis in zip(pair, sizes, ("rows", "cols")):
        if c < 0 or 2 * c >= k:
            raise PatchkitValueError(
                f"crop={shown(crop)} drops {shown(c)} {axis} from each side of patches of {k} {axis}; it must be at least 0 "
                f"and leave at least one (at most {(k - 1) // 2})"
            )
    return int(pair[0]), int(pair[1])


# --------------------------------------------------------------------------------------------------
# One axis: which patch taps land on which pixels
# --------------------------------------------------------------------------------------------------


class _Op(NamedTuple):
    """One vectorised step along an axis: patches × taps onto pixels ``start + p * stride + t * rate``.

    ``p`` and ``t`` count from the first patch and tap; ``start`` is relative to the band. No two
    (patch, tap) pairs of a step share a pixel, so one strided view of the accumulator takes it.
    """

    patches: slice
    taps: slice
    start: int


@dataclass(frozen=True)
class _Line:
    """One spatial axis: patch ``i`` tap ``a`` samples pixel ``i * s - before + a * r``; taps ``[t0, t1)`` kept."""

    n: int
    out: int
    s: int
    r: int
    before: int
    t0: int
    t1: int

    def needed(self, lo, hi):
        """Patches ``[p0, p1)`` whose kept taps may land in pixels ``[lo, hi)`` (scalars or arrays)."""
        p0 = -((self.before + self.r * (self.t1 - 1) - lo) // self.s)
        p1 = (hi - 1 + self.before - self.r * self.t0) // self.s + 1
        return np.clip(p0, 0, self.out), np.clip(p1, 0, self.out)


def _lines(spec: PatchSpec, shape: tuple[int, int], crop: tuple[int, int]) -> tuple[_Line, _Line]:
    grid = spec.grid_shape(shape)
    pads = spec.padding_amounts(shape)
    return tuple(  # type: ignore[return-value]
        _Line(n, o, s, r, before, c, k - c)
        for n, o, s, r, (before, _), k, c in zip(shape, grid, spec.strides, spec.rates, pads, spec.sizes, crop)
    )


def _support(lines: tuple[_Line, _Line], weights: np.ndarray | None) -> tuple[tuple[_Line, _Line], np.ndarray | None]:
    """The lines narrowed to the rectangle of taps with positive weight, and its weights, when no zero lies
    inside it (zero ends, as scipy windows have): zero-weight taps are then a crop and cost nothing.
    Otherwise (zeros inside) the lines and weights as they are: the zeros are masked out step by step.
    """
    if weights is None or weights.all():
        return lines, weights
    rows, cols = np.flatnonzero(weights.any(axis=1)), np.flatnonzero(weights.any(axis=0))
    inner = weights[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    if not inner.all():
        return lines, weights
    narrowed = tuple(replace(line, t0=line.t0 + int(kept[0]), t1=line.t0 + int(kept[-1]) + 1)
                     for line, kept in zip(lines, (rows, cols)))
    return narrowed, inner  # type: ignore[return-value]


def axis_ops(line: _Line, patches: range, lo: int, hi: int) -> list[_Op]:
    """The steps that put the kept taps of ``patches`` onto pixels ``[lo, hi)`` (``start`` relative to ``lo``).

    The fewest of: one step per patch (its taps); one per tap (every patch's); or one per group of
    ``stride // rate`` consecutive taps for the patches wholly inside ``[lo, hi)`` (with rate 1 a
    group covers a contiguous run of pixels), plus one per patch at the edges. Steps come in writing
    order: for any pixel, the patches that sample it come in increasing order, so the last write
    is that of the last patch.
    """
    s, r, b, t0, t1 = line.s, line.r, line.before, line.t0, line.t1
    inner = range(max(patches.start, -((t0 * r - b - lo) // s)), min(patches.stop, (hi - 1 + b - (t1 - 1) * r) // s + 1))
    group = max(1, min(t1 - t0, s // r))
    groups = -(-(t1 - t0) // group)
    blocks = groups + len(patches) - len(inner) if len(inner) > 0 else math.inf
    if len(patches) <= min(t1 - t0, blocks):
        return _patch_ops(line, patches, lo, hi)
    if t1 - t0 <= blocks:
        ops = []
        for a in range(t1 - 1, t0 - 1, -1):
            off = a * r - b
            i0, i1 = max(patches.start, -((off - lo) // s)), min(patches.stop, (hi - 1 - off) // s + 1)
            if i0 < i1:
                ops.append(_Op(slice(i0, i1), slice(a, a + 1), i0 * s + off - lo))
        return ops
    ops = _patch_ops(line, range(patches.start, inner.start), lo, hi)
    for a in range(t0 + (groups - 1) * group, t0 - 1, -group):
        ops.append(_Op(slice(inner.start, inner.stop), slice(a, min(a + group, t1)), inner.start * s - b + a * r - lo))
    return ops + _patch_ops(line, range(inner.stop, patches.stop), lo, hi)


def _patch_ops(line: _Line, patches: range, lo: int, hi: int) -> list[_Op]:
    """One step per patch: its kept taps that land in ``[lo, hi)``."""
    ops = []
    for i in patches:
        base = i * line.s - line.before
        a0, a1 = max(line.t0, -((base - lo) // line.r)), min(line.t1, (hi - 1 - base) // line.r + 1)
        if a0 < a1:
            ops.append(_Op(slice(i, i + 1), slice(a0, a1), base + a0 * line.r - lo))
    return ops


# --------------------------------------------------------------------------------------------------
# Coordinates
# --------------------------------------------------------------------------------------------------


def axis_coordinate(values: np.ndarray, positions: np.ndarray, n: int, step: float | None = None) -> np.ndarray:
    """The 1-D coordinate of an axis of ``n`` pixels from the coordinates of the pixels patches sample.

    ``values[p, a]`` is the coordinate of the pixel at ``positions[p, a]``; those inside ``[0, n)``
    give their pixel its value. Pixels no patch samples are extrapolated from the first sampled one
    with ``step`` (the pixel size), or with the step of the sampled values when they are regular;
    without either they are NaN (and so are all pixels when no patch samples any).
    """
    values, positions = np.asarray(values), np.asarray(positions)
    inside = (positions >= 0) & (positions < n)
    known = np.zeros(n, bool)
    known[positions[inside]] = True
    if known.all():
        out = np.empty(n, values.dtype)
        out[positions[inside]] = values[inside]
        return out
    out = np.full(n, np.nan)
    out[positions[inside]] = values[inside]
    index = np.flatnonzero(known)
    if step is None and index.size > 1:
        step = regular_step(np.interp(np.arange(index[0], index[-1] + 1), index, out[index]))
    if step is not None and index.size:
        missing = np.flatnonzero(~known)
        out[missing] = out[index[0]] + (missing - index[0]) * step
    return out


# --------------------------------------------------------------------------------------------------
# What is stitched: the patches, read as rows of [N, rows, cols, kh, kw, M]
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Band:
    """Patch rows ``rows`` and columns ``cols`` as ``data[N, rows, cols, kh, kw, M]`` (``present`` marks the kept)."""

    data: np.ndarray
    rows: range
    cols: range
    present: np.ndarray | None


@dataclass(frozen=True)
class _Reader:
    """Reads rows of patches from an array laid out as ``[N, rows, cols, <M and kh, kw>]``.

    ``data`` holds the patches present: grid rows ``rows``, columns ``cols`` (``kind="grid"``), or a
    list of patches at ``labels`` (``kind="list"``, the filtered form; sorted row-major, ``order`` giving
    their places in ``data`` when these differ). ``split`` turns a read piece into
    the 6-D ``[N, rows, cols, kh, kw, M]`` view. ``chunks`` are a lazy array's blocks along the rows
    (or the list), for counting what a read materialises.
    """

    data: Any
    kind: str
    split: Callable[[np.ndarray], np.ndarray]
    n: int
    m: int
    ow: int
    sizes: tuple[int, int]
    dtype: np.dtype
    rows: range
    cols: range
    labels: tuple[np.ndarray, np.ndarray] | None = None
    order: np.ndarray | None = None
    chunks: tuple[int, ...] | None = None
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def patch_bytes(self) -> int:
        return self.n * self.m * self.sizes[0] * self.sizes[1] * self.dtype.itemsize

    @property
    def lazy(self) -> bool:
        return not isinstance(self.data, np.ndarray)

    def _take(self, first: int, stop: int, index: np.ndarray | None = None) -> np.ndarray:
        """Entries ``[first, stop)`` (or ``index``) along the rows/list axis, as an ndarray.

        From a lazy array, whole chunks are read (as :meth:`read_bytes` counts) and kept while the
        next read still needs them: consecutive bands share patch rows, which are read once.
        """
        if index is None and self.lazy and self.chunks is not None:
            return self._take_chunks(first, stop)
        key = slice(first, stop) if index is None else index
        piece = self.data[:, key]
        return np.asarray(piece.compute() if hasattr(piece, "compute") else piece)

    def _take_chunks(self, first: int, stop: int) -> np.ndarray:
        edges = np.cumsum((0,) + tuple(self.chunks))
        c0 = int(np.searchsorted(edges, first, side="right")) - 1
        c1 = int(np.searchsorted(edges, stop, side="left"))
        span, joined = self.cache.get("joined", (None, None))
        if span != (c0, c1):  # consecutive bands mostly need the same chunks: join them once
            for k in [k for k in self.cache if k != "joined" and not c0 <= k < c1]:
                del self.cache[k]  # no later band needs it: bands move down the image
            self.cache.pop("joined", None)
            for k in range(c0, c1):
                if k not in self.cache:
                    self.cache[k] = np.asarray(self.data[:, int(edges[k]): int(edges[k + 1])].compute())
            parts = [self.cache[k] for k in range(c0, c1)]
            joined = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
            self.cache["joined"] = ((c0, c1), joined)
        return joined[:, first - int(edges[c0]): stop - int(edges[c0])]

    def read(self, p0: int, p1: int) -> _Band | None:
        """Patch rows ``[p0, p1)`` that are there, or None when none is."""
        if self.kind == "grid":
            a, b = max(p0, self.rows.start), min(p1, self.rows.stop)
            if a >= b:
                return None
            return _Band(self.split(self._take(a - self.rows.start, b - self.rows.start)), range(a, b), self.cols, None)
        rows, cols = self.labels
        first, stop = (int(v) for v in np.searchsorted(rows, [p0, p1]))
        if first >= stop:
            return None
        index = None if self.order is None else self.order[first:stop]
        piece = self.split(self._take(first, stop, index)[:, :, None])[:, :, 0]  # [N, K, kh, kw, M]
        dense = self.split(np.zeros((self.n, p1 - p0, self.ow, self.m) + self.sizes, self.dtype))
        dense[:, rows[first:stop] - p0, cols[first:stop]] = piece
        present = np.zeros((p1 - p0, self.ow), bool)
        present[rows[first:stop] - p0, cols[first:stop]] = True
        return _Band(dense, range(p0, p1), range(self.ow), present)

    def read_bytes(self, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
        """Bytes a read of rows ``[p0, p1)`` holds: the piece read, chunks it touches, the dense copy."""
        if self.kind == "grid":
            a, b = np.maximum(p0, self.rows.start) - self.rows.start, np.minimum(p1, self.rows.stop) - self.rows.start
            per = len(self.cols) * self.patch_bytes
        else:
            a, b = np.searchsorted(self.labels[0], p0), np.searchsorted(self.labels[0], p1)
            per = self.patch_bytes
        count = np.maximum(b - a, 0)
        held = 0 if not self.lazy and self.kind == "grid" else count * per
        if self.lazy and self.chunks is not None:
            if self.order is not None:  # the rows' patches lie anywhere in the array: span them
                a, b = self._spans(a, b)
            edges = np.cumsum((0,) + self.chunks)
            lo = edges[np.clip(np.searchsorted(edges, a, side="right") - 1, 0, len(edges) - 1)]
            hi = edges[np.clip(np.searchsorted(edges, b, side="left"), 0, len(edges) - 1)]
            held = held + np.where(count > 0, hi - lo, 0) * per
        dense = (p1 - p0) * self.ow * self.patch_bytes if self.kind == "list" else 0
        return held + dense


    def _spans(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First and last-plus-one places in ``data`` of the sorted patches ``[a, b)`` (unsorted input)."""
        lo, hi = np.zeros_like(a), np.zeros_like(b)
        for k, (i, j) in enumerate(zip(a.tolist(), b.tolist())):
            if i < j:
                lo[k], hi[k] = self.order[i:j].min(), self.order[i:j].max() + 1
        return lo, hi


def _split_tf(sizes: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """``[B, rows, cols, kh * kw * C]`` as ``[B, rows, cols, kh, kw, C]``."""
    def split(piece: np.ndarray) -> np.ndarray:
        b, r, c, depth = piece.shape
        return piece.reshape(b, r, c, *sizes, depth // (sizes[0] * sizes[1]))
    return split


def _dask_chunks(data: Any, axis: int) -> tuple[int, ...] | None:
    chunks = getattr(data, "chunks", None)
    return tuple(int(c) for c in chunks[axis]) if chunks is not None and not isinstance(data, np.ndarray) else None


# --------------------------------------------------------------------------------------------------
# Inputs: a labelled patch array or TensorFlow's layout
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dims:
    """The dims of a labelled patch array: ``(*leading, *grid, *channels, y, x)``."""

    leading: tuple[str, ...]
    grid: tuple[str, ...]
    channels: tuple[str, ...]
    y: str
    x: str


def _patch_dims(patches: Any) -> _Dims:
    dims = tuple(patches.dims)
    if "patch_row" in dims and "patch_col" in dims:
        grid = ("patch_row", "patch_col")
    elif "patch" in dims:
        grid = ("patch",)
    else:
        raise DimensionError(
            f"patches has dims {dims}, with neither 'patch_row' and 'patch_col' nor 'patch'; pass the "
            "output of da.patches.extract (any channel dims may change, the patch dims may not)"
        )
    if len(dims) < len(grid) + 2 or dims[-1] in grid or dims[-2] in grid:
        raise DimensionError(f"patches has dims {dims}: the last two must be the patch's rows and columns (y, x)")
    y, x = dims[-2], dims[-1]
    first = min(dims.index(g) for g in grid)
    leading = tuple(d for d in dims[:first])
    channels = tuple(d for d in dims[first:-2] if d not in grid)
    return _Dims(leading, grid, channels, y, x)


def _labels(patches: Any, size: int, limit: int, name: str) -> np.ndarray:
    """Grid indices in coordinate ``name`` (or ``0..size-1`` without one), checked against the grid ``limit``."""
    values = np.asarray(patches[name].values if name in patches.coords else np.arange(size))
    if values.dtype.kind not in "iu" or values.size and (values.min() < 0 or values.max() >= limit):
        raise PatchkitValueError(
            f"patches' {name!r} labels {values[:6]!r}... are not grid indices below {limit} (the spec's grid); "
            "they must be those .patches.extract wrote"
        )
    return values.astype(np.int64)


def _grid_range(labels: np.ndarray, name: str) -> range:
    if labels.size == 0 or not np.array_equal(labels, np.arange(labels[0], labels[0] + labels.size)):
        raise PatchkitValueError(
            f"patches' {name!r} labels {labels[:6]!r} are not consecutive increasing grid indices; select a "
            "contiguous block of patch rows/cols, or pass the filtered form (a 'patch' dim)"
        )
    return range(int(labels[0]), int(labels[0] + labels.size))


def _labelled_reader(patches: Any, dims: _Dims, spec: PatchSpec, shape: tuple[int, int]) -> _Reader:
    """A :class:`_Reader` over a labelled patch array (grid or filtered form, numpy or dask)."""
    oh, ow = spec.grid_shape(shape)
    if (patches.sizes[dims.y], patches.sizes[dims.x]) != spec.sizes:
        raise PatchkitValueError(
            f"patches are {patches.sizes[dims.y]}x{patches.sizes[dims.x]} pixels ({dims.y}, {dims.x}), but the "
            f"spec's sizes are {spec.sizes}; pass the spec the patches were extracted with"
        )
    arr = patches.transpose(*dims.leading, *dims.grid, *dims.channels, dims.y, dims.x)
    n = math.prod(patches.sizes[d] for d in dims.leading)
    m = math.prod(patches.sizes[d] for d in dims.channels)
    flat = (n,) + tuple(arr.shape[len(dims.leading): len(dims.leading) + len(dims.grid)]) + (m,) + spec.sizes
    data = _reshaped(arr.data, flat)
    common = dict(n=n, m=m, ow=ow, sizes=spec.sizes, dtype=np.dtype(patches.dtype), chunks=_dask_chunks(data, 1))
    if dims.grid == ("patch",):
        size = patches.sizes["patch"]
        rows, cols = (_labels(patches, size, limit, name) for limit, name in ((oh, "patch_row"), (ow, "patch_col")))
        order = np.lexsort((cols, rows))
        order = None if np.array_equal(order, np.arange(size)) else order
        labels = (rows, cols) if order is None else (rows[order], cols[order])
        return _Reader(data, "list", _channels_last, rows=range(oh), cols=range(ow), labels=labels, order=order, **common)
    rows = _grid_range(_labels(patches, patches.sizes["patch_row"], oh, "patch_row"), "patch_row")
    cols = _grid_range(_labels(patches, patches.sizes["patch_col"], ow, "patch_col"), "patch_col")
    return _Reader(data, "grid", _channels_last, rows=rows, cols=cols, **common)


def _reshaped(data: Any, shape: tuple[int, ...]) -> Any:
    """``data`` reshaped, as a view for numpy where one exists (else a copy), lazily for dask."""
    if not isinstance(data, np.ndarray):
        return data.reshape(shape)
    try:
        return np.reshape(data, shape, copy=False)
    except (ValueError, TypeError):  # no view exists (or numpy < 2.1 has no copy=False)
        return data.reshape(shape)


def _channels_last(piece: np.ndarray) -> np.ndarray:
    """``[N, rows, cols, M, kh, kw]`` as a ``[N, rows, cols, kh, kw, M]`` view."""
    return piece.transpose(0, 1, 2, 4, 5, 3)


def _tf_reader(images: Any, spec: PatchSpec, shape: tuple[int, int], batch_channels) -> _Reader:
    """A :class:`_Reader` over TensorFlow's ``[batch, out_rows, out_cols, kh * kw * C]``."""
    oh, ow = spec.grid_shape(shape)
    kh, kw = spec.sizes
    got = tuple(int(d) for d in images.shape)
    if len(got) != 4 or got[1:3] != (oh, ow) or got[3] % (kh * kw):
        raise PatchkitValueError(
            f"patches has shape {got}, but the spec {spec.to_dict()} on an image of {shape} gives "
            f"[batch, {oh}, {ow}, {kh}*{kw}*channels]; pass the spec and image_shape the patches were extracted with"
        )
    b, c = got[0], got[3] // (kh * kw)
    if batch_channels is not None and batch_channels != (b, c):
        raise PatchkitValueError(
            f"image_shape gives batch and channels {batch_channels}, but the patches hold {(b, c)}; pass "
            f"image_shape={shape} to take the patches' channels"
        )
    return _Reader(images, "grid", _split_tf(spec.sizes), n=b, m=c, ow=ow, sizes=spec.sizes,
                   dtype=np.dtype(images.dtype), rows=range(oh), cols=range(ow), chunks=_dask_chunks(images, 1))


def _as_spec(spec: Any) -> PatchSpec:
    if isinstance(spec, PatchSpec):
        return spec
    if isinstance(spec, Mapping):
        return PatchSpec.from_dict(spec)  # names a missing key, and what to add
    raise PatchkitTypeError(
        f"spec={shown(spec)} (a {type(spec).__name__}) is not a PatchSpec; pass PatchSpec(sizes, strides, rates, padding) "
        "or a dict with those keys"
    )


def _image_shape(image_shape: Any) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """``(h, w)`` and, for a 4-D shape, ``(batch, channels)``: positive integers (integral floats too)."""
    try:
        dims = tuple(_dimension(d) for d in image_shape)
    except (TypeError, ValueError, OverflowError):
        dims = ()
    if len(dims) not in (2, 4) or min(dims) < 1:
        raise PatchkitValueError(
            f"image_shape={shown(image_shape)} must be (height, width) or (batch, height, width, channels) of "
            "positive integers, e.g. image_shape=da.shape[-2:] of the image the patches were cut from"
        )
    return (dims[-3:-1] if len(dims) == 4 else dims), ((dims[0], dims[3]) if len(dims) == 4 else None)


def _dimension(value: Any) -> int:
    """An image dimension as an int; bools, fractions, NaN and infinity raise ``ValueError``."""
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (str, bytes)):
        raise ValueError(value)
    if isinstance(value, (float, np.floating)):
        if not float(value).is_integer():  # NaN and infinity are not integers either
            raise ValueError(value)
        return int(value)
    return operator.index(value)


# --------------------------------------------------------------------------------------------------
# Adding patches into a band
# --------------------------------------------------------------------------------------------------


def _piece(band: _Band, rop: _Op, cop: _Op) -> np.ndarray:
    """The patch pixels of a row step and a column step: ``[N, row patches, row taps, col patches, col taps, M]``."""
    r0, c0 = band.rows.start, band.cols.start
    sub = band.data[:, rop.patches.start - r0: rop.patches.stop - r0, cop.patches.start - c0: cop.patches.stop - c0,
                    rop.taps, cop.taps]
    return sub.transpose(0, 1, 3, 2, 4, 5)


def _mask(band: _Band, rop: _Op, cop: _Op) -> np.ndarray | None:
    """Which patches of the step are there, shaped to broadcast against :func:`_piece` (None: all)."""
    if band.present is None:
        return None
    r0, c0 = band.rows.start, band.cols.start
    mask = band.present[rop.patches.start - r0: rop.patches.stop - r0, cop.patches.start - c0: cop.patches.stop - c0]
    return mask[None, :, None, :, None, None]


def _pixels(array: np.ndarray, rop: _Op, cop: _Op, lines: tuple[_Line, _Line]) -> np.ndarray:
    """The pixels of ``array[N, h, W, M]`` (or ``[h, W]``) a step writes, as a view shaped like :func:`_piece`."""
    from numpy.lib.stride_tricks import as_strided

    lead = array.ndim == 4
    base = array[:, rop.start:, cop.start:] if lead else array[rop.start:, cop.start:]
    sh, sw = base.strides[1:3] if lead else base.strides
    shape = (rop.patches.stop - rop.patches.start, rop.taps.stop - rop.taps.start,
             cop.patches.stop - cop.patches.start, cop.taps.stop - cop.taps.start)
    strides = (lines[0].s * sh, lines[0].r * sh, lines[1].s * sw, lines[1].r * sw)
    if lead:
        shape, strides = (base.shape[0],) + shape + (base.shape[3],), (base.strides[0],) + strides + (base.strides[3],)
    return as_strided(base, shape, strides, writeable=True)


def _where(band: _Band, rop: _Op, cop: _Op, lines: tuple[_Line, _Line], keep: np.ndarray | None) -> np.ndarray | None:
    """Which (patch, tap) pairs of a step add anything, shaped to broadcast against :func:`_piece` (None: all).

    The patches that are there (:func:`_mask`) and, with ``keep[kh', kw']`` (the taps of positive
    weight, indexed after crop), only those taps.
    """
    mask = _mask(band, rop, cop)
    if keep is None:
        return mask
    rows = slice(rop.taps.start - lines[0].t0, rop.taps.stop - lines[0].t0)
    cols = slice(cop.taps.start - lines[1].t0, cop.taps.stop - lines[1].t0)
    taps = keep[None, None, rows, None, cols, None]
    return taps if mask is None else mask & taps


def _last_write(out: np.ndarray, covered: np.ndarray, band: _Band, row_ops, col_ops, lines,
                keep: np.ndarray | None = None) -> None:
    """Copy each patch pixel to ``out[N, h, W, M]`` in writing order, so the last patch wins; mark ``covered``.

    With ``keep`` (taps of positive weight) only those taps are written: the deviation path measures
    from a value that takes part in the mean.
    """
    for rop in row_ops:
        for cop in col_ops:
            sub, where = _piece(band, rop, cop), _where(band, rop, cop, lines, keep)
            target, seen = _pixels(out, rop, cop, lines), _pixels(covered, rop, cop, lines)
            if where is None:
                target[...] = sub
                seen[...] = True
            elif where.any():
                np.copyto(target, sub, where=where)
                seen |= where[0, ..., 0]


@dataclass
class _Sums:
    """A band's accumulators: ``acc[N, h, W, M]`` of weighted values (or deviations, or sums), ``weight[h, W]``."""

    acc: np.ndarray
    weight: np.ndarray | None  # None for "sum", which divides by nothing
    tmp: np.ndarray  # flat scratch for one step's weighted values


def _add(sums: _Sums, band: _Band, row_ops, col_ops, job: _Job, ref: np.ndarray | None = None) -> None:
    """Add ``weight * value`` (or ``weight * (value - ref)``, or the value for ``"sum"``) of every patch
    pixel into ``sums``; zero-weight taps add nothing (not even ``0 * inf``)."""
    lines, weights, acc = job.lines, job.weights, sums.acc
    first, plain = _channels_first(acc), ref is None and (job.ones or job.mode == "sum")
    fix = ref is not None and ref.dtype.kind in "fc" and not np.isfinite(ref).all()
    # Weights repeated along a channels-last M: a stride-0 innermost axis would make numpy crawl.
    wide = weights[:, :, None] if first else np.repeat(weights[:, :, None], acc.shape[3], axis=2)
    t0 = (lines[0].t0, lines[1].t0)
    for rop in row_ops:
        rows = slice(rop.taps.start - t0[0], rop.taps.stop - t0[0])
        for cop in col_ops:
            cols = slice(cop.taps.start - t0[1], cop.taps.stop - t0[1])
            where = _where(band, rop, cop, lines, job.keep)
            if where is not None and not where.any():
                continue
            sub, target = _piece(band, rop, cop), _pixels(acc, rop, cop, lines)
            if sums.weight is not None:
                w, mask = weights[None, rows, None, cols], _mask(band, rop, cop)
                _pixels(sums.weight, rop, cop, lines)[...] += w if mask is None else w * mask[0, ..., 0]
            if plain:  # integers into int64 for "sum": uint64 wraps into it, exact modulo 2**64
                where = True if where is None else where
                np.add(target, sub, out=target, where=where, dtype=acc.dtype, casting="unsafe")
                continue
            r = None if ref is None else _pixels(ref, rop, cop, lines)
            parts = (sub, target, wide[None, None, rows, None, cols], where, r)
            for piece in _pieces(parts, _STEP_ELEMENTS):  # scratch that stays in cache
                _add_weighted(*piece, _scratch(sums.tmp, piece[0].shape, first), job.ones, fix)


def _add_weighted(sub, target, w, mask, ref, t, ones: bool, fix: bool) -> None:
    """``target += w * sub`` (or ``w * (sub - ref)``) where ``mask`` (patches there, taps of positive
    weight), through the scratch ``t``."""
    if ref is None:
        np.multiply(sub, w, out=t)
    else:
        np.subtract(sub, ref, out=t, dtype=t.dtype)
        if fix:  # inf - inf: equal values deviate by nothing
            np.copyto(t, 0, where=sub == ref)
        if not ones:
            t *= w
    np.add(target, t, out=target, where=True if mask is None else mask)


def _pieces(arrays: tuple, limit: int):
    """Cut 6-D step arrays ``[N, row patches, row taps, ...]`` (or None, or broadcasting) into pieces of
    about ``limit`` elements along the longer of their row axes."""
    shape = arrays[0].shape
    axis = 1 if shape[1] >= shape[2] else 2
    unit = max(1, math.prod(shape) // shape[axis])
    step = max(1, limit // unit)
    for start in range(0, shape[axis], step):
        key = (slice(None),) * axis + (slice(start, start + step),)
        yield tuple(a if a is None or a.shape[axis] == 1 else a[key] for a in arrays)


def _channels_first(acc: np.ndarray) -> bool:
    """Whether ``acc[N, h, W, M]`` keeps each channel's plane together in memory (channels first)."""
    return acc.shape[3] > 1 and acc.strides[3] > acc.strides[2]


def _scratch(flat: np.ndarray, shape: tuple[int, ...], channels_first: bool) -> np.ndarray:
    """A ``shape`` view (``[N, ..., M]``) of the scratch buffer, in the accumulator's memory order."""
    size = math.prod(shape)
    if channels_first:
        return np.moveaxis(flat[:size].reshape((shape[0], shape[-1]) + shape[1:-1]), 1, -1)
    return flat[:size].reshape(shape)


def _finish_mean(sums: _Sums, out: np.ndarray) -> np.ndarray:
    """``acc / weight`` into ``out`` (integers rounded); returns where some patch wrote.

    Multiplies by the reciprocal weight: off by an ulp of float64 at most, which rounding to the
    narrower dtypes of this path (integers to the nearest) takes back out.
    """
    covered = sums.weight > 0
    scale = np.divide(1.0, sums.weight, out=sums.weight, where=covered)  # uncovered weights stay 0
    acc, m = sums.acc, sums.acc.shape[3]
    step = max(1, _FINISH_ELEMENTS // (acc.shape[2] * m))  # rows at a time: scale repeated along M stays small
    for r0 in range(0, acc.shape[1], step):
        rows = slice(r0, r0 + step)
        part = scale[None, rows, :, None]
        if m > 1 and not _channels_first(acc):  # no stride-0 innermost axis
            part = np.repeat(part, m, axis=3)
        if out.dtype.kind in "iub":
            np.multiply(acc[:, rows], part, out=acc[:, rows])
            np.rint(acc[:, rows], out=out[:, rows], casting="unsafe")
        else:
            np.multiply(acc[:, rows], part, out=out[:, rows], casting="unsafe")
    return covered


def _finish_sum(sums: _Sums, out: np.ndarray) -> np.ndarray:
    """The sums cast into ``out`` (integers wrap, as numpy's addition does; bool: any); all pixels count as
    written, since those nothing reached hold the 0 a gradient has there."""
    np.copyto(out, sums.acc, casting="unsafe")
    return np.ones(out.shape[1:3], bool)


def _finish_deviation(sums: _Sums, out: np.ndarray) -> np.ndarray:
    """``out`` (the last-written values) plus the weighted mean deviation; returns where some patch wrote."""
    covered = sums.weight > 0
    acc = sums.acc
    if out.dtype.kind in "iu":
        np.divide(acc, sums.weight[None, :, :, None], out=acc, where=covered[None, :, :, None])
        np.rint(acc, out=acc)
        np.add(out, acc.astype(np.int64).view(out.dtype), out=out, casting="unsafe")
        return covered
    update = acc != 0
    update &= out == out  # a NaN among the values makes the mean NaN: keep that NaN as written
    np.divide(acc, sums.weight[None, :, :, None], out=acc, where=update)
    np.add(acc, out, out=acc, where=update)
    np.copyto(out, acc, casting="unsafe", where=update)
    return covered


# --------------------------------------------------------------------------------------------------
# Memory plan
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """Everything a band needs: geometry, reader, blend, where the result goes."""

    lines: tuple[_Line, _Line]
    reader: _Reader
    weights: np.ndarray | None
    ones: bool
    dtype: np.dtype
    fill: Any
    band_copies: int  # copies of a band of the result the sink holds: 0 in memory, more when writing
    keep: np.ndarray | None = None  # the taps of positive weight, when some weights are 0
    sum: bool = False  # "sum": add the values, divide by nothing

    @property
    def mode(self) -> str:
        """``"none"`` (last write), ``"sum"``, ``"direct"`` (weighted values) or ``"deviation"`` (from the
        last write)."""
        if self.weights is None:
            return "none"
        if self.sum:
            return "sum"
        return "deviation" if self.dtype.name in _WIDE else "direct"

    @property
    def acc_dtype(self) -> np.dtype:
        """complex128 for complex data, int64 for integers and bool summed, float64 otherwise."""
        if self.dtype.kind == "c":
            return np.dtype(np.complex128)
        return np.dtype(np.int64 if self.sum and self.dtype.kind in "iub" else np.float64)

    def _bands(self, h: int) -> tuple[np.ndarray, np.ndarray]:
        """First and last-plus-one patch rows that each band of ``h`` output rows reads."""
        y0 = np.arange(0, self.lines[0].n, h)
        return self.lines[0].needed(y0, np.minimum(y0 + h, self.lines[0].n))

    def step_size(self, h: int) -> int:
        """Elements of the scratch one piece of a weighted step needs, in bands of ``h`` rows (0: none).

        Steps are cut into pieces of about :data:`_STEP_ELEMENTS` along the longer of their row
        patches and row taps; a step writes each pixel once, so the shorter holds at most
        ``sqrt(h)`` rows, and a piece no more than ``sqrt(h)`` rows of the band's width. Nor is it
        more than the patches the band reads.
        """
        if self.mode in ("none", "sum") or (self.mode == "direct" and self.ones):
            return 0
        rows, cols = self.lines
        p0, p1 = self._bands(h)
        n, width = self.reader.n * self.reader.m, min(cols.n, cols.out * (cols.t1 - cols.t0))
        whole = n * int(np.max(np.minimum(h, (p1 - p0) * (rows.t1 - rows.t0)))) * width
        return min(whole, max(_STEP_ELEMENTS, n * math.isqrt(h) * width))

    def memory(self, h: int) -> int:
        """Peak bytes of stitching in bands of ``h`` output rows (buffers of the largest band are reused).

        The band's copies in the sink (when streaming: the buffer and what the writer makes), the
        accumulators (values; weights but for ``"sum"``), the coverage masks (and a step's mask of
        positive-weight taps, at most a byte a pixel, with zeros inside the window), the rows of
        patches read, the larger of one step's scratch (with its masks) and the temporaries of
        finishing a band, and numpy's ufunc buffers.
        """
        r, width = self.reader, self.lines[1].n
        pixels = r.n * r.m * h * width
        fixed = pixels * self.dtype.itemsize * self.band_copies + h * width * (2 if self.keep is None else 3)
        if self.mode != "none":
            fixed += pixels * self.acc_dtype.itemsize + (0 if self.mode == "sum" else h * width * 8)
        step = self.step_size(h) * (self.acc_dtype.itemsize + 1)
        finish = {"deviation": pixels * 9, "sum": 0}.get(self.mode, min(pixels, _FINISH_ELEMENTS) * 8)
        p0, p1 = self._bands(h)
        buffers = min(pixels, _UFUNC_ELEMENTS) * 32
        return int(fixed + max(step, finish) + np.max(r.read_bytes(p0, p1)) + buffers)


def _plan(job: _Job, budget: int, max_memory) -> int:
    """The largest band height (output rows) whose peak fits ``budget``."""
    n = job.lines[0].n
    smallest = job.memory(1)
    if smallest > budget:
        raise BudgetTooSmallError(
            f"max_memory={max_memory!r} ({format_bytes(budget)}) is below the minimum for stitching these patches, "
            f"{format_bytes(smallest)} ({smallest} bytes: one output row's accumulators and the rows of patches "
            f"that reach it); raise max_memory to at least {smallest}"
        )
    if not job.band_copies and not job.reader.lazy:
        budget = min(budget, max(IN_MEMORY_BAND, smallest))
    return largest(lambda h: job.memory(h) <= budget, n)


# --------------------------------------------------------------------------------------------------
# Where the bands go
# --------------------------------------------------------------------------------------------------


class _ArraySink:
    """The whole result in memory: ``array`` (``[N, M, H, W]`` or ``[N, H, W, M]``), written band by band."""

    def __init__(self, shape4: tuple[int, int, int, int], dtype: np.dtype, channels_first: bool) -> None:
        n, h, w, m = shape4
        self.array = np.empty((n, m, h, w) if channels_first else shape4, dtype)
        self.view = self.array.transpose(0, 2, 3, 1) if channels_first else self.array

    def band(self, y0: int, y1: int) -> np.ndarray:
        return self.view[:, y0:y1]

    def commit(self, y0: int, y1: int, block: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


class _BufferedSink:
    """A reused band buffer ``[N, h, W, M]`` (memory order of the output) handed to ``write``."""

    def __init__(self, shape4, rows: int, dtype: np.dtype, channels_first: bool, write: Callable, close=None,
                 path: Path | None = None) -> None:
        n, _, w, m = shape4
        self.buffer = np.empty(n * rows * w * m, dtype)
        self.shape, self.channels_first, self.write, self._close = (n, w, m), channels_first, write, close
        self.path, self.nbytes = path, 0  # for error messages: where, and how much

    def band(self, y0: int, y1: int) -> np.ndarray:
        n, w, m = self.shape
        size = n * (y1 - y0) * w * m
        if self.channels_first:
            return self.buffer[:size].reshape(n, m, y1 - y0, w).transpose(0, 2, 3, 1)
        return self.buffer[:size].reshape(n, y1 - y0, w, m)

    def commit(self, y0: int, y1: int, block: np.ndarray) -> None:
        with _writing(self.path, self.nbytes):
            self.write(y0, y1, block)

    def close(self) -> None:
        if self._close is not None:
            with _writing(self.path, self.nbytes):
                self._close()


def _geotiff_sink(path: Path, shape4, rows: int, dtype: np.dtype, meta: dict) -> _BufferedSink:
    """Write bands into a GeoTIFF (one raster band per channel) with rasterio, CRS and transform included."""
    import warnings

    import rasterio
    from rasterio.windows import Window

    n, h, w, m = shape4
    if n != 1:
        raise PatchkitValueError(
            f"out={str(path)!r}: a GeoTIFF holds one image of bands, but the result has {n} images "
            f"({meta.get('leading') or 'batch'}); write to a .zarr store instead, or stitch one image at a time"
        )
    profile = dict(driver="GTiff", height=h, width=w, count=m, dtype="uint8" if dtype == np.bool_ else dtype.name,
                   crs=meta.get("crs"), transform=meta.get("transform"), nodata=meta.get("nodata"), BIGTIFF="IF_SAFER")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        dst = rasterio.open(path, "w", **{k: v for k, v in profile.items() if v is not None})

    def write(y0: int, y1: int, block: np.ndarray) -> None:
        data = block[0].transpose(2, 0, 1)  # [M, h, W], contiguous for channels-first buffers
        dst.write(data.view(np.uint8) if dtype == np.bool_ else data, window=Window(0, y0, w, y1 - y0))

    return _BufferedSink(shape4, rows, dtype, True, write, dst.close, path)


def _zarr_sink(path: Path, template: Any, rows: int, shape4, channels_first: bool) -> _BufferedSink:
    """Write bands into a Zarr store: the template through xarray (``compute=False``: metadata and
    coordinates), then each band's values straight into the array's region of rows.

    ``template`` is the result with lazy data whose chunks the store takes; ``_FillValue`` moves from
    its attrs to the encoding, where xarray wants it. The values are written raw: a region write
    through xarray would apply the ``scale_factor``/``add_offset`` attrs that rasters carry.
    """
    import warnings

    import zarr

    name = template.name if template.name is not None else "stitched"
    attrs = dict(template.attrs)
    encoding = {k: v for k, v in template.encoding.items() if k in ("_FillValue", "grid_mapping")}
    for key in ("_FillValue", "missing_value"):
        if key in attrs:
            encoding.setdefault("_FillValue", attrs.pop(key))
    lazy = template.copy()
    lazy.attrs, lazy.encoding = attrs, {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        lazy.to_dataset(name=name).to_zarr(path, mode="w", compute=False, encoding={name: encoding})
    array = zarr.open_group(str(path), mode="r+")[name]
    lead = template.ndim - (2 if channels_first else 3)

    def write(y0: int, y1: int, block: np.ndarray) -> None:
        data = block.transpose(0, 3, 1, 2) if channels_first else block  # the template's order
        shape = template.shape[:lead] + (y1 - y0,) + template.shape[lead + 1:]
        array[(slice(None),) * lead + (slice(y0, y1),)] = data.reshape(shape)

    return _BufferedSink(shape4, rows, template.dtype, channels_first, write, path=path)


# --------------------------------------------------------------------------------------------------
# The result's labels
# --------------------------------------------------------------------------------------------------


def _spatial_coords(patches: Any, dims: _Dims, spec: PatchSpec, shape: tuple[int, int], reader: _Reader) -> dict:
    """1-D ``y`` and ``x`` coordinates on the source grid, from the patches' 2-D coordinates."""
    positions = spec.positions(shape)
    coords = {}
    for axis, (dim, pos, rate, n) in enumerate(zip((dims.y, dims.x), positions, spec.rates, shape)):
        if dim not in patches.coords or patches[dim].ndim != 2:
            continue
        coord = patches[dim]
        if reader.kind == "list":
            labels = _labels(patches, patches.sizes["patch"], len(pos), ("patch_row", "patch_col")[axis])
        else:
            labels = np.asarray(reader.rows if axis == 0 else reader.cols)
        step = coord.attrs.get(STEP_ATTR)
        step = None if step is None else step / rate
        attrs = {k: v for k, v in coord.attrs.items() if k != STEP_ATTR}
        coords[dim] = ((dim,), axis_coordinate(np.asarray(coord.values), pos[labels], n, step), attrs)
    return coords


def _other_coords(patches: Any, dims: _Dims) -> dict:
    kept = set(dims.leading + dims.channels)
    return {name: c.variable for name, c in patches.coords.items()
            if name not in (dims.y, dims.x) and set(c.dims) <= kept}


def _with_transform(coords: dict, patches: Any, dims: _Dims) -> dict:
    """Give the grid-mapping coordinate the ``GeoTransform`` of the stitched grid (patches had it removed)."""
    name = patches.encoding.get("grid_mapping") or patches.attrs.get("grid_mapping") or "spatial_ref"
    mapping = coords.get(name)
    if mapping is None or "GeoTransform" in mapping.attrs or dims.x not in coords or dims.y not in coords:
        return coords
    transform = _transform(coords, dims)
    if transform is not None:
        mapping = mapping.copy()
        mapping.attrs["GeoTransform"] = " ".join(str(v) for v in transform.to_gdal())
        coords = {**coords, name: mapping}
    return coords


def _transform(coords: dict, dims: _Dims):
    """The north-up transform of the 1-D ``x``/``y`` coordinates, or None when they are not regular."""
    from ..errors import GeoreferenceError

    x, y = coords[dims.x][1], coords[dims.y][1]
    try:
        return source_transform(x, y, steps=(None, None)) if np.isfinite(x).all() and np.isfinite(y).all() else None
    except GeoreferenceError:
        return None


def _template(patches: Any, dims: _Dims, spec: PatchSpec, shape, reader: _Reader, data) -> Any:
    """The stitched DataArray around ``data`` (``[*leading, *channels, h, w]``), labelled like the source."""
    import xarray as xr

    coords = {**_other_coords(patches, dims), **_spatial_coords(patches, dims, spec, shape, reader)}
    coords = _with_transform(coords, patches, dims)
    attrs = {k: v for k, v in patches.attrs.items() if k != SPEC_ATTR}
    out = xr.DataArray(data, dims=dims.leading + dims.channels + (dims.y, dims.x), coords=coords, attrs=attrs)
    out.name = patches.name
    out.encoding = dict(patches.encoding)
    return out


# --------------------------------------------------------------------------------------------------
# stitch
# --------------------------------------------------------------------------------------------------


def _fill_value(fill_value: Any, dtype: np.dtype, source: Any) -> Any:
    """The value uncovered pixels get, in ``dtype``: given, else the source's nodata, else NaN or 0."""
    given = fill_value is not None
    if not given:
        from ..labelled.nodata import nodata_values

        found = nodata_values(source) if hasattr(source, "attrs") else ()
        fill_value = found[0] if found else (np.nan if dtype.kind in "fc" else 0)
    cast = _cast_scalar(fill_value, dtype)
    if cast is None:
        raise PatchkitValueError(
            f"fill_value={shown(fill_value)}{'' if given else ' (the source nodata)'} does not fit the patches' dtype "
            f"{dtype}; pass a single number that {dtype} holds exactly, e.g. fill_value=0"
        )
    return cast[()]


def _cast_scalar(value: Any, dtype: np.dtype) -> np.ndarray | None:
    """``value`` as a 0-d array of ``dtype`` when it is a number that ``dtype`` holds exactly (NaN as NaN), else None."""
    try:
        given = np.asarray(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if given.ndim != 0 or given.dtype.kind not in "biufc":
        return None
    with np.errstate(invalid="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        try:
            cast = given.astype(dtype)
        except (TypeError, ValueError, OverflowError):
            return None
        same = bool(cast == given) or bool(cast != cast and given != given)
    return cast if same else None


def _out_path(out: Any) -> Path | None:
    if out is None:
        return None
    if not isinstance(out, (str, os.PathLike)) or Path(out).suffix.lower() not in SUFFIXES:
        raise PatchkitValueError(
            f"out={shown(out)} is not a path ending in {', '.join(SUFFIXES)}; pass e.g. out='stitched.tif' or "
            "out='stitched.zarr', or None for an in-memory result"
        )
    return Path(out)


def _check_fits(nbytes: int) -> None:
    require_memory(nbytes, "the stitched image", "stream it to disk with out='stitched.tif' or out='stitched.zarr'")


def _refuse_out(path: Path, why: str, fix: str, code: int) -> SinkWriteError:
    error = SinkWriteError(f"out={str(path)!r} cannot be written: {why}; {fix}")
    error.errno = code
    return error


def _check_out(path: Path, nbytes: int) -> None:
    """Refuse, before any work, an ``out`` that cannot be written (:class:`SinkWriteError` naming it).

    The nearest existing folder on the way to ``path`` must be a folder that takes a new file (a
    file is created there and removed), ``path`` must not be a folder (a GeoTIFF) or a file (a Zarr
    store), and an uncompressed GeoTIFF must fit in the free space there.
    """
    path = path.absolute()
    base = next(p for p in (path.parent, *path.parent.parents) if p.exists() or p == Path(p.anchor))
    fix = "choose another path for out"
    if not base.is_dir():
        raise _refuse_out(path, f"{str(base)!r} is a file, not a folder", fix, errno.ENOTDIR)
    kind = "folder" if path.suffix.lower() != ".zarr" else "file"
    if path.exists() and (path.is_dir() if kind == "folder" else not path.is_dir()):
        raise _refuse_out(path, f"it exists and is a {kind}", f"remove it, or {fix}", errno.EEXIST)
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as err:
        raise _refuse_out(path, f"the folder {str(base)!r} does not take new files ({err.strerror or err})",
                          f"{fix} in a writable folder (or fix its permissions)", err.errno or errno.EACCES) from None
    free = shutil.disk_usage(base).free
    if path.suffix.lower() != ".zarr" and nbytes > free:
        raise _refuse_out(path, f"the image takes {format_bytes(nbytes)}, but only {format_bytes(free)} is free there",
                          f"free some space, or {fix} on another disk", errno.ENOSPC)


#: What to do about a failed write, by its errno.
_WRITE_FIXES = {errno.ENOSPC: "free some space", errno.EFBIG: "raise the file size limit (ulimit -f)",
                errno.EACCES: "choose a writable path (or fix its permissions)", errno.EROFS: "choose a writable path"}


@contextmanager
def _writing(path: Path | None, nbytes: int = 0) -> Iterator[None]:
    """Turn an error of writing ``path`` (an ``OSError``, or rasterio's or zarr's own) into a :class:`SinkWriteError`.

    rasterio's errors carry no errno ("Write failed"): the cause is found as for a short write
    (:func:`patchkit.sinks._store.short_write`: no space for ``nbytes``, or a file size limit).
    """
    try:
        yield
    except PatchkitError:
        raise
    except Exception as err:
        module = type(err).__module__ or ""
        if not (isinstance(err, OSError) or module.startswith(("rasterio", "zarr", "numcodecs"))):
            raise
        cause = err if isinstance(err, OSError) and err.errno else short_write(path or Path("."), nbytes, "")
        known = "" if cause is err or cause.errno == errno.EIO else f" ({cause.strerror})"
        fix = _WRITE_FIXES.get(cause.errno, "fix the cause (space, permissions, the path)")
        error = SinkWriteError(f"writing the stitched image to {str(path)!r} failed: {type(err).__name__}: {err}{known}; "
                               f"{fix}, then stitch again")
        error.errno = cause.errno
        raise error from err


def stitch(
    patches: Any,
    blend: str | tuple | Callable[[int, int], Any] = "mean",
    *,
    spec: PatchSpec | Mapping | None = None,
    image_shape: Sequence[int] | None = None,
    crop: int | tuple[int, int] = 0,
    out: str | os.PathLike | None = None,
    max_memory: int | str = "512MiB",
    fill_value: Any = None,
) -> Any:
    """Put patches back together into the image they were cut from, blending where they overlap.

    Parameters
    ----------
    patches : xarray.DataArray, ndarray, dask array or tf.Tensor
        A DataArray made by ``da.patches.extract`` (dims ``(*leading, "patch_row", "patch_col",
        *channels, y, x)``, or ``(*leading, "patch", *channels, y, x)`` when filtered), possibly
        dask-backed (``xr.open_zarr(...)``) and with other channels than the source (a model's
        predictions: any dims may stand between the patch dims and ``y, x``). Or an array in
        TensorFlow's layout ``[batch, out_rows, out_cols, kh * kw * C]`` with ``spec`` and
        ``image_shape``.
    blend : str, tuple or callable, default "mean"
        How overlapping patches combine: ``"mean"``, ``"cosine"`` (weights ``sin^2`` across each
        patch: seams fade; never zero), ``"none"`` (the last patch in row-major order wins), a
        ``scipy.signal.windows`` name such as ``"hamming"``, ``"hann"`` or ``("tukey", 0.5)``, or a
        callable ``(kh, kw) -> weights`` (sizes after ``crop``), or ``"sum"`` (no division:
        TensorFlow's ``fold`` and the gradient of extraction). Weights must be finite and at least
        0; zeros are allowed: a pixel only zero-weight taps sample gets ``fill_value`` (see
        :func:`blend_weights`).
    spec : PatchSpec or dict, optional
        The spec the patches were cut with; by default the one a patch array records.
    image_shape : (h, w) or (b, h, w, c), optional
        The source's shape; by default the one a patch array records.
    crop : int or (int, int), default 0
        Pixels (rows, cols) dropped from each side of every patch before blending, for models whose
        patch borders are poor. The outermost patches lose theirs too: image borders that no kept
        part reaches get ``fill_value`` (unless padding put kept parts there).
    out : path ending in .tif, .tiff or .zarr, optional
        Stream the result there band by band and return the path; the image is never held in
        memory. GeoTIFF: through rasterio, one raster band per channel, with CRS, transform and the
        source's nodata (a single image: leading dims must go to Zarr). Zarr: the labelled result's
        metadata and coordinates through xarray, then each band's values into its region of rows
        (chunks are whole bands, or divide them). Written beside ``out`` under a hidden temporary
        name and moved into place when whole (a GeoTIFF's size checked first), replacing what was
        there: a run that fails or is killed never leaves a partial image at ``out``, and running
        it again writes the same bytes.
    max_memory : int or str, default "512MiB"
        Bound on what stitching holds besides the patches and the result: a band's accumulators,
        the rows of patches it reads from a lazy array, temporaries (and the band being written
        when streaming).
    fill_value : scalar, optional
        Value of pixels no (kept part of a) patch samples: strides larger than the kernel, dropped
        patches, crop, or only zero weights. Default: the source's nodata (``_FillValue``/``nodata``
        attrs), else NaN for floats, 0 for integers and bool. Not for ``"sum"``: there such pixels
        are 0, as in a gradient (a ``fill_value`` other than 0 is refused).

    Returns
    -------
    DataArray, ndarray or Path
        For a DataArray: dims ``(*leading, *channels, y, x)`` on the source grid, with its 1-D ``y``
        and ``x`` (rows no patch samples extrapolated with the grid's step, else NaN), other
        coordinates, attrs (less ``patchkit_spec``) and CRS; ``.rio.transform()`` is the source's.
        For an array: ``[batch, h, w, C]``. With ``out``: the path written. The dtype is the
        patches'; where patches agree (as after extraction) values come back bit for bit (but for
        ``"sum"``). ``"sum"`` adds floats in float64 (complex128) and integers and bool in int64
        (exact; wrapping like numpy's integer addition where the dtype cannot hold the sum; bool
        gives "any"), then casts.

    Raises
    ------
    PatchkitValueError
        Patches not made by patchkit without ``spec``/``image_shape``; a shape that does not match
        the spec; a bad ``blend``, ``crop``, ``fill_value`` or ``out``.
    BudgetTooSmallError
        ``max_memory`` below what one output row needs (the message names the minimum).
    OutputTooLargeError
        An in-memory result larger than the memory available (use ``out``).

    Examples
    --------
    >>> patches = da.patches.extract(256, 128, padding="SAME")  # doctest: +SKIP
    >>> stitch(model(patches), blend="cosine", crop=16)  # doctest: +SKIP

    A Tukey window weighs each patch's border down to 0: pixels only such zero weights reach (here
    the image's border, which only the patches' outer taps sample) get ``fill_value``:

    >>> import numpy as np
    >>> from patchkit import PatchSpec, extract_patches
    >>> image, spec = np.arange(36.0).reshape(1, 6, 6, 1), PatchSpec(4, 2)
    >>> back = stitch(extract_patches(image, 4, 2), blend=("tukey", 0.5), spec=spec, image_shape=(6, 6),
    ...               fill_value=-1)
    >>> back[0, :, :, 0]
    array([[-1., -1., -1., -1., -1., -1.],
           [-1.,  7.,  8.,  9., 10., -1.],
           [-1., 13., 14., 15., 16., -1.],
           [-1., 19., 20., 21., 22., -1.],
           [-1., 25., 26., 27., 28., -1.],
           [-1., -1., -1., -1., -1., -1.]])

    ``"sum"`` is the gradient of extraction: stitching patches of ones counts the patches that
    sample each pixel.

    >>> stitch(extract_patches(np.ones((1, 6, 6, 1)), 4, 2), "sum", spec=spec, image_shape=(6, 6))[0, :, :, 0]
    array([[1., 1., 2., 2., 1., 1.],
           [1., 1., 2., 2., 1., 1.],
           [2., 2., 4., 4., 2., 2.],
           [2., 2., 4., 4., 2., 2.],
           [1., 1., 2., 2., 1., 1.],
           [1., 1., 2., 2., 1., 1.]])
    """
    labelled = _is_labelled(patches)
    path, budget = _out_path(out), Budget.of(max_memory)
    spec, shape, batch_channels = _resolve_geometry(patches, spec, image_shape, labelled)
    spec.check(shape)
    crop = normalize_crop(crop, spec.sizes)
    dims, reader = _reader_for(patches, spec, shape, batch_channels, labelled)  # patches match the spec: weights fit
    lines = _lines(spec, shape, crop)
    weights = blend_weights(blend, (lines[0].t1 - lines[0].t0, lines[1].t1 - lines[1].t0))
    lines, weights = _support(lines, weights)
    job = _make_job(blend, lines, reader, weights, fill_value, patches if labelled else None, path)
    shape4 = (reader.n, shape[0], shape[1], reader.m)
    _check_room(path, math.prod(shape4) * reader.dtype.itemsize, shape[0])
    rows = _plan(job, budget, max_memory)
    if path is None:
        sink = _ArraySink(shape4, reader.dtype, labelled)
        _run(job, sink, rows)
        return _wrap_result(sink.array, patches, dims, spec, shape, reader) if labelled else sink.array
    scratch = partial_path(path, path.suffix)  # the suffix tells _streaming_sink the format
    try:
        nbytes = math.prod(shape4) * reader.dtype.itemsize
        with _writing(path, nbytes):
            sink, rows = _streaming_sink(scratch, job, rows, shape4, patches, dims, spec, shape, labelled)
        sink.path, sink.nbytes = path, nbytes  # errors name out, not the temporary file
        try:
            _run(job, sink, rows)
        finally:
            sink.close()
        with _writing(path, nbytes):
            _check_size(scratch, nbytes)
            move_into_place(scratch, path)
    finally:
        remove(scratch, strict=False)
    return path


def _check_size(scratch: Path, nbytes: int) -> None:
    """A GeoTIFF (uncompressed) shorter than its pixels is a short write, which GDAL reports only as a warning."""
    if scratch.suffix.lower() != ".zarr" and scratch.stat().st_size < nbytes:
        raise short_write(scratch, nbytes, f"the GeoTIFF has {scratch.stat().st_size} of its {nbytes} bytes of pixels")


def _check_room(path: Path | None, nbytes: int, height: int) -> None:
    """The result must fit where it goes (memory, or the disk of ``path``), and planning its ``height``
    rows in memory (a few numbers per row), before any work."""
    if path is None:
        _check_fits(nbytes)
    else:
        _check_out(path, nbytes)
    require_memory(64 * height, f"planning the bands of an image of {height} rows", "check image_shape")


def _make_job(blend, lines, reader: _Reader, weights: np.ndarray | None, fill_value, source, path: Path | None) -> _Job:
    """The :class:`_Job` of a blend: its weights, which taps count, the fill (0 for ``"sum"``), the sink's copies."""
    summing = isinstance(blend, str) and blend.lower() == "sum"
    if summing:
        fill = _sum_fill(fill_value, reader.dtype)
    else:
        fill = _fill_value(fill_value, reader.dtype, source)
    keep = None if weights is None or bool(np.all(weights > 0)) else weights > 0
    ones = weights is not None and bool(np.all(weights == 1))
    return _Job(lines, reader, weights, ones, reader.dtype, fill, BAND_COPIES[path and path.suffix.lower()],
                keep=keep, sum=summing)


def _sum_fill(fill_value: Any, dtype: np.dtype) -> Any:
    """0 in ``dtype``, the value ``"sum"`` gives pixels no patch samples; a ``fill_value`` other than 0 is refused."""
    zero = None if fill_value is None else _cast_scalar(fill_value, np.dtype(np.complex128))
    if fill_value is not None and (zero is None or zero != 0):
        raise PatchkitValueError(
            f"fill_value={shown(fill_value)} does not apply to blend='sum': pixels that no patch samples get 0, the "
            "gradient of extraction there; drop fill_value, or use blend='mean' to fill them"
        )
    return np.zeros((), dtype)[()]


def _is_labelled(patches: Any) -> bool:
    """Whether ``patches`` is a DataArray; a Dataset is refused."""
    if not (type(patches).__module__ or "").startswith("xarray"):
        return False
    if not hasattr(patches, "variable"):
        raise PatchkitTypeError(
            f"patches is a {type(patches).__name__}; stitch takes one DataArray: pass ds[name] for each "
            "variable, e.g. {name: stitch(ds[name]) for name in ds.data_vars}"
        )
    return True


def _reader_for(patches: Any, spec: PatchSpec, shape, batch_channels, labelled: bool) -> tuple[_Dims | None, _Reader]:
    """The dims of a labelled patch array (None for arrays) and the reader of its rows of patches."""
    if labelled:
        dims = _patch_dims(patches)
        check_dtype(patches.dtype, "patches")
        return dims, _labelled_reader(patches, dims, spec, shape)
    data = _host_array(patches)
    check_dtype(data.dtype, "patches")
    return None, _tf_reader(data, spec, shape, batch_channels)


def _host_array(patches: Any) -> Any:
    """An ndarray or dask array of ``patches`` (a tf.Tensor is copied to the host)."""
    from ..core.sources import is_dask, is_tensor

    if is_tensor(patches):
        return np.asarray(patches.numpy())
    if is_dask(patches) or isinstance(patches, np.ndarray):
        return patches
    try:
        return np.asarray(patches)
    except (TypeError, ValueError) as err:
        raise PatchkitTypeError(
            f"patches is a {type(patches).__name__}, not an array; pass a DataArray from .patches.extract or an "
            "array [batch, out_rows, out_cols, kh*kw*C]"
        ) from err


def _resolve_geometry(patches, spec, image_shape, labelled):
    """The spec, ``(h, w)`` and the optional ``(batch, channels)``: explicit arguments first, then the record."""
    recorded = None
    if labelled and (spec is None or image_shape is None):
        try:
            recorded = recorded_spec(patches)
        except PatchkitValueError as err:
            raise PatchkitValueError(
                f"{err}; e.g. stitch(patches, spec=PatchSpec(256, 128), image_shape=(height, width))"
            ) from None
    if recorded is None and (spec is None or image_shape is None):
        missing = " and ".join(n for n, v in (("spec", spec), ("image_shape", image_shape)) if v is None)
        raise PatchkitValueError(
            f"{missing} is required for patches that are not a patchkit DataArray (got a {type(patches).__name__}); "
            "pass e.g. spec=PatchSpec(256, 128, padding='SAME'), image_shape=(height, width)"
        )
    spec = _as_spec(spec) if spec is not None else recorded[0]
    shape, batch_channels = _image_shape(image_shape) if image_shape is not None else (recorded[1], None)
    return spec, tuple(shape), batch_channels


def _wrap_result(array: np.ndarray, patches, dims: _Dims, spec, shape, reader) -> Any:
    sizes = tuple(patches.sizes[d] for d in dims.leading + dims.channels) + tuple(shape)
    return _template(patches, dims, spec, shape, reader, array.reshape(sizes))


def _streaming_sink(path: Path, job: _Job, rows: int, shape4, patches, dims, spec, shape, labelled):
    """The sink for ``path`` and the band height to use with it (Zarr: a multiple of the chunk rows)."""
    n, _, w, m = shape4
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".zarr":
        import dask.array as da

        chunk = max(1, min(rows, ZARR_CHUNK // max(1, n * w * m * job.dtype.itemsize)))
        rows = rows // chunk * chunk
        if labelled:
            sizes = tuple(patches.sizes[d] for d in dims.leading + dims.channels) + tuple(shape)
            data = da.zeros(sizes, dtype=job.dtype, chunks=sizes[:-2] + (chunk, w))
            template = _template(patches, dims, spec, shape, job.reader, data)
        else:
            template = _bare_template(shape4, job.dtype, chunk)
        return _zarr_sink(path, template, rows, shape4, labelled), rows
    meta: dict = {}
    if labelled:
        if n != 1:
            meta["leading"] = dims.leading
        coords = _spatial_coords(patches, dims, spec, shape, job.reader)
        meta["transform"] = _transform(coords, dims) if dims.y in coords and dims.x in coords else None
        meta["crs"] = crs_of(patches)
        from ..labelled.nodata import nodata_values

        meta["nodata"] = job.fill if nodata_values(patches) and job.mode != "sum" else None  # sums: 0 is a value
    return _geotiff_sink(path, shape4, rows, job.dtype, meta), rows


def _bare_template(shape4, dtype, chunk: int) -> Any:
    """A lazy ``(batch, y, x, channel)`` DataArray for arrays in TensorFlow's layout."""
    import dask.array as da
    import xarray as xr

    data = da.zeros(shape4, dtype=dtype, chunks=(shape4[0], chunk) + shape4[2:])
    return xr.DataArray(data, dims=("batch", "y", "x", "channel"), name="stitched")


def _run(job: _Job, sink, rows: int) -> None:
    """Stitch band after band of ``rows`` output rows into ``sink``."""
    from tqdm.auto import tqdm

    height, width = job.lines[0].n, job.lines[1].n
    n, m = job.reader.n, job.reader.m
    sums = None
    if job.mode != "none":
        weight = None if job.mode == "sum" else np.empty(rows * width)
        sums = _Sums(np.empty(n * rows * width * m, job.acc_dtype), weight, np.empty(job.step_size(rows), job.acc_dtype))
    col_cache: dict[range, list[_Op]] = {}
    with tqdm(total=height, unit="row", desc="stitch", disable=None, leave=False) as bar:
        for y0 in range(0, height, rows):
            y1 = min(y0 + rows, height)
            out = sink.band(y0, y1)
            with np.errstate(invalid="ignore", over="ignore"):  # NaN and inf in the data give NaN and inf
                covered = _stitch_band(job, sums, out, y0, y1, col_cache)
            if not covered.all():
                np.copyto(out, job.fill, where=~covered[None, :, :, None])
            sink.commit(y0, y1, out)
            bar.update(y1 - y0)


def _stitch_band(job: _Job, sums: _Sums | None, out: np.ndarray, y0: int, y1: int, col_cache: dict) -> np.ndarray:
    """Stitch output rows ``[y0, y1)`` into ``out[N, h, W, M]``; returns which pixels got a value (some
    tap of positive weight sampled them; all of them for ``"sum"``, where the others are 0)."""
    lines = job.lines
    h, w = y1 - y0, lines[1].n
    p0, p1 = (int(v) for v in lines[0].needed(y0, y1))
    band = job.reader.read(p0, p1) if p0 < p1 else None
    if band is None:
        return np.zeros((h, w), bool)
    row_ops = axis_ops(lines[0], band.rows, y0, y1)
    if band.cols not in col_cache:
        col_cache[band.cols] = axis_ops(lines[1], band.cols, 0, w)
    col_ops = col_cache[band.cols]
    if job.mode in ("none", "deviation"):
        covered = np.zeros((h, w), bool)
        _last_write(out, covered, band, row_ops, col_ops, lines, job.keep)
        if job.mode == "none":
            return covered
    band_sums = _band_sums(job, sums, band, h, w)
    if job.mode == "deviation":
        _add(band_sums, band, row_ops, col_ops, job, ref=out)
        return _finish_deviation(band_sums, out)
    _add(band_sums, band, row_ops, col_ops, job)
    return _finish_sum(band_sums, out) if job.mode == "sum" else _finish_mean(band_sums, out)


def _band_sums(job: _Job, sums: _Sums, band: _Band, h: int, w: int) -> _Sums:
    """The accumulators of a band of ``h`` rows, cleared, in the patches' memory order."""
    n, m = job.reader.n, job.reader.m
    first = m > 1 and band.data.strides[5] > band.data.strides[4]  # follow the patches' memory order
    acc = sums.acc[: n * h * w * m]
    acc = acc.reshape(n, m, h, w).transpose(0, 2, 3, 1) if first else acc.reshape(n, h, w, m)
    # -0.0 + x is x for every x, signed zeros included; a sum starts from +0.0, as TensorFlow's gradient does
    acc.fill(0 if job.mode == "sum" else -0.0)
    weight = None
    if sums.weight is not None:
        weight = sums.weight[: h * w].reshape(h, w)
        weight.fill(0.0)
    return _Sums(acc, weight, sums.tmp)
