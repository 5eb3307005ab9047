"""iter_patches and lazy band extraction: equal to extract_patches, within max_memory."""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchkit import PatchSpec, extract_patches, iter_patches
from patchkit.core.backends import get_backend
from patchkit.core.budget import plan_for
from patchkit.core.chunking import _bands, compact, kept_patches, lazy_patches
from patchkit.core.sources import as_source
from patchkit.errors import BudgetTooSmallError, InvalidMemoryError, KernelTooLargeError
from patchkit.testing import assert_patches_equal, lazy_scene

from ..helpers import (
    ALL_DTYPES,
    RecordingArray,
    halo_in_sentinel,
    random_image,
    sentinel_allocations,
    spec_cases,
    tf_grid_shape,
    tf_halo,
    tf_reference_patches,
)


def _concat(blocks):
    """Copy each block as it comes (the buffer is reused), then join them along output rows."""
    return np.concatenate([np.array(block, copy=True) for _, block in blocks], axis=1)


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
@given(case=spec_cases(height=30, width=20, kernel=6, stride=5, rate=3), dtype=st.sampled_from(ALL_DTYPES),
       extra=st.floats(0, 3), lazy=st.booleans())
def test_concatenated_bands_equal_extract(tf, backend, case, dtype, extra, lazy):
    """For any budget at or above the minimum, the bands concatenate to TensorFlow's patches (every buffer
    patchkit allocates starts as a sentinel, so a band that reads stale memory fails every time)."""
    shape, k, s, r, padding = case
    images = random_image(shape, dtype)
    spec = case.spec
    source = RecordingArray(images) if lazy else images
    minimum = spec.min_memory(shape, dtype if dtype != "bfloat16" else images.dtype, lazy=True, pad_copy=True)
    budget = int(minimum * (1 + extra))
    with sentinel_allocations():
        blocks = [(rows, np.array(block, copy=True)) for rows, block in iter_patches(source, k, s, r, padding, max_memory=budget, backend=backend)]
    rows_seen = [rows for rows, _ in blocks]
    assert rows_seen[0].start == 0 and rows_seen[-1].stop == tf_grid_shape(shape[1:3], k, s, r, padding)[0]
    assert all(a.stop == b.start for a, b in zip(rows_seen, rows_seen[1:]))
    assert_patches_equal(np.concatenate([block for _, block in blocks], axis=1), tf_reference_patches(images, k, s, r, padding))


def _halos(rows_seen, shape, spec: PatchSpec) -> list[tuple[int, int]]:
    """The input rows each band reads, by TensorFlow's rule (helpers.tf_halo), not by spec.input_rows."""
    return [tf_halo(rows, shape[1], spec.sizes[0], spec.strides[0], spec.rates[0], spec.padding) for rows in rows_seen]


def test_reads_only_each_bands_halo():
    """A lazy source is asked for exactly the clipped input rows of each band, never the whole scene."""
    images = random_image((1, 300, 40, 2), "uint16")
    source = RecordingArray(images)
    plan_rows = [rows for rows, _ in iter_patches(source, 16, 8, padding="SAME", max_memory="40KiB")]
    assert len(plan_rows) > 3
    assert source.reads == _halos(plan_rows, images.shape, PatchSpec(16, 8, padding="SAME"))


#: Specs whose halos depend on the rate: dilated kernels with strides above 1, both paddings, kernels whose
#: effective size is larger than a band (halos of neighbouring bands overlap), strides that skip rows.
HALO_SPECS = [
    PatchSpec((3, 2), (2, 3), (3, 2), "SAME"),
    PatchSpec(4, 3, 2, "VALID"),
    PatchSpec((5, 3), (1, 2), (2, 3), "SAME"),
    PatchSpec(2, 5, 4, "VALID"),
    PatchSpec(3, 2, 5, "SAME"),
    PatchSpec((4, 2), (3, 1), (3, 1), "VALID"),
    PatchSpec((2, 3), (4, 2), (6, 2), "SAME"),
]
HALO_SHAPE = (2, 47, 23, 2)


