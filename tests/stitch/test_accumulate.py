"""The C kernel (patchkit/stitch/_kernel.c) against stitch's numpy path: the same pixels, bit for bit, for every
mode, dtype, layout and spec it takes; and the cases it leaves to numpy."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from patchkit import PatchSpec, extract_patches
from patchkit.stitch import accumulate, stitch

from ..helpers import random_image, spec_cases

kernel = pytest.importorskip("patchkit.stitch._kernel", reason="the C kernel was not built (no C compiler)")

#: Dtypes the kernel takes for every blend, and those it takes for sums and the last write only.
KERNEL_DTYPES = ["float32", "uint8", "int8", "uint16", "int16", "int32", "uint32", "bool"]
WIDE_DTYPES = ["float64", "int64", "uint64"]


def _ramp(kh: int, kw: int) -> np.ndarray:
    """Positive, asymmetric, not separable weights."""
    return 1.0 + np.add.outer(np.arange(kh), 2 * np.arange(kw)) ** 1.5


def _holes(kh: int, kw: int) -> np.ndarray:
    """Weights with zeros inside the window (masked tap by tap)."""
    return np.where(np.add.outer(np.arange(kh), np.arange(kw)) % 3 == 1, 0.0, 1.0 + np.arange(kw))


BLENDS = ["mean", "cosine", "gaussian", "none", "sum", _ramp, _holes]


def both(patches, blend, **kwargs):
    """``stitch`` with the C kernel, then with numpy alone."""
    with_kernel = stitch(patches, blend, **kwargs)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(accumulate, "_kernel", None)
        without = stitch(patches, blend, **kwargs)
    return np.asarray(with_kernel), np.asarray(without)


def assert_same_bits(actual, expected) -> None:
    """Same shape, dtype and bits; a NaN matches any NaN (which of two NaNs a sum keeps is the compiler's)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    a, e = np.ascontiguousarray(actual), np.ascontiguousarray(expected)
    differs = (a.view(np.uint8) != e.view(np.uint8)).reshape(a.shape + (-1,)).any(-1)
    if a.dtype.kind == "f":
        differs &= ~(np.isnan(a) & np.isnan(e))
    assert not differs.any(), f"{int(differs.sum())} of {a.size} differ; first at {np.argwhere(differs)[0]}"


def _values(shape, dtype, seed):
    """Patches' source values that disagree once extracted and perturbed: finite, or random bits for floats."""
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if np.dtype(dtype).kind == "f":
        return random_image(shape, dtype, seed)  # NaNs, infinities, signed zeros, subnormals
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


@settings(max_examples=60, deadline=None)
@given(case=spec_cases(height=12, kernel=5, stride=4, rate=2, batch=2, channels=3), seed=st.integers(0, 2**16),
       dtype=st.sampled_from(KERNEL_DTYPES + WIDE_DTYPES), blend=st.sampled_from(BLENDS), crop=st.integers(0, 1))
def test_kernel_gives_numpys_pixels(case, seed, dtype, blend, crop):
    """For any spec, blend and dtype, patches that disagree (each patch its own random values) stitch to the
    same bits with the kernel as with numpy: the same sums in the same order, the same rounding and fill."""
    spec = PatchSpec(case.sizes, case.strides, case.rates, case.padding)
    oh, ow = spec.grid_shape(case.shape[1:3])
    depth = spec.sizes[0] * spec.sizes[1] * case.shape[3]
    patches = _values((case.shape[0], oh, ow, depth), dtype, seed)
    crop = min(crop, (min(spec.sizes) - 1) // 2)
    fill = None if blend == "sum" else (True if dtype == "bool" else 7)
    got, expected = both(patches, blend, spec=spec, image_shape=case.shape, crop=crop, fill_value=fill)
    assert_same_bits(got, expected)


#: Every dtype the kernel takes, each with one of the blends (every blend at least once), and a few more.
LAYOUT_CASES = [(d, BLENDS[k % len(BLENDS)]) for k, d in enumerate(KERNEL_DTYPES)] + [
    ("float32", "cosine"), ("uint16", "mean"), ("int64", "sum")]


@pytest.mark.parametrize("dtype, blend", LAYOUT_CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_labelled_layouts_and_filtered_patches(dtype, blend):
    """Channels-first patches (a DataArray), dask-backed arrays read in chunks of rows (a band's rows in several
    pieces; chunks of one block, and of several) and the filtered form (some patches dropped: the kernel skips
    them) give numpy's pixels."""
    source = xr.DataArray(_values((3, 29, 23), dtype, 1), dims=("band", "y", "x"))
    patches = source.patches.extract((6, 5), (4, 3), padding="SAME")
    perturbed = patches.copy(data=_values(patches.shape, dtype, 2))
    kept = perturbed.stack(patch=("patch_row", "patch_col")).isel(patch=slice(None, None, 3))
    kept = kept.transpose("patch", ...).reset_index("patch")
    for given in (perturbed, perturbed.chunk({"patch_row": 2}), perturbed.chunk({"patch_row": 2, "patch_col": 3}), kept):
        got, expected = both(given, blend, max_memory="64KiB")
        assert_same_bits(got, expected)


@pytest.mark.parametrize("blend", ["mean", "cosine", "none"])
def test_rows_split_between_threads(monkeypatch, blend):
    """A band large enough for two threads (each a half of its rows) gives numpy's pixels."""
    monkeypatch.setenv("PATCHKIT_NUM_THREADS", "2")
    image = _values((1, 128, 256, 4), "float32", 3)
    patches = extract_patches(image, 16, 12, padding="SAME")
    assert accumulate.THREAD_ELEMENTS <= image.size // 2  # two threads take the band, the image's one band
    got, expected = both(np.nan_to_num(patches) + np.float32(0.5), blend, spec=PatchSpec(16, 12, padding="SAME"),
                         image_shape=image.shape)
    assert_same_bits(got, expected)


def test_what_the_kernel_takes():
    """Means of floats up to 32 bits, integers up to 32 bits and bool; sums also of 64-bit numbers; the last write of
    any dtype; not means of float64, int64, uint64, complex or float16 (numpy's deviation path and float16)."""
    from patchkit.core.spec.inverse import lines_of
    from patchkit.stitch.plan import make_job
    from patchkit.stitch.readers import reader_for

    spec = PatchSpec(4, 2)

    def takes(dtype, blend):
        patches = np.zeros((1, 3, 3, 16), dtype)
        _, reader = reader_for(patches, spec, (8, 8), None, False)
        weights = None if blend == "none" else np.ones((4, 4))
        return make_job(blend, lines_of(spec, (8, 8), (0, 0)), reader, weights, None, None, 0).kernel

    for dtype in KERNEL_DTYPES:
        assert takes(dtype, "mean") and takes(dtype, "sum") and takes(dtype, "none")
    for dtype in WIDE_DTYPES:
        assert not takes(dtype, "mean") and takes(dtype, "sum") and takes(dtype, "none")
    for dtype in ("float16", "complex64"):
        assert not takes(dtype, "mean") and takes(dtype, "none")
    assert not takes("complex128", "sum")


def test_parameters_match_the_kernel():
    """The parameters accumulate.py builds are as many as _kernel.c reads (less the two rows of each call)."""
    image = np.zeros((1, 8, 8, 2), np.float32)
    spec = PatchSpec(4, 2)
    from patchkit.core.spec.inverse import lines_of
    from patchkit.stitch.plan import make_job
    from patchkit.stitch.readers import reader_for

    _, reader = reader_for(extract_patches(image, 4, 2), spec, (8, 8), None, False)
    job = make_job("mean", lines_of(spec, (8, 8), (0, 0)), reader, np.ones((4, 4)), None, None, 0)
    band = reader.read(0, 3)
    params, _ = accumulate._params(job, band, band.row_pointers()[1], None, np.zeros((1, 8, 8, 2), np.float32),
                                   np.zeros((), np.float32), 0)
    assert len(params) + 2 == kernel.param_count()
