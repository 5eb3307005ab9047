"""The CuPy backend and device stitching: bit for bit the numpy backend's patches and ``stitch``'s image.

Most tests run the backend's code on the host (``CupyBackend(xp=numpy)``, numpy accumulators), which
checks its geometry, views and arithmetic without a GPU. The tests marked ``gpu`` run it with CuPy
on a CUDA device (``PATCHKIT_TEST_GPU=0 pytest -m gpu``) and skip cleanly without one. Nothing here
needs TensorFlow, rasterio, zarr or dask: the TensorFlow comparisons skip without it.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from patchkit import PatchSpec
from patchkit import stitch as host_stitch
from patchkit.core.backends import cupy as cupy_backend
from patchkit.core.backends.cupy import CupyBackend, accumulate, accumulators, finish_mean, stitch_mean
from patchkit.core.backends.numpy import NumpyBackend
from patchkit.errors import (
    BackendUnavailableError,
    KernelTooLargeError,
    PatchkitTypeError,
    PatchkitValueError,
    UnsupportedDtypeError,
)
from patchkit.stitch import blend_weights
from patchkit.testing import assert_patches_equal

from ...helpers import ALL_DTYPES, halo_in_sentinel, random_image, sentinel_filled, spec_cases, tf_halo, tf_reference_patches, tf_taps

SHAPE = (2, 37, 41, 3)
#: Specs that reach every branch: padding on uneven sides, rates, strides past the (effective) kernel,
#: kernels as large as or larger than the image, one-pixel kernels, non-square everything.
SPECS = [
    PatchSpec(1, 1),
    PatchSpec(3, 2, padding="SAME"),
    PatchSpec(5, 3, padding="SAME"),
    PatchSpec((3, 5), (2, 1), (3, 2), "SAME"),
    PatchSpec(4, 7, 2, "VALID"),
    PatchSpec(2, 9, padding="VALID"),
    PatchSpec(2, 9, padding="SAME"),
    PatchSpec(6, 4, 3, "SAME"),
    PatchSpec((37, 41), 1),
    PatchSpec(50, 3, padding="SAME"),
    PatchSpec((1, 7), (5, 2), (1, 3), "VALID"),
    PatchSpec(8, 5, (4, 1), "SAME"),
]
#: Dtypes for which a mean of equal values comes back bit for bit (float64 holds their sums exactly).
EXACT_MEAN_DTYPES = ["float16", "float32", "int8", "int16", "int32", "uint8", "uint16", "uint32", "bool"]


def host_dtypes():
    """Every patchkit dtype; bfloat16 only where ml_dtypes is installed."""
    names = [n for n in ALL_DTYPES if n != "bfloat16"]
    try:
        import ml_dtypes  # noqa: F401
    except ImportError:
        return names
    return names + ["bfloat16"]


@pytest.fixture(scope="module")
def host_backend() -> CupyBackend:
    """The CuPy backend's code with numpy as the array module."""
    return CupyBackend(xp=np)


# --------------------------------------------------------------------------------------------------
# Extraction, on the host
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("dtype", host_dtypes())
def test_extract_matches_numpy_backend(host_backend, spec, dtype):
    """Every dtype, every spec: the same bytes as the numpy backend (NaN payloads and signed zeros too)."""
    images = random_image(SHAPE, dtype, seed=1)
    assert_patches_equal(host_backend.extract(images, spec), NumpyBackend().extract(images, spec))


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_extract_matches_tensorflow(host_backend, spec):
    """The same bytes as ``tf.image.extract_patches`` (skipped without TensorFlow)."""
    pytest.importorskip("tensorflow")
    from patchkit.testing import reference_patches

    images = random_image(SHAPE, "float32", seed=2)
    expected = reference_patches(images, spec.sizes, spec.strides, spec.rates, spec.padding)
    assert_patches_equal(host_backend.extract(images, spec), expected)


@pytest.mark.parametrize("spec", SPECS[1:8] + SPECS[10:], ids=str)
def test_band_from_halo_equals_rows_of_whole(host_backend, spec):
    """Each band, made from just its halo by TensorFlow's rule (``row0`` > 0; rates and strides above 1 among
    the specs), equals those rows of TensorFlow's patches. The halo lies in a buffer followed by sentinel
    rows and ``out`` starts as the sentinel, so a read past the halo or an unwritten patch fails every time."""
    images = random_image(SHAPE, "int16", seed=3)
    whole = tf_reference_patches(images, spec.sizes, spec.strides, spec.rates, spec.padding)
    for i in range(whole.shape[1]):
        rows = slice(i, min(i + 2, whole.shape[1]))
        ya, yb = tf_halo(rows, SHAPE[1], spec.sizes[0], spec.strides[0], spec.rates[0], spec.padding)
        out = sentinel_filled(whole[:, rows].shape, images.dtype)
        assert host_backend.band(halo_in_sentinel(images, ya, yb), ya, SHAPE, spec, rows, out=out) is out
        assert_patches_equal(out, whole[:, rows])


