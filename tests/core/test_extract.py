"""extract_patches and extract_image_patches against tf.image.extract_patches itself."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import patchkit
from patchkit import PatchSpec, extract_image_patches, extract_patches, iter_patches
from patchkit.errors import (
    InvalidImageError,
    InvalidSpecError,
    KernelTooLargeError,
    OutputTooLargeError,
    PatchkitTypeError,
    UnknownBackendError,
    UnsupportedDtypeError,
)
from patchkit.core.spec import effective_size
from patchkit.testing import assert_patches_equal, reference_patches

from ..helpers import ALL_DTYPES, RecordingArray, random_image

BACKENDS = ["numpy", "tensorflow", "auto"]


@st.composite
def cases(draw):
    """A random image (any dtype, random bits) and a spec TensorFlow accepts for it."""
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 14)), draw(st.integers(1, 14)), draw(st.integers(1, 3)))
    sizes = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    strides = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    rates = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.sampled_from(["VALID", "SAME", "same", "valid"]))
    if padding.upper() == "VALID":
        assume(all(effective_size(k, r) <= n for k, r, n in zip(sizes, rates, shape[1:3])))
    dtype = draw(st.sampled_from(ALL_DTYPES))
    return random_image(shape, dtype, seed=draw(st.integers(0, 2**32 - 1))), sizes, strides, rates, padding


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=cases())
def test_matches_tensorflow_bit_for_bit(tf, backend, case):
    """Any shape, dtype (random bits: NaN payloads, -0.0), size, stride, rate and padding."""
    images, sizes, strides, rates, padding = case
    got = extract_patches(images, sizes, strides, rates, padding, backend=backend)
    assert isinstance(got, np.ndarray)
    assert_patches_equal(got, reference_patches(images, sizes, strides, rates, padding))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "sizes, strides, padding",
    [(16, 16, "VALID"), (16, 8, "SAME")],
    ids=["non-overlapping VALID", "overlapping SAME"],
)
def test_classic_uses(tf, backend, sizes, strides, padding):
    """The two classic single-image uses on a (1, 256, 256, 3) image."""
    images = random_image((1, 256, 256, 3), "float32", seed=1)
    assert_patches_equal(
        extract_patches(images, sizes, strides, padding=padding, backend=backend),
        reference_patches(images, sizes, strides, 1, padding),
    )


def test_classic_batch_in_chunks(tf):
    """32 images processed in chunks of 8 and concatenated equal one TensorFlow call."""
    images = random_image((32, 256, 256, 3), "uint8", seed=2)
    chunks = [extract_patches(images[i : i + 8], 16, 8, padding="SAME") for i in range(0, 32, 8)]
    assert_patches_equal(np.concatenate(chunks), reference_patches(images, 16, 8, 1, "SAME"))


def test_hand_worked_dilation_with_same_padding():
    """2x2 kernel at rate 2, stride 2, SAME on a 5x5 ramp: one zero row/col of padding each side."""
    image = np.arange(25, dtype=np.int32).reshape(1, 5, 5, 1)
    got = extract_patches(image, 2, 2, rates=2, padding="SAME")
    assert got.shape == (1, 3, 3, 4)
    assert got[0, 0, 0].tolist() == [0, 0, 0, 6]
    assert got[0, 1, 1].tolist() == [6, 8, 16, 18]
    assert got[0, 2, 2].tolist() == [18, 0, 0, 0]


def test_hand_worked_odd_same_padding():
    """4x4 kernel, stride 1, SAME on 7 pixels: 1 zero before and 2 after."""
    image = np.arange(1, 8, dtype=np.float64).reshape(1, 7, 1, 1)
    got = extract_patches(image, (4, 1), 1, padding="SAME")[0, :, 0]
    assert got[0].tolist() == [0, 1, 2, 3]
    assert got[-1].tolist() == [6, 7, 0, 0]


def test_channel_order_is_kernel_row_col_channel():
    """The last axis runs over (kernel row, kernel col, channel)."""
    image = np.arange(2 * 2 * 3).reshape(1, 2, 2, 3).astype(np.uint8)
    assert extract_patches(image, 2, 1)[0, 0, 0].tolist() == list(range(12))


@pytest.mark.parametrize("backend", BACKENDS)
def test_tensor_in_tensor_out(tf, backend, image):
    """A tf.Tensor input gives a tf.Tensor with TensorFlow's values."""
    got = extract_patches(tf.constant(image), 5, 3, padding="SAME", backend=backend)
    assert isinstance(got, tf.Tensor)
    assert_patches_equal(got.numpy(), reference_patches(image, 5, 3, 1, "SAME"))


