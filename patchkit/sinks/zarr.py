"""Patches to a Zarr (v3) store, row band by row band, resumable; :func:`open_patches` reads it back.

The store is what ``.patches.extract(...)`` would give, written with xarray: the patch variable(s)
with their 2-D pixel-centre coordinates, ``patch_row``/``patch_col``, the grid mapping (``spatial_ref``,
so rioxarray finds the CRS), the source's attrs and the spec (``attrs["patchkit_spec"]``).

How a run survives a crash:

1. The first run writes the structure and the coordinates (beside the target, in a hidden ``.{name}.*.partial`` folder), sets the run's fingerprint and an
   empty list of finished patch rows (``patchkit_rows_done``), then moves it into place: a store
   always has its fingerprint, and a run killed before the move leaves a folder the next deletes.
2. Each band is written with a region write (every stored chunk, fill values too), then its rows
   are added to ``patchkit_rows_done`` and its content digest to ``patchkit_bands`` (zarr writes
   every file atomically).
3. The metadata is consolidated, then, last, ``patchkit_complete`` is set.

A rerun with the same arguments checks a sample of the finished bands against the source's pixels
(:func:`patchkit.sinks._store.check_content`) and skips the finished rows; a store from another run
is refused unless ``mode="w"``; :func:`open_patches` refuses a store that is not complete, or one
missing a stored chunk (and, with ``verify="full"``, one whose pixels differ from the digests).
"""

from __future__ import annotations

import itertools
import math
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..core.backends._threads import num_threads
from ..core.budget import DEFAULT_MAX_MEMORY, Plan
from ..errors import PatchkitError, PatchkitValueError
from ..labelled.cluster import check_scheduler, client_for
from ..labelled.layout import bands, prepare, template
from ..core.spec import PatchSpec
from ..core.units import parse_bytes
from ._store import (RowLog, band_digest, check_mode, check_path, check_resume, check_source, fingerprint, move_into_place,
                     partial_path, read_json, refuse_foreign, remove, source_files, write_error)
from ._pipeline import finished, pipelined
from ._progress import JobBar, band_patches
from .base import Pipeline, Progress, Sink, overlapped
from .zarr_store import BANDS, COMPLETE, FINGERPRINT, ROWS_DONE, SOURCE_FILES, _open_group, open_patches

__all__ = ["ZarrSink", "to_zarr", "open_patches", "COMPLETE", "ROWS_DONE", "FINGERPRINT"]

#: The variable a DataArray without a name is stored as (``patches`` would hide behind the accessor).
DEFAULT_NAME = "pixels"
#: Default size of a stored chunk: whole patches, about this many bytes (at least one patch).
CHUNK_BYTES = "4MiB"


def _check_options(mode, compression, chunk_patches) -> None:
    if chunk_patches is not None and (isinstance(chunk_patches, bool) or not isinstance(chunk_patches, (int, np.integer))
                                      or chunk_patches < 1):
        raise PatchkitValueError(
            f"chunk_patches={chunk_patches!r} must be a positive whole number of patches per stored chunk, or None "
            "(chunks of about 4 MiB); pass e.g. chunk_patches=16"
        )
    check_mode(mode)
    if compression is None or compression == "default" or _is_codec(compression):
        return
    raise PatchkitValueError(
        f"compression={compression!r} is not understood; pass 'default' (zstd), None (raw bytes) or a zarr codec "
        "such as zarr.codecs.BloscCodec(cname='lz4')"
    )


def _is_codec(compression: Any) -> bool:
    """Whether ``compression`` is something zarr takes as a compressor: its codecs, numcodecs' or their dicts."""
    from zarr.abc.codec import BytesBytesCodec

    try:
        from numcodecs.abc import Codec
    except ImportError:  # numcodecs comes with zarr; without it only zarr's own codecs
        Codec = BytesBytesCodec
    return isinstance(compression, (BytesBytesCodec, Codec)) or isinstance(compression, dict) and "name" in compression


