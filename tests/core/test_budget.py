"""Tests of patchkit.core.budget: the one memory planner (row-band plans, minimums, source chunks, Budget, largest)."""

from __future__ import annotations

import functools
import pickle
from dataclasses import replace

import numpy as np
import pytest

from patchkit import PatchSpec
from patchkit.core.backends import get_backend
from patchkit.core.budget import IN_MEMORY_BAND, Budget, largest, plan_for, require_memory
from patchkit.core.sources import as_source
from patchkit.core.units import parse_bytes
from patchkit.errors import BudgetTooSmallError, InvalidMemoryError, OutputTooLargeError

from ..helpers import RecordingArray


def test_min_memory_counts_input_rows_for_lazy_sources():
    """A lazy source's minimum adds the clipped input rows of one row of patches."""
    spec = PatchSpec(256, 128)
    shape = (1, 4096, 4096, 4)
    eager = spec.min_memory(shape, "float32")
    assert eager == spec.row_nbytes(shape, "float32")
    assert spec.min_memory(shape, "float32", lazy=True) >= eager + 256 * 4096 * 4 * 4


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("budget", [1, 2, 3, 7, 100])
def test_plan_bands_cover_rows_within_budget(padding, lazy, budget):
    """Bands are contiguous, cover every output row, and each fits the budget."""
    spec = PatchSpec((5, 3), (2, 3), (1, 2), padding)
    shape, dtype = (2, 40, 30, 3), "int16"
    max_memory = spec.min_memory(shape, dtype, lazy=lazy) * budget
    plan = spec.plan(shape, dtype, max_memory, lazy=lazy)
    assert plan.bands[0].start == 0 and plan.bands[-1].stop == spec.grid_shape(shape)[0]
    assert all(a.stop == b.start for a, b in zip(plan.bands, plan.bands[1:]))
    assert plan.peak <= max_memory
    assert all(spec.band_memory(b, shape, dtype, lazy=lazy) <= max_memory for b in plan.bands)
    assert plan.band_rows == max(b.stop - b.start for b in plan.bands)


def test_plan_below_minimum_names_the_minimum():
    """A budget under one row of patches is refused with the minimum in bytes."""
    spec = PatchSpec(256, 128)
    shape = (1, 4096, 4096, 4)
    minimum = spec.min_memory(shape, "float32")
    with pytest.raises(BudgetTooSmallError, match=rf"raise max_memory to at least {minimum}"):
        spec.plan(shape, "float32", minimum - 1)


def test_plan_accounts_for_source_chunks():
    """Reading through big source chunks materialises them: the plan makes room."""
    spec = PatchSpec(16, 16)
    shape = (1, 512, 512, 1)
    plain = spec.min_memory(shape, "uint8", lazy=True)
    chunked = spec.min_memory(shape, "uint8", lazy=True, chunks=((1,), (256, 256), (512,), (1,)))
    assert chunked >= plain + 256 * 512


def test_in_memory_bands_stop_growing_but_lazy_ones_use_the_budget():
    """Held in memory, bands stay near IN_MEMORY_BAND under a large budget; lazy sources fill it."""
    image = np.zeros((1, 1024, 1024, 4), np.float32)
    spec = PatchSpec(64, 32)
    source = as_source(image)
    numpy = get_backend("numpy", source)
    eager = plan_for(spec, source, numpy, "1GiB")
    assert eager.band_rows > 1 and eager.peak <= IN_MEMORY_BAND
    lazy = plan_for(spec, as_source(RecordingArray(image)), numpy, "1GiB")
    assert lazy.peak > IN_MEMORY_BAND and lazy.peak <= parse_bytes("1GiB")


def test_budget_is_parsed_once_and_prints_as_given():
    """A Budget is the parsed int, prints (repr and str) as the user wrote it, keeps that through less() and
    share(), survives pickling (dask sends it to workers), and Budget.of returns a Budget as it is."""
    budget = Budget.of("64MiB")
    assert budget == 64 * 2**20 and f"max_memory={budget!r}" == "max_memory='64MiB'" and str(budget) == "64MiB"
    assert Budget.of(budget) is budget
    left = budget.less(2**20)
    assert left == 63 * 2**20 and repr(left) == "'64MiB'" and budget.less(2**40) == 0
    assert budget.share(3) == 64 * 2**20 // 3 and repr(budget.share(3)) == "'64MiB'"
    again = pickle.loads(pickle.dumps(left))
    assert again == left and repr(again) == "'64MiB'"
    with pytest.raises(InvalidMemoryError, match="chunk_memory"):
        Budget.of("lots", "chunk_memory")


