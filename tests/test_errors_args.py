"""Hostile arguments at the entry points: clear patchkit errors, raised before anything large is made.

Huge SAME kernels through every path of the accessor, ``stitch(out=...)`` where nothing can be
written, damaged rasters and the command line's budgets. (Arbitrary arguments are fuzzed in
``test_fuzz.py``; the parameter files of ``patchkit run`` are tested in ``test_jobs.py``.)
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import tempfile
import time

import numpy as np
import pytest
import xarray as xr

import patchkit
from patchkit import PatchSpec, extract_patches, stitch
from patchkit.errors import BudgetTooSmallError, OutputTooLargeError, PatchkitError, SinkWriteError, SourceReadError

from .helpers import write_geotiff

stitch_module = importlib.import_module("patchkit.stitch")  # the package's `stitch` is the function


def scene(size: int = 64) -> xr.DataArray:
    rng = np.random.default_rng(0)
    return xr.DataArray(rng.random((1, size, size), np.float32), dims=("band", "y", "x"),
                        coords={"band": [1], "y": 1000.0 - 10 * np.arange(size), "x": 10.0 * np.arange(size)})


# --------------------------------------------------------------------------------------------------
# Kernels far larger than the image (legal under SAME) are refused by their bytes, at once
# --------------------------------------------------------------------------------------------------

CALLS = {
    "extract": lambda da, k: da.patches.extract(k, 1, padding="SAME"),
    "extract dask": lambda da, k: da.chunk({"y": 16}).patches.extract(k, 1, padding="SAME"),
    "extract filtered": lambda da, k: da.patches.extract(k, 1, padding="SAME", max_nodata_fraction=0.5),
    "iter": lambda da, k: next(iter(da.patches.iter(k, 1, padding="SAME"))),
    "iter dask": lambda da, k: next(iter(da.chunk({"y": 16}).patches.iter(k, 1, padding="SAME"))),
    "grid filtered": lambda da, k: da.patches.grid(k, 1, padding="SAME", max_nodata_fraction=0.5),
    "extract_patches": lambda da, k: extract_patches(da.values[..., None], k, 1, padding="SAME"),
    "iter_patches": lambda da, k: next(iter(patchkit.iter_patches(da.values[..., None], k, 1, padding="SAME"))),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("kernel", [2 * 10**8, 2**31 - 1, (10**7, 10**4)])
def test_huge_same_kernels_are_refused_within_a_second(call, kernel):
    """da.patches.extract(10**12...) used to fail in numpy (7.28 TiB of positions), and 2 * 10**8 to
    allocate 1.6 GB for seconds first: every path now refuses by the bytes the result or one band of
    it needs, with what to do, before positions, plans or buffers are made."""
    da = scene()
    start = time.perf_counter()
    with pytest.raises((OutputTooLargeError, BudgetTooSmallError), match=r"smaller sizes|max_memory"):
        CALLS[call](da, kernel)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("store", ["to_zarr", "to_geotiffs"])
def test_huge_kernels_leave_an_existing_output_alone(tmp_path, store):
    """A sink refuses a kernel whose bands cannot fit before it touches its output (even with mode='w')."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises((OutputTooLargeError, BudgetTooSmallError)):
        getattr(scene().patches, store)(out, 2 * 10**8, 1, padding="SAME", mode="w", progress=False)
    assert (out / "keep.txt").read_text() == "mine"


def test_the_grid_of_a_huge_kernel_is_made():
    """grid needs no patch: the table of a two-billion-pixel SAME kernel is made (from the patches' starts)."""
    table = scene(16).patches.grid(2**31 - 1, 4, padding="SAME")
    assert len(table) == 16 and table["right"].iloc[0] - table["left"].iloc[0] == 10.0 * (2**31 - 1)


def test_nodata_counts_do_not_depend_on_the_kernel_size():
    """Counting nodata of a kernel far wider than the image (it fits the budget: one column) takes the time of
    reading the image, not of walking the kernel's taps."""
    da = scene(24).where(scene(24) > 0.5)
    start = time.perf_counter()
    table = da.patches.grid((1, 2 * 10**7), 8, padding="SAME", max_nodata_fraction=1.0)
    assert time.perf_counter() - start < 5.0 and len(table) == 9
    inside = (~np.isnan(da.values[0, ::8])).sum(axis=1)  # each patch samples one row, all 24 columns of it
    np.testing.assert_allclose(table["nodata_fraction"].values, np.repeat(1 - inside / (2 * 10**7), 3), rtol=1e-12)


# --------------------------------------------------------------------------------------------------
# stitch(out=...): refused up front when nothing can be written there
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def patches():
    image = np.random.default_rng(1).random((1, 12, 12, 2)).astype(np.float32)
    return extract_patches(image, 4, 2), dict(spec=PatchSpec(4, 2), image_shape=(12, 12))


@pytest.fixture
def no_work(monkeypatch):
    """stitch fails the test if it starts planning (the checks must come first)."""
    def plan(*args, **kwargs):
        raise AssertionError("stitch planned bands before checking out=")
    monkeypatch.setattr(stitch_module, "band_height", plan)


