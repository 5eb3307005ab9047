"""The Zarr sink: stores equal to extract, resumable after SIGKILL, foreign and incomplete stores refused."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import patchkit
from patchkit.errors import (ChangedSourceError, DamagedOutputError, ForeignStoreError, IncompleteStoreError, PatchkitValueError,
                             SinkWriteError)

zarr = pytest.importorskip("zarr")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # zarr: consolidated metadata is not in the v3 spec

SPEC = dict(sizes=(8, 6), strides=(5, 4), padding="SAME")


def _stored(path, name="pixels"):
    return patchkit.open_patches(path)[name].load()


def _same_store(a: Path, b: Path) -> None:
    """Two stores hold the same arrays, values and attributes (chunk by chunk the same bytes)."""
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    assert dict(ga.attrs) == dict(gb.attrs)
    names = sorted(name for name, _ in ga.arrays())
    assert names == sorted(name for name, _ in gb.arrays())
    for name in names:
        assert dict(ga[name].attrs) == dict(gb[name].attrs)
        np.testing.assert_array_equal(ga[name][...], gb[name][...])


@pytest.mark.parametrize("compression", ["default", None])
@pytest.mark.parametrize("budget", ["24KiB", "512MiB"])
def test_store_equals_extract(geotiffs, open_raster, tmp_path, compression, budget):
    """The store reads back (with open_patches) identical to .patches.extract: pixels, coords, CRS, attrs."""
    da = open_raster(geotiffs["projected"])
    da.patches.to_zarr(tmp_path / "p.zarr", **SPEC, max_memory=budget, compression=compression, progress=False)
    stored = _stored(tmp_path / "p.zarr")
    xr.testing.assert_identical(stored.rename(None), da.patches.extract(**SPEC))
    assert stored.rio.crs == da.rio.crs
    assert zarr.open_group(str(tmp_path / "p.zarr"), mode="r").attrs["patchkit_complete"] is True


def test_lazy_filtered_and_dataset_sources(geotiffs, open_raster, stacked, tmp_path):
    """A dask-backed source, nodata filtering (a patch dim) and a Dataset with a time stack all store exactly."""
    lazy = open_raster(geotiffs["nodata"], chunks={"x": 16, "y": 16})
    lazy.patches.to_zarr(tmp_path / "f.zarr", **SPEC, max_nodata_fraction=0.2, max_memory="96KiB", chunk_patches=3, progress=False)
    expected = lazy.patches.extract(**SPEC, max_nodata_fraction=0.2).compute()
    xr.testing.assert_identical(_stored(tmp_path / "f.zarr").rename(None), expected)
    ds = xr.Dataset({"image": stacked, "mask": (stacked.isel(band=0, drop=True) > 0).astype("uint8")})
    ds.patches.to_zarr(tmp_path / "d.zarr", 6, 6, max_memory="64KiB", progress=False)
    stored = patchkit.open_patches(tmp_path / "d.zarr").load()
    xr.testing.assert_identical(stored.drop_attrs(), ds.patches.extract(6, 6).drop_attrs())


def test_complete_store_is_not_rewritten(geotiffs, open_raster, tmp_path):
    """Running again on a complete store returns at once and writes nothing."""
    da = open_raster(geotiffs["projected"])
    path = da.patches.to_zarr(tmp_path / "p.zarr", **SPEC, progress=False)
    before = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    da.patches.to_zarr(path, **SPEC, progress=False)
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    ("change", "match"),
    [(dict(sizes=(6, 6)), "another source, spec or options"), (dict(max_nodata_fraction=0.5), "another source")],
)
def test_foreign_store_refused_unless_overwritten(geotiffs, open_raster, tmp_path, change, match):
    """A store from other arguments is refused (nothing touched); mode='w' overwrites it."""
    da = open_raster(geotiffs["projected"])
    path = da.patches.to_zarr(tmp_path / "p.zarr", **SPEC, progress=False)
    kwargs = {**SPEC, **change}
    with pytest.raises(ForeignStoreError, match=match):
        da.patches.to_zarr(path, **kwargs, progress=False)
    da.patches.to_zarr(path, **kwargs, mode="w", progress=False)
    stored = _stored(path)
    expected = da.patches.extract(**kwargs)
    xr.testing.assert_identical(stored.rename(None), expected)


def test_other_directory_refused(geotiffs, open_raster, tmp_path):
    """A non-empty directory that is not a patchkit store is refused and left alone."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ForeignStoreError, match="is not a patchkit output.*mode='w'"):
        open_raster(geotiffs["projected"]).patches.to_zarr(tmp_path / "notes", **SPEC, progress=False)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [(dict(mode="a"), "mode='a'"), (dict(compression="gzip"), "compression='gzip'"), (dict(max_nodata_fraction=-1), "max_nodata_fraction"),
     (dict(chunk_patches=-1), "chunk_patches=-1 must be a positive whole number"), (dict(chunk_patches=2.5), "chunk_patches=2.5"),
     (dict(chunk_patches=0), "chunk_patches=0"), (dict(chunk_patches=True), "chunk_patches=True")],
)
def test_bad_options(geotiffs, open_raster, tmp_path, kwargs, match):
    """Bad options are refused before anything is written."""
    with pytest.raises(PatchkitValueError, match=match):
        open_raster(geotiffs["projected"]).patches.to_zarr(tmp_path / "p.zarr", **SPEC, **kwargs)
    assert not (tmp_path / "p.zarr").exists()


