"""GeoTIFF chips: each opens in rasterio with its window's transform, the CRS and the pixels; resumable."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

import patchkit
from patchkit.errors import ChangedSourceError, DamagedOutputError, DimensionError, ForeignStoreError, IncompleteStoreError, PatchkitValueError

rasterio = pytest.importorskip("rasterio")
gpd = pytest.importorskip("geopandas")
from patchkit.sinks.geotiff import INDEX, MANIFEST, read_index  # noqa: E402

SPEC = dict(sizes=(16, 12), strides=(10, 9), padding="SAME")


def _chips(folder):
    return sorted(p.name for p in folder.glob("r*_c*.tif"))


@pytest.mark.parametrize("name", ["projected", "nonsquare", "nodata"])
def test_chips_are_georeferenced_patches(geotiffs, open_raster, tmp_path, name):
    """Every chip holds its patch's pixels, rasterio's window transform, the CRS and nodata; the index lists them."""
    from rasterio.windows import Window, transform as window_transform

    da = open_raster(geotiffs[name])
    folder = da.patches.to_geotiffs(tmp_path / "chips", **SPEC, max_memory="64KiB", progress=False)
    patches = da.patches.extract(**SPEC)
    spec = patchkit.PatchSpec(**SPEC)
    index = read_index(folder)
    assert len(index) == len(_chips(folder)) == patches.sizes["patch_row"] * patches.sizes["patch_col"]
    assert index.crs == da.rio.crs
    for entry in index.itertuples():
        with rasterio.open(folder / entry.file) as src:
            w = spec.window(entry.row, entry.col, da.shape[1:])
            assert src.transform.almost_equals(window_transform(Window(w.col_off, w.row_off, w.width, w.height), da.rio.transform()))
            assert src.crs == da.rio.crs and src.nodata == da.rio.nodata
            np.testing.assert_array_equal(src.read(), patches.sel(patch_row=entry.row, patch_col=entry.col).values)
            np.testing.assert_allclose(entry.geometry.bounds, tuple(src.bounds), atol=1e-6)


def test_time_stack_bands_are_described(stacked, tmp_path):
    """Leading and channel dims are flattened into the chip's bands, each described by its labels."""
    folder = stacked.patches.to_geotiffs(tmp_path / "chips", 11, 11, progress=False)
    first = folder / read_index(folder).file[0]
    with rasterio.open(first) as src:
        assert src.count == stacked.sizes["time"] * stacked.sizes["band"]
        assert src.descriptions[0].startswith("time=2026-06-01") and src.descriptions[0].endswith("band=1")
        np.testing.assert_array_equal(src.read(), stacked.isel(x=slice(0, 11), y=slice(0, 11)).values.reshape(-1, 11, 11))


def test_nodata_filtering(geotiffs, open_raster, tmp_path):
    """Only the kept patches become chips, named by their row and column."""
    da = open_raster(geotiffs["nodata"])
    kept = da.patches.extract(**SPEC, max_nodata_fraction=0.1)
    folder = da.patches.to_geotiffs(tmp_path / "chips", **SPEC, max_nodata_fraction=0.1, progress=False)
    index = read_index(folder)
    assert list(zip(index.row, index.col)) == list(zip(kept.patch_row.values, kept.patch_col.values))
    assert len(_chips(folder)) == kept.sizes["patch"]


def test_resume_writes_only_missing_chips(geotiffs, open_raster, tmp_path):
    """A folder with missing chips, a stray partial file and no index is finished by a rerun, touching nothing else."""
    da = open_raster(geotiffs["projected"])
    folder = da.patches.to_geotiffs(tmp_path / "chips", **SPEC, progress=False)
    reference = {name: (folder / name).read_bytes() for name in _chips(folder)}
    (folder / INDEX).unlink()
    manifest = (folder / MANIFEST).read_text().replace('"complete": true', '"complete": false')
    (folder / MANIFEST).write_text(manifest)
    removed = _chips(folder)[3:9]
    for name in removed:
        (folder / name).unlink()
    (folder / ".r000_c001.dead.partial.tif").write_bytes(b"half")
    with pytest.raises(IncompleteStoreError, match="run the same .patches.to_geotiffs"):
        read_index(folder)
    stamps = {name: (folder / name).stat().st_mtime_ns for name in _chips(folder)}
    da.patches.to_geotiffs(folder, **SPEC, progress=False)
    assert {name: (folder / name).stat().st_mtime_ns for name in stamps} == stamps
    assert {name: (folder / name).read_bytes() for name in _chips(folder)} == reference
    assert len(read_index(folder, verify="full")) == len(reference)
    assert not list(folder.glob(".*partial*"))  # what a killed run left is cleaned up