@pytest.mark.parametrize("hi", [1, 2, 7, 1000])
def test_largest_is_the_last_that_fits(hi):
    """largest(fits, hi) is the largest n in 1..hi with fits(n), for every threshold, in O(log hi) calls."""
    for threshold in range(1, hi + 1):
        calls = []
        assert largest(lambda n: calls.append(n) or n <= threshold, hi) == threshold
        assert len(calls) <= hi.bit_length() + 1


def test_require_memory_names_what_and_the_fix(monkeypatch):
    """require_memory refuses what the machine cannot hold, with the sizes, ``detail`` and the fix (a callable
    fix sees the bytes available)."""
    import patchkit.core.budget as budget_module

    monkeypatch.setattr(budget_module, "available_memory", lambda: 1000)
    require_memory(1000, "it", "fix")
    with pytest.raises(OutputTooLargeError, match=r"the thing would need 1.95 KiB \(2000 bytes, all of it\), but only "
                                                  r"1000 B is available; have 1000"):
        require_memory(2000, "the thing", lambda free: f"have {free}", verb="would need", detail="all of it")


def test_reading_ahead_and_readers_are_counted():
    """A band of a chunked lazy source holds its block, its halo and one column of chunks with the piece read
    from them; each further reader holds another column of chunks (no more readers than columns), and reading
    the next band ahead holds a second halo, its read temporaries beside the padding temporaries."""
    spec, shape = PatchSpec(8, 8), (1, 64, 64, 1)
    chunks = ((1,), (16,) * 4, (16,) * 4, (1,))
    block, halo, column = 8 * 64, 8 * 64, (16 + 8) * 16  # one row of 8 patches; 8 input rows; a chunk + the piece
    memory = functools.partial(spec.band_memory, (0, 1), shape, "uint8", lazy=True, chunks=chunks)
    assert memory() == block + halo + column
    assert [memory(readers=k) for k in (2, 4, 9)] == [block + halo + k * column for k in (2, 4, 4)]
    assert memory(prefetch=True) == block + 2 * halo + column
    assert memory(readers=3, prefetch=True) == block + 2 * halo + 3 * column


def _touched_rows(spec: PatchSpec, plan, shape, chunk: int) -> int:
    """Source rows of the chunks that the halos of ``plan``'s bands touch (chunks of ``chunk`` rows)."""
    spans = [spec.input_rows(rows, shape, clip=True) for rows in plan.bands]
    return sum((-(-yb // chunk) - ya // chunk) * chunk for ya, yb in spans if yb > ya)


def test_dask_sources_read_ahead_and_on_threads_as_the_budget_allows(monkeypatch):
    """For a dask source the planner counts GDAL's cache (1/16 of the budget), then reads ahead and on up to a
    thread per column of chunks where that fits, within the budget, reading at most READ_AGAIN more source rows
    than bands made one at a time; at the minimum budget it reads one piece at a time, without a cache."""
    import patchkit.core.budget as budget_module
    from patchkit.core.budget import GDAL_CACHE_SHARE, READ_AGAIN, min_memory, plan
    from patchkit.testing import lazy_scene

    monkeypatch.setattr(budget_module, "num_threads", lambda: 3)
    spec, shape = PatchSpec(32, 16), (1, 1024, 512, 4)
    source = as_source(lazy_scene(shape, chunks=(128, 128)))
    numpy = get_backend("numpy", source)
    kwargs = dict(lazy=True, chunks=source.chunks)
    tight = min_memory(spec, shape, source.dtype, **kwargs)
    assert plan_for(spec, source, numpy, tight) == replace(plan(spec, shape, source.dtype, tight, **kwargs),
                                                            gdal_cache=0)
    roomy = Budget.of("16MiB")
    found = plan_for(spec, source, numpy, roomy)
    assert (found.readers, found.prefetch, found.gdal_cache) == (3, True, roomy // GDAL_CACHE_SHARE)
    held = max(spec.band_memory(rows, shape, source.dtype, readers=3, prefetch=True, **kwargs) for rows in found.bands)
    assert held + found.gdal_cache <= found.peak <= roomy
    one_at_a_time = plan(spec, shape, source.dtype, roomy.less(found.gdal_cache), **kwargs)
    assert _touched_rows(spec, found, shape, 128) <= (1 + READ_AGAIN) * _touched_rows(spec, one_at_a_time, shape, 128)


def test_other_lazy_sources_are_read_one_piece_at_a_time():
    """A lazy array that is not dask (zarr, h5py...) is read on the caller's thread, one piece after another,
    whatever the budget, and GDAL's cache is left alone."""
    source = as_source(RecordingArray(np.zeros((1, 256, 256, 2), np.uint8), chunks=(1, 32, 32, 2)))
    found = plan_for(PatchSpec(16, 8), source, get_backend("numpy", source), "64MiB")
    assert (found.readers, found.prefetch, found.gdal_cache) == (1, False, None)