def test_unwritable_path(geotiffs, open_raster, tmp_path):
    """A path that cannot be written raises SinkWriteError naming it and the fix."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SinkWriteError, match="writable|fix"):
        open_raster(geotiffs["projected"]).patches.to_zarr(blocker / "p.zarr", **SPEC, progress=False)


def test_incomplete_store_refused(geotiffs, open_raster, tmp_path):
    """open_patches refuses a store whose run has not finished, and says how to finish it."""
    da = open_raster(geotiffs["projected"])
    path = da.patches.to_zarr(tmp_path / "p.zarr", **SPEC, progress=False)
    group = zarr.open_group(str(path), mode="r+")
    del group.attrs["patchkit_complete"]
    with pytest.raises(IncompleteStoreError, match="run the same .patches.to_zarr"):
        patchkit.open_patches(path)
    with pytest.raises(IncompleteStoreError):
        patchkit.open_patches(tmp_path / "nothing.zarr")


# ---- changed pixels and damaged stores -------------------------------------------------------------


def _same_grid_other_pixels(da, change):
    """``da`` with other pixels and everything else (dims, coords, attrs, encoding) the same."""
    values = da.values.copy()
    change(values)
    return da.copy(data=values)


@pytest.mark.parametrize("where", ["everywhere", "first row", "last row"])
def test_changed_pixels_are_refused_on_a_complete_store(geotiffs, open_raster, tmp_path, where):
    """Another date of the same tile (same grid, other pixels) is never taken for the finished store."""
    da = open_raster(geotiffs["projected"]).load()
    path = da.patches.to_zarr(tmp_path / "p.zarr", **SPEC, max_memory="24KiB", progress=False)
    rows = {"everywhere": slice(None), "first row": slice(0, 1), "last row": slice(-1, None)}[where]

    def change(values):
        values[:, rows] += 1

    with pytest.raises(ChangedSourceError, match="other pixels.*mode='w'"):
        _same_grid_other_pixels(da, change).patches.to_zarr(path, **SPEC, max_memory="24KiB", progress=False)
    xr.testing.assert_identical(_stored(path).rename(None), da.patches.extract(**SPEC))


def test_changed_pixels_are_refused_on_resume(geotiffs, open_raster, tmp_path, monkeypatch):
    """An interrupted store is not finished from a source whose pixels changed; the same source finishes it."""
    from patchkit.sinks import zarr as sink

    da = open_raster(geotiffs["projected"]).load()
    original = sink._write_chunk

    def failing(array, target, data, local):  # the disk fills up from patch row 3 on: rows 0-2 are finished
        if target[0].start >= 3:
            raise OSError(28, "No space left on device")
        return original(array, target, data, local)

    monkeypatch.setattr(sink, "_write_chunk", failing)
    with pytest.raises(SinkWriteError):
        da.patches.to_zarr(tmp_path / "p.zarr", **SPEC, max_memory="24KiB", chunk_patches=4, progress=False)
    monkeypatch.setattr(sink, "_write_chunk", original)
    with pytest.raises(ChangedSourceError):
        (da + 1).assign_attrs(da.attrs).patches.to_zarr(tmp_path / "p.zarr", **SPEC, max_memory="24KiB", chunk_patches=4, progress=False)
    da.patches.to_zarr(tmp_path / "p.zarr", **SPEC, max_memory="24KiB", chunk_patches=4, progress=False)
    xr.testing.assert_identical(_stored(tmp_path / "p.zarr").rename(None), da.patches.extract(**SPEC))


def test_a_rerun_removes_what_a_killed_zarr_write_left(geotiffs, open_raster, tmp_path, monkeypatch):
    """zarr writes each file under a temporary name first; the rerun deletes those a kill left in the store."""
    from patchkit.sinks import zarr as sink

    da = open_raster(geotiffs["projected"]).load()
    monkeypatch.setattr(sink, "_write_chunk", lambda *args: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(SinkWriteError):
        da.patches.to_zarr(tmp_path / "p.zarr", **SPEC, progress=False)
    monkeypatch.undo()
    stray = tmp_path / "p.zarr" / "pixels" / "c" / "0.8899c31be4e942289df08d8b0301892d.partial"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"")
    da.patches.to_zarr(tmp_path / "p.zarr", **SPEC, progress=False)
    assert not list((tmp_path / "p.zarr").rglob("*.partial"))
    xr.testing.assert_identical(_stored(tmp_path / "p.zarr").rename(None), da.patches.extract(**SPEC))


def test_a_rewritten_source_file_is_checked_everywhere(geotiffs, open_raster, tmp_path):
    """A source file with a new size or time stamp has every finished band compared, not just a sample."""
    import shutil

    import rasterio

    source = tmp_path / "scene.tif"
    shutil.copy(geotiffs["projected"], source)
    path = open_raster(source).patches.to_zarr(tmp_path / "p.zarr", **SPEC, max_memory="24KiB", progress=False)
    with rasterio.open(source, "r+") as dst:  # one pixel of a middle band, which the sample leaves out
        window = rasterio.windows.Window(20, 30, 1, 1)
        dst.write(dst.read(1, window=window) + 1, 1, window=window)
    with pytest.raises(ChangedSourceError, match="patch rows"):
        open_raster(source).patches.to_zarr(path, **SPEC, max_memory="24KiB", progress=False)


def test_a_missing_chunk_is_found(geotiffs, open_raster, tmp_path):
    """A store with a chunk file deleted does not read as complete; verify=False opens it anyway."""
    da = open_raster(geotiffs["projected"])
    path = da.patches.to_zarr(tmp_path / "p.zarr", **SPEC, chunk_patches=4, progress=False)
    chunk = sorted((path / "pixels" / "c").rglob("*"))[-1]
    chunk.unlink()
    with pytest.raises(DamagedOutputError, match="1 of the .* stored chunks of 'pixels' are missing"):
        patchkit.open_patches(path)
    patchkit.open_patches(path, verify=False)


def test_full_verification_reads_every_pixel(geotiffs, open_raster, tmp_path):
    """Two chunk files swapped pass the cheap check, not verify='full'."""
    da = open_raster(geotiffs["projected"])
    path = da.patches.to_zarr(tmp_path / "p.zarr", **SPEC, chunk_patches=4, compression=None, progress=False)
    patchkit.open_patches(path, verify="full")
    a, b = [p for p in sorted((path / "pixels" / "c").rglob("*")) if p.is_file()][:2]
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes), b.write_bytes(a_bytes)
    patchkit.open_patches(path)
    with pytest.raises(DamagedOutputError, match="patch rows 0-.* differ from what was written"):
        patchkit.open_patches(path, verify="full")


def test_open_patches_names_a_missing_path(tmp_path):
    """A path with nothing there says so (no advice to rerun a run that never was)."""
    with pytest.raises(IncompleteStoreError, match="there is no Zarr store at .*check the path"):
        patchkit.open_patches(tmp_path / "nowhere.zarr")
    with pytest.raises(PatchkitValueError, match="verify='yes'"):
        patchkit.open_patches(tmp_path / "nowhere.zarr", verify="yes")


# ---- crash and resume -----------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys, warnings
    warnings.simplefilter("ignore")
    import rioxarray, zarr
    import patchkit
    from patchkit.sinks import zarr as sink

    source, store, point, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    calls = {"count": 0}

    def killing(original):
        def wrapper(*args, **kwargs):
            calls["count"] += 1
            if calls["count"] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)
        return wrapper

    if point == "data":
        zarr.Array.__setitem__ = killing(zarr.Array.__setitem__)
    elif point == "log":
        zarr.Group.update_attributes = killing(zarr.Group.update_attributes)
    elif point == "finish":
        zarr.consolidate_metadata = killing(zarr.consolidate_metadata)
    da = rioxarray.open_rasterio(source, chunks={"y": 16, "x": 53})
    da.patches.to_zarr(store, sizes=(8, 6), strides=(5, 4), padding="SAME", max_memory="40KiB", chunk_patches=4, progress=False)
    """
)


