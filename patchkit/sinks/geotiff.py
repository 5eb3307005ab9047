"""Patches to GeoTIFF chips: one georeferenced file per kept patch, plus a GeoJSON index; resumable.

A folder holds:

* ``patchkit.json``: the run's fingerprint, spec and options, written first; after every band, the
  finished patch rows and the band's content digest; last, the size of every chip and ``complete``;
* ``r{row}_c{col}.tif``: one chip per patch, with the patch's transform, the CRS and nodata, its
  bands the non-spatial dims flattened (band descriptions say which); each chip is written under a
  temporary name, read back and compared with its pixels, then renamed, so a chip that exists is whole;
* ``index.geojson``: every chip with its row, col, file name and bounds, written when all chips are
  (under a temporary name, read back, then renamed).

A rerun with the same arguments compares a sample of the finished bands with the source's pixels,
deletes the temporary files a killed run left, writes the chips of unfinished bands and the missing
chips of finished ones; a folder from another run is refused unless ``mode="w"``; :func:`read_index`
refuses a folder whose run has not finished, or one missing a chip or holding a chip of another size.
"""

from __future__ import annotations

import hashlib
import math
import os
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..core.backends._threads import num_threads
from ..core.budget import DEFAULT_MAX_MEMORY, Plan
from ..errors import DamagedOutputError, DimensionError, IncompleteStoreError, PatchkitValueError, UnsupportedDtypeError, shown
from ..labelled.cluster import check_scheduler, client_for
from ..labelled.geo import crs_of
from ..labelled.layout import bands, patch_table, prepare
from ..labelled.nodata import nodata_values
from ..core.spec import PatchSpec
from ._store import (RowLog, band_digest, check_mode, check_path, check_resume, check_source, check_verify, combine, fingerprint,
                     raw_bytes, read_json, refuse_foreign, remove, short_write, source_files, write_error, write_json)
from ._pipeline import finished, pipelined
from ._progress import JobBar, band_patches
from .base import Pipeline, Progress, Sink, overlapped

__all__ = ["GeoTiffSink", "to_geotiffs", "read_index", "MANIFEST", "INDEX"]

MANIFEST = "patchkit.json"
INDEX = "index.geojson"
#: ``verify`` values of :func:`read_index`.
VERIFY = ("cheap", "full", False)
#: Chips at least this many pixels on a side are tiled (256 x 256 blocks); smaller ones are striped.
TILE_FROM = 512


def chip_name(row: int, col: int, digits: int) -> str:
    """``r0003_c0012.tif``: the chip of patch ``(row, col)``, zero-padded so that names sort."""
    return f"r{row:0{digits}d}_c{col:0{digits}d}.tif"


def _profile(obj, spec: PatchSpec, dtype, count: int, compress, crs) -> dict:
    """The rasterio creation options shared by every chip."""
    kh, kw = spec.sizes
    markers = nodata_values(obj)
    profile = dict(driver="GTiff", height=kh, width=kw, count=count, dtype=np.dtype(dtype).name, crs=crs,
                   nodata=markers[0] if markers else None)
    if compress is not None:
        profile["compress"] = compress
    if min(kh, kw) >= TILE_FROM:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    return profile


def _descriptions(obj, dims: tuple[str, ...]) -> list[str]:
    """``"time=2026-06-01, band=1"`` for every GeoTIFF band: the flattened non-spatial dims."""
    if not dims:
        return [""]
    labels = [obj[d].values if d in obj.coords else np.arange(obj.sizes[d]) for d in dims]
    grids = np.meshgrid(*labels, indexing="ij")
    return [", ".join(f"{d}={np.ravel(g)[i]}" for d, g in zip(dims, grids)) for i in range(math.prod(obj.sizes[d] for d in dims))]