def test_out_is_filled_everywhere(host_backend):
    """A preallocated ``out`` full of garbage is overwritten everywhere, and returned."""
    spec = PatchSpec(5, 3, 2, "SAME")
    images = random_image(SHAPE, "float32", seed=4)
    out = np.full(spec.output_shape(SHAPE), 7.5, np.float32)
    assert host_backend.extract(images, spec, out=out) is out
    assert_patches_equal(out, NumpyBackend().extract(images, spec))


def test_non_contiguous_input(host_backend):
    """Transposed, reversed and strided inputs are read through their strides."""
    base = random_image((1, 40, 60, 3), "float64", seed=5)
    images = base.transpose(0, 2, 1, 3)[:, ::-2]
    spec = PatchSpec(5, 3, padding="SAME")
    assert_patches_equal(host_backend.extract(images, spec), NumpyBackend().extract(np.ascontiguousarray(images), spec))


@pytest.mark.parametrize("out", [np.empty((1, 2, 3, 4), np.float32), np.empty((2, 12, 13, 75), np.float64), "array"])
def test_bad_out_is_refused(host_backend, out):
    """An ``out`` of the wrong shape, dtype or type is refused, naming what is needed."""
    with pytest.raises(PatchkitValueError, match=r"C-contiguous numpy.ndarray of shape \(2, 13, 14, 75\)"):
        host_backend.extract(random_image(SHAPE, "float32"), PatchSpec(5, 3, padding="SAME"), out=out)


def test_unsupported_dtype_and_big_kernel(host_backend):
    """The numpy backend's errors: unsupported dtypes, and VALID kernels larger than the image."""
    with pytest.raises(UnsupportedDtypeError, match="float128|longdouble|does not accept"):
        host_backend.extract(np.zeros((1, 8, 8, 1), np.longdouble), PatchSpec(2, 2))
    with pytest.raises(KernelTooLargeError, match="larger than the image"):
        host_backend.extract(np.zeros((1, 8, 8, 1), np.float32), PatchSpec(9, 1))


def test_missing_cupy_says_how_to_install(monkeypatch):
    """Without CuPy the backend names the package to install."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install cupy-cuda12x .* cupy-cuda13x"):
        CupyBackend()


@settings(max_examples=80)
@given(case=spec_cases(height=24, kernel=7, stride=9, rate=4), band_rows=st.integers(1, 5))
def test_property_extract_and_bands(case, band_rows):
    """Any spec and shape: the whole grid and every band equal the numpy backend's."""
    shape, spec = case.shape, case.spec
    images = random_image(shape, "uint16", seed=6)
    backend = CupyBackend(xp=np)
    expected = NumpyBackend().extract(images, spec)
    assert_patches_equal(backend.extract(images, spec), expected)
    for i in range(0, expected.shape[1], band_rows):
        rows = slice(i, min(i + band_rows, expected.shape[1]))
        assert_patches_equal(backend.band(images, 0, shape, spec, rows), expected[:, rows])


# --------------------------------------------------------------------------------------------------
# Stitching, on the host
# --------------------------------------------------------------------------------------------------


@settings(max_examples=150)
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 9),
    s=st.integers(1, 12),
    r=st.integers(1, 4),
    padding=st.sampled_from(["VALID", "SAME"]),
    cut=st.tuples(st.floats(0, 1), st.floats(0, 1)),
)
def test_property_axis_steps_cover_each_tap_once(n, k, s, r, padding, cut):
    """The steps of an axis add every in-image (patch, tap) exactly once, never two onto one pixel."""
    spec = PatchSpec((k, 1), (s, 1), (r, 1), padding)
    positions = tf_taps(n, k, s, r, padding)  # TensorFlow's rule, not the spec's
    out = positions.shape[0]
    assume(out > 0)
    p0, p1 = sorted(int(c * out) for c in cut)
    assume(p1 > p0)
    expected = sorted((p, t) for p in range(p0, p1) for t in range(k) if 0 <= positions[p, t] < n)
    seen = []
    for step in cupy_backend._axis_steps(spec, (n, 1), 0, p0, p1):
        pixels = [step.start + (p - step.p0) * s + (t - step.t0) * r for p in range(step.p0, step.p1)
                  for t in range(step.t0, step.t1)]
        assert len(set(pixels)) == len(pixels) and min(pixels) >= 0 and max(pixels) < n
        pairs = [(p, t) for p in range(step.p0, step.p1) for t in range(step.t0, step.t1)]
        assert all(positions[p, t] == px for (p, t), px in zip(pairs, pixels))
        seen += pairs
    assert sorted(seen) == expected


