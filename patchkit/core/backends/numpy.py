"""The numpy backend: strided views of the input copied into a preallocated output, on threads.

For every rectangle of patches that :meth:`PatchSpec.regions` finds, the input is viewed (without a
copy) as a 6-D array ``[batch, rows, cols, kh, kw, channels]`` whose strides step by the stride
between patches and by the rate inside a patch; the view is copied into the matching slice of the
output, which has exactly that layout. Rectangles on the padded edges first copy the few input rows
or columns they need into a small zero-filled array. There is never a Python loop per patch: the
copy is split into a handful of tasks (output rows, or columns when there are few rows) so that
all cores copy at once.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..spec import PatchSpec
from ._threads import get_pool, num_threads

try:  # the optional C kernel (setup.py); without it numpy copies alone
    from ._copy import copy_runs as _copy_runs
except ImportError:  # pragma: no cover - depends on the build
    _copy_runs = None

__all__ = ["NumpyBackend", "extract_band", "region_copies"]

#: Below this many bytes a copy runs on the calling thread: handing it to the pool costs more.
PARALLEL_MIN_BYTES = 1 << 20
#: Aim for tasks of at least this many bytes.
TASK_MIN_BYTES = 1 << 18
#: Copies at least this large bypass the cache (streaming stores): they would only evict it.
STREAM_MIN_BYTES = 8 << 20


def extract_band(
    src: np.ndarray, row0: int, shape: tuple[int, int, int, int], spec: PatchSpec, rows: slice, out: np.ndarray,
    *, threads: int | None = None,
) -> np.ndarray:
    """Write output rows ``rows`` of the patches of an image of ``shape`` into ``out``.

    Parameters
    ----------
    src : ndarray
        Input rows ``[row0, row0 + src.shape[1])`` of the image: the whole image (``row0=0``) or at
        least the clipped halo of ``rows`` (:meth:`PatchSpec.input_rows`).
    row0 : int
        The image row that ``src[:, 0]`` holds.
    shape : tuple
        ``(batch, height, width, channels)`` of the whole image.
    spec : PatchSpec
    rows : slice
        Output rows to make.
    out : ndarray
        C-contiguous, shaped ``[batch, len(rows), out_cols, kh * kw * channels]``, same dtype as ``src``.
    threads : int, optional
        Copy threads; default :func:`num_threads`.
    """
    threads = num_threads() if threads is None else threads
    for dst, view in region_copies(src, row0, shape, spec, rows, out):
        _parallel_copy(dst, view, threads)
    return out


def region_copies(src: Any, row0: int, shape: tuple[int, int, int, int], spec: PatchSpec, rows: slice, out: Any,
                  xp: Any = np) -> Iterator[tuple[Any, Any]]:
    """The copies that make output rows ``rows``: ``(dst, view)`` for each of :meth:`PatchSpec.regions`.

    ``dst`` is the region's slice of ``out`` seen as ``[batch, rows, cols, kh, kw, channels]`` and
    ``view`` the input seen the same way through strides (no copy), zero-padded first where the region
    passes the image edges. ``xp`` is the array module (numpy, or CuPy for the device backend).
    """
    _, h, w, c = shape
    kh, kw = spec.sizes
    i0 = rows.start
    out6 = out.reshape(tuple(out.shape[:3]) + (kh, kw, c))
    for region in spec.regions(rows, shape):
        ya, yb = region.in_rows
        xa, xb = region.in_cols
        if region.inside:
            base = src[:, ya - row0 : yb - row0, xa:xb]
        else:
            base = _zero_padded(src, row0, h, w, ya, yb, xa, xb, xp)
        dst = out6[:, region.rows.start - i0 : region.rows.stop - i0, region.cols]
        yield dst, _patch_view(base, spec, tuple(dst.shape), xp)


def _zero_padded(src, row0, h, w, ya, yb, xa, xb, xp=np):
    """Input rows ``[ya, yb)`` and columns ``[xa, xb)`` (which may pass the image edges) with zeros outside."""
    base = xp.zeros((src.shape[0], yb - ya, xb - xa, src.shape[3]), dtype=src.dtype)
    y0, y1, x0, x1 = max(ya, 0), min(yb, h), max(xa, 0), min(xb, w)
    if y0 < y1 and x0 < x1:
        base[:, y0 - ya : y1 - ya, x0 - xa : x1 - xa] = src[:, y0 - row0 : y1 - row0, x0:x1]
    return base


def _patch_view(base: Any, spec: PatchSpec, shape6: tuple[int, ...], xp: Any = np) -> Any:
    """``base`` seen as ``[batch, rows, cols, kh, kw, channels]`` patches starting at its corner (read-only on the host)."""
    sb, sy, sx, sc = base.strides
    (step_r, step_c), (rate_r, rate_c) = spec.strides, spec.rates
    strides = (sb, step_r * sy, step_c * sx, rate_r * sy, rate_c * sx, sc)
    if xp is np:
        return as_strided(base, shape=shape6, strides=strides, writeable=False)
    return xp.lib.stride_tricks.as_strided(base, shape=shape6, strides=strides)


def _parallel_copy(dst: np.ndarray, src: np.ndarray, threads: int) -> None:
    """``dst[...] = src``, split over ``threads`` along output rows (or columns when rows are few)."""
    nbytes = dst.nbytes
    stream = nbytes >= STREAM_MIN_BYTES
    if threads <= 1 or nbytes < PARALLEL_MIN_BYTES:
        copy_patches(dst, src, stream)
        return
    b, n, m = dst.shape[:3]
    target = max(min(nbytes // (4 * threads), 32 << 20), TASK_MIN_BYTES)  # ~4 tasks a thread, not tiny
    row_bytes = nbytes // (b * n)
    if row_bytes >= target or b * n < 2 * threads:
        per_row = max(-(-row_bytes // target), 1) if b * n < 4 * threads else 1
        step = -(-m // per_row)
        tasks = [(k, slice(i, i + 1), slice(j, j + step)) for k in range(b) for i in range(n) for j in range(0, m, step)]
    else:
        group = max(target // row_bytes, 1)
        tasks = [(k, slice(i, i + group), slice(None)) for k in range(b) for i in range(0, n, group)]
    pool = get_pool(threads)
    futures = [pool.submit(copy_patches, dst[t], src[t], stream) for t in tasks]
    for future in futures:
        future.result()


def copy_patches(dst: np.ndarray, src: np.ndarray, stream: bool = False) -> None:
    """``dst[...] = src`` for patch arrays whose last two axes (kernel col, channel) are contiguous runs.

    With the C kernel, each run is one copy (with streaming stores when ``stream``: the destination's
    cache lines are not read first, as glibc's ``memcpy`` does for large copies); otherwise, and for
    layouts the kernel does not take (a column rate above 1, more than four outer axes), ``np.copyto``.
    """
    item = dst.itemsize
    run = dst.shape[-1] * dst.shape[-2] * item
    outer = dst.shape[:-2]
    if (
        _copy_runs is None
        or len(outer) > 4
        or dst.dtype != src.dtype
        or dst.shape != src.shape
        or dst.size == 0
        or any(a.strides[-1] != item or (a.shape[-2] > 1 and a.strides[-2] != a.shape[-1] * item) for a in (dst, src))
    ):
        np.copyto(dst, src, casting="no")
        return
    pad = (1,) * (4 - len(outer)), (0,) * (4 - len(outer))
    _copy_runs(
        dst.ctypes.data, src.ctypes.data, pad[0] + outer, pad[1] + dst.strides[:-2], pad[1] + src.strides[:-2], run, stream
    )


class NumpyBackend:
    """Copies strided views in host memory; every dtype, any input that numpy can view."""

    name = "numpy"
    #: Edge padding needs copies of the edge regions only, not of the whole band.
    pad_copy = False

    def extract(self, images: np.ndarray, spec: PatchSpec, out: np.ndarray | None = None) -> np.ndarray:
        """All patches of ``images`` (4-D ndarray) in a new array, or in ``out``."""
        shape = images.shape
        if out is None:
            out = np.empty(spec.output_shape(shape), dtype=images.dtype)
        return extract_band(images, 0, shape, spec, slice(0, out.shape[1]), out)

    def band(self, src: np.ndarray, row0: int, shape, spec: PatchSpec, rows: slice, out: np.ndarray | None = None) -> np.ndarray:
        """Output rows ``rows`` into ``out`` (a new array if ``None``); see :func:`extract_band`."""
        if out is None:
            b, _, ow, depth = spec.output_shape(shape)
            out = np.empty((b, rows.stop - rows.start, ow, depth), dtype=src.dtype)
        return extract_band(src, row0, shape, spec, rows, out)