def to_geotiffs(obj: Any, folder: str | Path, spec: PatchSpec, *, max_memory: int | str = DEFAULT_MAX_MEMORY,
                mode: str | None = None, max_nodata_fraction: float | None = None, compress: str | None = "deflate",
                backend: str = "auto", progress: bool = True, spatial_dims=None, channel_dims=None, scheduler: Any = None) -> Path:
    """Write one GeoTIFF chip per (kept) patch of a DataArray; see ``DataArray.patches.to_geotiffs``."""
    import xarray as xr

    check_source(obj, spec, "to_geotiffs")
    check_scheduler(scheduler)
    if isinstance(obj, xr.Dataset):
        raise DimensionError(
            f"obj is a Dataset of the variables {[str(n) for n in obj.data_vars]}, but to_geotiffs writes one DataArray; "
            "pick a variable (ds['name']) or stack them with ds.to_dataarray('band')"
        )
    check_mode(mode)
    _check_compress(compress)
    _check_dtype(obj.dtype)
    folder = check_path(folder, "folder", "chips/")
    prepared = prepare(obj, spec, max_nodata_fraction=max_nodata_fraction, spatial_dims=spatial_dims,
                       channel_dims=channel_dims, max_memory=max_memory)
    table = patch_table(prepared)  # also refuses irregular or rotated grids, before any file
    mark = fingerprint(obj, spec, max_nodata_fraction=max_nodata_fraction, compress=compress,
                       spatial_dims=spatial_dims, channel_dims=channel_dims)
    pipe, plan = _SINK.write_pipeline(prepared, max_memory, backend, compress=compress)
    with client_for(scheduler) as client:  # connected (or refused) before the folder is made
        manifest = _start(folder, mark, mode, prepared, len(table), max_memory)
        if manifest is None:
            return folder
        digits = max(3, len(str(max(prepared.grid_shape) - 1)))
        table["file"] = [chip_name(r, c, digits) for r, c in zip(table["row"], table["col"])]
        _write_chips(folder, obj, prepared, table, manifest, compress, pipe, plan, backend, progress, client)
    try:
        _write_index(folder, table)
        sizes = {name: (folder / name).stat().st_size for name in table["file"]}
        write_json(folder / MANIFEST, {**manifest, "files": sizes, "complete": True})
    except OSError as err:
        raise write_error("the chip index", folder / INDEX, err, "all chips") from err
    return folder


def _check_compress(compress: Any) -> None:
    """Refuse a ``compress`` that is not a GDAL GeoTIFF compression (GDAL itself only warns, and writes raw chips)."""
    from rasterio.enums import Compression

    names = sorted(c.value.lower() for c in Compression)
    if compress is not None and not (isinstance(compress, str) and compress.lower() in names):
        raise PatchkitValueError(f"compress={shown(compress)} is not a GeoTIFF compression; pass one of {names}, or None")


def _check_dtype(dtype) -> None:
    """Refuse a dtype GeoTIFF cannot hold (bool, float16, bfloat16...), before any chip is written."""
    from rasterio.dtypes import check_dtype

    if not check_dtype(np.dtype(dtype).name):
        raise UnsupportedDtypeError(
            f"obj has dtype {np.dtype(dtype).name}, which GeoTIFF chips cannot hold (GDAL has no such type); convert it "
            "first, e.g. da.astype('uint8') for bool or da.astype('float32') for float16, or write to_zarr instead"
        )


def _start(folder: Path, mark: str, mode, prepared, count: int, max_memory) -> dict | None:
    """Check or create the folder and its manifest; None when the run is already complete.

    A run with the same fingerprint has a sample of its finished bands compared with the source's
    pixels (all of them when a source file changed) before it resumes or returns.
    """
    found = read_json(folder / MANIFEST) if folder.is_dir() else None
    if mode is None and found is not None and found.get("fingerprint") == mark:
        check_resume(prepared, found.get("bands", []), found.get("source_files"), max_memory, f"the chip folder {str(folder)!r}")
        return None if found.get("complete") else found
    occupied = folder.exists() and (not folder.is_dir() or any(folder.iterdir()))
    if occupied and mode != "w":
        refuse_foreign("chip folder", folder, None if found is None else found.get("fingerprint"))
    manifest = {"fingerprint": mark, "spec": prepared.spec.to_dict(), "chips": count, "complete": False,
                "rows_done": [], "bands": [], "source_files": source_files(prepared.obj)}
    try:
        if occupied:
            remove(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / MANIFEST, manifest)
    except OSError as err:
        raise write_error("the chip folder", folder, err, "no chips") from err
    return manifest


def _drop_partials(folder: Path) -> None:
    """Delete the temporary chips and indexes a killed run left behind."""
    for path in folder.glob(".*.partial*"):
        remove(path, strict=False)