def test_few_steps_for_large_overlapping_patches():
    """256-pixel patches at stride 192 over 4096 pixels: four additions per axis, not 22 or 256."""
    spec = PatchSpec(256, 192, padding="SAME")
    assert len(cupy_backend._axis_steps(spec, (4096, 4096), 0, 0, 22)) == 4


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("dtype", EXACT_MEAN_DTYPES)
def test_stitch_mean_of_extracted_patches_is_stitch(spec, dtype):
    """Mean-stitching extracted patches gives ``patchkit.stitch``'s image bit for bit: the image where
    covered (NaNs and infinities too), the fill value elsewhere."""
    images = random_image(SHAPE, dtype, seed=7)
    patches = NumpyBackend().extract(images, spec)
    got = stitch_mean(patches, spec, SHAPE, xp=np)
    assert_patches_equal(got, host_stitch(patches, "mean", spec=spec, image_shape=SHAPE))
    sums, weights_sum = accumulators(SHAPE, patches.dtype, xp=np)
    accumulate(sums, weights_sum, patches, spec, slice(0, patches.shape[1]))
    covered = weights_sum > 0
    quiet = images[:, covered] != images[:, covered]  # signalling NaNs come back quiet, as from stitch
    assert_patches_equal(got[:, covered][~quiet], images[:, covered][~quiet])
    assert (got[:, covered][quiet] != got[:, covered][quiet]).all()


@pytest.mark.parametrize("spec", SPECS[1:8], ids=str)
@pytest.mark.parametrize("blend", ["cosine", "hamming"])
def test_weighted_blend_of_extracted_patches_is_the_image(spec, blend):
    """Weighted blends of agreeing patches (float32) give back the image where covered, as stitch does."""
    images = random_image(SHAPE, "float32", seed=8)
    patches = NumpyBackend().extract(images, spec)
    got = stitch_mean(patches, spec, SHAPE, weights=blend_weights(blend, spec.sizes), xp=np)
    assert_patches_equal(got, host_stitch(patches, blend, spec=spec, image_shape=SHAPE))


@pytest.mark.parametrize("spec", SPECS[1:8], ids=str)
def test_predictions_mean_and_cosine_match_stitch(spec):
    """Patches that disagree (a model's float32 outputs): the mean is stitch's bit for bit, cosine within rounding."""
    spec_shape = spec.output_shape(SHAPE)
    preds = np.random.default_rng(9).normal(size=spec_shape[:3] + (spec.sizes[0] * spec.sizes[1] * 2,)).astype(np.float32)
    image_shape = SHAPE[:3] + (2,)
    got = stitch_mean(preds, spec, image_shape, xp=np)
    assert_patches_equal(got, host_stitch(preds, "mean", spec=spec, image_shape=image_shape))
    weighted = stitch_mean(preds, spec, image_shape, weights=blend_weights("cosine", spec.sizes), xp=np)
    np.testing.assert_allclose(weighted, host_stitch(preds, "cosine", spec=spec, image_shape=image_shape), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "int64", "complex64"])
def test_wide_dtypes_are_close(dtype):
    """float64, int64 and complex means are computed in float64 (not exact, unlike stitch's): close."""
    images = (np.random.default_rng(10).normal(size=SHAPE) * 1000).astype(dtype)
    spec = PatchSpec(5, 3, padding="SAME")
    patches = NumpyBackend().extract(images, spec)
    np.testing.assert_allclose(stitch_mean(patches, spec, SHAPE, xp=np), images, rtol=1e-12)


def test_bands_and_column_pieces_add_up_to_the_whole():
    """Accumulating the grid in row bands and column pieces (any order) equals accumulating it at once."""
    spec = PatchSpec(6, 4, 2, "SAME")
    images = random_image(SHAPE, "float32", seed=11)
    patches = NumpyBackend().extract(images, spec)
    oh, ow = patches.shape[1:3]
    sums, weights_sum = accumulators(SHAPE, patches.dtype, xp=np)
    for r0 in range(0, oh, 3)[::-1]:
        for c0 in range(0, ow, 5):
            rows, cols = slice(r0, min(r0 + 3, oh)), slice(c0, min(c0 + 5, ow))
            accumulate(sums, weights_sum, patches[:, rows, cols], spec, rows, cols=cols)
    assert_patches_equal(finish_mean(sums, weights_sum, patches.dtype), stitch_mean(patches, spec, SHAPE, xp=np))


