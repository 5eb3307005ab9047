"""core.spec.coverage: the pixels the grid samples, counted from TensorFlow's taps (tests.helpers.tf_grid, not PatchSpec)."""

from __future__ import annotations

import numpy as np
import pytest

from patchkit.core.spec import PatchSpec
from patchkit.core.spec.coverage import clipped, coverage, covered, taps_inside

from ...helpers import tf_grid

SPECS = [  # the explorer's cases; stride above the kernel leaves gaps, and rates do
    PatchSpec(16, 8), PatchSpec(16, 8, padding="SAME"), PatchSpec(7, 11, 2, "SAME"),
    PatchSpec((5, 9), (3, 4), (1, 2), "VALID"), PatchSpec(10, 10), PatchSpec(4, 9, 1, "VALID"),
    PatchSpec(3, 2, 4, "SAME"), PatchSpec(1, 5), PatchSpec(30, 1, 2, "SAME"),
]


def _fits(spec: PatchSpec, hw) -> bool:
    return spec.padding == "SAME" or all(k <= n for k, n in zip(spec.effective_sizes, hw))


CASES = [(spec, hw) for spec in SPECS for hw in [(61, 53), (40, 45), (9, 300)] if _fits(spec, hw)]


def _taps(spec: PatchSpec, hw) -> tuple[np.ndarray, np.ndarray]:
    """TensorFlow's input rows ``[out_rows, kh]`` and columns ``[out_cols, kw]`` of every patch."""
    return tf_grid(hw, spec.sizes, spec.strides, spec.rates, spec.padding)


def _sampled(spec: PatchSpec, hw) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the input rows and columns some tap lands on."""
    masks = []
    for taps, n in zip(_taps(spec, hw), hw):
        mask = np.zeros(n, bool)
        mask[taps[(taps >= 0) & (taps < n)]] = True
        masks.append(mask)
    return masks[0], masks[1]


@pytest.mark.parametrize("spec, hw", CASES, ids=str)
def test_coverage_is_the_share_of_sampled_pixels(spec, hw):
    """covered() counts the rows and columns TensorFlow's taps sample; coverage() is their product's share."""
    rows, cols = _sampled(spec, hw)
    assert covered(spec, hw) == (rows.sum(), cols.sum())
    assert coverage(spec, hw) == pytest.approx(rows.sum() * cols.sum() / (hw[0] * hw[1]))
    assert coverage(spec, (2, *hw, 3)) == coverage(spec, hw)


@pytest.mark.parametrize("spec, hw", CASES, ids=str)
def test_taps_inside_counts_the_taps_that_are_not_padding(spec, hw):
    """taps_inside() is, per patch row and column, the number of TensorFlow's taps inside the image."""
    want = [((taps >= 0) & (taps < n)).sum(axis=1) for taps, n in zip(_taps(spec, hw), hw)]
    got = taps_inside(spec, hw)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("spec", [PatchSpec(16, 8, 1, "SAME"), PatchSpec(5, 7, 3, "SAME"), PatchSpec(30, 1, 2, "SAME")], ids=str)
def test_clipped_is_the_window_inside_the_image(spec):
    """clipped(window) is the range of image pixels of a patch's window: the first and last in-image taps' span."""
    hw = (20, 9)
    oh, ow = spec.grid_shape(hw)
    rows, cols = _taps(spec, hw)
    for i, j in [(0, 0), (oh - 1, ow - 1), (oh // 2, 0)]:
        (r0, r1), (c0, c1) = clipped(spec.window(i, j, hw), hw)
        r_in, c_in = rows[i][(rows[i] >= 0) & (rows[i] < hw[0])], cols[j][(cols[j] >= 0) & (cols[j] < hw[1])]
        assert r0 <= r_in.min() and r_in.max() < r1 and 0 <= r0 and r1 <= hw[0]
        assert c0 <= c_in.min() and c_in.max() < c1 and 0 <= c0 and c1 <= hw[1]
