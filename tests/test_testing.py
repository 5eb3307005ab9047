"""patchkit.testing: the assertions users can run on their own patches."""

import numpy as np
import pytest

from patchkit.testing import assert_matches_tensorflow, assert_patches_equal


def test_equal_bytes_pass():
    """Identical arrays (NaNs included) are equal."""
    a = np.array([np.nan, 1.0], np.float32)
    assert_patches_equal(a, a.copy())


@pytest.mark.parametrize(
    "actual, expected, match",
    [
        (np.array([0.0], np.float32), np.array([-0.0], np.float32), "differ at 1 of 1"),
        (np.array([1, 2]), np.array([1, 2, 3]), "shape"),
        (np.array([1], np.int32), np.array([1], np.int64), "dtype"),
    ],
)
def test_differences_are_reported(actual, expected, match):
    """Signed zeros, shapes and dtypes all count."""
    with pytest.raises(AssertionError, match=match):
        assert_patches_equal(actual, expected)


def test_nan_payloads_count():
    """Two NaNs with different payloads are different bits."""
    a = np.array([0x7FC00001], np.uint32).view(np.float32)
    b = np.array([0x7FC00002], np.uint32).view(np.float32)
    with pytest.raises(AssertionError, match="differ"):
        assert_patches_equal(a, b)


def test_matches_tensorflow(tf):
    """The one-line check users can run."""
    assert_matches_tensorflow(np.arange(48, dtype=np.uint8).reshape(1, 4, 4, 3), 2, 1, padding="SAME")


def test_lazy_scene_is_the_ramp_chunk_by_chunk():
    """Each pixel is 31 y + 17 x + 7 band (wrapping), whatever chunk it falls in."""
    pytest.importorskip("dask")
    from patchkit.testing import lazy_scene

    scene = lazy_scene((2, 70, 50, 3), "uint8", chunks=(32, 20))
    assert scene.chunks == ((2,), (32, 32, 6), (20, 20, 10), (3,))
    y, x, band = np.meshgrid(np.arange(70), np.arange(50), np.arange(3), indexing="ij")
    expected = ((31 * y + 17 * x + 7 * band) % 256).astype(np.uint8)
    np.testing.assert_array_equal(scene.compute(), np.broadcast_to(expected, (2, 70, 50, 3)))