def _encoding(ds, grid: tuple[str, ...], compression, chunk_patches: int | None) -> dict:
    """Chunks of whole patches along the grid (``CHUNK_BYTES`` by default) and the compressor.

    Chunks hold one patch row (``patch_row`` 1), so every band fills whole chunks.
    """
    encoding = {}
    for name, var in ds.data_vars.items():
        patch_bytes = var.dtype.itemsize * math.prod(n for d, n in var.sizes.items() if d not in grid)
        per_chunk = chunk_patches or max(1, parse_bytes(CHUNK_BYTES) // patch_bytes)
        chunks = []
        for dim in var.dims:
            if dim == "patch_row":
                chunks.append(1)
            elif dim in ("patch_col", "patch"):
                chunks.append(int(min(var.sizes[dim], per_chunk)) or 1)
            else:
                chunks.append(var.sizes[dim])
        encoding[name] = {**var.encoding, "chunks": tuple(chunks)}  # the argument replaces var.encoding
        if compression != "default":
            encoding[name]["compressors"] = () if compression is None else (compression,)
    for name, coord in ds.coords.items():
        if coord.dtype.kind == "f":  # pixel centres are never missing: no _FillValue attribute
            encoding[name] = {**coord.encoding, "_FillValue": None}
    return encoding


def _as_dataset(obj):
    """A Dataset to write: a DataArray is named ``patches`` unless it has a name.

    Encoding keys that rioxarray also leaves in ``attrs`` (``scale_factor``, ``add_offset``,
    ``_FillValue`` of an unmasked raster) are dropped from the encoding: the values are written as
    they are, and the attrs say how to read them, as in the source.
    """
    import xarray as xr

    ds = obj.to_dataset(name=obj.name if obj.name is not None else DEFAULT_NAME) if isinstance(obj, xr.DataArray) else obj.copy()
    for var in ds.variables.values():
        var.encoding = {k: v for k, v in var.encoding.items() if k not in var.attrs}
    return ds


def _structure(prepared, compression, chunk_patches: int | None) -> tuple[Any, dict]:
    """The store's structure (a Dataset with lazy, never-computed data) and its encoding."""
    ds = _as_dataset(template(prepared))
    return ds, _encoding(ds, prepared.grid, compression, chunk_patches)


def to_zarr(obj: Any, store: str | Path, spec: PatchSpec, *, max_memory: int | str = DEFAULT_MAX_MEMORY, mode: str | None = None,
            max_nodata_fraction: float | None = None, compression: Any = "default", chunk_patches: int | None = None,
            backend: str = "auto", progress: bool = True, spatial_dims=None, channel_dims=None, scheduler: Any = None) -> Path:
    """Write the patches of ``obj`` to a Zarr store band by band; see ``DataArray.patches.to_zarr``."""
    check_source(obj, spec, "to_zarr")
    check_scheduler(scheduler)
    _check_options(mode, compression, chunk_patches)
    path = check_path(store, "store", "patches.zarr")
    prepared = prepare(obj, spec, max_nodata_fraction=max_nodata_fraction, spatial_dims=spatial_dims,
                       channel_dims=channel_dims, max_memory=max_memory)
    mark = fingerprint(obj, spec, max_nodata_fraction=max_nodata_fraction, compression=repr(compression),
                       chunk_patches=chunk_patches, spatial_dims=spatial_dims, channel_dims=channel_dims)
    pipe, plan = _SINK.write_pipeline(prepared, max_memory, backend, compression=compression, chunk_patches=chunk_patches)
    ds, encoding = _structure(prepared, compression, chunk_patches)  # before the store is made
    names = [str(name) for name in ds.data_vars]
    with client_for(scheduler) as client:  # connected (or refused) before the store is made
        log = _start(path, prepared, ds, encoding, mark, mode, max_memory)
        if log is None:
            return path  # already complete, from these pixels
        if client is None:
            _write_bands(path, prepared, names, log, pipe, backend, progress)
        else:
            _cluster_bands(client, path, prepared, names, log, plan, backend, progress)
    _finish(path)
    return path


def _start(path: Path, prepared, ds, encoding: dict, mark: str, mode, max_memory) -> RowLog | None:
    """Open the store to resume, or create it from ``ds`` and ``encoding``; None when it is already complete."""
    rows = prepared.grid_shape[0]
    group = _open_group(path) if path.exists() else None
    attrs = dict(group.attrs) if group is not None else {}
    if mode is None and attrs.get(FINGERPRINT) == mark:
        log = RowLog(rows, attrs.get(ROWS_DONE, []), attrs.get(BANDS, []))
        check_resume(prepared, log.bands, attrs.get(SOURCE_FILES), max_memory, f"the Zarr store {str(path)!r}")
        if attrs.get(COMPLETE):
            return None
        for stray in path.rglob("*.partial"):  # zarr writes each file under a temporary name: a kill leaves it
            stray.unlink(missing_ok=True)
        return log
    occupied = path.exists() and (not path.is_dir() or any(path.iterdir()))
    if occupied and mode != "w":
        refuse_foreign("Zarr store", path, attrs.get(FINGERPRINT))
    _create(path, prepared, ds, encoding, mark)
    return RowLog(rows)


def _create(path: Path, prepared, ds, encoding: dict, mark: str) -> None:
    """Write the structure and coordinates beside ``path``, set the fingerprint, then move it into place.

    So a store at ``path`` always has its fingerprint: a run killed while creating it leaves only a
    hidden ``.{name}.*.partial`` folder, which the next run deletes.
    """
    import zarr

    tmp = partial_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.to_zarr(str(tmp), mode="w", compute=False, consolidated=False, zarr_format=3, encoding=encoding)
        zarr.open_group(str(tmp), mode="r+").update_attributes(
            {FINGERPRINT: mark, ROWS_DONE: [], BANDS: [], SOURCE_FILES: source_files(prepared.obj)})
        move_into_place(tmp, path)
    except OSError as err:
        raise write_error("the Zarr store", path, err, "no bands") from err
    finally:
        remove(tmp, strict=False)


def _region(prepared, rows: slice) -> tuple[str, slice]:
    """The grid dim and the slice of it that output rows ``rows`` fill in the store."""
    if prepared.keep is None:
        return "patch_row", rows
    before = int(prepared.keep[: rows.start].sum())
    return "patch", slice(before, before + int(prepared.keep[rows].sum()))


def _write_bands(path: Path, prepared, names: list[str], log: RowLog, pipe: Pipeline, backend: str,
                 progress: bool) -> None:
    """Write every band not yet finished, recording each as it lands, in the pipeline the budget allows.

    With two bands in flight, band n's stored chunks are encoded and written on ``pipe.writers``
    threads (zarr and numcodecs release the GIL) while band n + 1 is read and extracted into the other
    buffer; band n is logged (rows and content digest) once all its chunks are written, and only then
    are band n + 1's chunks written: kept patches (one ``patch`` dim) may share a stored chunk across
    two bands, which must not be written at once. With one band in flight, each band is written, then
    logged, before the next is made.
    The structure and every coordinate were written with the store, so a band writes only its
    patches, straight into the zarr arrays (as they are: no CF encoding on the way).
    """
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    # every chunk is stored, fill values too, so that a missing chunk file means a lost chunk
    arrays = {name: group[name].with_config({"write_empty_chunks": True}) for name in names}
    stream = bands(prepared, max_memory=pipe.budget, backend=backend, done=log.done, in_flight=pipe.in_flight)
    with JobBar(prepared, f"patches -> {path.name}", log.done, progress) as bar:
        pipelined(stream, pipe.in_flight, pipe.writers, partial(_start_band, arrays, prepared),
                  lambda rows, futures: bar.add(_land(path, group, prepared, log, rows, futures)))


def writers() -> int:
    """Threads that encode and write stored chunks at once when the budget allows (each holds two chunks)."""
    return num_threads()


def _start_band(arrays: dict, prepared, pool, rows: slice, band) -> list:
    """Submit the content digest and every stored chunk of a band to ``pool``; their futures."""
    dim, where = _region(prepared, rows)
    futures = [pool.submit(band_digest, band, rows)]
    for name, var in _as_dataset(band).data_vars.items():
        futures += [pool.submit(write) for write in _chunk_writes(arrays[str(name)], var, dim, where)]
    return futures


def _land(path: Path, group, prepared, log: RowLog, rows: slice, futures: list) -> int:
    """Wait for a band's chunks, then log it (rows and digest); its new patches, for the progress bar.

    A write that failed (permissions, a full disk) is :class:`~patchkit.errors.SinkWriteError`, saying what is kept.
    """
    fresh = band_patches(prepared, rows, log.done)
    try:
        results = [future.result() for future in futures]  # raises the first write's error
        log.add(rows, results[0])
        group.update_attributes({ROWS_DONE: log.intervals(), BANDS: log.bands})
    except OSError as err:
        raise write_error("the Zarr store", path, err, f"the {log.count} finished patch rows") from err
    return fresh


def _pieces(offset: int, length: int, chunk: int) -> list[tuple[int, int]]:
    """``[start, stop)`` pieces of local positions ``0..length`` that cut at stored-chunk boundaries."""
    out, start = [], 0
    while start < length:
        stop = min(length, start + chunk - (offset + start) % chunk)
        out.append((start, stop))
        start = stop
    return out


def _chunk_places(array, var, dim: str, where: slice) -> list[tuple[tuple, tuple, bool]]:
    """``(target, local, whole)`` for every stored chunk that one band of ``var`` fills in ``array`` at ``where``:
    where it goes, which part of the band it is, and whether the band fills the stored chunk whole."""
    axes = [i for i, d in enumerate(var.dims) if d in ("patch_row", "patch_col", "patch")]
    offsets = [where.start if var.dims[i] == dim else 0 for i in axes]
    places = []
    for pieces in itertools.product(*(_pieces(o, var.shape[i], array.chunks[i]) for o, i in zip(offsets, axes))):
        local, target, whole = [slice(None)] * var.ndim, [slice(None)] * var.ndim, True
        for i, offset, (a, b) in zip(axes, offsets, pieces):
            local[i], target[i] = slice(a, b), slice(offset + a, offset + b)
            step = array.chunks[i]
            whole = whole and (offset + a) % step == 0 and offset + b == min(offset + a + step, array.shape[i])
        places.append((tuple(target), tuple(local), whole))
    return places


def _chunk_writes(array, var, dim: str, where: slice) -> list:
    """One callable per stored chunk that writes that chunk of one band of ``var`` into ``array`` at ``where``."""
    return [partial(_write_chunk, array, target, var.data, local) for target, local, _ in _chunk_places(array, var, dim, where)]


def _write_chunk(array, target: tuple, data, local: tuple) -> None:
    array[target] = np.ascontiguousarray(data[local])


def _cluster_bands(client, path: Path, prepared, names: list[str], log: RowLog, plan: Plan, backend: str,
                   progress: bool) -> None:
    """Write every band not yet finished as a task on the cluster of ``client``, logging each on landing.

    The bands are those of the local run (its ``plan``). Each task reads its halo, makes the band
    and writes its stored chunks on a worker (:func:`_write_on_worker`), but for the chunks it shares
    with another band (kept patches along one ``patch`` dim), which it returns: the driver writes
    them, one at a time, then logs the band. So no two tasks ever write one stored chunk, and a task
    run twice (a lost worker's band retried) writes the same bytes.
    """
    import dask
    import zarr

    from ..labelled.cluster import band_tasks, run_tasks

    group = zarr.open_group(str(path), mode="r+")
    arrays = {name: group[name].with_config({"write_empty_chunks": True}) for name in names}
    outputs = {key: names[0] if key is None else str(key) for key in prepared.jobs}
    for name in set(names) - set(outputs.values()):  # variables without the spatial dims: written once, here
        arrays[name][...] = prepared.obj[name].values
    tasks = band_tasks(client, prepared, plan, log.done, outputs, backend)
    writes = [(rows, dask.delayed(_write_on_worker, pure=False)(str(path), *_region(prepared, rows), rows, task))
              for rows, task in tasks]

    def land(rows: slice, result: tuple) -> None:
        digest, pieces = result
        for name, target, data in pieces:
            _write_chunk(arrays[name], target, data, ())
        bar.add(_land(path, group, prepared, log, rows, [finished(digest)]))

    with JobBar(prepared, f"patches -> {path.name}", log.done, progress) as bar:
        try:
            run_tasks(client, writes, land)
        except PatchkitError:  # a read error a worker named, a cluster error
            raise
        except OSError as err:  # a worker's write

            raise write_error("the Zarr store", path, err, f"the {log.count} finished patch rows") from err


def _write_on_worker(path: str, dim: str, where: slice, rows: slice, band) -> tuple[str, list]:
    """Write a band's stored chunks on a worker but those it shares with another band; ``(digest, shared pieces)``."""
    import zarr

    group = zarr.open_group(path, mode="r+")
    shared = []
    for name, var in band.data_vars.items():
        array = group[str(name)].with_config({"write_empty_chunks": True})
        for target, local, whole in _chunk_places(array, var, dim, where):
            if whole:
                _write_chunk(array, target, var.data, local)
            else:
                shared.append((str(name), target, np.ascontiguousarray(var.data[local])))
    return band_digest(band, rows), shared


def _finish(path: Path) -> None:
    import zarr

    zarr.consolidate_metadata(str(path))
    zarr.open_group(str(path), mode="r+").attrs[COMPLETE] = True  # keeps the consolidated metadata


class ZarrSink(Sink):
    """Patches in one Zarr (v3) store with their coordinates, CRS and spec: :func:`to_zarr`, :func:`open_patches`."""

    name = "zarr"
    output = ("patches.zarr",)
    description = "one Zarr v3 store of labelled patches (open_patches reads it)"
    distributed = True
    buffers = "the store's chunk buffers"
    buffers_fix = "pass a smaller chunk_patches"

    def write(self, obj: Any, path: str | Path, spec: PatchSpec, **options: Any) -> Path:
        return to_zarr(obj, path, spec, **options)

    def reserve(self, spec: PatchSpec, shape: tuple[int, int, int, int], dtype: Any, *, filtered: bool = False,
                writers: int = 1, chunk_patches: int | None = None, **options: Any) -> int:
        """Two stored chunks (one in memory order, one encoded) for each of the ``writers`` threads.

        A chunk holds up to ``chunk_patches`` patches of one patch row (by default about
        :data:`CHUNK_BYTES`); kept patches lie along one ``patch`` dim, so up to the whole grid.
        """
        rows, cols = spec.grid_shape(shape)
        patch = spec.patch_nbytes(shape, dtype)
        per_chunk = chunk_patches or max(1, parse_bytes(CHUNK_BYTES) // max(patch, 1))
        return writers * 2 * patch * max(1, min(per_chunk, rows * cols if filtered else cols))

    def pipelines(self) -> tuple[tuple[int, int], ...]:
        """Two bands in flight on :func:`writers` threads when the budget allows, else one band at a time."""
        return overlapped(writers())

    def progress(self, path: str | Path, rows: int) -> Progress:
        """Finished patch rows, from the store's ``patchkit_rows_done`` (all of them once it is complete)."""
        attrs = (read_json(Path(path) / "zarr.json") or {}).get("attributes", {})
        done = rows if attrs.get(COMPLETE) else sum(b - a for a, b in attrs.get(ROWS_DONE, []))
        return Progress(min(rows, done), rows, "rows")

    def open(self, path: str | Path, **kwargs: Any):
        return open_patches(path, **kwargs)


_SINK = ZarrSink()
