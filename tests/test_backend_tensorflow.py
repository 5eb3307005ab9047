"""The TensorFlow backend: the op itself, bool through uint8, bands from padded halos."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from patchkit import PatchSpec, extract_patches
from patchkit.backends.tensorflow import TensorflowBackend, import_tensorflow
from patchkit.errors import BackendUnavailableError
from patchkit.testing import assert_patches_equal, reference_patches

from .helpers import random_image


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
