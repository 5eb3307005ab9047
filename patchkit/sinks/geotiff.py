"""Patches to GeoTIFF chips: one georeferenced file per kept patch, plus a GeoJSON index; resumable.

A folder holds:

* ``patchkit.json``: the run's fingerprint, spec and options, written first (and ``complete`` last);
* ``r{row}_c{col}.tif``: one chip per patch, with the patch's transform, the CRS and nodata, its
  bands the non-spatial dims flattened (band descriptions say which); each chip is written under a
  temporary name and renamed, so a chip that exists is whole;
* ``index.geojson``: every chip with its row, col, file name and bounds, written when all chips are.

A rerun with the same arguments writes only the missing chips; a folder from another run is refused
unless ``mode="w"``; :func:`read_index` refuses a folder whose run has not finished.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..chunking import DEFAULT_MAX_MEMORY
from ..errors import DimensionError, IncompleteStoreError, PatchkitValueError
from ..geo import crs_of
from ..labelled import bands, patch_table, prepare
from ..nodata import nodata_values
from ..spec import PatchSpec
from ._store import MODES, RowLog, fingerprint, read_json, refuse_foreign, write_error, write_json

__all__ = ["to_geotiffs", "read_index", "MANIFEST", "INDEX"]

MANIFEST = "patchkit.json"
INDEX = "index.geojson"
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
                backend: str = "auto", progress: bool = True, spatial_dims=None, channel_dims=None) -> Path:
    """Write one GeoTIFF chip per (kept) patch of a DataArray; see ``DataArray.patches.to_geotiffs``."""
    import xarray as xr

    if not isinstance(obj, xr.DataArray):
        raise DimensionError("to_geotiffs writes one DataArray; pick a variable (ds['name']) or stack them with ds.to_dataarray('band')")
    if mode not in MODES:
        raise PatchkitValueError(f"mode={mode!r} is not one of {MODES}: None resumes a run with the same arguments, 'w' overwrites")
    folder = Path(folder)
    prepared = prepare(obj, spec, max_nodata_fraction=max_nodata_fraction, spatial_dims=spatial_dims,
                       channel_dims=channel_dims, max_memory=max_memory)
    table = patch_table(prepared)  # also refuses irregular or rotated grids, before any file
    mark = fingerprint(obj, spec, max_nodata_fraction=max_nodata_fraction, compress=compress,
                       spatial_dims=spatial_dims, channel_dims=channel_dims)
    manifest = _start(folder, mark, mode, spec, len(table))
    if manifest is None:
        return folder
    digits = max(3, len(str(max(prepared.grid_shape) - 1)))
    table["file"] = [chip_name(r, c, digits) for r, c in zip(table["row"], table["col"])]
    _write_chips(folder, obj, prepared, table, compress, max_memory, backend, progress)
    try:
        _write_index(folder, table)
        write_json(folder / MANIFEST, {**manifest, "complete": True})
    except OSError as err:
        raise write_error("the chip index", folder / INDEX, err, "all chips") from err
    return folder


def _start(folder: Path, mark: str, mode, spec: PatchSpec, count: int) -> dict | None:
    """Check or create the folder and its manifest; None when the run is already complete."""
    found = read_json(folder / MANIFEST) if folder.is_dir() else None
    if mode is None and found is not None and found.get("fingerprint") == mark:
        return None if found.get("complete") else found
    occupied = folder.exists() and (not folder.is_dir() or any(folder.iterdir()))
    if occupied and mode != "w":
        refuse_foreign("chip folder", folder, None if found is None else found.get("fingerprint"))
    manifest = {"fingerprint": mark, "spec": spec.to_dict(), "chips": count, "complete": False}
    try:
        if occupied:
            shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / MANIFEST, manifest)
    except OSError as err:
        raise write_error("the chip folder", folder, err, "no chips") from err
    return manifest


def _done_rows(folder: Path, prepared, table) -> RowLog:
    """Patch rows all of whose chips exist already."""
    log = RowLog(prepared.grid_shape[0])
    present = np.array([(folder / name).exists() for name in table["file"]], bool)
    missing_rows = set(table["row"][~present])
    log.done[:] = [row not in missing_rows for row in range(prepared.grid_shape[0])]
    return log


def _write_chips(folder: Path, obj, prepared, table, compress, max_memory, backend, progress) -> None:
    import rasterio
    from tqdm.auto import tqdm

    job = next(iter(prepared.jobs.values()))
    flat_dims = job.layout.leading + job.layout.channels
    descriptions = _descriptions(obj, flat_dims)
    profile = _profile(obj, prepared.spec, job.images.dtype, len(descriptions), compress, crs_of(obj))
    where = {(r, c): i for i, (r, c) in enumerate(zip(table["row"], table["col"]))}
    log = _done_rows(folder, prepared, table)
    with tqdm(total=len(table), unit="chip", desc=f"chips -> {folder.name}", disable=not progress or None) as bar:
        bar.update(int(sum(1 for name in table["file"] if (folder / name).exists())))
        for rows, band in bands(prepared, max_memory=max_memory, backend=backend, done=log.done):
            grid = prepared.grid
            ordered = band.transpose(*grid, *flat_dims, job.layout.y, job.layout.x)
            rows_of, cols_of = band["patch_row"].values, band["patch_col"].values
            for index in np.ndindex(*ordered.shape[: len(grid)]):
                r, c = int(rows_of[index[0]]), int(cols_of[index[-1]])  # (i, j) on the grid, (k,) when filtered
                entry = table.iloc[where[(r, c)]]
                path = folder / entry["file"]
                if path.exists():
                    continue
                chip = ordered.data[index].reshape(-1, *prepared.spec.sizes)
                _write_chip(path, chip, {**profile, "transform": entry["transform"]}, descriptions, rasterio)
                bar.update(1)


def _write_chip(path: Path, chip: np.ndarray, profile: dict, descriptions: list[str], rasterio) -> None:
    """One chip, written under a temporary name and renamed: a chip file that exists is whole."""
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.partial.tif")
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(chip)
            for i, text in enumerate(descriptions, start=1):
                if text:
                    dst.set_band_description(i, text)
        os.replace(tmp, path)
    except (OSError, rasterio.errors.RasterioIOError) as err:
        error = err if isinstance(err, OSError) else OSError(getattr(err, "errno", None), str(err))
        raise write_error("the chip", path, error, "the chips written so far") from err
    finally:
        tmp.unlink(missing_ok=True)


def _write_index(folder: Path, table) -> None:
    """``index.geojson``: every chip's polygon, row, col and file, written under a temporary name first."""
    from ..geo import write_grid

    tmp = folder / f".index.{uuid.uuid4().hex}.partial.geojson"
    try:
        write_grid(table, tmp, driver="GeoJSON")
        os.replace(tmp, folder / INDEX)
    finally:
        tmp.unlink(missing_ok=True)


def read_index(folder: str | Path):
    """The chip index of a finished :func:`to_geotiffs` run, as a GeoDataFrame.

    Raises
    ------
    IncompleteStoreError
        When the run writing the folder has not finished; running it again finishes it.
    """
    import geopandas as gpd

    folder = Path(folder)
    manifest = read_json(folder / MANIFEST)
    if not manifest or not manifest.get("complete"):
        raise IncompleteStoreError(
            f"the chip folder {str(folder)!r} is not complete: the run writing it stopped or is still going; "
            "run the same .patches.to_geotiffs(...) again to finish it"
        )
    return gpd.read_file(folder / INDEX)
