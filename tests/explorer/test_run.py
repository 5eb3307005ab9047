"""explorer.run: runs write the real sink's output with the sink's progress, cancel midway and resume."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import patchkit
from patchkit.core.spec import PatchSpec
from patchkit.errors import IncompleteStoreError
from patchkit.explorer.run import SinkRun, sink_progress

from .scenes import small_scene

pytest.importorskip("dask.array")

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
    da = small_scene(h, w, 2)
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
    run = SinkRun(small_scene(), "zarr", tmp_path / "taken.zarr", PatchSpec(8, 8)).start()
    assert run.join(60) and run.state == "failed"
    assert isinstance(run.error, patchkit.errors.ForeignStoreError)


def test_sink_progress_is_the_sinks_own(tmp_path):
    """sink_progress asks the registered sink: nothing written yet is 0 of the total, in the sink's unit."""
    assert sink_progress("zarr", tmp_path / "none.zarr", 5) == patchkit.sinks.get("zarr").progress(tmp_path / "none.zarr", 5) == (0, 5, "rows")
    assert sink_progress("geotiff", tmp_path / "chips", 5) == (0, 0, "chips")