@pytest.mark.parametrize(
    "where, match",
    [
        ("somefile.txt/x.tif", r"somefile\.txt' is a file, not a folder; choose another path for out"),
        ("somefile.txt/a/b/x.zarr", r"somefile\.txt' is a file, not a folder"),
        ("folder.tif", r"folder\.tif' cannot be written: it exists and is a folder; remove it"),
        ("file.zarr", r"file\.zarr' cannot be written: it exists and is a file; remove it"),
    ],
)
def test_out_that_cannot_be_written_is_refused_first(tmp_path, patches, no_work, where, match):
    """out= under a regular file, a folder named .tif or a file named .zarr: SinkWriteError naming the path and
    the fix, before any work (used to be rasterio's or the OS's own error, after the work)."""
    (tmp_path / "somefile.txt").write_text("x")
    (tmp_path / "folder.tif").mkdir()
    (tmp_path / "file.zarr").write_text("x")
    data, geometry = patches
    with pytest.raises(SinkWriteError, match=match):
        stitch(data, out=tmp_path / where, **geometry)


def test_read_only_folder_is_refused_first(tmp_path, patches, no_work, monkeypatch):
    """A folder that takes no new file (read-only, no permission) is refused before any work. As root a chmod
    does not stop writes, so the refusal of the operating system is simulated there."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    data, geometry = patches
    try:
        with pytest.raises(SinkWriteError, match=r"locked' does not take new files \(Permission denied\).*writable folder"):
            stitch(data, out=folder / "x.tif", **geometry)
    finally:
        folder.chmod(0o700)
    assert not (folder / "x.tif").exists()


def test_geotiff_larger_than_the_free_space_is_refused_first(tmp_path, patches, no_work, monkeypatch):
    """An uncompressed GeoTIFF that cannot fit on its disk is refused up front (ENOSPC), with the sizes."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: type("Usage", (), {"free": 100})())
    data, geometry = patches
    with pytest.raises(SinkWriteError, match=r"the image takes 1.12 KiB, but only 100 B is free there; free some space") as info:
        stitch(data, out=tmp_path / "x.tif", **geometry)
    assert info.value.errno == 28


def test_write_errors_while_streaming_are_sink_write_errors(tmp_path, patches, monkeypatch):
    """An error of the writer in the middle of the bands (a full disk...) is a SinkWriteError naming the path."""
    import rasterio.io

    def fail(self, *args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", fail)
    data, geometry = patches
    with pytest.raises(SinkWriteError, match=r"writing the stitched image to '.*x\.tif[^']*' failed: OSError: .*No space left"):
        stitch(data, out=tmp_path / "x.tif", **geometry)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image_shape=(float("inf"), 12)), r"image_shape=\(inf, 12\) must be \(height, width\)"),
        (dict(image_shape=(12.5, 12)), r"image_shape=\(12.5, 12\)"),
        (dict(image_shape=(True, 12)), r"image_shape=\(True, 12\)"),
        (dict(blend=()), r"blend=\(\) is not a blend patchkit knows"),
        (dict(crop=10**5000), r"crop=<an integer of 16610 bits> drops"),
        (dict(max_memory="1e999"), r"max_memory='1e999' is more bytes than any machine holds"),
        (dict(spec={"sizes": 4, "strides": 2**40}), r"strides=1099511627776 holds 1099511627776, more than 2\*\*31 - 1"),
        (dict(image_shape=(10**15, 10**15)), r"patches has shape \(1, 5, 5, 32\), but the spec"),
    ],
)
def test_hostile_stitch_arguments(patches, kwargs, match):
    """NaN, infinity, fractions, bools, empty tuples and huge integers in stitch's arguments are patchkit errors."""
    data, geometry = patches
    with pytest.raises(PatchkitError, match=match):
        stitch(data, **(geometry | kwargs))


# --------------------------------------------------------------------------------------------------
# Damaged rasters: the read error names the file
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def truncated(tmp_path):
    """A GeoTIFF cut in half, as an interrupted download leaves it."""
    pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    path = write_geotiff(tmp_path / "cut.tif", np.random.default_rng(0).random((2, 300, 300)).astype(np.float32),
                         from_origin(500000.0, 4200000.0, 10.0, 10.0))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    return path


READS = {
    "iter": lambda da, tmp: list(da.patches.iter(16, 16)),
    "to_zarr": lambda da, tmp: da.patches.to_zarr(tmp / "out.zarr", 16, 16, progress=False),
    "filtered": lambda da, tmp: da.patches.extract(16, 16, max_nodata_fraction=0.5),
    "to_geotiffs": lambda da, tmp: da.patches.to_geotiffs(tmp / "chips", 16, 16, progress=False),
}