@pytest.mark.parametrize("factor", [1, 3])
@pytest.mark.parametrize("spec", HALO_SPECS, ids=str)
def test_lazy_bands_read_their_halo_at_any_rate(spec, factor, sentinel_buffers):
    """At rates and strides above 1, VALID or SAME, each band of a lazy source reads exactly the rows from its
    first to its last tap (TensorFlow's rule), and the bands equal TensorFlow's patches. Every buffer starts
    as a sentinel with sentinel after it, so a halo that is too short fails here every time."""
    images = random_image(HALO_SHAPE, "float32", seed=4)
    source = RecordingArray(images)
    budget = factor * spec.min_memory(HALO_SHAPE, images.dtype, lazy=True)
    blocks = [(rows, block.copy()) for rows, block in iter_patches(source, spec.sizes, spec.strides, spec.rates, spec.padding, max_memory=budget)]
    assert len(blocks) > 2
    assert source.reads == _halos([rows for rows, _ in blocks], HALO_SHAPE, spec)
    expected = tf_reference_patches(images, spec.sizes, spec.strides, spec.rates, spec.padding)
    assert_patches_equal(np.concatenate([block for _, block in blocks], axis=1), expected)


@pytest.mark.parametrize("spec", HALO_SPECS, ids=str)
def test_in_memory_bands_at_any_rate(spec, sentinel_buffers):
    """Bands of an image held in memory (one reused, sentinel-filled buffer) equal TensorFlow's patches."""
    images = random_image(HALO_SHAPE, "int16", seed=5)
    budget = 2 * spec.min_memory(HALO_SHAPE, images.dtype)
    blocks = [block.copy() for _, block in iter_patches(images, spec.sizes, spec.strides, spec.rates, spec.padding, max_memory=budget, backend="numpy")]
    assert len(blocks) > 2
    expected = tf_reference_patches(images, spec.sizes, spec.strides, spec.rates, spec.padding)
    assert_patches_equal(np.concatenate(blocks, axis=1), expected)


@pytest.mark.parametrize("spec", HALO_SPECS, ids=str)
def test_lazy_dask_chunks_take_their_halo_at_any_rate(spec, monkeypatch):
    """Each chunk of a lazy (dask) result is made from exactly its band's halo (TensorFlow's rule), handed on
    in a buffer followed by sentinel rows; the computed result equals TensorFlow's patches."""
    pytest.importorskip("dask")
    dask_array = pytest.importorskip("dask.array")
    from patchkit.core import chunking

    images = random_image(HALO_SHAPE, "float64", seed=6)
    seen = []
    real = chunking._band_from_halo

    def band_from_halo(halo, row0, shape, spec, rows, backend_name, keep=None):
        halo = np.asarray(halo)
        seen.append((rows, (row0, row0 + halo.shape[1])))
        return real(halo_in_sentinel(halo, 0, halo.shape[1]), row0, shape, spec, rows, backend_name, keep)

    monkeypatch.setattr(chunking, "_band_from_halo", band_from_halo)
    source = as_source(dask_array.from_array(images, chunks=(2, 7, 23, 2)))
    result = lazy_patches(source, spec, get_backend("numpy", source), chunk_memory="8KiB")
    got = result.compute(scheduler="synchronous")
    seen.sort(key=lambda entry: entry[0].start)
    assert len(seen) > 2
    assert [halo for _, halo in seen] == _halos([rows for rows, _ in seen], HALO_SHAPE, spec)
    assert_patches_equal(got, tf_reference_patches(images, spec.sizes, spec.strides, spec.rates, spec.padding))