def test_changed_pixels_are_refused(geotiffs, open_raster, tmp_path):
    """Another date of the same tile (same grid, other pixels) is never taken for the finished chips."""
    da = open_raster(geotiffs["projected"]).load()
    folder = da.patches.to_geotiffs(tmp_path / "chips", **SPEC, max_memory="64KiB", progress=False)
    with pytest.raises(ChangedSourceError, match="other pixels.*mode='w'"):
        da.copy(data=da.values + 1).patches.to_geotiffs(folder, **SPEC, max_memory="64KiB", progress=False)


@pytest.mark.parametrize("damage", ["delete", "truncate", "index"])
def test_a_damaged_folder_is_refused(geotiffs, open_raster, tmp_path, damage):
    """A chip deleted or cut short, or an index cut short, is found by read_index, which names it."""
    folder = open_raster(geotiffs["projected"]).patches.to_geotiffs(tmp_path / "chips", **SPEC, progress=False)
    victim = folder / (INDEX if damage == "index" else _chips(folder)[5])
    if damage == "delete":
        victim.unlink()
    else:
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    match = {"delete": f"chip {victim.name!r} is missing", "truncate": f"chip {victim.name!r} has .* bytes",
             "index": "index 'index.geojson' does not read"}[damage]
    with pytest.raises(DamagedOutputError, match=match + ".*mode='w'"):
        read_index(folder)


def test_full_verification_reads_every_chip(geotiffs, open_raster, tmp_path):
    """Two raw chips swapped (same sizes) pass the cheap check, not verify='full'."""
    folder = open_raster(geotiffs["projected"]).patches.to_geotiffs(tmp_path / "chips", **SPEC, compress=None, progress=False)
    a, b = folder / _chips(folder)[0], folder / _chips(folder)[1]
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes), b.write_bytes(a_bytes)
    read_index(folder)
    with pytest.raises(DamagedOutputError, match="patch rows 0-.* differ from what was written"):
        read_index(folder, verify="full")
    with pytest.raises(PatchkitValueError, match="verify=1"):
        read_index(folder, verify=1)


def test_read_index_names_a_missing_folder(tmp_path):
    """A path with nothing there says so."""
    with pytest.raises(IncompleteStoreError, match="there is no chip folder at .*check the path"):
        read_index(tmp_path / "nowhere")


def test_foreign_folder_refused(geotiffs, open_raster, tmp_path):
    """Chips of another spec are refused; mode='w' replaces them."""
    da = open_raster(geotiffs["projected"])
    folder = da.patches.to_geotiffs(tmp_path / "chips", **SPEC, progress=False)
    with pytest.raises(ForeignStoreError, match="mode='w'"):
        da.patches.to_geotiffs(folder, 8, 8, progress=False)
    da.patches.to_geotiffs(folder, 8, 8, mode="w", progress=False)
    assert len(read_index(folder)) == da.patches.extract(8, 8).sizes["patch_row"] * da.patches.extract(8, 8).sizes["patch_col"]


def test_dataset_refused(geotiffs, open_raster, tmp_path):
    """A Dataset is refused with the way to pick or stack its variables."""
    ds = open_raster(geotiffs["projected"]).to_dataset(name="image")
    with pytest.raises(DimensionError, match="to_dataarray"):
        ds.patches.to_geotiffs(tmp_path / "chips", **SPEC)


CHILD = textwrap.dedent(
    """
    import os, signal, sys, warnings
    warnings.simplefilter("ignore")
    import rioxarray
    import patchkit

    source, folder, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    real, calls = os.replace, {"count": 0}

    def replace(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    os.replace = replace
    rioxarray.open_rasterio(source).patches.to_geotiffs(folder, (16, 12), (10, 9), padding="SAME", max_memory="64KiB", progress=False)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 17, 44, 45, 46])  # a chip, another, the band log, the index, "complete"
def test_sigkill_then_rerun(geotiffs, open_raster, tmp_path, n):
    """Killed while writing chips or the index, a rerun gives the chips and index of an uninterrupted run."""
    run = [sys.executable, "-c", CHILD, str(geotiffs["projected"])]
    assert subprocess.run([*run, str(tmp_path / "crash"), str(n)], timeout=120).returncode == -signal.SIGKILL
    assert subprocess.run([*run, str(tmp_path / "crash"), "0"], timeout=120).returncode == 0
    whole = open_raster(geotiffs["projected"]).patches.to_geotiffs(tmp_path / "whole", **SPEC, progress=False)
    assert _chips(whole) == _chips(tmp_path / "crash")
    for name in _chips(whole):
        with rasterio.open(whole / name) as a, rasterio.open(tmp_path / "crash" / name) as b:
            np.testing.assert_array_equal(a.read(), b.read())
            assert a.transform == b.transform
    xr.testing.assert_equal(xr.Dataset(read_index(whole).drop(columns="geometry")),
                            xr.Dataset(read_index(tmp_path / "crash").drop(columns="geometry")))
