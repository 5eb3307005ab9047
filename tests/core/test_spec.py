"""PatchSpec: normalisation, TensorFlow's geometry by hand-worked answers, windows, halos, plans."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchkit import PatchSpec, Window
from patchkit.errors import BudgetTooSmallError, InvalidImageError, InvalidSpecError, KernelTooLargeError, OutputTooLargeError
from patchkit.core.spec import effective_size, output_size, padding_amounts

from ..helpers import tf_taps


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


def test_spec_is_frozen_and_hashable():
    """A spec is a value: immutable, comparable, usable as a dict key."""
    spec = PatchSpec(3, 2)
    with pytest.raises(AttributeError):
        spec.sizes = (4, 4)
    assert spec == PatchSpec([1, 3, 3, 1], (2, 2), 1, "valid") and hash(spec) == hash(PatchSpec(3, 2))


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


def test_shapes_of_classic_uses():
    """The output shapes of the classic 16x16 uses on a 256x256x3 image."""
    assert PatchSpec(16, 16).output_shape((1, 256, 256, 3)) == (1, 16, 16, 768)
    assert PatchSpec(16, 8, padding="SAME").output_shape((32, 256, 256, 3)) == (32, 32, 32, 768)


def test_window_and_its_slices():
    """Windows start at i*stride - pad_before, span the effective kernel, and step by the rate."""
    spec = PatchSpec(2, 2, rates=2, padding="SAME")  # on 5x5: pads (1, 1)
    assert spec.window(0, 0, (5, 5)) == Window(-1, -1, 3, 3, 2, 2)
    assert spec.window(2, 1, (1, 5, 5, 1)) == Window(3, 1, 3, 3, 2, 2)
    assert spec.window(-1, -1, (5, 5)) == spec.window(2, 2, (5, 5))
    assert spec.window(1, 1, (5, 5)).toslices() == (slice(1, 4, 2), slice(1, 4, 2))
    with pytest.raises(IndexError, match="out of range"):
        spec.window(3, 0, (5, 5))


def test_input_rows_is_the_halo():
    """Output rows [i0, i1) need input rows [i0*s - top, (i1-1)*s - top + ke)."""
    spec = PatchSpec(16, 8, padding="SAME")
    shape = (1, 256, 256, 3)
    assert spec.input_rows(slice(2, 5), shape) == (12, 44)
    assert spec.input_rows((0, 1), shape) == (-4, 12)
    assert spec.input_rows((0, 1), shape, clip=True) == (0, 12)
    assert spec.input_rows((31, 32), shape, clip=True) == (244, 256)


@given(
    n=st.integers(1, 40), m=st.integers(1, 40), k=st.integers(1, 6), s=st.integers(1, 6), r=st.integers(1, 3),
    padding=st.sampled_from(["VALID", "SAME"]), data=st.data(),
)
def test_regions_partition_the_band(n, m, k, s, r, padding, data):
    """Regions tile a band exactly; 'inside' regions read only image pixels."""
    spec = PatchSpec(k, s, r, padding)
    if padding == "VALID" and effective_size(k, r) > min(n, m):
        return
    oh, ow = spec.grid_shape((n, m))
    i0 = data.draw(st.integers(0, oh - 1))
    i1 = data.draw(st.integers(i0 + 1, oh))
    covered = np.zeros((i1 - i0, ow), int)
    for region in spec.regions((i0, i1), (n, m)):
        covered[region.rows.start - i0 : region.rows.stop - i0, region.cols] += 1
        assert region.in_rows == spec.input_rows(region.rows, (n, m))
        if region.inside:
            assert 0 <= region.in_rows[0] and region.in_rows[1] <= n and 0 <= region.in_cols[0] and region.in_cols[1] <= m
    assert (covered == 1).all()


def test_bytes():
    """nbytes is the output's size; row_nbytes one row of patches over the batch."""
    spec = PatchSpec(256, 128)
    shape = (1, 4096, 4096, 4)
    assert spec.nbytes(shape, "float32") == 31 * 31 * 256 * 256 * 4 * 4
    assert spec.row_nbytes((2, 4096, 4096, 4), np.float32) == 2 * 31 * 256 * 256 * 4 * 4


def test_min_memory_counts_input_rows_for_lazy_sources():
    """A lazy source's minimum adds the clipped input rows of one row of patches."""
    spec = PatchSpec(256, 128)
    shape = (1, 4096, 4096, 4)
    eager = spec.min_memory(shape, "float32")
    assert eager == spec.row_nbytes(shape, "float32")
    assert spec.min_memory(shape, "float32", lazy=True) >= eager + 256 * 4096 * 4 * 4


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("budget", [1, 2, 3, 7, 100])
def test_plan_bands_cover_rows_within_budget(padding, lazy, budget):
    """Bands are contiguous, cover every output row, and each fits the budget."""
    spec = PatchSpec((5, 3), (2, 3), (1, 2), padding)
    shape, dtype = (2, 40, 30, 3), "int16"
    max_memory = spec.min_memory(shape, dtype, lazy=lazy) * budget
    plan = spec.plan(shape, dtype, max_memory, lazy=lazy)
    assert plan.bands[0].start == 0 and plan.bands[-1].stop == spec.grid_shape(shape)[0]
    assert all(a.stop == b.start for a, b in zip(plan.bands, plan.bands[1:]))
    assert plan.peak <= max_memory
    assert all(spec.band_memory(b, shape, dtype, lazy=lazy) <= max_memory for b in plan.bands)
    assert plan.band_rows == max(b.stop - b.start for b in plan.bands)


