"""Adding patches into a band: strided views of the band's pixels, last writes, weighted sums, and finishing
a band as a weighted mean, a sum or a mean deviation from the last write.

Where the C kernel (``_kernel.c``) takes the job (:func:`kernel_takes`: weighted means of floats up to
32 bits, integers up to 32 bits and bool; sums of those and of 64-bit floats and integers; the last
write of any dtype), :func:`stitch_rows` stitches a band output row by output row, each row's
accumulators in cache, the rows split between threads: the same arithmetic in the same order as below,
bit for bit. Otherwise every step of the inverse map (:func:`patchkit.core.spec.inverse.axis_ops`, one
row step by one column step) is one vectorised operation on a strided view of the band
(:func:`_pixels`); weighted steps go through a scratch buffer in pieces of about :data:`STEP_ELEMENTS`,
which stays in cache.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..core.backends._threads import get_pool, num_threads
from ..core.spec.inverse import Line, Op
from .readers import Band

try:
    from . import _kernel
except ImportError:  # built without a C compiler: numpy adds everything
    _kernel = None

if TYPE_CHECKING:
    from .plan import Job

__all__ = ["Sums", "add", "last_write", "finish_mean", "finish_sum", "finish_deviation", "kernel_takes",
           "kernel_threads", "kernel_bytes", "stitch_rows", "STEP_ELEMENTS", "FINISH_ELEMENTS", "THREAD_ELEMENTS"]

#: Elements of one piece of a weighted step: its float64 scratch (1 MiB) stays in cache.
STEP_ELEMENTS = 2**17
#: Elements of scale repeated along a channels-last axis at a time when a band is finished.
FINISH_ELEMENTS = 2**13
#: Output rows the C kernel stitches at once (1 to 16): a patch's runs for them are consecutive tap rows, read
#: in one go; each row holds its own accumulators.
BLOCK_ROWS = 4
#: Pieces of a band's rows a thread stitches (taking the next as it is free: a busy core takes fewer).
PIECES = 4
#: Output elements below which a band's rows are not split between threads.
THREAD_ELEMENTS = 2**16
#: The C kernel's modes, by :attr:`Job.mode`; ``_PLAIN``: a mean of integers of up to 16 bits, every weight 1.
_MODES = {"direct": 0, "sum": 1, "none": 2}
_PLAIN = 3


def _piece(band: Band, rop: Op, cop: Op) -> np.ndarray:
    """The patch pixels of a row step and a column step: ``[N, row patches, row taps, col patches, col taps, M]``."""
    r0, c0 = band.rows.start, band.cols.start
    sub = band.data[:, rop.patches.start - r0: rop.patches.stop - r0, cop.patches.start - c0: cop.patches.stop - c0,
                    rop.taps, cop.taps]
    return sub.transpose(0, 1, 3, 2, 4, 5)


def _mask(band: Band, rop: Op, cop: Op) -> np.ndarray | None:
    """Which patches of the step are there, shaped to broadcast against :func:`_piece` (None: all)."""
    if band.present is None:
        return None
    r0, c0 = band.rows.start, band.cols.start
    mask = band.present[rop.patches.start - r0: rop.patches.stop - r0, cop.patches.start - c0: cop.patches.stop - c0]
    return mask[None, :, None, :, None, None]


def _pixels(array: np.ndarray, rop: Op, cop: Op, lines: tuple[Line, Line]) -> np.ndarray:
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


def _where(band: Band, rop: Op, cop: Op, lines: tuple[Line, Line], keep: np.ndarray | None) -> np.ndarray | None:
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


def last_write(out: np.ndarray, covered: np.ndarray, band: Band, row_ops, col_ops, lines,
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
class Sums:
    """A band's accumulators: ``acc[N, h, W, M]`` of weighted values (or deviations, or sums), ``weight[h, W]``."""

    acc: np.ndarray
    weight: np.ndarray | None  # None for "sum", which divides by nothing
    tmp: np.ndarray  # flat scratch for one step's weighted values


def add(sums: Sums, band: Band, row_ops, col_ops, job: Job, ref: np.ndarray | None = None) -> None:
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
            for piece in _pieces(parts, STEP_ELEMENTS):  # scratch that stays in cache
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