def _resume_log(folder: Path, prepared, table, manifest: dict) -> tuple[RowLog, set]:
    """The finished rows, less the bands with a chip gone (returned as rows to repair: only their missing chips)."""
    log = RowLog(prepared.grid_shape[0], manifest.get("rows_done", []), manifest.get("bands", []))
    missing = set(table["row"][[not (folder / name).exists() for name in table["file"]]])
    repair = set()
    for entry in list(log.bands):
        if missing & set(range(entry[0], entry[1])):
            log.forget(entry)
            repair.update(range(entry[0], entry[1]))
    return log, repair


@dataclass(frozen=True)
class _Chips:
    """How the chips of a band are written: by the driver's threads, or by a worker (so it pickles)."""

    folder: Path
    profile: dict
    descriptions: list
    order: tuple
    grid: tuple

    def writes(self, band, todo: dict) -> list:
        """One callable per chip of ``band`` in ``todo`` (``{(row, col): (file, transform)}``) that writes it."""
        if hasattr(band, "data_vars"):  # a band made on a worker
            band = band[next(iter(band.data_vars))]
        ordered = band.transpose(*self.order)
        rows_of, cols_of = band["patch_row"].values, band["patch_col"].values
        sizes = ordered.shape[-2:]
        writes = []
        for index in np.ndindex(*ordered.shape[: len(self.grid)]):
            r, c = int(rows_of[index[0]]), int(cols_of[index[-1]])  # (i, j) on the grid, (k,) when filtered
            if (r, c) in todo:
                name, transform = todo[(r, c)]
                chip = ordered.data[index].reshape(-1, *sizes)
                writes.append(partial(_write_chip, self.folder / name, chip, {**self.profile, "transform": transform},
                                      self.descriptions))
        return writes

    def on_worker(self, rows: slice, band, todo: dict) -> str:
        """Write the band's chips in ``todo`` (a task on a cluster); the band's content digest."""
        for write in self.writes(band, todo):
            write()
        return band_digest(band, rows)


def _todo(folder: Path, table, rows: slice, log: RowLog, repair: set) -> dict:
    """``{(row, col): (file, transform)}``: the chips of patch rows ``rows`` still to write."""
    a, b = np.searchsorted(table["row"].values, [rows.start, rows.stop])
    part = table.iloc[a:b]
    return {(int(r), int(c)): (name, transform) for r, c, name, transform in zip(part["row"], part["col"], part["file"], part["transform"])
            if not log.done[r] and not (r in repair and (folder / name).exists())}


def _write_chips(folder: Path, obj, prepared, table, manifest, compress, pipe: Pipeline, plan: Plan, backend, progress,
                 client) -> None:
    """Write the chips of every band of ``plan`` not finished, locally (in the pipeline ``pipe``) or on the cluster of
    ``client``; log each band."""
    job = next(iter(prepared.jobs.values()))
    flat_dims = job.layout.leading + job.layout.channels
    descriptions = _descriptions(obj, flat_dims)
    profile = _profile(obj, prepared.spec, job.images.dtype, len(descriptions), compress, crs_of(obj))
    chips = _Chips(folder, profile, descriptions, (*prepared.grid, *flat_dims, job.layout.y, job.layout.x), prepared.grid)
    _drop_partials(folder)
    log, repair = _resume_log(folder, prepared, table, manifest)
    with JobBar(prepared, f"chips -> {folder.name}", log.done, progress) as bar:

        def land(rows: slice, futures: list) -> None:
            fresh = band_patches(prepared, rows, log.done)
            for future in futures[1:]:
                future.result()  # raises the first chip's error
            _log_band(folder, manifest, log, rows, futures[0].result())
            bar.add(fresh)

        def submit(pool, rows: slice, band) -> list:
            writes = chips.writes(band, _todo(folder, table, rows, log, repair))
            return [pool.submit(band_digest, band, rows)] + [pool.submit(w) for w in writes]

        if client is None:
            stream = bands(prepared, max_memory=pipe.budget, backend=backend, done=log.done, in_flight=pipe.in_flight)
            pipelined(stream, pipe.in_flight, pipe.writers, submit, land)
        else:
            _cluster_chips(client, chips, prepared, plan, backend, log, lambda rows: _todo(folder, table, rows, log, repair),
                           lambda rows, digest: land(rows, [finished(digest)]))


