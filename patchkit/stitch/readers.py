"""Reading what is stitched: rows of patches as ``[N, rows, cols, kh, kw, M]``, from a labelled patch array
(grid or filtered form, numpy or dask) or from TensorFlow's layout ``[batch, out_rows, out_cols, kh*kw*C]``.

A :class:`Reader` hands out :class:`Band` s of patch rows, reading a lazy array one chunk at a time and
keeping the chunks the next band still needs; :meth:`Reader.read_bytes` counts what a read holds, for
the memory plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..core.dtypes import check_dtype
from ..core.spec import PatchSpec
from ..errors import DimensionError, PatchkitTypeError, PatchkitValueError

__all__ = ["Band", "Reader", "Dims", "reader_for", "grid_labels"]


def reader_for(patches: Any, spec: PatchSpec, shape, batch_channels, labelled: bool) -> tuple[Dims | None, Reader]:
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


class Band:
    """Patch rows ``rows`` and columns ``cols`` as ``data[N, rows, cols, kh, kw, M]`` (``present`` marks the kept).

    A band read from a lazy array's chunks holds ``pieces``: consecutive blocks of its rows, each
    ``[N, rows of the block, cols, kh, kw, M]``, as the reader keeps them. The C kernel reads the
    pieces where they lie (:meth:`row_pointers`); ``data`` joins them only when asked for it.
    """

    __slots__ = ("rows", "cols", "present", "pieces", "_data")

    def __init__(self, data: np.ndarray | None, rows: range, cols: range, present: np.ndarray | None = None,
                 pieces: tuple[np.ndarray, ...] | None = None) -> None:
        if data is None and not pieces:
            raise PatchkitValueError("a Band needs data or pieces of it")
        self.rows, self.cols, self.present = rows, cols, present
        self._data = data
        self.pieces = (data,) if pieces is None else tuple(pieces)

    @property
    def data(self) -> np.ndarray:
        """The rows as one array (the pieces joined, the first time it is asked for, when there are several)."""
        if self._data is None:
            self._data = self.pieces[0] if len(self.pieces) == 1 else np.concatenate(self.pieces, axis=1)
        return self._data

    def row_pointers(self) -> tuple[np.ndarray, tuple[int, ...]] | None:
        """The address of each patch row and the strides within a row (batch, col, tap row, tap col, channel),
        or None when the pieces' strides differ."""
        inner = {p.strides[:1] + p.strides[2:] for p in self.pieces}
        if len(inner) != 1:
            return None
        addresses = [p.ctypes.data + np.arange(p.shape[1], dtype=np.intp) * p.strides[1] for p in self.pieces]
        return np.concatenate(addresses), inner.pop()


#: Blocks' worth of temporaries a store of a lazy array's rows makes at once: a block computed and the codec's
#: buffer (measured with tracemalloc on Zarr stores: 2.0 blocks of 4 MiB; of 128 KiB, 2.9, 3.6 compressed,
#: the rest being dask's graph and tasks, which are not counted). A chunk that is one block is computed and
#: kept instead: what computing it makes besides it (a codec's input, the rows an extraction reads) is not
#: counted.
STORE_BLOCKS = 2


def _store(piece: Any, out: np.ndarray) -> np.ndarray:
    """The lazy ``piece`` computed into ``out`` a block at a time (dask's ``store``, on this thread), so that the
    temporaries are a block's, not a copy of the whole piece; under another scheduler (a distributed client)
    computed there and copied."""
    from ..core.sources import is_dask

    if not is_dask(piece):
        np.copyto(out, np.asarray(piece))
        return out
    import dask.array as da
    import dask.local
    import dask.threaded
    from dask.base import get_scheduler

    if get_scheduler(collections=[piece]) in (dask.threaded.get, dask.local.get_sync):
        da.store(piece, out, lock=False, scheduler="sync")
    else:
        np.copyto(out, piece.compute())
    return out