@pytest.mark.parametrize("dtype", ["bool", "bfloat16", "complex128"])
def test_tensor_dtypes_round_trip(tf, dtype):
    """Tensors of the dtypes DLPack cannot carry (bfloat16) or TF cannot extract (bool) still work."""
    image = random_image((1, 9, 8, 2), dtype)
    got = extract_patches(tf.constant(image), 3, 2, padding="SAME", backend="numpy")
    assert got.dtype.name == dtype
    assert_patches_equal(got.numpy(), reference_patches(image, 3, 2, 1, "SAME"))


def test_dask_in_dask_out_lazily(tf, image):
    """A dask input gives a lazy dask array whose chunks are row bands and whose values are TF's."""
    da = pytest.importorskip("dask.array")
    lazy = da.from_array(image, chunks=(1, 10, 20, 3))
    got = extract_patches(lazy, 4, 3, padding="SAME")
    assert isinstance(got, da.Array) and len(got.chunks[1]) >= 1
    assert_patches_equal(got.compute(), reference_patches(image, 4, 3, 1, "SAME"))


def test_lazily_read_array_gives_ndarray(image):
    """A zarr/h5py-like array is read band by band into an ndarray."""
    source = RecordingArray(image)
    got = extract_patches(source, 4, 3, padding="SAME")
    assert isinstance(got, np.ndarray)
    assert_patches_equal(got, extract_patches(image, 4, 3, padding="SAME"))


def test_nested_lists_are_arrays():
    """Anything np.asarray makes numeric is accepted."""
    assert extract_patches([[[[1], [2]], [[3], [4]]]], 1, 1).shape == (1, 2, 2, 1)


def test_extract_image_patches_tf1_names(tf, image):
    """TensorFlow 1's name and keywords (ksizes, or sizes as tf.compat.v1 allows)."""
    kwargs = dict(strides=[1, 2, 2, 1], rates=[1, 2, 1, 1], padding="SAME")
    expected = tf.compat.v1.extract_image_patches(image, ksizes=[1, 3, 3, 1], **kwargs).numpy()
    assert_patches_equal(extract_image_patches(image, ksizes=[1, 3, 3, 1], **kwargs), expected)
    assert_patches_equal(extract_image_patches(image, sizes=[1, 3, 3, 1], **kwargs), expected)
    with pytest.raises(InvalidSpecError, match="pass ksizes or sizes, not both"):
        extract_image_patches(image, ksizes=3, sizes=3, **kwargs)


@pytest.mark.parametrize(
    "images, kwargs, error, match",
    [
        (np.zeros((8, 8, 3)), {}, InvalidImageError, r"shape \(8, 8, 3\) \(rank 3\).*np.newaxis"),
        (np.zeros((1, 1, 8, 8, 3)), {}, InvalidImageError, r"rank 5"),
        (np.zeros((1, 0, 8, 3)), {}, KernelTooLargeError, r"height 0 by two strides \(1\) or more.*refuses it too"),
        (None, {}, PatchkitTypeError, r"images is None"),
        (np.zeros((1, 8, 8, 1), object), {}, UnsupportedDtypeError, r"dtype object"),
        (np.zeros((1, 8, 8, 1), "U2"), {}, UnsupportedDtypeError, r"dtype <U2"),
        (np.zeros((1, 8, 8, 1), "datetime64[s]"), {}, UnsupportedDtypeError, r"datetime64"),
        (np.zeros((1, 8, 8, 1)), dict(sizes=10), KernelTooLargeError, r"kernel 10 \(effective 10\).*height 8"),
        (np.zeros((1, 8, 8, 1)), dict(sizes=3, rates=5), KernelTooLargeError, r"kernel 3 at rate 5 \(effective 11\)"),
        (np.zeros((1, 8, 8, 1)), dict(sizes=2.5), InvalidSpecError, r"sizes=2.5 must hold integers"),
        (np.zeros((1, 8, 8, 1)), dict(strides=float("nan")), InvalidSpecError, r"strides=nan must hold integers"),
        (np.zeros((1, 8, 8, 1)), dict(rates=[1, float("inf"), 1, 1]), InvalidSpecError, r"rates=\[1, inf, 1, 1\]"),
        (np.zeros((1, 8, 8, 1)), dict(strides=0), InvalidSpecError, r"strides=0 must be positive"),
        (np.zeros((1, 8, 8, 1)), dict(padding="full"), InvalidSpecError, r"padding='full'"),
        (np.zeros((1, 8, 8, 1)), dict(backend="torch"), UnknownBackendError, r"backend='torch'.*auto, cupy, numpy, tensorflow"),
    ],
)
def test_bad_input(images, kwargs, error, match):
    """Each bad argument raises a patchkit error naming it, its value and the fix."""
    args = dict(sizes=3, strides=1) | kwargs
    with pytest.raises(error, match=match):
        extract_patches(images, **args)


