"""stitch.windows: blend windows (the registry, scipy's windows, callables) and the crop, as weights."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from patchkit import extract_patches
from patchkit.errors import PatchkitValueError
from patchkit.stitch import WINDOWS, blend_weights, normalize_crop, register_window, stitch

needs_scipy = pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="scipy.signal.windows needs scipy")


@pytest.mark.parametrize("k", [1, 2, 3, 8, 9, 64, 255])
def test_cosine_weights_are_smooth_symmetric_and_never_zero(k):
    """The cosine window is positive everywhere, symmetric, at most 1, largest in the middle."""
    weights = blend_weights("cosine", (k, k + 1))
    assert weights.shape == (k, k + 1)
    assert np.all(weights > 0) and np.all(weights <= 1)
    np.testing.assert_allclose(weights, weights[::-1, ::-1])
    row = weights[:, (k + 1) // 2]
    assert np.all(np.diff(row[: (k + 1) // 2]) >= 0)


@needs_scipy
def test_scipy_windows_are_separable_outer_products():
    """A scipy.signal.windows name or (name, parameter) gives the outer product of get_window(..., fftbins=False)."""
    from scipy.signal.windows import get_window

    for blend in ("hamming", ("kaiser", 4.0)):
        expected = np.outer(get_window(blend, 6, fftbins=False), get_window(blend, 4, fftbins=False))
        np.testing.assert_allclose(blend_weights(blend, (6, 4)), expected)


def test_a_registered_window_is_a_blend_by_name():
    """register_window adds a named blend: the same result as the equivalent callable; patchkit's own names stay theirs."""
    def triangle(k):
        return 1.0 + np.minimum(np.arange(k), np.arange(k)[::-1])

    patches = extract_patches(np.random.default_rng(2).random((1, 23, 19, 2)), 6, 4, padding="SAME")
    register_window("triangle", triangle)
    try:
        named = stitch(patches, "triangle", spec=dict(sizes=6, strides=4, padding="SAME"), image_shape=(23, 19))
        called = stitch(patches, lambda kh, kw: np.outer(triangle(kh), triangle(kw)),
                                 spec=dict(sizes=6, strides=4, padding="SAME"), image_shape=(23, 19))
        np.testing.assert_array_equal(named, called)
        with pytest.raises(PatchkitValueError, match="needs a new name"):
            register_window("mean", triangle)
    finally:
        WINDOWS.pop("triangle", None)


@needs_scipy
def test_round_off_below_zero_at_zero_ends_is_zero():
    """scipy's blackman ends at -1.4e-17: taken as the 0 it stands for, the rest as scipy gives it."""
    from scipy.signal.windows import get_window

    window = get_window("blackman", 5, fftbins=False)
    weights = blend_weights("blackman", (5, 1))[:, 0]  # times the one tap of a 1-column window, 1.0
    assert window[0] < 0 and weights[0] == weights[-1] == 0.0
    np.testing.assert_array_equal(weights[1:-1], window[1:-1])
    assert blend_weights("none", (5, 1)) is None


def test_crop_is_a_pair_that_leaves_a_tap():
    """crop is an integer or a (rows, cols) pair, at least 0, leaving at least one tap of each axis."""
    assert normalize_crop(1, (4, 3)) == (1, 1) and normalize_crop((0, 2), (3, 5)) == (0, 2)
    with pytest.raises(PatchkitValueError, match=r"crop=2 drops 2 cols from each side of patches of 4 cols.*at most 1"):
        normalize_crop(2, (5, 4))
    with pytest.raises(PatchkitValueError, match=r"crop=\(1, True\) must be an integer or a \(rows, cols\) pair"):
        normalize_crop((1, True), (5, 4))


@pytest.mark.parametrize("shape", [(64, 48), (7, 8), (1, 5)])
def test_gaussian_is_monais_importance_map(shape):
    """``"gaussian"``: exp(-x^2 / (2 sigma^2)) per axis about the patch's centre, sigma = 0.125 x size, outer
    product, floored at 1e-3 (MONAI's compute_importance_map, mode="gaussian"); symmetric, largest in the middle."""
    from patchkit.stitch import GAUSSIAN_FLOOR, SIGMA_SCALE

    weights = blend_weights("gaussian", shape)
    axes = [np.exp(-((np.arange(k) - (k - 1) / 2) ** 2) / (2 * (SIGMA_SCALE * k) ** 2)) for k in shape]
    np.testing.assert_allclose(weights, np.maximum(axes[0][:, None] * axes[1][None, :], GAUSSIAN_FLOOR), rtol=1e-12)
    np.testing.assert_array_equal(weights, weights[::-1, ::-1])
    assert weights.min() >= GAUSSIAN_FLOOR and weights.max() <= 1
    assert weights[shape[0] // 2, shape[1] // 2] == weights.max()
    if min(shape) >= 48:
        assert weights[0, 0] == GAUSSIAN_FLOOR  # the corners are floored, never zero


def test_gaussian_sigma_scale_and_bad_values():
    """gaussian(s) widens with s, takes one scale per axis, and refuses what is not a positive number."""
    from patchkit.errors import PatchkitValueError
    from patchkit.stitch import gaussian

    narrow, wide = blend_weights(gaussian(0.1), (32, 32)), blend_weights(gaussian(0.5), (32, 32))
    assert (wide[0] > narrow[0]).all()
    rows_only = blend_weights(gaussian((0.1, 10.0)), (32, 32))
    assert np.ptp(rows_only[16]) < 1e-2 and np.ptp(rows_only[:, 16]) > 0.5
    for bad in (0, -1, float("nan"), "wide", (0.1,), True):
        with pytest.raises(PatchkitValueError, match=r"sigma_scale=.*positive number"):
            gaussian(bad)