def _cluster_chips(client, chips: _Chips, prepared, plan: Plan, backend: str, log: RowLog, todo, land) -> None:
    """The chips of every band of ``plan`` not finished, each band a task on the cluster writing its own chips."""
    import dask

    from ..labelled.cluster import band_tasks, run_tasks

    tasks = band_tasks(client, prepared, plan, log.done, {None: "chips"}, backend)
    run_tasks(client, [(rows, dask.delayed(chips.on_worker, pure=False)(rows, task, todo(rows))) for rows, task in tasks], land)


def _log_band(folder: Path, manifest: dict, log: RowLog, rows: slice, digest: str) -> None:
    """Record a band's rows as finished, with their content digest, in the manifest (atomically)."""
    log.add(rows, digest)
    manifest.update(rows_done=log.intervals(), bands=log.bands)
    try:
        write_json(folder / MANIFEST, manifest)
    except OSError as err:
        raise write_error("the chip manifest", folder / MANIFEST, err, "the chips written so far") from err


def _write_chip(path: Path, chip: np.ndarray, profile: dict, descriptions: list[str]) -> None:
    """One chip, written under a temporary name, read back whole, then renamed: a chip file that exists is whole.

    GDAL reports some failed writes (a file-size limit, a full disk) only as a short file: reading
    the chip back is what catches them.
    """
    import rasterio

    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.partial.tif")
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(chip)
            for i, text in enumerate(descriptions, start=1):
                if text:
                    dst.set_band_description(i, text)
        _check_chip(tmp, chip, rasterio)
        os.replace(tmp, path)
    except (OSError, rasterio.errors.RasterioIOError) as err:
        error = err if isinstance(err, OSError) else OSError(getattr(err, "errno", None), str(err))
        raise write_error("the chip", path, error, "the chips written so far") from err
    finally:
        tmp.unlink(missing_ok=True)


def _check_chip(path: Path, chip: np.ndarray, rasterio) -> None:
    """Raise OSError unless ``path`` reads back as ``chip``, bit for bit."""
    try:
        with rasterio.open(path) as src:
            back = src.read()
    except rasterio.errors.RasterioIOError as err:
        raise short_write(path, chip.nbytes, "the chip does not read back") from err
    if back.shape != chip.shape or back.tobytes() != np.ascontiguousarray(chip).tobytes():
        raise short_write(path, chip.nbytes, "the chip reads back with other pixels")


def _write_index(folder: Path, table) -> None:
    """``index.geojson``: every chip's polygon, row, col and file, written under a temporary name, read back, renamed.

    A write that fails (in GDAL's OGR, which raises its own errors) is an OSError.
    """
    import geopandas as gpd

    from ..labelled.geo import write_grid

    scratch = folder / f".index.{uuid.uuid4().hex}.partial"  # a folder, so the layer is named "index" every time
    tmp = scratch / INDEX
    try:
        scratch.mkdir()
        try:
            write_grid(table, tmp, driver="GeoJSON")
            written = len(gpd.read_file(tmp))
        except OSError:
            raise
        except Exception as err:  # pyogrio's and fiona's own errors
            raise short_write(tmp, 1 << 16, f"{type(err).__name__}: {err}") from err
        if written != len(table):
            raise short_write(tmp, 1 << 16, f"the index reads back with {written} of {len(table)} chips")
        os.replace(tmp, folder / INDEX)
    finally:
        remove(scratch, strict=False)