def test_fill_value_and_out():
    """Pixels no patch samples get ``fill_value``; ``out`` is filled and returned."""
    spec = PatchSpec(2, 5)
    images = random_image((1, 12, 12, 1), "uint8", seed=12)
    patches = NumpyBackend().extract(images, spec)
    sums, weights_sum = accumulators(images.shape, patches.dtype, xp=np)
    accumulate(sums, weights_sum, patches, spec, slice(0, patches.shape[1]))
    out = sentinel_filled(images.shape, np.uint8)
    assert finish_mean(sums, weights_sum, np.uint8, fill_value=255, out=out) is out
    assert (out[0, 2:5, :, 0] == 255).all() and (out[0, :2, :2] == images[0, :2, :2]).all()


def test_accumulators_must_be_arrays():
    """Accumulators that are not numpy or cupy arrays are refused, naming the argument."""
    with pytest.raises(PatchkitTypeError, match="sums is a list"):
        accumulate([0.0], np.zeros((1, 1)), np.zeros((1, 1, 1, 1)), PatchSpec(1, 1), slice(0, 1))


def test_accumulate_refuses_wrong_shapes():
    """Patches or weights of the wrong shape are refused, naming the expected shape."""
    spec = PatchSpec(3, 2)
    sums, weights_sum = accumulators((1, 10, 10, 2), "float32", xp=np)
    with pytest.raises(PatchkitValueError, match=r"need \(1, 2, 4, 18\)"):
        accumulate(sums, weights_sum, np.zeros((1, 2, 4, 9), np.float32), spec, slice(0, 2))
    with pytest.raises(PatchkitValueError, match=r"weights have shape \(2, 2\)"):
        accumulate(sums, weights_sum, np.zeros((1, 2, 4, 18), np.float32), spec, slice(0, 2), weights=np.ones((2, 2)))


# --------------------------------------------------------------------------------------------------
# On a CUDA device (PATCHKIT_TEST_GPU=0); skipped without CuPy or a GPU
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu(cp) -> CupyBackend:
    """The CuPy backend on the current device."""
    return CupyBackend()


GPU_DTYPES = [n for n in ALL_DTYPES if n != "bfloat16"]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("spec", [SPECS[3], SPECS[4], SPECS[7], SPECS[9]], ids=str)
def test_gpu_extract_every_dtype(cp, gpu, spec, dtype):
    """On the device, every CuPy dtype: the numpy backend's bytes (random bit patterns: NaN payloads too)."""
    images = random_image(SHAPE, dtype, seed=13)
    got = gpu.extract(images, spec)
    assert isinstance(got, cp.ndarray)
    assert_patches_equal(cp.asnumpy(got), NumpyBackend().extract(images, spec))


@pytest.mark.gpu
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_gpu_extract_every_spec(cp, gpu, spec):
    """Device input, every spec, into a reused ``out``: the numpy backend's bytes."""
    images = random_image(SHAPE, "float32", seed=14)
    out = cp.full(spec.output_shape(SHAPE), 3.0, cp.float32)
    assert gpu.extract(cp.asarray(images), spec, out=out) is out
    assert_patches_equal(cp.asnumpy(out), NumpyBackend().extract(images, spec))


@pytest.mark.gpu
def test_gpu_bands_from_host_and_device(cp, gpu):
    """Bands from a host halo (only it is copied) and from the whole device image equal rows of the whole."""
    spec = PatchSpec(6, 4, 2, "SAME")
    images = random_image(SHAPE, "uint16", seed=15)
    whole = NumpyBackend().extract(images, spec)
    on_device = cp.asarray(images)
    for i in range(0, whole.shape[1], 3):
        rows = slice(i, min(i + 3, whole.shape[1]))
        ya, yb = tf_halo(rows, SHAPE[1], spec.sizes[0], spec.strides[0], spec.rates[0], spec.padding)
        assert_patches_equal(cp.asnumpy(gpu.band(images[:, ya:yb], ya, SHAPE, spec, rows)), whole[:, rows])
        assert_patches_equal(cp.asnumpy(gpu.band(on_device, 0, SHAPE, spec, rows)), whole[:, rows])