def _run_child(source, store, point, n) -> int:
    done = subprocess.run([sys.executable, "-c", CHILD, str(source), str(store), point, str(n)], capture_output=True, text=True,
                          timeout=120)
    return done.returncode


@pytest.fixture(scope="module")
def uninterrupted(geotiffs, tmp_path_factory) -> Path:
    """The store an uninterrupted child run writes."""
    path = tmp_path_factory.mktemp("uninterrupted") / "whole.zarr"
    assert _run_child(geotiffs["projected"], path, "none", 0) == 0
    return path


@pytest.mark.slow
@pytest.mark.parametrize(("point", "n"), [("data", 1), ("data", 4), ("data", 12), ("log", 2), ("log", 5), ("finish", 1)])
def test_sigkill_then_rerun_gives_the_same_store(geotiffs, uninterrupted, tmp_path, point, n):
    """A run killed with SIGKILL (creating the store, writing a band, logging it, finishing) then rerun equals an uninterrupted one."""
    source = geotiffs["projected"]
    assert _run_child(source, tmp_path / "crash.zarr", point, n) == -signal.SIGKILL
    with pytest.raises(IncompleteStoreError):
        patchkit.open_patches(tmp_path / "crash.zarr")
    assert _run_child(source, tmp_path / "crash.zarr", "none", 0) == 0
    _same_store(uninterrupted, tmp_path / "crash.zarr")