def read_index(folder: str | Path, *, verify: str | bool = "cheap"):
    """The chip index of a finished :func:`to_geotiffs` run, as a GeoDataFrame.

    Parameters
    ----------
    folder : str or path
    verify : {"cheap", "full", False}, default "cheap"
        ``"cheap"`` checks that every chip the run wrote is there with the size it was written with
        (one ``stat`` per chip); ``"full"`` also reads every chip and compares its pixels with the
        content digests logged as it was written; False checks only the completion marker.

    Raises
    ------
    IncompleteStoreError
        When the run writing the folder has not finished (or there is no folder); running it again finishes it.
    DamagedOutputError
        When a chip is missing or damaged, or the index does not list every chip.
    """
    import geopandas as gpd

    check_verify(verify, VERIFY, "chip")
    folder = check_path(folder, "folder", "chips/")
    manifest = read_json(folder / MANIFEST)
    if not manifest or not manifest.get("complete"):
        raise IncompleteStoreError(
            f"the chip folder {str(folder)!r} is not complete: the run writing it stopped or is still going; "
            "run the same .patches.to_geotiffs(...) again to finish it"
            if folder.is_dir() else f"there is no chip folder at {str(folder)!r}; check the path, or write it with .patches.to_geotiffs(...)"
        )
    try:
        index = gpd.read_file(folder / INDEX)
    except Exception as err:  # pyogrio's own errors for a missing or damaged file
        raise _damaged(folder, f"its index {INDEX!r} does not read ({type(err).__name__}: {err})") from err
    if len(index) != manifest.get("chips"):
        raise _damaged(folder, f"its index lists {len(index)} of the {manifest.get('chips')} chips")
    if verify:
        _check_files(folder, manifest.get("files", {}))
    if verify == "full":
        _check_chip_pixels(folder, index, manifest.get("bands", []))
    return index


def _damaged(folder: Path, what: str) -> DamagedOutputError:
    return DamagedOutputError(
        f"the chip folder {str(folder)!r} is damaged: {what}; run .patches.to_geotiffs(...) again with mode='w' to write it anew"
    )


def _check_files(folder: Path, sizes: dict) -> None:
    """Raise :class:`DamagedOutputError` unless every chip is there with its recorded size."""
    for name, size in sizes.items():
        try:
            found = (folder / name).stat().st_size
        except FileNotFoundError:
            raise _damaged(folder, f"chip {name!r} is missing") from None
        if found != size:
            raise _damaged(folder, f"chip {name!r} has {found} bytes, {size} when it was written")


def _check_chip_pixels(folder: Path, index, logged: list) -> None:
    """Raise :class:`DamagedOutputError` unless every logged band's chips hash to its digest."""
    import rasterio

    for a, b, digest in logged:
        rows = []
        for row in range(a, b):
            h = hashlib.sha256()
            for name in index.loc[index["row"] == row].sort_values("col")["file"]:
                try:
                    with rasterio.open(folder / name) as src:
                        h.update(raw_bytes(src.read()))
                except rasterio.errors.RasterioIOError as err:
                    raise _damaged(folder, f"chip {name!r} does not read ({err})") from err
            rows.append(h.hexdigest())
        if combine(rows) != digest:
            raise _damaged(folder, f"the chips of patch rows {a}-{b - 1} differ from what was written")


class GeoTiffSink(Sink):
    """One GeoTIFF chip per kept patch and a GeoJSON index: :func:`to_geotiffs`, :func:`read_index`."""

    name = "geotiff"
    output = ("chips",)
    description = "a folder of GeoTIFF chips, one per patch, and index.geojson (read_index reads it)"
    distributed = True
    buffers = "the chips being written"
    buffers_fix = "use smaller sizes"

    def write(self, obj: Any, path: str | Path, spec: PatchSpec, **options: Any) -> Path:
        return to_geotiffs(obj, path, spec, **options)

    def reserve(self, spec: PatchSpec, shape: tuple[int, int, int, int], dtype: Any, *, filtered: bool = False,
                writers: int = 1, **options: Any) -> int:
        """Three chips for each of the ``writers`` threads: the chip in band order, GDAL's copy, and the chip read back."""
        return writers * 3 * spec.patch_nbytes(shape, dtype)

    def pipelines(self) -> tuple[tuple[int, int], ...]:
        """Two bands in flight, a chip writer per core, when the budget allows; else one band at a time."""
        return overlapped(num_threads())

    def progress(self, path: str | Path, rows: int) -> Progress:
        """Chips written of the manifest's count (all of them once the folder is complete)."""
        path = Path(path)
        manifest = read_json(path / MANIFEST) or {}
        total = int(manifest.get("chips", 0))
        done = total if manifest.get("complete") else sum(1 for _ in path.glob("r*_c*.tif")) if path.is_dir() else 0
        return Progress(min(done, total), total, "chips")

    def open(self, path: str | Path, **kwargs: Any):
        return read_index(path, **kwargs)


_SINK = GeoTiffSink()
