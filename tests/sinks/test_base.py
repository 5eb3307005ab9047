"""Tests of patchkit.sinks.base.Sink and the registry in patchkit.sinks: the budget a sink leaves its bands,
the plan it follows, and how sinks are found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import patchkit
from patchkit import PatchSpec
from patchkit.core.budget import Budget
from patchkit.errors import BudgetTooSmallError, UnknownSinkError
from patchkit.labelled.layout import prepare, stream_plan
from patchkit.sinks import Progress, Sink


class Buffered(Sink):
    """A sink holding ``held`` bytes while it writes (nothing is written: the plan is what is tested)."""

    name, output, buffers, buffers_fix = "buffered", ("buffered",), "the test's buffers", "hold less"

    def __init__(self, held: int) -> None:
        self.held = held

    def reserve(self, spec, shape, dtype, *, filtered=False, **options):
        return self.held

    def write(self, obj, path, spec, **options):
        return Path(path)

    def progress(self, path, rows):
        return Progress(0, rows, "rows")

    def open(self, path, **kwargs):
        return None


def _scene() -> xr.DataArray:
    return xr.DataArray(np.zeros((2, 64, 40), np.float32), dims=("band", "y", "x"))


def test_reserve_comes_off_the_bands_budget():
    """A sink's buffers come off max_memory: its plan is iter's plan under the rest, printed as the user gave it."""
    scene, spec = _scene(), PatchSpec(8, 4)
    budget = Buffered(20_000).band_budget(spec, [((2, 64, 40, 1), np.float32)], "64KiB")
    assert budget == 64 * 1024 - 20_000 and repr(budget) == "'64KiB'"
    prepared = prepare(scene, spec, max_memory="64KiB")
    assert Buffered(20_000).plan(scene, spec, max_memory="64KiB") == stream_plan(prepared, max_memory=budget)
    assert Buffered(0).plan(scene, spec, max_memory="64KiB") == scene.patches.plan(8, 4, max_memory="64KiB")


def test_buffers_that_leave_nothing_are_refused_by_name():
    """Buffers as large as the budget, or leaving less than one row of patches, are BudgetTooSmallError naming
    the buffers and the sink's own fix."""
    scene, spec = _scene(), PatchSpec(8, 4)
    with pytest.raises(BudgetTooSmallError, match=r"max_memory='64KiB' does not leave room for the patches once the "
                                                  r"test's buffers \(64.00 KiB\) are counted; raise max_memory or hold less"):
        Buffered(64 * 1024).plan(scene, spec, max_memory="64KiB")
    with pytest.raises(BudgetTooSmallError, match=r"max_memory='64KiB' less the test's buffers leaves 24 B for the patches, "
                                                  r"too little: .*; or hold less"):
        Buffered(64 * 1024 - 24).plan(scene, spec, max_memory="64KiB")


def test_default_path_is_the_output_under_a_folder():
    """default_path joins the sink's output parts under a job's folder."""
    assert Buffered(0).default_path("out") == Path("out", "buffered")
    assert patchkit.sinks.get("tfrecord").default_path() == Path("outputs", "tfrecord", "patches")


def test_registry_lists_finds_and_refuses():
    """available() lists the built-ins; get() gives each its Sink; register() adds one for .patches.to; an unknown
    name is UnknownSinkError listing the sinks."""
    assert {"zarr", "geotiff", "tfrecord"} <= set(patchkit.sinks.available())
    for name in ("zarr", "geotiff", "tfrecord"):
        sink = patchkit.sinks.get(name)
        assert isinstance(sink, Sink) and sink.name == name and sink.output and sink.description
    patchkit.sinks.register("buffered_test", Buffered(0))
    try:
        assert _scene().patches.to("buffered_test", "somewhere", 8, 4) == Path("somewhere")
    finally:
        patchkit.sinks.registry._registered.pop("buffered_test")
    with pytest.raises(UnknownSinkError, match=r"sink='parquet' is not a patchkit sink; use one of .*geotiff.*zarr"):
        patchkit.sinks.check_sink("parquet")


def test_zarr_reserve_is_two_stored_chunks():
    """The Zarr sink holds two stored chunks (one in memory order, one encoded) of whole patches of one patch row
    per writer thread; filtered patches lie along one dim, so a chunk may span the grid."""
    zarr_sink, spec = patchkit.sinks.get("zarr"), PatchSpec(8, 4)
    patch = 2 * 8 * 8 * 4  # batch x kh x kw x itemsize
    assert zarr_sink.reserve(spec, (2, 64, 40, 1), np.float32, writers=3) == 3 * 2 * patch * 9
    assert zarr_sink.reserve(spec, (2, 64, 40, 1), np.float32) == 2 * patch * 9  # 9 patch columns
    assert zarr_sink.reserve(spec, (2, 64, 40, 1), np.float32, chunk_patches=2) == 2 * patch * 2
    assert zarr_sink.reserve(spec, (2, 64, 40, 1), np.float32, filtered=True) == 2 * patch * 15 * 9
    assert int(Budget.of("1MiB")) - zarr_sink.band_budget(spec, [((2, 64, 40, 1), np.float32)], "1MiB") == 2 * patch * 9
