"""PatchSpec: normalisation, TensorFlow's geometry by hand-worked answers, windows, halos, plans."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchkit import PatchSpec, Window
from patchkit.errors import InvalidImageError, KernelTooLargeError, OutputTooLargeError
from patchkit.core.spec import effective_size

from ...helpers import tf_taps


def test_spec_is_frozen_and_hashable():
    """A spec is a value: immutable, comparable, usable as a dict key."""
    spec = PatchSpec(3, 2)
    with pytest.raises(AttributeError):
        spec.sizes = (4, 4)
    assert spec == PatchSpec([1, 3, 3, 1], (2, 2), 1, "valid") and hash(spec) == hash(PatchSpec(3, 2))


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
    """nbytes is the output's size; row_nbytes one row of patches over the batch; patch_nbytes one patch over it."""
    spec = PatchSpec(256, 128)
    shape = (1, 4096, 4096, 4)
    assert spec.nbytes(shape, "float32") == 31 * 31 * 256 * 256 * 4 * 4
    assert spec.row_nbytes((2, 4096, 4096, 4), np.float32) == 2 * 31 * 256 * 256 * 4 * 4
    assert spec.patch_nbytes((2, 4096, 4096, 4), np.float32) == 2 * 256 * 256 * 4 * 4


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
