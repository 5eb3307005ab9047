"""The TensorFlow backend: the op itself, bool through uint8, bands from padded halos."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchkit import PatchSpec, extract_patches
from patchkit.core.backends.tensorflow import TensorflowBackend, import_tensorflow
from patchkit.errors import BackendUnavailableError
from patchkit.testing import assert_patches_equal, reference_patches

from ...helpers import halo_in_sentinel, random_image, spec_cases, tf_halo, tf_reference_patches


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
@pytest.mark.parametrize("rows", [slice(0, 1), slice(2, 6), slice(0, 9)])
def test_band_equals_rows_of_whole(tf, padding, rows):
    """A band cut from the padded halo equals those rows of the whole-image op."""
    images = random_image((2, 31, 17, 2), "uint16")
    spec = PatchSpec((5, 3), (3, 2), (2, 1), padding)
    if rows.stop > spec.grid_shape(images.shape)[0]:
        rows = slice(rows.start, spec.grid_shape(images.shape)[0])
    band = TensorflowBackend().band(images, 0, images.shape, spec, rows)
    assert isinstance(band, tf.Tensor)
    assert_patches_equal(band.numpy(), reference_patches(images, (5, 3), (3, 2), (2, 1), padding)[:, rows])


@pytest.mark.parametrize("spec", [
    PatchSpec((5, 3), (3, 2), (2, 1), "SAME"),
    PatchSpec((3, 2), (2, 3), (3, 2), "SAME"),
    PatchSpec(4, 3, 2, "VALID"),
    PatchSpec(2, 5, 4, "VALID"),
    PatchSpec(3, 2, 5, "SAME"),
], ids=str)
def test_band_from_its_halo_only(tf, spec):
    """A band made from just its halo by TensorFlow's rule (``row0`` > 0), at rates and strides above 1,
    equals those rows of the whole-image op; the halo lies in a buffer followed by sentinel rows."""
    images = random_image((2, 31, 17, 2), "uint16")
    whole = reference_patches(images, spec.sizes, spec.strides, spec.rates, spec.padding)
    for rows in [slice(i, min(i + 2, whole.shape[1])) for i in range(whole.shape[1])]:
        ya, yb = tf_halo(rows, 31, spec.sizes[0], spec.strides[0], spec.rates[0], spec.padding)
        band = TensorflowBackend().band(halo_in_sentinel(images, ya, yb), ya, images.shape, spec, rows)
        assert_patches_equal(band.numpy(), whole[:, rows])


@given(case=spec_cases(height=16, kernel=5, stride=5, rate=4), dtype=st.sampled_from(["float32", "float64", "int8", "uint16", "complex64"]))
def test_helpers_reference_is_tensorflows_op(tf, case, dtype):
    """The tests' own reference (helpers.tf_reference_patches, TensorFlow's documented geometry, no patchkit
    code) gives tf.image.extract_patches bit for bit, so tests that use it where TensorFlow is absent still
    compare with TensorFlow."""
    images = random_image(case.shape, dtype, seed=sum(case.shape))
    assert_patches_equal(tf_reference_patches(images, *case.args), reference_patches(images, *case.args))


def test_bool_goes_through_uint8(tf):
    """TensorFlow has no bool kernel; the backend still returns bool patches."""
    images = random_image((1, 9, 9, 1), "bool")
    got = TensorflowBackend().extract(images, PatchSpec(3, 2, padding="SAME"))
    assert got.dtype == tf.bool
    assert_patches_equal(got.numpy(), reference_patches(images, 3, 2, 1, "SAME"))


def test_missing_tensorflow_is_explained(monkeypatch):
    """Without TensorFlow, backend='tensorflow' says how to install it."""
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'patchkit\[tensorflow\]'.*backend='numpy'"):
        import_tensorflow()


@pytest.mark.gpu
def test_gpu_tensor_stays_on_gpu(tf):
    """On a GPU, a GPU tensor is extracted there by TensorFlow's op, bit for bit."""
    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        pytest.skip("no GPU visible to TensorFlow (set PATCHKIT_TEST_GPU=0 on a GPU machine)")
    images = random_image((2, 300, 300, 3), "float32")
    with tf.device(gpus[0].name):
        tensor = tf.identity(tf.constant(images))
    got = extract_patches(tensor, 32, 16, padding="SAME", backend="tensorflow")
    assert "GPU" in got.device
    assert_patches_equal(np.asarray(got), reference_patches(images, 32, 16, 1, "SAME"))