def test_too_large_for_memory_fails_before_allocating(monkeypatch):
    """An output beyond available memory is refused with the bytes and a pointer to iter_patches."""
    monkeypatch.setattr(patchkit.core.budget, "available_memory", lambda: 100 * 2**20)
    image = np.broadcast_to(np.float32(0), (1, 4096, 4096, 4))  # no memory behind it
    with pytest.raises(OutputTooLargeError, match=r"961.00 MiB.*only 100\.00 MiB is available.*iter_patches"):
        extract_patches(image, 256, 128)


def test_row_too_large_for_memory_says_streaming_cannot_help(monkeypatch):
    """When one row of patches outgrows memory, the message points to smaller patches, not to streaming."""
    monkeypatch.setattr(patchkit.core.budget, "available_memory", lambda: 10_000)
    image = np.broadcast_to(np.float32(0), (1, 4096, 4096, 4))
    with pytest.raises(OutputTooLargeError, match=r"one row of patches takes 31\.00 MiB .*so no streaming helps"):
        extract_patches(image, 256, 128)


@pytest.mark.parametrize("sizes", [2 * 10**8, (1, 2**31 - 1), 10**5])
@pytest.mark.parametrize("call", ["extract", "iter"])
def test_same_kernel_far_larger_than_the_image_is_refused_at_once(call, sizes):
    """SAME takes any kernel (TensorFlow gives ceil(n / stride) patches); one too large for memory is
    refused by its bytes within a second, before positions, plans or buffers are made."""
    image = np.zeros((1, 64, 64, 1), np.float32)
    start = time.perf_counter()
    with pytest.raises(OutputTooLargeError, match=r"available; .*(smaller sizes|larger stride)"):
        if call == "extract":
            extract_patches(image, sizes, 1, padding="SAME")
        else:
            next(iter_patches(image, sizes, 1, padding="SAME"))
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("sizes, strides, rates", [(2**31, 1, 1), (1, [1, 2**31, 1, 1], 1), (2, 1, 2**40)])
def test_values_beyond_int32_are_refused_as_tensorflow_does(sizes, strides, rates):
    """TensorFlow holds sizes, strides and rates in int32 attrs; larger ones are refused, naming the argument."""
    with pytest.raises(InvalidSpecError, match=r"more than 2\*\*31 - 1"):
        extract_patches(np.zeros((1, 8, 8, 1), np.float32), sizes, strides, rates, "SAME")


def test_huge_request_real_memory_check():
    """A (virtual) 2 TB request fails on the real psutil check, not inside numpy."""
    image = np.broadcast_to(np.uint8(0), (1, 65536, 65536, 4))
    with pytest.raises(MemoryError, match="iter_patches"):
        extract_patches(image, 64, 1)


def test_returns_new_array_each_call(image):
    """extract_patches never hands out a shared buffer."""
    a = extract_patches(image, 3, 2)
    b = extract_patches(image, 3, 2)
    assert not np.shares_memory(a, b)
    assert PatchSpec(3, 2).output_shape(image.shape) == a.shape
