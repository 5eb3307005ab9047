"""Tests of patchkit.core.spec.axis: one axis by TensorFlow's rules, against hand-worked answers."""

from __future__ import annotations

import pytest

from patchkit.core.spec import effective_size, output_size, padding_amounts




@pytest.mark.parametrize(
    "n, k, s, r, padding, out, pads",
    [
        (7, 4, 1, 1, "SAME", 7, (1, 2)),  # odd total padding: the extra zero goes after
        (10, 3, 4, 1, "SAME", 3, (0, 1)),
        (256, 16, 8, 1, "SAME", 32, (4, 4)),
        (256, 16, 16, 1, "VALID", 16, (0, 0)),
        (9, 3, 2, 2, "VALID", 3, (0, 0)),  # dilation: effective kernel 5
        (5, 2, 2, 2, "SAME", 3, (1, 1)),
        (4, 1, 5, 1, "SAME", 1, (0, 0)),  # stride longer than the image: no negative padding
    ],
)
def test_axis_geometry_known_answers(n, k, s, r, padding, out, pads):
    """Output length and padding split, worked by hand from TensorFlow's rules."""
    assert output_size(n, k, s, r, padding) == out
    assert padding_amounts(n, k, s, r, padding) == pads


def test_effective_size():
    """k + (k - 1)(r - 1)."""
    assert [effective_size(3, r) for r in (1, 2, 3)] == [3, 5, 7]
