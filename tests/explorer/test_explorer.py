"""PatchExplorer: the model's numbers are PatchSpec's, reads stay small, runs finish, cancel and resume."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import xarray as xr

import patchkit
from patchkit.core.backends import get_backend
from patchkit.core.budget import plan_for
from patchkit.errors import DimensionError, IncompleteStoreError
from patchkit.core.extract import extract_patches
from patchkit.labelled.layout import arrange, find_layout
from patchkit.labelled.nodata import nodata_fractions
from patchkit.core.sources import as_source
from patchkit.core.spec import PatchSpec
from patchkit.testing import lazy_scene
from patchkit.explorer import (
    ExplorerModel,
    NodataMap,
    Scene,
    SinkRun,
    coverage,
    SINKS,
    job_code,
    sink_progress,
)

da_ = pytest.importorskip("dask.array")

SPECS = [
    PatchSpec(16, 8),
    PatchSpec(16, 8, padding="SAME"),
    PatchSpec(7, 11, 2, "SAME"),
    PatchSpec((5, 9), (3, 4), (1, 2), "VALID"),
    PatchSpec(10, 10),
    PatchSpec(4, 9, 1, "VALID"),  # stride above the kernel: gaps
]


def _scene(h=61, w=53, bands=3, dtype="uint16", chunks=None, seed=0):
    """A (band, y, x) DataArray with regular coordinates, numpy- or dask-backed."""
    data = np.random.default_rng(seed).integers(1, 1000, (bands, h, w)).astype(dtype)
    da = xr.DataArray(data, dims=("band", "y", "x"),
                      coords={"band": np.arange(1, bands + 1), "y": 1000.0 - 10 * np.arange(h), "x": 10.0 * np.arange(w)})
    return da.chunk({"y": chunks, "x": chunks}) if chunks else da


def _brute_coverage(spec: PatchSpec, hw) -> float:
    rows, cols = spec.positions(hw)
    r = np.zeros(hw[0], bool)
    c = np.zeros(hw[1], bool)
    r[rows[(rows >= 0) & (rows < hw[0])]] = True
    c[cols[(cols >= 0) & (cols < hw[1])]] = True
    return r.sum() * c.sum() / (hw[0] * hw[1])


# ---- the model ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("chunks", [None, 16], ids=["numpy", "dask"])
@pytest.mark.parametrize("max_memory", ["64KiB", "512MiB"])
def test_summary_numbers_are_patchspecs(spec, chunks, max_memory):
    """Grid, count, bytes, peak and bands of the summary are PatchSpec's and plan_for's, for numpy and dask scenes."""
    da = _scene(chunks=chunks)
    images = arrange(da, find_layout(da))
    model = ExplorerModel.of_dataarray(da, spec=spec, max_memory=max_memory)
    summary = model.summary()
    source = as_source(images)
    plan = plan_for(spec, source, get_backend("auto", source), max_memory)
    assert model.kind == ("dask" if chunks else "numpy")
    assert summary.ok, summary.problem
    assert summary.grid_shape == spec.grid_shape(images.shape)
    assert summary.patches == np.prod(spec.grid_shape(images.shape))
    assert summary.nbytes == spec.nbytes(images.shape, images.dtype)
    assert summary.patches * summary.patch_nbytes == summary.nbytes
    assert (summary.peak, summary.bands, summary.band_rows) == (plan.peak, len(plan), plan.band_rows)
    assert summary.peak <= patchkit.core.units.parse_bytes(max_memory)


def _fits(spec: PatchSpec, hw) -> bool:
    return spec.padding == "SAME" or all(k <= n for k, n in zip(spec.effective_sizes, hw))


COVERAGE_CASES = [(spec, hw) for spec in SPECS + [PatchSpec(3, 2, 4, "SAME"), PatchSpec(1, 5), PatchSpec(30, 1, 2, "SAME")]
                  for hw in [(61, 53), (40, 45), (9, 300)] if _fits(spec, hw)]


@pytest.mark.parametrize("spec, hw", COVERAGE_CASES, ids=str)
def test_coverage_is_the_share_of_sampled_pixels(spec, hw):
    """coverage() equals the share of pixels some patch samples, counted from PatchSpec.positions."""
    assert coverage(spec, hw) == pytest.approx(_brute_coverage(spec, hw))


def test_summary_reports_problems_without_raising():
    """A kernel larger than the image, a budget below the minimum and an unparsable max_memory are told, not raised."""
    model = ExplorerModel((1, 100, 80, 3), "float32", spec=PatchSpec(90, 10))
    too_big = model.summary()
    assert not too_big.ok and "larger than the image width 80" in too_big.problem and too_big.patches == 0
    small = model.update(sizes=32, max_memory="1KiB").summary()
    assert not small.ok and "below the minimum" in small.problem
    assert small.grid_shape == PatchSpec(32, 10).grid_shape((100, 80)) and small.peak is None
    assert "does not parse" in model.update(sizes=32, max_memory="lots").summary().problem


def test_update_changes_the_spec_and_keeps_the_rest():
    """update(strides=...) makes a new spec from the old one; other fields stay."""
    model = ExplorerModel((1, 100, 80, 3), "uint8", spec=PatchSpec((8, 4), 2, 1, "SAME"), max_memory="1MiB")
    changed = model.update(strides=5)
    assert changed.spec == PatchSpec((8, 4), 5, 1, "SAME")
    assert changed.max_memory == "1MiB" and model.spec.strides == (2, 2)


def test_summary_reads_no_pixel():
    """The summary of a dask scene whose every chunk raises when computed works: it reads nothing."""
    def boom(block):
        raise AssertionError("a pixel was read")

    scene = da_.zeros((3, 4000, 5000, 1), dtype="uint16", chunks=(3, 512, 512, 1)).map_blocks(boom, dtype="uint16")
    summary = ExplorerModel.of(scene, spec=PatchSpec(256, 100, 1, "SAME")).summary()
    assert summary.ok and summary.grid_shape == (40, 50)


def test_summary_is_fast_on_a_20000_pixel_dask_scene(record_property):
    """On a dask-backed 20,000 x 20,000 scene the summary (nodata estimate included) takes well under a second.

    Loose on purpose (shared CI machines); the measured figure is recorded as a test property.
    """
    scene = lazy_scene((1, 20000, 20000, 3), "uint16")
    da = xr.DataArray(scene[0].transpose(2, 0, 1), dims=("band", "y", "x"))
    preview = np.zeros((3, 500, 500, 1), np.uint16)
    preview[:, :, :100] = 9
    nodata = NodataMap.from_images(preview, (20000, 20000), markers=(9,))
    model = ExplorerModel.of_dataarray(da, spec=PatchSpec(256, 128), max_nodata_fraction=0.5, nodata=nodata)
    times = []
    for stride in (128, 100, 129, 64, 200, 256, 96, 160):
        start = time.perf_counter()
        summary = model.update(strides=stride).summary()
        times.append(time.perf_counter() - start)
        assert summary.ok and 0.15 < summary.dropped < 0.25
    record_property("summary_ms_median", round(1e3 * float(np.median(times)), 2))
    assert max(times) < 1.0


# ---- nodata --------------------------------------------------------------------------------------


def test_exact_nodata_matches_the_filter(geotiffs, open_raster):
    """On a scene small enough to be its own preview, kept patches are counted as max_nodata_fraction keeps them."""
    da = open_raster(geotiffs["nodata"])
    scene = Scene.open(da)
    assert scene.nodata.exact and scene.preview.origin == "full resolution"
    for spec, fraction in [(PatchSpec(8, 4), 0.0), (PatchSpec(8, 4, 1, "SAME"), 0.3), (PatchSpec(5, 3, 2, "SAME"), 0.5)]:
        summary = scene.model(spec, max_nodata_fraction=fraction).summary()
        kept = len(da.patches.grid(spec.sizes, spec.strides, spec.rates, spec.padding, max_nodata_fraction=fraction))
        assert summary.nodata_exact and summary.kept == kept
        assert summary.dropped == pytest.approx(1 - kept / summary.patches)


def test_estimated_nodata_is_close_on_a_decimated_preview():
    """On a decimated preview, the estimated share of dropped patches is within a few points of the exact one."""
    h, w = 1200, 1500
    data = np.random.default_rng(1).random((2, h, w)).astype("float32")
    data[:, :, :400] = np.nan
    data[:, 700:1000, 900:1300] = -1.0
    da = xr.DataArray(data, dims=("band", "y", "x"), attrs={"_FillValue": -1.0})
    scene = Scene.open(da, preview_size=150)
    assert not scene.nodata.exact and scene.preview.origin == "every 10th pixel"
    images = arrange(da, find_layout(da))
    for spec, fraction in [(PatchSpec(100, 50), 0.2), (PatchSpec(64, 40, 1, "SAME"), 0.5), (PatchSpec(33, 20, 3, "SAME"), 0.1)]:
        exact = (nodata_fractions(images, spec, (-1.0,)) <= fraction).mean()
        summary = scene.model(spec, max_nodata_fraction=fraction).summary()
        assert not summary.nodata_exact
        assert summary.dropped == pytest.approx(1 - exact, abs=0.05)


def test_nodata_estimate_samples_huge_grids():
    """A grid of millions of patches is estimated on an even sample of rows and columns."""
    preview = np.zeros((1, 400, 400, 1), np.float32)
    preview[:, :, :200] = np.nan
    nodata = NodataMap.from_images(preview, (20000, 20000))
    shares, sampled = nodata.patch_shares(PatchSpec(16, 4))
    assert sampled and shares.shape == (256, 256)
    assert (shares == 1).mean() == pytest.approx(0.5, abs=0.01)


# ---- the scene: preview and the selected patch ---------------------------------------------------


@pytest.mark.parametrize("chunks", [None, 200])
def test_preview_is_a_decimated_read(chunks):
    """The preview of a large scene is every k-th pixel, about preview_size on its longer side."""
    da = _scene(900, 1300, 2, chunks=chunks)
    scene = Scene.open(da, preview_size=128)
    step = 11
    assert scene.preview.origin == f"every {step}th pixel"
    np.testing.assert_array_equal(scene.preview.data.values, da.values[:, ::step, ::step])
    assert max(scene.preview.images.shape[1:3]) <= 128
    assert scene.preview.scale == pytest.approx((900 / 82, 1300 / 119))
    assert (da.chunks is not None) == bool(chunks)  # the scene itself stays lazy


def test_preview_uses_a_geotiff_overview(tmp_path, open_raster):
    """A GeoTIFF with overviews is previewed from the overview, not from the full-resolution bands."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin

    from ..helpers import write_geotiff

    path = write_geotiff(tmp_path / "ov.tif", np.random.default_rng(0).integers(0, 255, (3, 1024, 800), dtype=np.uint8),
                         from_origin(500000.0, 4200000.0, 10.0, 10.0))
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4, 8], Resampling.nearest)
    scene = Scene.open(open_raster(path, chunks={"y": 256, "x": 256}), preview_size=200)
    assert scene.preview.origin == "overview 1/4"
    assert scene.preview.images.shape == (3, 256, 200, 1)