@pytest.mark.parametrize("spec", HALO_SPECS, ids=str)
def test_kept_patches_at_any_rate(spec, sentinel_buffers):
    """Kept patches of a lazy source, band by band from halos at rates above 1, equal TensorFlow's selected."""
    images = random_image(HALO_SHAPE, "uint8", seed=7)
    expected = tf_reference_patches(images, spec.sizes, spec.strides, spec.rates, spec.padding)
    keep = np.random.default_rng(8).random(expected.shape[1:3]) < 0.4
    source = as_source(RecordingArray(images))
    got = kept_patches(source, spec, keep, get_backend("numpy", source), spec.min_memory(HALO_SHAPE, images.dtype, lazy=True))
    assert_patches_equal(got, expected[:, keep])


def test_reads_one_column_of_chunks_at_a_time():
    """A chunked lazy source is read in pieces one chunk wide, as the plan counts."""
    images = random_image((1, 64, 64, 1), "uint8")
    source = RecordingArray(images, chunks=(1, 16, 16, 1))
    list(iter_patches(source, 8, 8, max_memory="64KiB"))
    per_band = len(source.reads) // len({r for r in source.reads})
    assert per_band == 4


def test_buffer_is_reused_between_blocks(image):
    """Blocks share one buffer (documented: copy a block you keep)."""
    blocks = [block for _, block in iter_patches(image, 3, 1, max_memory=PatchSpec(3, 1).min_memory(image.shape, image.dtype) * 2)]
    assert len(blocks) > 2 and np.shares_memory(blocks[0], blocks[1])


def test_tensor_blocks_are_tensors_and_independent(tf, image):
    """A tensor input yields tensors, which never alias each other."""
    blocks = list(iter_patches(tf.constant(image), 3, 1, max_memory="64KiB", backend="numpy"))
    assert all(isinstance(b, tf.Tensor) for _, b in blocks)
    assert_patches_equal(_concat(blocks), extract_patches(image, 3, 1))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(max_memory="1KiB"), BudgetTooSmallError, r"max_memory='1KiB' \(1.00 KiB\) is below the minimum"),
        (dict(max_memory="plenty"), InvalidMemoryError, r"max_memory='plenty' does not parse"),
        (dict(max_memory=-3), InvalidMemoryError, r"must be a positive"),
        (dict(sizes=64), KernelTooLargeError, r"larger than the image height 37"),
    ],
)
def test_errors_are_raised_at_the_call(image, kwargs, error, match):
    """Bad arguments fail when iter_patches is called, not at the first next()."""
    args = dict(sizes=8, strides=4) | kwargs
    with pytest.raises(error, match=match):
        iter_patches(image, **args)


def test_dask_scene_larger_than_budget_streams_within_it():
    """A 64 MiB dask scene streams under an 8 MiB budget: traced peak stays within 1.25x the budget."""
    pytest.importorskip("dask")
    import dask

    scene = lazy_scene((1, 2048, 4096, 4), chunks=(256, 1024))
    budget = 8 * 2**20
    assert scene.nbytes >= 8 * budget
    checksum = 0
    with dask.config.set(scheduler="synchronous"):
        scene[:1, :1, :1].compute()  # dask imports dask.distributed on its first compute: not memory for patches
        tracemalloc.start()
        try:
            for _, block in iter_patches(scene, 32, 32, max_memory=budget):
                checksum += int(block[0, :, 0, :8].sum(dtype=np.uint64))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak <= 1.25 * budget, f"peak {peak} exceeds 1.25 x {budget}"
    expected = sum(int(b[0, :, 0, :8].sum(dtype=np.uint64)) for _, b in iter_patches(scene.compute(), 32, 32, max_memory=budget))
    assert checksum == expected


def test_lazy_dask_result_is_built_band_by_band():
    """extract_patches on dask is lazy: one chunk per band, each depending only on its halo."""
    pytest.importorskip("dask")
    scene = lazy_scene((1, 512, 256, 2), chunks=(128, 128))
    spec = PatchSpec(32, 16)
    result = lazy_patches(as_source(scene), spec, get_backend("numpy", as_source(scene)), chunk_memory="256KiB")
    bands = len(result.chunks[1])
    assert bands > 4 and len(result.dask) < 16 * bands + len(scene.dask)  # linear in bands
    assert_patches_equal(result[:, 5:9].compute(), extract_patches(scene.compute(), 32, 16)[:, 5:9])