@dataclass(frozen=True)
class Reader:
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

    def _take(self, first: int, stop: int, index: np.ndarray | None = None) -> list[tuple[int, np.ndarray]]:
        """Entries ``[first, stop)`` (or ``index``) along the rows/list axis, as ndarrays: ``(offset, piece)`` pairs,
        ``offset`` counted from ``first``.

        From a lazy array, whole chunks are read (as :meth:`read_bytes` counts: :meth:`_read_chunk`) and
        kept while the next read still needs them: consecutive bands share patch rows, which are read
        once. The pieces are those chunks' rows, never joined.
        """
        if index is None and self.lazy and self.chunks is not None:
            return self._take_chunks(first, stop)
        key = slice(first, stop) if index is None else index
        piece = self.data[:, key]
        return [(0, np.asarray(piece.compute() if hasattr(piece, "compute") else piece))]

    def _take_chunks(self, first: int, stop: int) -> list[tuple[int, np.ndarray]]:
        edges = np.cumsum((0,) + tuple(self.chunks)).tolist()
        c0 = int(np.searchsorted(edges, first, side="right")) - 1
        c1 = int(np.searchsorted(edges, stop, side="left"))
        held, free = self.cache.setdefault("held", {}), self.cache.setdefault("free", [])
        for k in [k for k in held if not c0 <= k < c1]:
            buffer = held.pop(k)[0]  # no later band needs it (bands move down the image): its buffer is reused
            if buffer is not None:
                free.append(buffer)
        for k in range(c0, c1):
            if k not in held:
                held[k] = self._read_chunk(edges[k], edges[k + 1], free)
        return [(max(first, edges[k]) - first, held[k][1][:, max(first, edges[k]) - edges[k]: min(stop, edges[k + 1]) - edges[k]])
                for k in range(c0, c1)]

    def _read_chunk(self, a: int, b: int, free: list) -> tuple[np.ndarray | None, np.ndarray]:
        """Rows ``[a, b)`` (a chunk) as ``(buffer, rows)``: a chunk that is one block of the lazy array is computed
        and kept as it comes (no buffer); one of several blocks is stored block by block into a reused buffer."""
        piece = self.data[:, a:b]
        if self.block_count == 1:
            return None, np.asarray(piece.compute() if hasattr(piece, "compute") else piece)
        buffer = free.pop() if free else np.empty((self.n, max(self.chunks)) + self.data.shape[2:], self.dtype)
        return buffer, _store(piece, buffer[:, : b - a])

    @property
    def block_count(self) -> int:
        """Blocks of a lazy array in one chunk along the rows (1 for other arrays)."""
        chunks = getattr(self.data, "chunks", None) if self.lazy else None
        if not chunks or not all(isinstance(c, tuple) for c in chunks):
            return 1
        return math.prod(len(c) for k, c in enumerate(chunks) if k != 1)

    def read(self, p0: int, p1: int) -> Band | None:
        """Patch rows ``[p0, p1)`` that are there, or None when none is."""
        if self.kind == "grid":
            a, b = max(p0, self.rows.start), min(p1, self.rows.stop)
            if a >= b:
                return None
            pieces = [self.split(piece) for _, piece in self._take(a - self.rows.start, b - self.rows.start)]
            data = pieces[0] if len(pieces) == 1 else None
            return Band(data, range(a, b), self.cols, None, pieces=pieces)
        rows, cols = self.labels
        first, stop = (int(v) for v in np.searchsorted(rows, [p0, p1]))
        if first >= stop:
            return None
        index = None if self.order is None else self.order[first:stop]
        dense = self.split(np.zeros((self.n, p1 - p0, self.ow, self.m) + self.sizes, self.dtype))
        for offset, part in self._take(first, stop, index):
            at = slice(first + offset, first + offset + part.shape[1])
            dense[:, rows[at] - p0, cols[at]] = self.split(part[:, :, None])[:, :, 0]  # [N, K, kh, kw, M]
        present = np.zeros((p1 - p0, self.ow), bool)
        present[rows[first:stop] - p0, cols[first:stop]] = True
        return Band(dense, range(p0, p1), range(self.ow), present)

    def read_bytes(self, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
        """Bytes a read of rows ``[p0, p1)`` holds: what is read (the buffers of the chunks it touches, or the
        piece and the chunks a lazy read touches), the read's temporaries, the dense copy of a list."""
        if self.kind == "grid":
            a, b = np.maximum(p0, self.rows.start) - self.rows.start, np.minimum(p1, self.rows.stop) - self.rows.start
            per = len(self.cols) * self.patch_bytes
        else:
            a, b = np.searchsorted(self.labels[0], p0), np.searchsorted(self.labels[0], p1)
            per = self.patch_bytes
        count = np.maximum(b - a, 0)
        held = 0 if not self.lazy and self.kind == "grid" else count * per
        if self.lazy and self.chunks is not None:
            edges = np.cumsum((0,) + self.chunks)
            if self.order is not None:  # the rows' patches lie anywhere in the array: span them
                lo, hi = self._spans(a, b)
                lo = edges[np.clip(np.searchsorted(edges, lo, side="right") - 1, 0, len(edges) - 1)]
                hi = edges[np.clip(np.searchsorted(edges, hi, side="left"), 0, len(edges) - 1)]
                held = held + np.where(count > 0, hi - lo, 0) * per
            else:  # the chunks it touches: as computed, or in reused buffers (the largest's size) and a store's
                lo = np.clip(np.searchsorted(edges, a, side="right") - 1, 0, len(edges) - 1)
                hi = np.clip(np.searchsorted(edges, b, side="left"), 0, len(edges) - 1)
                if self.block_count == 1:
                    held = np.where(count > 0, edges[hi] - edges[lo], 0) * per
                else:
                    held = np.where(count > 0, (hi - lo) * max(self.chunks) * per + STORE_BLOCKS * self.block_bytes, 0)
        dense = (p1 - p0) * self.ow * self.patch_bytes if self.kind == "list" else 0
        return held + dense

    @property
    def block_bytes(self) -> int:
        """Bytes of the largest block of a lazy array (0 for others): what a store of one block makes."""
        chunks = getattr(self.data, "chunks", None) if self.lazy else None
        if not chunks or not all(isinstance(c, tuple) for c in chunks):
            return 0
        return math.prod(max(c) if c else 0 for c in chunks) * self.dtype.itemsize

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


@dataclass(frozen=True)
class Dims:
    """The dims of a labelled patch array: ``(*leading, *grid, *channels, y, x)``."""

    leading: tuple[str, ...]
    grid: tuple[str, ...]
    channels: tuple[str, ...]
    y: str
    x: str


def _patch_dims(patches: Any) -> Dims:
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
    return Dims(leading, grid, channels, y, x)


def grid_labels(patches: Any, size: int, limit: int, name: str) -> np.ndarray:
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


def _labelled_reader(patches: Any, dims: Dims, spec: PatchSpec, shape: tuple[int, int]) -> Reader:
    """A :class:`Reader` over a labelled patch array (grid or filtered form, numpy or dask)."""
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
        rows, cols = (grid_labels(patches, size, limit, name) for limit, name in ((oh, "patch_row"), (ow, "patch_col")))
        order = np.lexsort((cols, rows))
        order = None if np.array_equal(order, np.arange(size)) else order
        labels = (rows, cols) if order is None else (rows[order], cols[order])
        return Reader(data, "list", _channels_last, rows=range(oh), cols=range(ow), labels=labels, order=order, **common)
    rows = _grid_range(grid_labels(patches, patches.sizes["patch_row"], oh, "patch_row"), "patch_row")
    cols = _grid_range(grid_labels(patches, patches.sizes["patch_col"], ow, "patch_col"), "patch_col")
    return Reader(data, "grid", _channels_last, rows=rows, cols=cols, **common)


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


def _tf_reader(images: Any, spec: PatchSpec, shape: tuple[int, int], batch_channels) -> Reader:
    """A :class:`Reader` over TensorFlow's ``[batch, out_rows, out_cols, kh * kw * C]``."""
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
    return Reader(images, "grid", _split_tf(spec.sizes), n=b, m=c, ow=ow, sizes=spec.sizes,
                   dtype=np.dtype(images.dtype), rows=range(oh), cols=range(ow), chunks=_dask_chunks(images, 1))

