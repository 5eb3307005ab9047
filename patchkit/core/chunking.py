"""Row bands of the patch grid under a memory budget: :func:`iter_patches` and lazy (dask) extraction.

A band of output rows ``[i0, i1)`` needs only input rows :meth:`PatchSpec.input_rows` (its halo).
:func:`iter_patches` plans bands with :meth:`PatchSpec.plan` so that the block buffer, the halo read
from a lazy source and the temporaries of reading and padding fit in ``max_memory`` together, then
fills one reused buffer per band. :func:`lazy_patches` builds the same bands as a dask array.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Iterator

import numpy as np

from .backends import aligned_empty, get_backend, tensor_to_numpy, to_tensor
from .gdal import bounded_cache
from .sources import Source, as_source
from .budget import DEFAULT_MAX_MEMORY, LAZY_CHUNK_MEMORY, Budget, Plan, check_row_fits, min_memory, plan_for
from .spec import PatchSpec

__all__ = [
    "iter_patches",
    "lazy_patches",
    "kept_patches",
    "compact",
]

def iter_patches(
    images: Any,
    sizes,
    strides,
    rates=1,
    padding: str = "VALID",
    *,
    max_memory: int | str = DEFAULT_MAX_MEMORY,
    backend: str = "auto",
) -> Iterator[tuple[slice, Any]]:
    """Yield the patches of ``images`` one band of output rows at a time, under ``max_memory``.

    Parameters
    ----------
    images : array-like, tf.Tensor or dask array
        ``[batch, height, width, channels]``. A dask array (or a zarr/h5py array) is read lazily:
        each band reads only the input rows it needs, and the scene is never held whole.
    sizes, strides, rates, padding
        As :func:`patchkit.extract_patches` (and ``tf.image.extract_patches``).
    max_memory : int or str, default "512MiB"
        Bound on everything the extraction holds at once: the block buffer, the input rows read
        from a lazy source, and the temporaries of reading and padding; for a dask source also
        GDAL's block cache while it is read, and the next band's input rows when the budget leaves
        room to read them ahead (and on several threads). Integers are bytes; strings
        such as ``"512MiB"`` or ``"2GB"`` are parsed. It is a bound, not a target: an image held in
        memory streams in bands of about 64 MiB, which is faster (:data:`IN_MEMORY_BAND`).
    backend : {"auto", "numpy", "tensorflow"}

    Yields
    ------
    rows : slice
        The output rows of this band.
    block : ndarray or tf.Tensor
        ``[batch, len(rows), out_cols, kh * kw * channels]``, equal to ``extract_patches(...)[:, rows]``.
        With the numpy backend and host input the block is a view of a buffer that the next block
        reuses: copy a block you want to keep (``block.copy()``). Tensors are never reused.

    Raises
    ------
    BudgetTooSmallError
        When ``max_memory`` is below :meth:`PatchSpec.min_memory`; raised at the call, before any
        allocation, as are all argument errors.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.zeros((1, 1024, 1024, 3), np.uint8)
    >>> total = 0
    >>> for rows, block in iter_patches(image, 64, 32, max_memory="8MiB"):
    ...     total += block.shape[1]
    >>> total
    31
    """
    spec = PatchSpec(sizes, strides, rates, padding)
    source = as_source(images)
    spec.check(source.shape)
    chosen = get_backend(backend, source)
    plan = plan_for(spec, source, chosen, max_memory)
    return _bands(source, spec, plan, chosen)


def _bands(source: Source, spec: PatchSpec, plan: Plan, backend, buffers: int = 1) -> Iterator[tuple[slice, Any]]:
    """The generator behind :func:`iter_patches` (arguments already checked); nothing for a plan without bands.

    With the numpy backend, blocks are views of ``buffers`` reused buffers taken in turn: a block stays
    valid while the next ``buffers - 1`` are made (a pipelined sink writes one while the next is made).
    """
    if not plan.bands:
        return
    shape = source.shape
    b, _, w, c = shape
    _, _, ow, depth = spec.output_shape(shape)
    tensor_out = source.kind == "tensorflow"
    reuse = backend.name == "numpy" and not tensor_out
    block_bufs = [np.empty(plan.band_rows * b * ow * depth, source.dtype) for _ in range(buffers)] if reuse else []
    if source.lazy:  # the halos first: once the last is read, their generator ends (and its threads with it)
        inputs = ((halo, spec.input_rows(rows, shape, clip=True)[0], rows)
                  for halo, rows in zip(_read_halos(source, spec, plan), plan.bands))
    else:
        whole = source.data if backend.name == "tensorflow" else source.numpy()
        inputs = ((whole, 0, rows) for rows in plan.bands)
    for k, (src, row0, rows) in enumerate(inputs):
        n = rows.stop - rows.start
        if reuse:
            out = block_bufs[k % buffers][: b * n * ow * depth].reshape(b, n, ow, depth)
        else:  # a tensor shares its block: aligned for TensorFlow's kernels, never reused
            out = aligned_empty((b, n, ow, depth), source.dtype) if backend.name == "numpy" else None
        block = backend.band(src, row0, shape, spec, rows, out)
        if backend.name == "numpy":
            yield rows, (to_tensor(block) if tensor_out else block)
        else:
            yield rows, (block if tensor_out else tensor_to_numpy(block))


def _read_halos(source: Source, spec: PatchSpec, plan: Plan) -> Iterator[np.ndarray]:
    """The clipped halo of each band of ``plan``, read from a lazy ``source`` into a reused buffer, in order.

    With ``plan.prefetch`` the next band's halo is read into a second buffer, on a thread, while the
    caller makes a band from this one (whose buffer is read into again only once the caller asks for
    the band after next). ``plan.readers`` pieces of a halo are read at once; GDAL's block cache is
    bounded to ``plan.gdal_cache`` while the halos are read (:func:`patchkit.core.gdal.bounded_cache`).
    """
    b, _, w, c = source.shape
    spans = [spec.input_rows(rows, source.shape, clip=True) for rows in plan.bands]
    most = max(yb - ya for ya, yb in spans)
    buffers = [np.empty(b * most * w * c, source.dtype) for _ in range(2 if plan.prefetch else 1)]

    def read(k: int) -> np.ndarray:
        ya, yb = spans[k]
        halo = buffers[k % len(buffers)][: b * (yb - ya) * w * c].reshape(b, yb - ya, w, c)
        return source.read_rows(ya, yb, out=halo, readers=plan.readers)

    with bounded_cache(plan.gdal_cache):
        if not plan.prefetch:
            yield from (read(k) for k in range(len(spans)))
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="patchkit-prefetch") as pool:
            ahead = pool.submit(read, 0)
            for k in range(len(spans)):
                halo = ahead.result()
                if k + 1 < len(spans):
                    ahead = pool.submit(read, k + 1)  # into the other buffer, while band k is made
                yield halo


def compact(block: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Move the kept patches of a band to its front, in place, and return them as ``[b, kept, depth]``.

    ``block`` is ``[b, rows, out_cols, depth]`` and ``keep`` a boolean ``[rows, out_cols]``; patches
    keep their row-major order. Runs of neighbouring kept patches move in one copy (split where a run
    would overlap itself), so no memory beyond the block is used. A read-only block is copied instead.
    """
    b, n, ow, depth = block.shape
    flat = block.reshape(b, n * ow, depth)
    index = np.flatnonzero(keep)
    if not flat.flags.writeable:
        return flat[:, index]
    dst = 0
    for run in np.split(index, np.flatnonzero(np.diff(index) != 1) + 1):
        if not run.size:
            continue
        src, size = int(run[0]), int(run.size)
        piece = min(size, src - dst) if src > dst else size
        for off in range(0, size, piece):
            m = min(piece, size - off)
            if src != dst:
                flat[:, dst + off: dst + off + m] = flat[:, src + off: src + off + m]
        dst += size
    return flat[:, :dst]


