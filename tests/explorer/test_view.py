"""explorer.view: PatchExplorer's controls drive the model, the summary, the code, the drawing and runs."""

from __future__ import annotations

import numpy as np
import pytest

import patchkit
from patchkit.core.spec import PatchSpec

from .scenes import small_scene

pytest.importorskip("dask.array")

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

    explorer = PatchExplorer(small_scene(), (16, 8), 4, asynchronous=False)
    explorer.set(strides=6)
    assert explorer.spec == PatchSpec((16, 8), 6)
    explorer.set(sizes=10)
    assert explorer.spec == PatchSpec(10, 6)


def test_explorer_shows_problems(widgets):
    """A bad max_memory or a kernel too large shows a message and disables Run; nothing is raised."""
    from patchkit.explorer import PatchExplorer

    explorer = PatchExplorer(small_scene(), 16, 8, asynchronous=False)
    explorer.set(max_memory="lots")
    assert "patchkit-problem" in explorer.summary_box.value and explorer.controls["run"].disabled
    explorer.set(max_memory="64MiB", sizes=60)
    assert "larger than the image" in explorer.summary_box.value
    explorer.set(sizes=20)
    assert not explorer.controls["run"].disabled


def test_explorer_draws_asynchronously(widgets):
    """Drawing runs in the background; wait_drawn returns once the preview and the patch are PNGs."""
    from patchkit.explorer import PatchExplorer

    explorer = PatchExplorer(small_scene(300, 400, 3, chunks=64), 32, 16)
    for stride in (17, 18, 19):
        explorer.set(strides=stride)
    assert explorer.wait_drawn(60)
    assert explorer.scene_image.value[:8] == b"\x89PNG\r\n\x1a\n" and explorer.patch_image.value[:4] == b"\x89PNG"
    assert explorer.controls["patch_row"].max == PatchSpec(32, 19).grid_shape((300, 400))[0] - 1


def test_explorer_run_and_cancel(widgets, tmp_path):
    """The Run button's path writes the store with a full progress bar; Cancel ends a run as resumable."""
    from patchkit.explorer import PatchExplorer

    da = small_scene(64, 48, 2, chunks=8)
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


def test_explorer_sinks_come_from_the_registry(widgets, tmp_path):
    """The sink menu lists patchkit.sinks.available(); a default path follows the sink (Sink.output), a typed one stays."""
    from patchkit.explorer import PatchExplorer

    explorer = PatchExplorer(small_scene(), 16, 8, asynchronous=False)
    assert tuple(explorer.controls["sink"].options) == patchkit.sinks.available()
    assert explorer.path == str(patchkit.sinks.get("zarr").default_path("outputs"))
    explorer.set(sink="tfrecord")
    assert explorer.path == str(patchkit.sinks.get("tfrecord").default_path("outputs"))
    assert "da.patches.to('tfrecord', " in explorer.to_code() and "-p sink tfrecord" in explorer.to_code()
    explorer.set(path=str(tmp_path / "mine"), sink="geotiff")
    assert explorer.path == str(tmp_path / "mine")