@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 7), st.integers(0, 2**32 - 1))
def test_compact_equals_boolean_selection(b, n, ow, seed):
    """compact moves exactly the kept patches, in row-major order, to the front of the block, in place."""
    rng = np.random.default_rng(seed)
    block = rng.integers(0, 1000, (b, n, ow, 5))
    keep = rng.random((n, ow)) < rng.random()
    expected = block[:, keep].copy()
    picked = compact(block, keep)
    np.testing.assert_array_equal(picked, expected)
    assert not picked.size or np.shares_memory(picked, block)


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_kept_patches_equal_selection(lazy, padding):
    """Only the kept patches, eager band by band or lazy (bands without one left out), equal a selection."""
    image = random_image((2, 40, 33, 3), "float32")
    spec = PatchSpec((5, 4), (3, 2), padding=padding)
    full = extract_patches(image, spec.sizes, spec.strides, padding=padding)
    keep = np.random.default_rng(3).random(full.shape[1:3]) < 0.3
    keep[: full.shape[1] // 2] = False  # whole bands without a kept patch
    da = pytest.importorskip("dask.array")
    source = as_source(da.from_array(image, chunks=(2, 8, 33, 3)) if lazy else image)
    backend = get_backend("numpy", source)
    if lazy:
        got = lazy_patches(source, spec, backend, "16KiB", keep=keep).compute()
    else:
        got = kept_patches(source, spec, keep, backend, "16KiB")
    assert_patches_equal(got, full[:, keep])


@pytest.mark.parametrize("spec", HALO_SPECS, ids=str)
def test_dask_bands_read_ahead_on_threads_equal_tensorflow(spec, sentinel_buffers):
    """Bands of a dask source read ahead (the next halo into a second buffer while a band is made) by two readers
    (ragged chunks, rates and strides above 1, both paddings) still equal TensorFlow's patches, bit for bit."""
    da = pytest.importorskip("dask.array")
    images = random_image(HALO_SHAPE, "float32", seed=9)
    source = as_source(da.from_array(images, chunks=(2, 7, 5, 2)))
    backend = get_backend("numpy", source)
    plan = plan_for(spec, source, backend, 2 * spec.min_memory(HALO_SHAPE, images.dtype, lazy=True, chunks=source.chunks))
    assert len(plan.bands) > 2
    blocks = [block.copy() for _, block in _bands(source, spec, replace(plan, prefetch=True, readers=2), backend)]
    expected = tf_reference_patches(images, spec.sizes, spec.strides, spec.rates, spec.padding)
    assert_patches_equal(np.concatenate(blocks, axis=1), expected)


def test_next_band_is_read_while_one_is_handed_on():
    """Reading ahead, the next band's halo is read while a band is handed to the caller: rows past the first
    band's halo are read before the caller asks for the second band (one band at a time, they never are)."""
    da = pytest.importorskip("dask.array")
    images = random_image((1, 256, 32, 2), "uint16")
    array = RecordingArray(images)
    source = as_source(da.from_array(array, chunks=(1, 32, 32, 2), meta=np.empty((0, 0, 0, 0), images.dtype)))
    spec, backend = PatchSpec(16, 8), get_backend("numpy", source)
    plan = replace(plan_for(spec, source, backend, "32KiB"), prefetch=True)
    assert len(plan.bands) > 2
    bands = _bands(source, spec, plan, backend)
    rows, _ = next(bands)
    first = spec.input_rows(rows, images.shape, clip=True)[1]
    deadline = time.monotonic() + 10
    while not any(stop > first for _, stop in array.reads) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(stop > first for _, stop in array.reads)
    assert rows.stop + sum(block.shape[1] for _, block in bands) == spec.grid_shape(images.shape)[0]
