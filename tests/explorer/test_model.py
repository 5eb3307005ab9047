"""explorer.model: the summary's numbers are PatchSpec's and plan_for's, reported without raising or reading."""

from __future__ import annotations

import time

import numpy as np
import pytest
import xarray as xr

import patchkit
from patchkit.core.backends import get_backend
from patchkit.core.budget import plan_for
from patchkit.core.sources import as_source
from patchkit.core.spec import PatchSpec
from patchkit.core.spec.coverage import coverage
from patchkit.explorer.model import ExplorerModel
from patchkit.explorer.nodata import NodataMap
from patchkit.labelled.dims import arrange, find_layout
from patchkit.testing import lazy_scene

from .scenes import small_scene

da_ = pytest.importorskip("dask.array")

SPECS = [
    PatchSpec(16, 8),
    PatchSpec(16, 8, padding="SAME"),
    PatchSpec(7, 11, 2, "SAME"),
    PatchSpec((5, 9), (3, 4), (1, 2), "VALID"),
    PatchSpec(10, 10),
    PatchSpec(4, 9, 1, "VALID"),  # stride above the kernel: gaps
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("chunks", [None, 16], ids=["numpy", "dask"])
@pytest.mark.parametrize("max_memory", ["64KiB", "512MiB"])
def test_summary_numbers_are_patchspecs(spec, chunks, max_memory):
    """Grid, count, bytes, peak, bands and coverage of the summary are PatchSpec's, plan_for's and coverage's, for numpy and dask scenes."""
    da = small_scene(chunks=chunks)
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
    assert summary.coverage == coverage(spec, images.shape)
    assert summary.peak <= patchkit.core.units.parse_bytes(max_memory)


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


@pytest.mark.parametrize("spec", [PatchSpec(16, 8), PatchSpec(7, 11, 2, "SAME")], ids=str)
@pytest.mark.parametrize("chunks", [None, 16], ids=["numpy", "dask"])
@pytest.mark.parametrize("max_memory", ["64KiB", "512MiB"])
def test_plan_is_the_plan_the_sinks_stream(spec, chunks, max_memory):
    """The model's plan is the one the sinks write by (patchkit.labelled.layout.band_plan), without reading the scene."""
    from patchkit.labelled.layout import band_plan

    da = small_scene(chunks=chunks)
    mine, theirs = ExplorerModel.of_dataarray(da, spec=spec, max_memory=max_memory).plan(), band_plan(da, spec, max_memory=max_memory)
    assert (mine.bands, mine.band_rows, mine.peak) == (theirs.bands, theirs.band_rows, theirs.peak)
