"""stitch.coords: the stitched image's 1-D coordinates from those of the pixels patches sample."""

from __future__ import annotations

import numpy as np

from patchkit.stitch import axis_coordinate


def test_axis_coordinate_fills_rows_no_patch_samples():
    """Sampled rows keep their values; gaps take the pixel step; without a step or samples they are NaN."""
    values = np.array([[10.0, 20.0], [50.0, 60.0]])
    positions = np.array([[0, 1], [4, 5]])
    np.testing.assert_array_equal(axis_coordinate(values, positions, 7, step=10.0), [10, 20, 30, 40, 50, 60, 70])
    np.testing.assert_array_equal(axis_coordinate(values, positions, 7), [10, 20, 30, 40, 50, 60, 70])
    irregular = axis_coordinate(np.array([[1.0], [5.0], [6.0]]), np.array([[0], [2], [3]]), 5)
    assert irregular[:4].tolist()[::2] == [1.0, 5.0] and np.isnan(irregular[[1, 4]]).all()
    assert axis_coordinate(np.array([[3]]), np.array([[0]]), 1).dtype == np.array([3]).dtype