@pytest.mark.gpu
def test_gpu_non_native_and_bfloat16(cp, gpu):
    """Big-endian host data comes back native with the same values; bfloat16 is refused with a way out."""
    images = random_image(SHAPE, "int32", seed=16)
    spec = PatchSpec(5, 3, padding="SAME")
    got = gpu.extract(images.astype(">i4"), spec)
    assert_patches_equal(cp.asnumpy(got), NumpyBackend().extract(images, spec))
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with pytest.raises(UnsupportedDtypeError, match=r"view\(np.uint16\)"):
        gpu.extract(np.zeros((1, 8, 8, 1), ml_dtypes.bfloat16), spec)


def gpu_arithmetic_safe(images: np.ndarray) -> np.ndarray:
    """``images`` with NaN made 0.5 and subnormals made 0: what device arithmetic keeps bit for bit.

    A GPU quiets NaN payloads and flushes float32 subnormals to zero in its arithmetic (copies keep both).
    """
    if images.dtype.kind != "f":
        return images
    images = np.nan_to_num(images, nan=0.5)
    return np.where(np.abs(images) < np.finfo(images.dtype).tiny, images.dtype.type(0), images)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", EXACT_MEAN_DTYPES)
def test_gpu_stitch_extracted_patches(cp, gpu, dtype):
    """Device mean-stitching of extracted patches is ``stitch``'s image bit for bit (normal finite values:
    a GPU keeps neither NaN payloads nor float32 subnormals through arithmetic)."""
    spec = PatchSpec((3, 5), (2, 1), (3, 2), "SAME")
    images = gpu_arithmetic_safe(random_image(SHAPE, dtype, seed=17))
    patches = gpu.extract(images, spec)
    got = stitch_mean(patches, spec, SHAPE)
    assert isinstance(got, cp.ndarray)
    assert_patches_equal(cp.asnumpy(got), host_stitch(cp.asnumpy(patches), "mean", spec=spec, image_shape=SHAPE))


@pytest.mark.gpu
@pytest.mark.parametrize("spec", [SPECS[2], SPECS[5], SPECS[7], PatchSpec(16, 12, padding="SAME")], ids=str)
def test_gpu_stitch_predictions(cp, spec):
    """A model's float32 outputs, in row bands on the device: the mean bit for bit, cosine within rounding."""
    shape = (1, 61, 53, 1)
    grid = spec.output_shape(shape)
    preds = np.random.default_rng(18).normal(size=grid).astype(np.float32)
    sums, weights_sum = accumulators(shape, preds.dtype)
    for i in range(0, grid[1], 2):
        rows = slice(i, min(i + 2, grid[1]))
        accumulate(sums, weights_sum, cp.asarray(preds[:, rows]), spec, rows)
    got = cp.asnumpy(finish_mean(sums, weights_sum, preds.dtype))
    assert_patches_equal(got, host_stitch(preds, "mean", spec=spec, image_shape=shape))
    weighted = stitch_mean(cp.asarray(preds), spec, shape, weights=blend_weights("cosine", spec.sizes))
    np.testing.assert_allclose(cp.asnumpy(weighted), host_stitch(preds, "cosine", spec=spec, image_shape=shape), rtol=1e-6)


@pytest.mark.gpu
def test_gpu_patches_to_torch_and_back(cp, gpu):
    """Patches reach PyTorch through DLPack without a copy, and predictions come back the same way."""
    torch = pytest.importorskip("torch")
    spec = PatchSpec(8, 6, padding="SAME")
    images = random_image((1, 40, 40, 4), "float32", seed=19)
    patches = gpu.extract(images, spec)
    tensor = torch.from_dlpack(patches)
    assert tensor.is_cuda and tensor.data_ptr() == patches.data.ptr
    back = cp.from_dlpack(tensor.clone())  # a copy, not arithmetic: NaN payloads stay
    assert_patches_equal(cp.asnumpy(back), NumpyBackend().extract(images, spec))
    from_torch = gpu.extract(torch.from_numpy(images).cuda(), spec)  # a CUDA tensor is read in place
    assert_patches_equal(cp.asnumpy(from_torch), NumpyBackend().extract(images, spec))


@pytest.mark.gpu
@settings(max_examples=25)
@given(case=spec_cases(height=30, kernel=7, stride=9, rate=3, channels=4))
def test_gpu_property(cp, gpu, case):
    """Any spec and shape on the device: the numpy backend's patches, and stitch's image back."""
    shape, spec = case.shape, case.spec
    images = gpu_arithmetic_safe(random_image(shape, "float32", seed=20))
    expected = NumpyBackend().extract(images, spec)
    got = gpu.extract(images, spec)
    assert_patches_equal(cp.asnumpy(got), expected)
    assert_patches_equal(cp.asnumpy(stitch_mean(got, spec, shape)),
                         host_stitch(expected, "mean", spec=spec, image_shape=shape))