@pytest.mark.parametrize("call", sorted(READS))
def test_truncated_geotiff_names_the_file(truncated, open_raster, tmp_path, call):
    """Reading a truncated GeoTIFF (with dask chunks) gives SourceReadError naming the file, GDAL's own error
    and what to do, instead of rasterio's "Read failed. See previous exception for details."."""
    da = open_raster(truncated, chunks={"y": 64, "x": 64})
    with pytest.raises(SourceReadError, match=r"reading the file '.*cut\.tif' failed: .*IReadBlock failed.*"
                                              r"damaged or truncated.*re-download or re-create it, and check the path"):
        READS[call](da, tmp_path)


def test_truncated_geotiff_read_eagerly_names_the_file(truncated, open_raster):
    """Without chunks the raster is read when it is cut: the same error."""
    with pytest.raises(SourceReadError, match=r"cut\.tif"):
        open_raster(truncated).patches.extract(16, 16)


def test_source_read_error_is_an_os_error():
    """Code that catches OSError for I/O keeps working."""
    assert issubclass(SourceReadError, OSError) and issubclass(SourceReadError, PatchkitError)


# --------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, status, match",
    [
        (["--max-memory", "1e999"], 1, r"^patchkit extract: max_memory='1e999' is more bytes than any machine holds"),
        (["--max-memory", "nan"], 1, r"^patchkit extract: max_memory='nan' does not parse"),
        (["--sizes", "99999999999999", "--padding", "SAME"], 1, r"sizes=99999999999999 holds .* more than 2\*\*31 - 1"),
        (["--sizes", "4000000", "--padding", "SAME"], 1, r"one row of .* patches of 4000000x4000000 pixels"),
        (["--sizes", ","], 2, r"argument --sizes: ',' is not a size in pixels"),
    ],
)
def test_cli_reports_hostile_options_in_one_line(geotiffs, tmp_path, capsys, options, status, match):
    """`patchkit extract` with budgets or sizes no machine can use exits non-zero with one line on stderr."""
    from patchkit.jobs.cli import main

    args = ["extract", str(geotiffs["projected"]), "--sizes", "16", "--strides", "16", "--output", str(tmp_path / "o.zarr")]
    if status == 2:
        with pytest.raises(SystemExit) as info:
            main(args + options)
        assert info.value.code == 2
    else:
        assert main(args + options) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert any(re.search(match, line) for line in err)
    assert status == 2 or len(err) == 1


def test_cli_names_a_truncated_raster(truncated, tmp_path, capsys):
    """`patchkit extract` on a truncated GeoTIFF exits 1 with one line naming the file."""
    from patchkit.jobs.cli import main

    assert main(["extract", str(truncated), "--sizes", "16", "--strides", "16", "--output", str(tmp_path / "o.zarr")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cut.tif" in err[0] and "damaged or truncated" in err[0]


@pytest.mark.parametrize("images", ["scene.tif", b"scene.tif", __import__("pathlib").Path("scene.tif")])
def test_a_path_is_not_an_image(images):
    """A path passed as images says to open it first, instead of calling it a rank-0 array."""
    from patchkit.errors import PatchkitTypeError

    with pytest.raises(PatchkitTypeError, match=r"images=.*scene\.tif.* is a .* \(a path\?\), not an array; open it first"):
        extract_patches(images, 4, 4)


@pytest.mark.parametrize("i, match", [(99, r"i=99 is out of range"), (1.5, r"i=1\.5 is out of range or not an integer"),
                                      (True, r"i=True")])
def test_window_of_no_patch(i, match):
    """A patch index off the grid, fractional or a bool is a PatchIndexError (an IndexError) giving the range."""
    from patchkit.errors import PatchIndexError

    with pytest.raises(PatchIndexError, match=match + r".*pass an integer with -2 <= i < 2"):
        PatchSpec(4, 4).window(i, 0, (8, 8))


def test_stitch_refuses_object_patches(patches):
    """Patches of a dtype extraction refuses (object) are refused by stitch too, before any work."""
    from patchkit.errors import UnsupportedDtypeError

    data, geometry = patches
    with pytest.raises(UnsupportedDtypeError, match=r"patches has dtype object"):
        stitch(data.astype(object), **geometry)


def test_cli_names_a_raster_it_cannot_open(tmp_path, capsys):
    """`patchkit inspect` on a missing file or a text file exits 1 with one line naming it and what to check."""
    from patchkit.jobs.cli import main

    (tmp_path / "notes.txt").write_text("not a raster")
    for name, what in [("missing.tif", "No such file"), ("notes.txt", "not recognized")]:
        assert main(["inspect", str(tmp_path / name), "--sizes", "4", "--strides", "4"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and name in err[0] and what in err[0] and "check the path" in err[0]


def test_cli_inspect_checks_the_nodata_share(geotiffs, capsys):
    """inspect refuses a nodata share outside [0, 1] as extract does, instead of ignoring it."""
    from patchkit.jobs.cli import main

    assert main(["inspect", str(geotiffs["projected"]), "--sizes", "4", "--strides", "4", "--max-nodata-fraction", "nan"]) == 1
    assert "max_nodata_fraction=nan must be a share" in capsys.readouterr().err