def kept_patches(source: Source, spec: PatchSpec, keep: np.ndarray, backend, max_memory: int | str = DEFAULT_MAX_MEMORY) -> np.ndarray:
    """The patches that ``keep`` (boolean ``[out_rows, out_cols]``) selects, as ``[b, kept, depth]``.

    Made band by band under ``max_memory``; bands without a kept patch are skipped, and the dropped
    patches of the others exist only in the reused block buffer.
    """
    b, _, _, depth = spec.output_shape(source.shape)
    out = np.empty((b, int(keep.sum()), depth), source.dtype)
    plan = plan_for(spec, source, backend, max_memory)
    plan = replace(plan, bands=tuple(rows for rows in plan.bands if keep[rows].any()))
    done = 0
    for rows, block in _bands(source, spec, plan, backend):
        picked = compact(np.asarray(block), keep[rows])
        out[:, done: done + picked.shape[1]] = picked
        done += picked.shape[1]
    return out


def _band_from_halo(halo: np.ndarray, row0: int, shape, spec: PatchSpec, rows: slice, backend_name: str, keep=None) -> np.ndarray:
    """One band of a lazy result, made from its halo (a dask task); only the kept patches if ``keep``."""
    backend = get_backend(backend_name, as_source(halo))
    block = backend.band(np.asarray(halo), row0, shape, spec, rows)
    block = tensor_to_numpy(block) if backend.name == "tensorflow" else block
    return block if keep is None else compact(block, keep)


def lazy_patches(source: Source, spec: PatchSpec, backend, chunk_memory: int | str = LAZY_CHUNK_MEMORY, keep=None):
    """The patches of a dask-backed ``source`` as a dask array, one chunk per row band.

    Each chunk depends only on the source chunks of its halo, so computing the result (or any
    slice of it) never materialises the scene. Bands are planned under ``chunk_memory`` (or the
    minimum, if larger). With ``keep`` (boolean ``[out_rows, out_cols]``) the result is
    ``[b, kept, depth]``: the kept patches in row-major order, bands without one left out.
    """
    import dask
    import dask.array as da

    shape, dtype = source.shape, source.dtype
    minimum = min_memory(spec, shape, dtype, lazy=True, chunks=source.chunks)
    chunk_memory = Budget.of(chunk_memory, "chunk_memory")
    if minimum > chunk_memory:
        check_row_fits(spec, source, lazy=True, chunks=source.chunks)  # a chunk must fit where it is computed
    budget = max(chunk_memory, minimum)
    plan = plan_for(spec, source, backend, budget, streamed=False)
    b, _, ow, depth = spec.output_shape(shape)
    blocks = []
    for rows in plan.bands:
        band_keep = None if keep is None else keep[rows]
        if band_keep is not None and not band_keep.any():
            continue
        ya, yb = spec.input_rows(rows, shape, clip=True)
        task = dask.delayed(_band_from_halo, pure=True)(source.data[:, ya:yb], ya, shape, spec, rows, backend.name, band_keep)
        chunk = (rows.stop - rows.start, ow) if keep is None else (int(band_keep.sum()),)
        blocks.append(da.from_delayed(task, shape=(b, *chunk, depth), dtype=dtype))
    if not blocks:  # one empty chunk (dask cannot size chunks of a zero-length axis by itself)
        return da.empty((b, 0, depth), dtype=dtype, chunks=(b, 1, depth))
    return da.concatenate(blocks, axis=1)
