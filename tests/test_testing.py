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
