"""The one memory planner: ``max_memory`` parsed once, bands sized by one search, one "does it fit" check.

Every entry point turns ``max_memory`` into a :class:`Budget` once (:meth:`Budget.of`) and hands that
down; a :class:`Budget` is an ``int`` of bytes that remembers what the user wrote, so messages
further down still name ``max_memory='64MiB'``. Band heights are found by :func:`largest`, the one
binary search; whether something fits in the memory the machine has now is asked of
:func:`require_memory`. :func:`plan` cuts a patch grid into row bands from the byte counts of
:mod:`patchkit.core.spec`'s geometry; :func:`plan_for` adds a backend's and a source's temporaries.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import BudgetTooSmallError, OutputTooLargeError
from .backends._threads import num_threads
from .dtypes import check_dtype
from .units import format_bytes, parse_bytes

__all__ = [
    "band_peak",
    "Budget",
    "Plan",
    "DEFAULT_MAX_MEMORY",
    "IN_MEMORY_BAND",
    "LAZY_CHUNK_MEMORY",
    "GDAL_CACHE_SHARE",
    "READ_AGAIN",
    "available_memory",
    "require_memory",
    "largest",
    "plan",
    "band_memory",
    "min_memory",
    "plan_for",
    "check_row_fits",
]

DEFAULT_MAX_MEMORY = "512MiB"
#: Bands of a source held in memory (and in-memory stitching) stop growing at about this size.
IN_MEMORY_BAND = 64 * 2**20
#: Budget of one band of a lazy (dask) result: dask's advice is chunks of about 100 MB.
LAZY_CHUNK_MEMORY = "128MiB"
#: GDAL's block cache while a dask source streams is bounded to ``1 / GDAL_CACHE_SHARE`` of the budget (less when
#: only the minimum fits), and counted in it (:func:`plan_for`).
GDAL_CACHE_SHARE = 16
#: Reading ahead and reading on several threads may make a dask source's bands smaller, so long as the
#: source rows read in all grow by at most this share (:func:`plan_for`).
READ_AGAIN = 1 / 8


class Budget(int):
    """A number of bytes parsed once from what the user passed (``given``), which it prints as.

    ``f"max_memory={budget!r}"`` reads as the user wrote it (``'64MiB'``); arithmetic gives plain ints.
    """

    given: Any
    name: str

    def __new__(cls, value: Any, name: str = "max_memory", nbytes: int | None = None) -> "Budget":
        budget = super().__new__(cls, parse_bytes(value, name) if nbytes is None else nbytes)
        budget.given, budget.name = value, name
        return budget

    @classmethod
    def of(cls, value: Any, name: str = "max_memory") -> "Budget":
        """``value`` parsed (a :class:`PatchkitValueError` naming ``name`` when it is no byte count), or ``value``
        itself when it is a Budget already: parsing happens once, where the user's argument enters."""
        return value if isinstance(value, Budget) else cls(value, name)

    def __repr__(self) -> str:
        return repr(self.given)

    def __str__(self) -> str:
        return str(self.given)

    def __reduce__(self):
        return (Budget, (self.given, self.name, int(self)))

    def less(self, nbytes: int) -> "Budget":
        """What is left of this budget once ``nbytes`` are held elsewhere (still printed as given)."""
        return Budget(self.given, self.name, max(int(self) - int(nbytes), 0))

    def share(self, parts: int) -> "Budget":
        """One of ``parts`` equal shares (still printed as given)."""
        return Budget(self.given, self.name, int(self) // max(int(parts), 1))


@dataclass(frozen=True, slots=True)
class Plan:
    """Row bands of the patch grid that each fit, with everything they hold, in ``max_memory``.

    Attributes
    ----------
    bands : tuple of slice
        Output rows of each band, in order, covering ``0 .. out_rows``.
    band_rows : int
        Rows in the largest band (the block buffer holds this many).
    peak : int
        Bytes held at once by the largest band: block buffer, input rows read, temporaries.
    max_memory : int
        The budget the plan was made for.
    readers : int
        Pieces (columns of source chunks) of a band's halo read at once, from threads.
    prefetch : bool
        Whether the next band's halo is read (into a second halo buffer) while a band is made.
    gdal_cache : int or None
        Bytes GDAL's block cache is bounded to while the bands are read (None: left as it is).
    """

    bands: tuple[slice, ...]
    band_rows: int
    peak: int
    max_memory: int
    readers: int = 1
    prefetch: bool = False
    gdal_cache: int | None = None

    def __len__(self) -> int:
        return len(self.bands)


# --------------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------------


def available_memory() -> int:
    """Bytes the system can hand out now without swapping (``psutil.virtual_memory().available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def require_memory(need: int, what: str, fix: str | Callable[[int], str], verb: str = "would take",
                   detail: str = "") -> None:
    """Raise :class:`OutputTooLargeError` when ``need`` bytes exceed :func:`available_memory` (the one fits check).

    The message reads "``what`` would take N (n bytes[, ``detail``]), but only M is available; ``fix``".
    Callers check before they allocate, so that a kernel far larger than the image (legal under
    ``SAME``) is refused at once. ``fix`` may be a callable of the available bytes, for advice that
    depends on them.
    """
    available = available_memory()
    if need > available:
        advice = fix(available) if callable(fix) else fix
        raise OutputTooLargeError(
            f"{what} {verb} {format_bytes(need)} ({need} bytes{', ' + detail if detail else ''}), but only "
            f"{format_bytes(available)} is available; {advice}"
        )


def largest(fits: Callable[[int], bool], hi: int) -> int:
    """The largest ``n`` in ``1 .. hi`` with ``fits(n)``, for a ``fits`` true at 1 and monotone (the one binary search)."""
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


# --------------------------------------------------------------------------------------------------
# Row bands of a patch grid
# --------------------------------------------------------------------------------------------------


def band_memory(spec, rows: slice | tuple[int, int], shape: Sequence[int], dtype, *, lazy: bool = False,
                chunks: tuple[tuple[int, ...], ...] | None = None, pad_copy: bool = False, readers: int = 1,
                prefetch: bool = False) -> int:
    """Bytes held at once while one band of output rows is made, beyond the source itself.

    The band's block; for a ``lazy`` source the input rows read (the clipped halo) and the read
    temporaries (every source chunk of ``chunks`` the read touches, ``readers`` columns of chunks at
    a time, plus the pieces read); the zero-padded copies of edge regions (of the whole band when
    ``pad_copy``, as the TensorFlow backend does). Read and padding temporaries are never held
    together, so the larger of the two counts, unless the next band is read while this one is made
    (``prefetch``): then a second halo buffer and both temporaries count.
    """
    block, halo, read_temp, pad_temp = _band_parts(spec, spec.row_bounds(rows), shape, dtype, lazy, chunks, pad_copy,
                                                   readers)
    return block + _held(halo, read_temp, pad_temp, prefetch)


def min_memory(spec, shape: Sequence[int], dtype, lazy: bool = False, **kwargs) -> int:
    """The smallest ``max_memory`` that works: the costliest single row of patches (see :func:`band_memory`)."""
    spec.check(shape)
    return _peak(spec, shape, dtype, 1, spec.grid_shape(shape)[0], lazy=lazy, **kwargs)


def band_peak(spec, shape: Sequence[int], dtype, rows: int, **kwargs) -> int:
    """Bytes held at once while bands of ``rows`` rows of patches are made, one after another (the costliest band;
    keywords are those of :func:`band_memory`): what a consumer that cuts its own bands, such as
    :func:`patchkit.predict`, counts for them."""
    return _peak(spec, shape, dtype, rows, spec.grid_shape(shape)[0], **kwargs)


def plan(spec, shape: Sequence[int], dtype, max_memory: int | str, lazy: bool = False, **kwargs) -> Plan:
    """Cut the output rows into the fewest equal bands that each fit in ``max_memory``.

    Bands hold the same number of rows (the last may hold fewer), so one block buffer serves them
    all. Keywords are those of :func:`band_memory`.

    Raises
    ------
    BudgetTooSmallError
        When even one row of patches does not fit; the message gives :func:`min_memory`.
    """
    budget = Budget.of(max_memory)
    spec.check(shape)
    oh = spec.grid_shape(shape)[0]
    peak1 = _peak(spec, shape, dtype, 1, oh, lazy=lazy, **kwargs)
    if peak1 > budget:
        raise BudgetTooSmallError(
            f"max_memory={budget!r} ({format_bytes(budget)}) is below the minimum for this "
            f"image and spec, {format_bytes(peak1)} ({peak1} bytes: one row of patches"
            f"{' and its input rows' if lazy else ''}); raise max_memory to at least {peak1}, "
            "or use smaller patches"
        )
    n = largest(lambda rows: _peak(spec, shape, dtype, rows, oh, lazy=lazy, **kwargs) <= budget, oh)
    bands = tuple(slice(i, min(i + n, oh)) for i in range(0, oh, n))
    return Plan(bands, n, _peak(spec, shape, dtype, n, oh, lazy=lazy, **kwargs), int(budget))


def plan_for(spec, source, backend, max_memory: int | str, blocks: int = 1, streamed: bool = True) -> Plan:
    """The row-band :class:`Plan` for ``source`` under ``max_memory``, with the backend's temporaries.

    ``blocks`` band buffers are held at once (2 in a pipelined sink: one written while the next is
    made); the input rows read and the temporaries are held once.

    A source counts as lazy (its halo is a copy) when reading it copies, and always for the
    TensorFlow backend, which slices and pads each band's halo into new tensors. A source held in
    memory is cut into bands of about :data:`IN_MEMORY_BAND` even when the budget allows more: a
    smaller reused buffer costs fewer first-touch page faults and streams faster (measured: 18 vs
    16 GB/s on 256-pixel patches). Lazy sources use the whole budget, so that fewer halo rows are
    read twice. A dask source whose bands are ``streamed`` (read here, by :meth:`Source.read_rows`; not
    the chunks of a lazy result) also gets GDAL's block cache and concurrent reads: see :func:`_streamed`.
    """
    kwargs = dict(lazy=source.lazy or backend.name == "tensorflow", chunks=source.chunks, pad_copy=backend.pad_copy,
                  blocks=blocks)
    try:
        found = plan(spec, source.shape, source.dtype, max_memory, **kwargs)
    except BudgetTooSmallError:
        check_row_fits(spec, source, **kwargs)  # no budget helps when one row outgrows the machine
        raise
    if found.peak > IN_MEMORY_BAND:
        check_row_fits(spec, source, **kwargs)
    if source.lazy:
        return _streamed(spec, source, Budget.of(max_memory), found, kwargs) if streamed and source.concurrent else found
    if found.band_rows == 1 or found.peak <= IN_MEMORY_BAND:
        return found
    smallest = min_memory(spec, source.shape, source.dtype, **kwargs)
    return plan(spec, source.shape, source.dtype, max(IN_MEMORY_BAND, smallest), **kwargs)


def _streamed(spec, source, budget: Budget, found: Plan, kwargs: dict) -> Plan:
    """``found`` with GDAL's block cache bounded and counted, and the concurrent reads that the budget allows.

    GDAL's cache gets ``1 / GDAL_CACHE_SHARE`` of the budget, less when only the minimum fits (so the
    minimum ``max_memory`` is unchanged), and the bands are planned in the rest. Reading the next band
    while one is made (a second halo buffer, and both bands' temporaries) and reading several pieces at
    once (up to a thread per column of chunks) cost memory, so they may make bands smaller and so read
    more rows again: each is taken, reading ahead first and then as many readers as fit, only while
    the source rows read in all stay within ``READ_AGAIN`` more than one band at a time would read.
    """
    shape, dtype = source.shape, source.dtype
    cache = min(budget // GDAL_CACHE_SHARE, budget - min_memory(spec, shape, dtype, **kwargs))
    if cache:
        found = plan(spec, shape, dtype, budget.less(cache), **kwargs)
    axis, chunks = spec.row_axis(shape), kwargs["chunks"]
    limit = _rows_read(axis, found.band_rows, chunks) * (1 + READ_AGAIN)

    def concurrent(readers: int, prefetch: bool) -> Plan | None:
        try:
            made = plan(spec, shape, dtype, budget, readers=readers, prefetch=prefetch, cache=cache, **kwargs)
        except BudgetTooSmallError:
            return None
        if _rows_read(axis, made.band_rows, chunks) > limit:
            return None
        return replace(made, readers=readers, prefetch=prefetch, gdal_cache=cache)

    most = _at_once(num_threads(), chunks)
    for prefetch in (True, False) if len(found.bands) > 1 else (False,):
        if concurrent(1, prefetch) is not None:  # always so one band at a time, with one reader: found
            return concurrent(largest(lambda k: concurrent(k, prefetch) is not None, most), prefetch)
    return replace(found, peak=found.peak + cache, max_memory=int(budget), gdal_cache=cache)


def _rows_read(axis, n: int, chunks) -> int:
    """Source rows that reading the halos of bands of ``n`` output rows materialises: the rows of every chunk
    each halo touches (the halo's rows without ``chunks``)."""
    starts = np.arange(0, axis.out, n)
    ya, yb = _clipped_spans(axis, starts, np.minimum(starts + n, axis.out))
    rows = np.maximum(yb - ya, 0)
    return int((rows if chunks is None else np.where(rows > 0, _touched(chunks, ya, yb), 0)).sum())


def check_row_fits(spec, source, **kwargs) -> None:
    """Raise :class:`OutputTooLargeError` when one row of patches needs more than the memory available.

    Under ``SAME`` a kernel may be far larger than the image; then no ``max_memory`` can help.
    """
    need = min_memory(spec, source.shape, source.dtype, **kwargs)
    kh, kw = spec.sizes
    require_memory(
        need, f"one row of {spec.grid_shape(source.shape)[1]} patches of {kh}x{kw} pixels (and what reading it needs)",
        "no max_memory can hold it: use smaller sizes (or rates), or a larger stride"
    )


def _band_parts(spec, rows: tuple[int, int], shape, dtype, lazy, chunks, pad_copy, readers=1):
    """``(block, halo, read temporaries, padding temporaries)`` bytes of one band; see :func:`band_memory`."""
    i0, i1 = rows
    b, h, w, c = shape
    pixel = b * c * check_dtype(dtype).itemsize
    halo, read_temp = _halo_and_read(spec.row_axis(shape), i0, i1, w, pixel, lazy, chunks, readers)
    pad_temp = _pad_temporaries(spec, rows, shape, pixel, pad_copy)
    return (i1 - i0) * spec.row_nbytes(shape, dtype), halo, read_temp, pad_temp


def _held(halo: int, read_temp: int, pad_temp: int, prefetch: bool) -> int:
    """Bytes of the halo buffers and temporaries held at once: with ``prefetch`` the next band's halo is read
    (its temporaries too) while this band's is cut (its padding temporaries); without, one after the other."""
    return 2 * halo + read_temp + pad_temp if prefetch else halo + max(read_temp, pad_temp)


def _halo_and_read(axis, i0: int, i1: int, width: int, pixel: int, lazy: bool, chunks,
                   readers: int = 1) -> tuple[int, int]:
    """Bytes of a band's clipped input rows and of reading them, ``readers`` pieces at once, for a lazy source
    (else zeros)."""
    if not lazy:
        return 0, 0
    ya, yb = axis.span(i0, i1)
    ya, yb = max(ya, 0), min(yb, axis.n)
    return (yb - ya) * width * pixel, _read_temporaries(ya, yb, width, pixel, chunks) * _at_once(readers, chunks)


def _at_once(readers: int, chunks) -> int:
    """Pieces read at once by ``readers`` threads: no more than the columns of chunks (one piece without chunks)."""
    return 1 if chunks is None else max(1, min(int(readers), len(chunks[2])))


def _pad_temporaries(spec, rows: tuple[int, int], shape, pixel: int, pad_copy: bool) -> int:
    """Bytes of the zero-padded copies a band needs: its edge regions, or all of it when ``pad_copy``."""
    (top, bottom), (left, right) = spec.padding_amounts(shape)
    if pad_copy:
        if not top + bottom + left + right:
            return 0
        ya, yb = spec.input_rows(rows, shape)
        return (yb - ya) * (shape[2] + left + right) * pixel
    return max(
        ((r.in_rows[1] - r.in_rows[0]) * (r.in_cols[1] - r.in_cols[0]) * pixel
         for r in spec.regions(rows, shape) if not r.inside),
        default=0,
    )


def _peak(spec, shape, dtype, n: int, oh: int, lazy=False, chunks=None, pad_copy=False, blocks=1, readers=1,
          prefetch=False, cache=0) -> int:
    """Bytes held at once when bands of ``n`` rows are made.

    The ``blocks`` block buffers and the halo buffer (two with ``prefetch``) are allocated once, for the
    largest band and halo, and reused; the temporaries of the costliest band come on top (:func:`_held`),
    and ``cache`` bytes of GDAL's block cache. Halos and read temporaries of all bands are worked out
    together with numpy, and padding temporaries of bands that touch no edge row depend only on the
    band's height: planning a grid of many thousands of rows stays fast.
    """
    b, h, w, c = shape
    pixel = b * c * check_dtype(dtype).itemsize
    axis = spec.row_axis(shape)
    starts = np.arange(0, oh, n)
    stops = np.minimum(starts + n, oh)
    halo, read_temp = _halos_and_reads(axis, starts, stops, w, pixel, lazy, chunks, readers)
    r_lo, r_hi = axis.interior()
    interior_pad: dict[int, int] = {}
    pad_temp = 0
    for i0, i1 in zip(starts.tolist(), stops.tolist()):
        if i0 < r_lo or i1 > r_hi:
            pad = _pad_temporaries(spec, (i0, i1), shape, pixel, pad_copy)
        else:
            if i1 - i0 not in interior_pad:
                interior_pad[i1 - i0] = _pad_temporaries(spec, (i0, i1), shape, pixel, pad_copy)
            pad = interior_pad[i1 - i0]
        pad_temp = max(pad_temp, pad)
    return blocks * n * spec.row_nbytes(shape, dtype) + _held(halo, read_temp, pad_temp, prefetch) + cache


def _halos_and_reads(axis, starts: np.ndarray, stops: np.ndarray, width: int, pixel: int, lazy: bool,
                     chunks, readers: int = 1) -> tuple[int, int]:
    """The largest clipped halo, and the largest read temporaries (``readers`` pieces at once), over bands
    ``[starts, stops)``.

    The vectorised form of :func:`_halo_and_read` (zeros when the source is not ``lazy``).
    """
    if not lazy:
        return 0, 0
    ya, yb = _clipped_spans(axis, starts, stops)
    rows = np.maximum(yb - ya, 0)
    halo = int(rows.max()) * width * pixel
    if chunks is None:
        return halo, halo
    reads = np.where(rows > 0, (_touched(chunks, ya, yb) + rows) * max(chunks[2]) * pixel, 0)
    return halo, int(reads.max()) * _at_once(readers, chunks)


def _clipped_spans(axis, starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Input rows ``[ya, yb)`` inside the image that bands of output rows ``[starts, stops)`` read."""
    return (np.maximum(starts * axis.s - axis.before, 0),
            np.minimum((stops - 1) * axis.s - axis.before + axis.ke, axis.n))


def _touched(chunks, ya: np.ndarray, yb: np.ndarray) -> np.ndarray:
    """Rows of the chunks (dask-style ``chunks`` of ``(b, h, w, c)``) that reading rows ``[ya, yb)`` touches."""
    row_edges = _edges(tuple(chunks[1]))
    first = np.searchsorted(row_edges, ya, side="right") - 1
    last = np.searchsorted(row_edges, yb, side="left")
    return row_edges[last] - row_edges[first]


@functools.lru_cache(maxsize=16)
def _edges(blocks: tuple[int, ...]) -> np.ndarray:
    """Block boundaries ``[0, b0, b0 + b1, ...]`` of dask-style block sizes."""
    return np.cumsum((0,) + blocks)


def _read_temporaries(ya: int, yb: int, width: int, pixel: int, chunks) -> int:
    """Peak bytes of reading input rows ``[ya, yb)`` one column of source chunks at a time.

    Without ``chunks`` a read returns just the rows asked for (one temporary as large as the piece).
    With dask-style ``chunks`` (a tuple of block sizes per axis of ``(b, h, w, c)``) each read of one
    column of chunks materialises every chunk it touches, then the piece is cut from them.
    """
    if yb <= ya:
        return 0
    if chunks is None:
        return (yb - ya) * width * pixel
    touched_rows = int(_touched(chunks, np.array([ya]), np.array([yb]))[0])
    return (touched_rows + (yb - ya)) * max(chunks[2]) * pixel
