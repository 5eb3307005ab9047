"""core.spec.inverse: which patches and taps land on a band of pixels, checked against TensorFlow's rule of
which pixel every tap reads (``helpers.tf_taps``), never against the spec's own formulas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from patchkit import PatchSpec
from patchkit.core.spec.axis import Axis
from patchkit.core.spec.inverse import Line, axis_ops, lines_of, support

from ...helpers import tf_taps

AXES = dict(n=st.integers(1, 40), k=st.integers(1, 9), s=st.integers(1, 9), r=st.integers(1, 4), crop=st.integers(0, 4),
            padding=st.sampled_from(["VALID", "SAME"]), lo=st.integers(0, 39), span=st.integers(1, 40))


def _line(n: int, k: int, s: int, r: int, padding: str, crop: int) -> Line:
    """The rows' line of a spec with one column, on an image of ``n`` rows."""
    return lines_of(PatchSpec((k, 1), (s, 1), (r, 1), padding), (n, 1), (crop, 0))[0]


@given(**AXES)
def test_axis_ops_put_every_tap_on_its_pixel_once(n, k, s, r, crop, padding, lo, span):
    """The steps of an axis cover exactly the (patch, tap) pairs landing in the band, each once, in writing order."""
    positions = tf_taps(n, k, s, r, padding)  # TensorFlow's rule, not the spec's
    assume(positions.shape[0] > 0)
    crop, lo = min(crop, (k - 1) // 2), lo % n
    hi = min(n, lo + span)
    line = _line(n, k, s, r, padding, crop)
    p0, p1 = (int(v) for v in line.needed(lo, hi))
    seen = {}
    last = {}
    for op in axis_ops(line, range(p0, p1), lo, hi):
        for p, i in enumerate(range(op.patches.start, op.patches.stop)):
            pixels = {op.start + p * s + t * r for t in range(op.taps.stop - op.taps.start)}
            assert len(pixels) == op.taps.stop - op.taps.start
            for t, a in enumerate(range(op.taps.start, op.taps.stop)):
                pixel = op.start + p * s + t * r
                assert pixel + lo == positions[i, a] and (i, a) not in seen
                seen[(i, a)] = pixel
                assert last.get(pixel, -1) < i
                last[pixel] = i
    expected = {(i, a) for i in range(positions.shape[0]) for a in range(crop, k - crop) if lo <= positions[i, a] < hi}
    assert set(seen) == expected


@given(**AXES)
def test_needed_patches_are_those_whose_kept_taps_span_the_band(n, k, s, r, crop, padding, lo, span):
    """``needed`` gives exactly the patches whose kept taps (first to last) reach into ``[lo, hi)`` (under SAME
    padding too: no patch more at the start), so every patch that lands in the band is among them. Arrays of
    bands give what each band gives."""
    positions = tf_taps(n, k, s, r, padding)
    assume(positions.shape[0] > 0)
    crop, lo = min(crop, (k - 1) // 2), lo % n
    hi = min(n, lo + span)
    line = _line(n, k, s, r, padding, crop)
    first, last = positions[:, crop], positions[:, k - crop - 1]
    spanning = np.flatnonzero((last >= lo) & (first < hi))
    p0, p1 = (int(v) for v in line.needed(lo, hi))
    if spanning.size:
        assert (p0, p1) == (spanning[0], spanning[-1] + 1)
    landing = np.flatnonzero(((positions[:, crop: k - crop] >= lo) & (positions[:, crop: k - crop] < hi)).any(axis=1))
    assert set(landing) <= set(range(p0, p1))
    arrays = line.needed(np.array([lo, 0]), np.array([hi, n]))
    assert (int(arrays[0][0]), int(arrays[1][0])) == (p0, p1)


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_lines_are_the_spec_axes_with_the_kept_taps(padding):
    """A line is the spec's axis (TensorFlow's grid and padding) with the taps a crop keeps; its first and last
    kept taps of patch 0 sample the pixels TensorFlow's rule gives."""
    spec = PatchSpec((5, 4), (2, 3), (2, 1), padding)
    rows, cols = lines_of(spec, (17, 13), (1, 0))
    assert isinstance(rows, Axis) and (rows.out, cols.out) == spec.grid_shape((17, 13))
    assert (rows.t0, rows.t1, rows.kept, cols.t0, cols.t1, cols.kept) == (1, 4, 3, 0, 4, 4)
    for line, taps in ((rows, tf_taps(17, 5, 2, 2, padding)), (cols, tf_taps(13, 4, 3, 1, padding))):
        assert (line.first, line.last) == (taps[0, line.t0], taps[0, line.t1 - 1])


def test_support_drops_zero_ends_and_keeps_zeros_inside():
    """Zero-weight rows and columns at a window's ends narrow the lines like a crop; a zero inside leaves them."""
    lines = lines_of(PatchSpec(6, 2), (20, 20), (0, 0))
    window = np.outer([0.0, 1.0, 2.0, 2.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    (rows, cols), inner = support(lines, window)
    assert (rows.t0, rows.t1, cols.t0, cols.t1) == (1, 5, 2, 5)
    np.testing.assert_array_equal(inner, window[1:5, 2:5])
    holed = window.copy()
    holed[2, 3] = 0.0
    same, weights = support(lines, holed)
    assert same == lines and weights is holed
    assert support(lines, None) == (lines, None)