def test_plan_below_minimum_names_the_minimum():
    """A budget under one row of patches is refused with the minimum in bytes."""
    spec = PatchSpec(256, 128)
    shape = (1, 4096, 4096, 4)
    minimum = spec.min_memory(shape, "float32")
    with pytest.raises(BudgetTooSmallError, match=rf"raise max_memory to at least {minimum}"):
        spec.plan(shape, "float32", minimum - 1)


def test_plan_accounts_for_source_chunks():
    """Reading through big source chunks materialises them: the plan makes room."""
    spec = PatchSpec(16, 16)
    shape = (1, 512, 512, 1)
    plain = spec.min_memory(shape, "uint8", lazy=True)
    chunked = spec.min_memory(shape, "uint8", lazy=True, chunks=((1,), (256, 256), (512,), (1,)))
    assert chunked >= plain + 256 * 512


@pytest.mark.parametrize(
    "shape, error, match",
    [
        ((256, 256, 3), InvalidImageError, r"rank 3.*images\[np.newaxis\]"),
        ((1, 0, 256, 3), InvalidImageError, r"which is empty"),
        ((1, 8, 256, 3), KernelTooLargeError, r"kernel 16 \(effective 16\) is larger than the image height 8"),
    ],
)
def test_check_rejects_unusable_images(shape, error, match):
    """Wrong rank, empty axes and oversized VALID kernels are refused with the fix."""
    with pytest.raises(error, match=match):
        PatchSpec(16, 16).check(shape)


def test_check_names_the_rate():
    """The effective kernel message mentions the rate that made it large."""
    with pytest.raises(KernelTooLargeError, match=r"kernel 3 at rate 4 \(effective 9\).*width 8.*padding='SAME'"):
        PatchSpec(3, 1, 4).check((1, 20, 8, 1))


@pytest.mark.parametrize("spec", [PatchSpec(3, 2), PatchSpec((4, 5), (1, 2), (2, 3), "same")])
def test_dict_round_trip(spec):
    """to_dict is JSON-ready and from_dict gives the same spec back."""
    import json

    assert PatchSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize("spec", [PatchSpec(3, 2), PatchSpec((4, 5), (1, 3), (2, 3), "SAME"), PatchSpec(5, 4, 2, "SAME")])
def test_positions_walk_each_window(spec):
    """positions gives, for each patch, its window's first pixel then every rate-th one."""
    shape = (23, 19)
    rows, cols = spec.positions(shape)
    assert rows.shape == (spec.grid_shape(shape)[0], spec.sizes[0]) and cols.shape == (spec.grid_shape(shape)[1], spec.sizes[1])
    for i in range(rows.shape[0]):
        for j in range(cols.shape[0]):
            window = spec.window(i, j, shape)
            assert list(rows[i]) == list(range(window.row_off, window.row_off + window.height, spec.rates[0]))
            assert list(cols[j]) == list(range(window.col_off, window.col_off + window.width, spec.rates[1]))


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


@pytest.mark.parametrize("spec", [PatchSpec(3, 2), PatchSpec((4, 5), (1, 3), (2, 3), "SAME"), PatchSpec(5, 4, 2, "SAME")])
def test_starts_are_the_first_positions(spec):
    """starts gives the first column of positions, and positions_nbytes their bytes."""
    shape = (23, 19)
    rows, cols = spec.positions(shape)
    starts = spec.starts(shape)
    assert np.array_equal(starts[0], rows[:, 0]) and np.array_equal(starts[1], cols[:, 0])
    assert spec.positions_nbytes(shape) == rows.nbytes + cols.nbytes


def test_starts_do_not_grow_with_the_kernel():
    """A SAME kernel of two billion pixels has as many starts as patches: its positions would take exabytes."""
    spec = PatchSpec(2**31 - 1, 1, padding="SAME")
    rows, cols = spec.starts((64, 64))
    assert rows.shape == cols.shape == (64,) and rows[0] == -(2**31 - 2) // 2
    assert spec.positions_nbytes((64, 64)) == 8 * 2 * 64 * (2**31 - 1)


def test_patches_deeper_than_an_array_axis_are_refused():
    """kh * kw * channels beyond 2**59 values cannot be an array axis: OutputTooLargeError (TensorFlow's int32
    depth overflows there, giving a wrong shape)."""
    spec = PatchSpec(2**31 - 1, 1, padding="SAME")
    with pytest.raises(OutputTooLargeError, match=r"hold 13835058042397261827 values each.*use smaller sizes"):
        spec.tf_output_shape((1, 0, 0, 3))


@pytest.mark.parametrize("spec", [PatchSpec(3, 2, padding="SAME"), PatchSpec((5, 2), (1, 3), (2, 1), "SAME"),
                                  PatchSpec(9, 4, 1, "SAME"), PatchSpec(2, 2)], ids=str)
def test_halo_padding_is_the_taps_outside_the_image(spec):
    """halo_padding: the zero rows a band's clipped halo needs above and below are the band's first and last
    taps beyond the image (TensorFlow's taps), and the columns are the SAME padding of the whole image."""
    shape = (1, 11, 7, 1)
    taps = tf_taps(11, spec.sizes[0], spec.strides[0], spec.rates[0], spec.padding)
    for i0 in range(taps.shape[0]):
        for i1 in range(i0 + 1, taps.shape[0] + 1):
            band = taps[i0:i1]
            (top, bottom), cols = spec.halo_padding((i0, i1), shape)
            assert (top, bottom) == (max(-int(band.min()), 0), max(int(band.max()) + 1 - 11, 0))
            assert cols == spec.padding_amounts(shape)[1]