@pytest.mark.slow
def test_resume_skips_finished_rows(geotiffs, tmp_path):
    """After a crash, the rerun writes only the rows not logged as finished."""
    source = geotiffs["projected"]
    assert _run_child(source, tmp_path / "p.zarr", "log", 4) == -signal.SIGKILL
    logged = json.loads((tmp_path / "p.zarr" / "zarr.json").read_text())["attributes"]["patchkit_rows_done"]
    assert logged and logged[0][0] == 0
    chunk_files = sorted((tmp_path / "p.zarr" / "pixels").rglob("c/*"))
    first_row = [p for p in chunk_files if p.relative_to(tmp_path / "p.zarr" / "pixels").parts[1] == "0"]
    stamps = {p: p.stat().st_mtime_ns for p in first_row}
    assert _run_child(source, tmp_path / "p.zarr", "none", 0) == 0
    assert stamps and {p: p.stat().st_mtime_ns for p in first_row} == stamps


@pytest.mark.parametrize("filtered", [None, 0.2])
def test_pipelined_store_equals_the_sequential_one(geotiffs, open_raster, tmp_path, monkeypatch, filtered):
    """Two bands in flight on two writer threads store the same chunks, byte for byte, as one band at a time on
    one thread (kept patches, whose stored chunks span bands, included); never two bands' writes at once."""
    from patchkit.sinks import zarr as sink

    da = open_raster(geotiffs["nodata"], chunks={"x": 16, "y": 16})
    kwargs = dict(**SPEC, max_nodata_fraction=filtered, max_memory="256KiB", chunk_patches=3, progress=False)
    monkeypatch.setattr(sink.ZarrSink, "pipelines", lambda self: ((1, 1),))
    sequential = da.patches.to_zarr(tmp_path / "one.zarr", **kwargs)
    writing, overlaps, original = set(), [], sink._write_chunk

    def watched(array, target, data, local):
        writing.add(id(data))
        overlaps.append(len(writing))
        try:
            return original(array, target, data, local)
        finally:
            writing.discard(id(data))

    monkeypatch.setattr(sink.ZarrSink, "pipelines", lambda self: ((2, 2),))
    monkeypatch.setattr(sink, "_write_chunk", watched)
    pipelined = da.patches.to_zarr(tmp_path / "two.zarr", **kwargs)
    chunks = lambda store: {p.relative_to(store): p.read_bytes() for p in (store / "pixels" / "c").rglob("*") if p.is_file()}  # noqa: E731
    assert chunks(pipelined) == chunks(sequential) and len(chunks(sequential)) > 4
    assert max(overlaps) == 1  # chunks of one band at a time (one band's data array)
    xr.testing.assert_identical(_stored(pipelined), _stored(sequential))


def test_the_budget_decides_the_pipeline(geotiffs, open_raster):
    """A budget with room for two bands and every writer's chunks runs the pipeline; a tight one runs one band at a
    time on one thread, as before, and its plan is the one .patches.plan reports."""
    from patchkit.sinks.zarr import ZarrSink, writers

    da = open_raster(geotiffs["projected"])
    prepared = patchkit.labelled.layout.prepare(da, patchkit.PatchSpec(**SPEC), max_memory="12KiB")
    tight, plan = ZarrSink().write_pipeline(prepared, "12KiB", chunk_patches=4)
    assert (tight.in_flight, tight.writers) == (1, 1)
    assert plan == da.patches.plan(**SPEC, sink="zarr", max_memory="12KiB", chunk_patches=4)
    roomy, plan = ZarrSink().write_pipeline(prepared, "64MiB")
    assert (roomy.in_flight, roomy.writers) == (2, writers()) and plan.peak <= roomy.budget
