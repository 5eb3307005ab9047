"""Tests of patchkit.core.spec.normalize: sizes, strides, rates and padding as TensorFlow takes them, and what is refused."""

from __future__ import annotations

import numpy as np
import pytest

from patchkit import PatchSpec
from patchkit.errors import InvalidSpecError




@pytest.mark.parametrize(
    "value, expected",
    [(3, (3, 3)), ((3, 5), (3, 5)), ([1, 3, 5, 1], (3, 5)), (np.array([2, 4]), (2, 4)), ((np.int64(2), 7), (2, 7))],
)
def test_forms_normalise_to_pairs(value, expected):
    """Scalar, pair, TensorFlow 4-vector and numpy forms all mean the same spec."""
    assert PatchSpec(value, value).sizes == expected


def test_padding_any_case():
    """'same', 'Same' and b'SAME' are accepted like 'SAME'."""
    assert {PatchSpec(2, 2, padding=p).padding for p in ("same", "Same", b"SAME")} == {"SAME"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sizes=0, strides=1), r"sizes=0 must be positive, got 0"),
        (dict(sizes=(3, -1), strides=1), r"sizes=\(3, -1\) must be positive"),
        (dict(sizes=3, strides=1.5), r"strides=1.5 must hold integers"),
        (dict(sizes=3, strides=True), r"strides=True must hold integers"),
        (dict(sizes="3", strides=1), r"sizes='3' must hold integers"),
        (dict(sizes=(3, 3, 3), strides=1), r"sizes=\(3, 3, 3\) has length 3"),
        (dict(sizes=[2, 3, 3, 1], strides=1), r"batch and depth entries must be 1.*\[1, 3, 3, 1\]"),
        (dict(sizes=3, strides=[1, 2, 2, 3]), r"strides=\[1, 2, 2, 3\].*batch and depth"),
        (dict(sizes=None, strides=1), r"sizes is required, got None"),
        (dict(sizes=3, strides=None), r"strides is required, got None"),
        (dict(sizes=3, strides=1, rates=0), r"rates=0 must be positive"),
        (dict(sizes=3, strides=1, padding="FULL"), r"padding='FULL' is not supported; use 'VALID' or 'SAME'"),
        (dict(sizes=3, strides=1, padding=None), r"padding=None is not supported"),
    ],
)
def test_bad_spec_arguments(kwargs, match):
    """Each malformed argument is named with its value and the fix."""
    with pytest.raises(InvalidSpecError, match=match):
        PatchSpec(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sizes=2**31), r"sizes=2147483648 holds 2147483648, more than 2\*\*31 - 1.*int32"),
        (dict(strides=[1, 2**40, 2, 1]), r"strides=\[1, 1099511627776, 2, 1\] holds 1099511627776"),
        (dict(rates=(1, 2**63)), r"rates=\(1, 9223372036854775808\) holds"),
        (dict(sizes=float("inf")), r"sizes=inf must hold integers"),
        (dict(sizes=(2, float("nan"))), r"sizes=\(2, nan\) must hold integers, got nan"),
        (dict(sizes={3, 4}), r"sizes=\{3, 4\} is a set, which has no order"),
        (dict(sizes={"rows": 3}), r"is a dict, which has no order"),
        (dict(sizes=()), r"sizes=\(\) has length 0"),
        (dict(sizes=(1, 2, 3)), r"has length 3"),
        (dict(padding=b"\xff"), "padding='\ufffd' is not supported"),
        (dict(sizes=np.bool_(True)), r"must hold integers, got np.True_"),
    ],
)
def test_hostile_values_are_refused_by_name(kwargs, match):
    """Values beyond TensorFlow's int32 attrs, NaN, infinity, unordered containers and bad bytes are refused
    with the argument, the value and the fix."""
    args = dict(sizes=2, strides=1, rates=1, padding="SAME") | kwargs
    with pytest.raises(InvalidSpecError, match=match):
        PatchSpec(**args)


def test_huge_integers_in_messages_are_described():
    """An integer too long for repr (over 4300 digits) is described by its size, not a ValueError of its own."""
    with pytest.raises(InvalidSpecError, match=r"sizes=<an integer of 16610 bits> holds"):
        PatchSpec(10**5000, 1)


def test_largest_values_are_accepted():
    """2**31 - 1 is TensorFlow's largest, and patchkit takes it (SAME gives ceil(n / stride) patches)."""
    spec = PatchSpec(2**31 - 1, 2**31 - 1, 2**31 - 1, "SAME")
    assert spec.grid_shape((5, 7)) == (1, 1)