def finish_mean(sums: Sums, out: np.ndarray) -> np.ndarray:
    """``acc / weight`` into ``out`` (integers rounded); returns where some patch wrote.

    Multiplies by the reciprocal weight: off by an ulp of float64 at most, which rounding to the
    narrower dtypes of this path (integers to the nearest) takes back out.
    """
    covered = sums.weight > 0
    scale = np.divide(1.0, sums.weight, out=sums.weight, where=covered)  # uncovered weights stay 0
    acc, m = sums.acc, sums.acc.shape[3]
    step = max(1, FINISH_ELEMENTS // (acc.shape[2] * m))  # rows at a time: scale repeated along M stays small
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


def finish_sum(sums: Sums, out: np.ndarray) -> np.ndarray:
    """The sums cast into ``out`` (integers wrap, as numpy's addition does; bool: any); all pixels count as
    written, since those nothing reached hold the 0 a gradient has there."""
    np.copyto(out, sums.acc, casting="unsafe")
    return np.ones(out.shape[1:3], bool)


def finish_deviation(sums: Sums, out: np.ndarray) -> np.ndarray:
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



# ---- the C kernel ----------------------------------------------------------------------------------


def kernel_takes(job: Job) -> bool:
    """Whether the C kernel stitches ``job``: its mode (not the deviations of 64-bit and complex means) and dtype."""
    if _kernel is None or job.mode not in _MODES or not job.dtype.isnative:
        return False
    return bool(_kernel.has(_kernel_mode(job), ord(job.dtype.char)))


def _kernel_mode(job: Job) -> int:
    """The kernel's mode of ``job``: plain means of integers of up to 16 bits add up in int32 when it holds
    every sum (the most patches that sample a pixel times the largest value): the very sums float64 makes."""
    if job.mode == "direct" and job.ones and job.dtype.kind in "iub" and job.dtype.itemsize <= 2:
        rows, cols = job.lines
        most = math.prod(((line.kept - 1) * line.r) // line.s + 1 for line in (rows, cols))
        if most * 2 ** (8 * job.dtype.itemsize) < 2**31:
            return _PLAIN
    return _MODES[job.mode]


def kernel_threads(job: Job, h: int) -> int:
    """Threads that stitch a band of ``h`` rows: the cores patchkit uses, at most one a row, fewer for small bands."""
    r = job.reader
    return max(1, min(num_threads(), h, r.n * r.m * h * job.lines[1].n // THREAD_ELEMENTS))


def kernel_bytes(job: Job, h: int) -> int:
    """Bytes the C kernel holds besides the band: each thread's scratch (the rows of a block: accumulators, weight
    sums, reciprocal weights; a table of the patch columns), the weights (repeated along the channels) and
    the patch rows' addresses."""
    r, width = job.reader, job.lines[1].n
    scratch = _kernel.scratch_bytes(r.n, width, r.m, job.lines[1].out, block_rows(job), _kernel_mode(job))
    weights = 0 if job.weights is None or job.ones else job.weights.size * 8 * (r.m + 1)
    return kernel_threads(job, h) * scratch + weights + 8 * (h + job.lines[0].k)  # a band's patch rows, at most


def block_rows(job: Job) -> int:
    """Rows the kernel stitches at once: :data:`BLOCK_ROWS`, fewer where they are wider than a few MiB."""
    r = job.reader
    row = r.n * r.m * job.lines[1].n * 8
    return max(1, min(BLOCK_ROWS, (4 << 20) // max(row, 1)))


def stitch_rows(job: Job, band: Band, out: np.ndarray, y0: int, y1: int) -> None:
    """Stitch output rows ``[y0, y1)`` from ``band`` into ``out[N, h, W, M]`` with the C kernel, the rows split
    between threads; pixels no (positive weight of a) patch reaches get ``job.fill`` (but for ``"sum"``)."""
    pointers = band.row_pointers()
    if pointers is None:  # pieces laid out differently: one array
        band = Band(band.data, band.rows, band.cols, band.present)
        pointers = band.row_pointers()
    addresses, strides = pointers
    present = None if band.present is None else np.ascontiguousarray(band.present, dtype=bool)
    fill = np.empty((), job.dtype)
    np.copyto(fill, job.fill)  # as numpy fills
    params, first = _params(job, band, strides, present, out, fill, y0)
    weights, wide = _kernel_weights(job, first)
    args = (addresses.ctypes.data, 0 if weights is None else weights.ctypes.data, 0 if wide is None else wide.ctypes.data)
    threads = kernel_threads(job, y1 - y0)
    if threads == 1:
        _kernel.rows(params + (y0, y1), *args)
        return
    step = max(block_rows(job), -(-(y1 - y0) // (PIECES * threads)))  # pieces a thread takes as it is free
    pieces = iter([params + (a, min(a + step, y1)) for a in range(y0, y1, step)])
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                piece = next(pieces, None)
            if piece is None:
                return
            _kernel.rows(piece, *args)

    futures = [get_pool(num_threads()).submit(work) for _ in range(threads - 1)]  # the pool patchkit's copies share
    work()  # the arrays the addresses point into live until every piece is done
    for future in futures:
        future.result()


def _params(job: Job, band: Band, strides, present, out: np.ndarray, fill: np.ndarray, y0: int) -> tuple[tuple, bool]:
    """The kernel's integer parameters (in ``_kernel.c``'s order, less the rows each call stitches) and whether the
    patches are channels first."""
    r, (rows, cols) = job.reader, job.lines
    item, (sn, sj, sa, sb, sm) = job.dtype.itemsize, strides
    on, oy, ox, om = out.strides
    if r.m == 1:  # the stride of a length-1 axis is arbitrary
        sm, om = item, item
    params = (
        _kernel_mode(job), ord(job.dtype.char), item, r.n, r.m, cols.n,
        len(band.rows), band.rows.start, sn, sj, sa, sb, sm, len(band.cols), band.cols.start,
        0 if present is None else present.ctypes.data, 0 if present is None else present.strides[0],
        0 if present is None else present.strides[1],
        rows.s, rows.r, rows.before, rows.t0, rows.t1, cols.s, cols.r, cols.before, cols.t0, cols.t1,
        int(job.keep is not None), out.ctypes.data, on, oy, ox, om, y0, fill.ctypes.data, block_rows(job),
    )
    return params, r.m > 1 and sm > sb


def _kernel_weights(job: Job, first: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The weights as the kernel reads them (None: all 1): ``[kh', kw']`` and, for channels-last patches,
    repeated along the channels, ``[kh', kw' * M]``; made once a job."""
    if job.weights is None or job.ones or job.mode != "direct":
        return None, None
    key = ("kernel weights", first)
    if key not in job.cache:
        weights = np.ascontiguousarray(job.weights, dtype=np.float64)
        wide = weights if first else np.ascontiguousarray(np.repeat(weights[:, :, None], job.reader.m, axis=2))
        job.cache[key] = weights, wide.reshape(weights.shape[0], -1)
    return job.cache[key]