@pytest.mark.parametrize("spec", [PatchSpec(16, 8), PatchSpec(16, 8, 1, "SAME"), PatchSpec(5, 7, 3, "SAME")], ids=str)
@pytest.mark.parametrize("dims", [("band", "y", "x"), ("y", "x", "band")])
def test_read_patch_is_the_extracted_patch(spec, dims):
    """read_patch(i, j) reads one window and equals extract_patches at (i, j), padding included."""
    da = _scene(chunks=16).transpose(*dims)
    scene = Scene.open(da)
    images = np.asarray(arrange(da, scene.layout))
    full = extract_patches(images, spec.sizes, spec.strides, spec.rates, spec.padding)
    oh, ow = spec.grid_shape(images.shape)
    for i, j in [(0, 0), (oh - 1, ow - 1), (oh // 2, 1)]:
        patch = scene.read_patch(spec, i, j)
        b, _, _, c = images.shape
        np.testing.assert_array_equal(patch.reshape(b, -1), full[:, i, j].reshape(b, -1))


def test_explorer_refuses_a_dataset():
    """A Dataset is refused with the way out (pick a variable)."""
    with pytest.raises(DimensionError, match="pick a variable"):
        Scene.open(_scene().to_dataset(name="v"))


# ---- the job: code and runs ----------------------------------------------------------------------


def _cli_parameters(cli: str) -> dict:
    """The ``-p NAME VALUE`` pairs of a ``patchkit run`` line, parsed as the CLI parses them."""
    import shlex

    from patchkit.jobs.templates import parse_value

    words = shlex.split(cli.splitlines()[0])
    assert words[:3] == ["patchkit", "run", "extract_patches"]
    pairs = words[3:]
    assert pairs[::3] == ["-p"] * (len(pairs) // 3)
    return {name: parse_value(value) for name, value in zip(pairs[1::3], pairs[2::3])}


def test_job_code_python_runs_the_same_job(tmp_path):
    """The Python call of job_code, executed, writes what extract gives; the command names every parameter."""
    da = _scene(chunks=20)
    spec = PatchSpec((16, 8), 8, 1, "SAME")
    python, cli = job_code(spec, "zarr", tmp_path / "out" / "patches.zarr", max_memory="1MiB", max_nodata_fraction=0.5, name="scene")
    assert "scene.patches.to_zarr(" in python and "sizes=(16, 8)" in python and "max_nodata_fraction=0.5" in python
    exec(python, {"scene": da})
    got = patchkit.open_patches(tmp_path / "out" / "patches.zarr")
    want = da.patches.extract((16, 8), 8, 1, "SAME", max_nodata_fraction=0.5)
    np.testing.assert_array_equal(got["pixels"].values, want.values)
    assert _cli_parameters(cli) == {"input_path": "SCENE.tif", "sizes": [16, 8], "strides": 8, "rates": 1, "padding": "SAME",
                                    "max_memory": "1MiB", "max_nodata_fraction": 0.5, "sink": "zarr",
                                    "output_dir": str(tmp_path / "out")}
    assert cli.splitlines()[1:] == ["# SCENE.tif: the raster file the DataArray was read from"]


@pytest.mark.parametrize("sink, path", [("zarr", "outputs/patches.zarr"), ("geotiff", "run1/chips"),
                                        ("tfrecord", "outputs/tfrecord/patches"), ("zarr", "elsewhere/my.zarr")])
def test_job_code_command_is_a_valid_template_call(sink, path):
    """The command's parameters are the extract_patches template's, of its types; output_dir holds the output."""
    from patchkit.jobs.templates import check_parameters

    python, cli = job_code(PatchSpec(256, 128), sink, path, max_memory=2**29, source="/data/scene.tif",
                           chunks={"y": 1024, "x": 512}, backend="numpy")
    assert "rioxarray.open_rasterio('/data/scene.tif', chunks={'y': 1024, 'x': 512})" in python
    assert f"da.patches.{SINKS[sink]}({path!r}, sizes=256, strides=128, rates=1, padding='VALID', max_memory=536870912, backend='numpy')" in python
    given = _cli_parameters(cli)
    check_parameters("extract_patches", given)
    assert given["max_memory"] == "536870912B" and given["max_nodata_fraction"] is None and given["backend"] == "numpy"
    assert given["input_path"] == "/data/scene.tif" and given["sink"] == sink
    exact = not path.startswith("elsewhere")
    assert given["output_dir"] == ("elsewhere" if not exact else path.split("/")[0])
    assert ("# the template writes elsewhere/patches.zarr, not elsewhere/my.zarr" in cli) == (not exact)


@pytest.mark.parametrize("sink", ["zarr", "geotiff"])
def test_sink_run_finishes_with_full_progress(tmp_path, sink, geotiffs, open_raster):
    """A run writes the real sink's output in a thread and its progress ends at the total."""
    da = open_raster(geotiffs["projected"])
    spec = PatchSpec(16, 16)
    reports = []
    run = SinkRun(da, sink, tmp_path / "out", spec, max_memory="256KiB", on_progress=lambda *p: reports.append(p), poll=0.01)
    assert run.start() is run
    assert run.join(60) and run.state == "done", run.error
    done, total, unit = reports[-1]
    assert done == total > 0 and unit == ("rows" if sink == "zarr" else "chips")
    if sink == "zarr":
        got = patchkit.open_patches(tmp_path / "out")
        np.testing.assert_array_equal(got[next(iter(got.data_vars))].values, da.patches.extract(16, 16).values)


def test_sink_run_tfrecord(tmp_path, geotiffs, open_raster):
    """The TFRecord sink runs too, and reports patch rows."""
    pytest.importorskip("tensorflow")
    da = open_raster(geotiffs["projected"])
    run = SinkRun(da, "tfrecord", tmp_path / "p", PatchSpec(16, 16), max_memory="256KiB").start()
    assert run.join(120) and run.state == "done", run.error
    assert run.progress() == (3, 3, "rows")


@pytest.mark.parametrize("chunked", [True, False])
def test_cancelled_run_stops_midway_and_the_plain_call_resumes_it(tmp_path, chunked):
    """Cancel stops a run at its next chunk read; the store is incomplete, and the plain call finishes it."""
    h, w = 64, 40
    da = _scene(h, w, 2)
    if chunked:
        da = da.chunk({"y": 8})
    reached = threading.Event()

    def trip(block, block_info=None):  # sets the cancel event once rows past the middle are read
        if block_info[None]["array-location"][1][0] >= h // 2:
            reached.set()
        return block

    store = tmp_path / "cut.zarr"
    spec = PatchSpec(8, 8)
    tripped = da.copy(data=(da.data if chunked else da.chunk({"y": 8}).data).map_blocks(trip, dtype=da.dtype))
    run = SinkRun(tripped, "zarr", store, spec, max_memory="16KiB")
    run._cancel = reached  # the run's own event, set by the scene mid-way
    run.start()
    assert run.join(60) and run.state == "cancelled", run.error
    done, total, _ = run.progress()
    assert 0 < done < total
    with pytest.raises(IncompleteStoreError):
        patchkit.open_patches(store)
    da.patches.to_zarr(store, 8, 8, max_memory="16KiB", progress=False)  # resumes: same fingerprint
    np.testing.assert_array_equal(patchkit.open_patches(store)["pixels"].values, da.patches.extract(8, 8).values)
    assert sink_progress("zarr", store, total) == (total, total, "rows")


def test_sink_run_reports_failures(tmp_path):
    """A sink error ends the run as failed, with the error kept."""
    (tmp_path / "taken.zarr").mkdir()
    (tmp_path / "taken.zarr" / "file").write_text("not a store")
    run = SinkRun(_scene(), "zarr", tmp_path / "taken.zarr", PatchSpec(8, 8)).start()
    assert run.join(60) and run.state == "failed"
    assert isinstance(run.error, patchkit.errors.ForeignStoreError)


# ---- the view ------------------------------------------------------------------------------------


@pytest.fixture
def widgets():
    pytest.importorskip("matplotlib")
    return pytest.importorskip("ipywidgets")


def _count(explorer) -> int:
    text = explorer.summary_box.value
    return int(text.split('class="patchkit-count">')[1].split("<")[0].replace(",", ""))


def test_explorer_controls_are_described(widgets, geotiffs, open_raster):
    """Every parameter has a control whose description names it."""
    from patchkit.explorer import PatchExplorer

    explorer = PatchExplorer(open_raster(geotiffs["projected"]), 16, 8, asynchronous=False)
    for name in ("sizes", "strides", "rates", "padding", "max_memory", "max_nodata_fraction", "sink", "path",
                 "patch_row", "patch_col"):
        assert explorer.controls[name].description == name
    assert explorer.spec == PatchSpec(16, 8)


def test_explorer_summary_follows_the_controls(widgets, geotiffs, open_raster):
    """Moving the stride slider updates the spec, the patch count shown and the code; the preview redraws."""
    from patchkit.explorer import PatchExplorer

    da = open_raster(geotiffs["projected"])
    explorer = PatchExplorer(da, 16, 8, asynchronous=False)
    hw = (da.sizes["y"], da.sizes["x"])
    assert _count(explorer) == np.prod(PatchSpec(16, 8).grid_shape(hw))
    before = explorer.scene_image.value
    explorer.controls["strides"].value = 5
    assert explorer.spec == PatchSpec(16, 5)
    assert _count(explorer) == np.prod(PatchSpec(16, 5).grid_shape(hw))
    assert "strides=5" in explorer.to_code() and "-p strides 5" in explorer.to_code()
    assert explorer.scene_image.value != before
    explorer.set(padding="SAME", rates=2, max_nodata_fraction=0.25)
    assert explorer.spec == PatchSpec(16, 5, 2, "SAME")
    assert explorer.summary() == explorer.model.summary() and explorer.model.max_nodata_fraction == 0.25
    assert "dropped as nodata" in explorer.summary_box.value and "max_nodata_fraction=0.25" in explorer.to_code()
    explorer.set(max_nodata_fraction=None)
    assert explorer.model.max_nodata_fraction is None and explorer.controls["max_nodata_fraction"].disabled


def test_explorer_keeps_a_non_square_spec_until_its_slider_moves(widgets):
    """A (rows, cols) spec survives moves of other sliders; its own slider sets both."""
    from patchkit.explorer import PatchExplorer

    explorer = PatchExplorer(_scene(), (16, 8), 4, asynchronous=False)
    explorer.set(strides=6)
    assert explorer.spec == PatchSpec((16, 8), 6)
    explorer.set(sizes=10)
    assert explorer.spec == PatchSpec(10, 6)


def test_explorer_shows_problems(widgets):
    """A bad max_memory or a kernel too large shows a message and disables Run; nothing is raised."""
    from patchkit.explorer import PatchExplorer

    explorer = PatchExplorer(_scene(), 16, 8, asynchronous=False)
    explorer.set(max_memory="lots")
    assert "patchkit-problem" in explorer.summary_box.value and explorer.controls["run"].disabled
    explorer.set(max_memory="64MiB", sizes=60)
    assert "larger than the image" in explorer.summary_box.value
    explorer.set(sizes=20)
    assert not explorer.controls["run"].disabled


def test_explorer_draws_asynchronously(widgets):
    """Drawing runs in the background; wait_drawn returns once the preview and the patch are PNGs."""
    from patchkit.explorer import PatchExplorer

    explorer = PatchExplorer(_scene(300, 400, 3, chunks=64), 32, 16)
    for stride in (17, 18, 19):
        explorer.set(strides=stride)
    assert explorer.wait_drawn(60)
    assert explorer.scene_image.value[:8] == b"\x89PNG\r\n\x1a\n" and explorer.patch_image.value[:4] == b"\x89PNG"
    assert explorer.controls["patch_row"].max == PatchSpec(32, 19).grid_shape((300, 400))[0] - 1


def test_explorer_run_and_cancel(widgets, tmp_path):
    """The Run button's path writes the store with a full progress bar; Cancel ends a run as resumable."""
    from patchkit.explorer import PatchExplorer

    da = _scene(64, 48, 2, chunks=8)
    explorer = PatchExplorer(da, 8, 8, max_memory="16KiB", path=str(tmp_path / "a.zarr"), asynchronous=False)
    run = explorer.run(wait=True)
    assert run.state == "done" and explorer.progress.value == explorer.progress.max == 8
    assert explorer.status.value.startswith("done") and not explorer.controls["run"].disabled
    explorer.set(path=str(tmp_path / "b.zarr"))
    run = explorer.run()
    explorer.cancel()
    run.join(60)
    assert run.state in ("cancelled", "done")  # a tiny scene may finish first
    explorer.run(wait=True)
    assert explorer.run_state.state == "done" and explorer.progress.value == 8
    np.testing.assert_array_equal(patchkit.open_patches(tmp_path / "b.zarr")["pixels"].values, da.patches.extract(8, 8).values)
