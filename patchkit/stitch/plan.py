"""The memory plan of stitching: a :class:`Job` (what every band needs) and its peak bytes in bands of ``h``
output rows, from which :func:`band_height` picks the largest height that fits ``max_memory`` with
:func:`patchkit.core.budget.largest`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.budget import IN_MEMORY_BAND, Budget, largest, require_memory
from ..core.spec.inverse import Line
from ..core.units import format_bytes
from ..errors import BudgetTooSmallError
from .accumulate import FINISH_ELEMENTS, STEP_ELEMENTS, kernel_bytes, kernel_takes
from .inputs import fill_for, sum_fill
from .readers import Reader

__all__ = ["Job", "make_job", "band_height"]

#: numpy's buffers for a ufunc that casts or broadcasts: up to its default 8192 elements, 32 bytes each.
_UFUNC_ELEMENTS = 8192
#: Dtypes whose weighted means are accumulated as deviations from the last-written value: those
#: float64 cannot hold exactly, and complex types (a complex product turns inf * 0 into NaN parts).
_WIDE = frozenset({"float64", "int64", "uint64", "complex64", "complex128"})


@dataclass(frozen=True)
class Job:
    """Everything a band needs: geometry, reader, blend, where the result goes."""

    lines: tuple[Line, Line]
    reader: Reader
    weights: np.ndarray | None
    ones: bool
    dtype: np.dtype
    fill: Any
    band_copies: int  # copies of a band of the result the sink holds: 0 in memory, more when writing
    keep: np.ndarray | None = None  # the taps of positive weight, when some weights are 0
    sum: bool = False  # "sum": add the values, divide by nothing
    cache: dict = field(default_factory=dict, compare=False, repr=False)  # what the C kernel makes once a job

    @property
    def kernel(self) -> bool:
        """Whether the C kernel stitches this job (:func:`~patchkit.stitch.accumulate.kernel_takes`)."""
        return kernel_takes(self)

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

        Steps are cut into pieces of about :data:`STEP_ELEMENTS` along the longer of their row
        patches and row taps; a step writes each pixel once, so the shorter holds at most
        ``sqrt(h)`` rows, and a piece no more than ``sqrt(h)`` rows of the band's width. Nor is it
        more than the patches the band reads.
        """
        if self.mode in ("none", "sum") or (self.mode == "direct" and self.ones):
            return 0
        rows, cols = self.lines
        p0, p1 = self._bands(h)
        n, width = self.reader.n * self.reader.m, min(cols.n, cols.out * cols.kept)
        whole = n * int(np.max(np.minimum(h, (p1 - p0) * rows.kept))) * width
        return min(whole, max(STEP_ELEMENTS, n * math.isqrt(h) * width))

    def memory(self, h: int) -> int:
        """Peak bytes of stitching in bands of ``h`` output rows (buffers of the largest band are reused).

        The band's copies in the sink (when streaming: the buffer and what the writer makes), the rows
        of patches read (and what reading them makes), and what adding them up holds: with the C kernel,
        each thread's accumulators for a few rows and the weights
        (:func:`~patchkit.stitch.accumulate.kernel_bytes`); otherwise the coverage masks (and a step's
        mask of positive-weight taps, at most a byte a pixel, with zeros inside the window), the band's
        accumulators (values; weights but for ``"sum"``), the larger of one step's scratch (with its
        masks) and the temporaries of finishing a band, the rows of patches joined when a lazy array's
        chunks hold them, and numpy's ufunc buffers.
        """
        r, width = self.reader, self.lines[1].n
        pixels = r.n * r.m * h * width
        band = pixels * self.dtype.itemsize * self.band_copies
        p0, p1 = self._bands(h)
        read = int(np.max(r.read_bytes(p0, p1)))
        if self.kernel:
            return int(band + kernel_bytes(self, h) + read)
        fixed = band + h * width * (2 if self.keep is None else 3)
        if self.mode != "none":
            fixed += pixels * self.acc_dtype.itemsize + (0 if self.mode == "sum" else h * width * 8)
        step = self.step_size(h) * (self.acc_dtype.itemsize + 1)
        finish = {"deviation": pixels * 9, "sum": 0}.get(self.mode, min(pixels, FINISH_ELEMENTS) * 8)
        buffers = min(pixels, _UFUNC_ELEMENTS) * 32
        return int(fixed + max(step, finish) + read + self._joined(p0, p1) + buffers)

    def _joined(self, p0: np.ndarray, p1: np.ndarray) -> int:
        """Bytes of the largest band's rows of patches joined from the chunks of a lazy array that hold them."""
        r = self.reader
        if not isinstance(r, Reader) or r.kind != "grid" or not r.lazy or r.chunks is None:
            return 0
        count = np.minimum(p1, r.rows.stop) - np.maximum(p0, r.rows.start)
        return int(np.max(np.maximum(count, 0))) * len(r.cols) * r.patch_bytes


def band_height(job: Job, budget: Budget) -> int:
    """The largest band height (output rows) whose peak fits ``budget`` (``max_memory`` parsed once).

    In memory, from patches held in memory, bands stop growing at about :data:`IN_MEMORY_BAND`.

    Raises
    ------
    OutputTooLargeError
        When planning the rows of the image (a few numbers a row) would not fit in memory.
    BudgetTooSmallError
        When one output row does not fit; the message gives the minimum.
    """
    n = job.lines[0].n
    require_memory(64 * n, f"planning the bands of an image of {n} rows", "check image_shape")  # a few numbers a row
    smallest = job.memory(1)
    if smallest > budget:
        raise BudgetTooSmallError(
            f"max_memory={budget!r} ({format_bytes(budget)}) is below the minimum for stitching these patches, "
            f"{format_bytes(smallest)} ({smallest} bytes: one output row's accumulators and the rows of patches "
            f"that reach it); raise max_memory to at least {smallest}"
        )
    if not job.band_copies and not job.reader.lazy:
        budget = min(budget, max(IN_MEMORY_BAND, smallest))
    return largest(lambda h: job.memory(h) <= budget, n)


def make_job(blend, lines: tuple[Line, Line], reader: Reader, weights: np.ndarray | None, fill_value: Any, source: Any,
             band_copies: int) -> Job:
    """The :class:`Job` of a blend: its weights, which taps count, the fill (0 for ``"sum"``), the sink's copies
    of a band (``source``: the labelled patches, whose nodata is the default fill; None for arrays)."""
    summing = isinstance(blend, str) and blend.lower() == "sum"
    if summing:
        fill = sum_fill(fill_value, reader.dtype)
    else:
        fill = fill_for(fill_value, reader.dtype, source)
    keep = None if weights is None or bool(np.all(weights > 0)) else weights > 0
    ones = weights is not None and bool(np.all(weights == 1))
    return Job(lines, reader, weights, ones, reader.dtype, fill, band_copies, keep=keep, sum=summing)

