"""patchkit.labelled.nodata: the nodata share of every patch, against a brute-force count and rasterio reads."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

from patchkit import PatchSpec
from patchkit.errors import PatchkitValueError
from patchkit.labelled.nodata import check_fraction, nodata_counts, nodata_fractions, nodata_values

from ..helpers import spec_cases, tf_grid, tf_grid_shape, tf_window, window_read

# ---- references -----------------------------------------------------------------------------------


def _missing(images: np.ndarray, markers) -> np.ndarray:
    """Which values of ``images`` are nodata: NaN (floats) or equal to a marker (numpy's own comparison)."""
    missing = np.isnan(images) if images.dtype.kind == "f" else np.zeros(images.shape, bool)
    for marker in markers:
        missing |= images == marker
    return missing


def _brute_counts(images: np.ndarray, spec: PatchSpec, markers) -> tuple[np.ndarray, int]:
    """Nodata count of every patch, by a loop over every patch and the pixels TensorFlow's rule says it reads
    (helpers.tf_grid: no patchkit geometry); taps outside the image (padding) count as nodata."""
    b, h, w, c = images.shape
    missing = _missing(images, markers)
    rows, cols = tf_grid((h, w), spec.sizes, spec.strides, spec.rates, spec.padding)
    (oh, kh), (ow, kw) = rows.shape, cols.shape
    counts = np.zeros((oh, ow), np.int64)
    for i in range(oh):
        for j in range(ow):
            r, col = rows[i][(rows[i] >= 0) & (rows[i] < h)], cols[j][(cols[j] >= 0) & (cols[j] < w)]
            outside = kh * kw - r.size * col.size
            counts[i, j] = missing[:, r][:, :, col].sum() + outside * b * c
    return counts, kh * kw * b * c


def _noisy_float(shape, seed, nan_share=0.15, marker_share=0.1, marker=-9999.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.normal(size=shape).astype(np.float32)
    images[rng.random(shape) < nan_share] = np.nan
    images[rng.random(shape) < marker_share] = marker
    return images


# ---- check_fraction -------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [(None, None), (0, 0.0), (0.5, 0.5), (1, 1.0), (np.float32(0.25), 0.25)])
def test_check_fraction_accepts(value, expected):
    """None and shares in [0, 1] are accepted (as floats)."""
    assert check_fraction(value) == expected


@pytest.mark.parametrize("value", [-0.1, 1.5, "abc", True, float("nan"), [0.5], 1 + 1e-9])
def test_check_fraction_refuses(value):
    """Anything but a share in [0, 1] is refused, naming the argument and its value."""
    with pytest.raises(PatchkitValueError, match=re.escape(f"max_nodata_fraction={value!r}")):
        check_fraction(value)


def test_check_fraction_names_argument():
    """The message names the argument it was given as."""
    with pytest.raises(PatchkitValueError, match=r"limit=2 must be a share between 0.0 and 1.0"):
        check_fraction(2, name="limit")


# ---- nodata_values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attrs, encoding, expected",
    [
        ({"_FillValue": -9999.0}, {}, {-9999.0}),
        ({"nodata": 0}, {}, {0}),
        ({"missing_value": 255}, {}, {255}),
        ({}, {"_FillValue": np.float32(-9999.0)}, {-9999.0}),
        ({"_FillValue": np.nan}, {}, set()),
        ({"nodata": np.float32("nan")}, {"_FillValue": np.nan}, set()),
        ({"_FillValue": -9999.0, "nodata": -9999}, {"_FillValue": np.float32(-9999.0)}, {-9999.0}),
        ({"nodata": 0}, {"_FillValue": 255}, {0, 255}),
        ({"missing_value": [1, 2, 1]}, {}, {1, 2}),
        ({"units": "m"}, {"dtype": "int16"}, set()),
    ],
    ids=["attrs-fill", "attrs-nodata", "attrs-missing", "encoding-fill", "nan", "nan-everywhere", "duplicates",
         "attrs-and-encoding", "list", "none"],
)
def test_nodata_values(attrs, encoding, expected):
    """Markers are found in attrs and encoding, without NaN and without duplicates."""
    da = xr.DataArray(np.zeros((2, 2)), dims=("y", "x"), attrs=attrs)
    da.encoding = encoding
    found = nodata_values(da)
    assert set(found) == expected and len(found) == len(expected)


@pytest.mark.parametrize("masked", [False, True])
def test_nodata_values_from_rioxarray(geotiffs, open_raster, masked):
    """The GeoTIFF's nodata is found whether rioxarray puts it in attrs or (masked=True) in encoding."""
    assert nodata_values(open_raster(geotiffs["nodata"], masked=masked)) == (-9999.0,)


# ---- nodata_counts / nodata_fractions -------------------------------------------------------------


@st.composite
def _cases(draw):
    case = draw(spec_cases(height=20, kernel=5, stride=4, rate=3))
    shape, spec = case.shape, case.spec
    dtype = draw(st.sampled_from(["float32", "uint8"]))
    if dtype == "float32":
        markers = draw(st.sampled_from([(), (-9999.0,), (-9999.0, 7.0)]))
    else:
        markers = draw(st.sampled_from([(0,), (0, -9999), (-9999, 256), (3, -9999.0, 0)]))
    return shape, spec, dtype, markers, draw(st.integers(0, 2**32 - 1)), draw(st.booleans())


def _case_images(shape, dtype, seed):
    if dtype == "float32":
        images = _noisy_float(shape, seed)
        images[np.random.default_rng(seed + 1).random(shape) < 0.05] = 7.0
        return images
    return np.random.default_rng(seed).integers(0, 4, size=shape, dtype=np.uint8)


@given(_cases())
def test_counts_match_brute_force(case):
    """Counts and fractions equal a brute-force count over an explicitly padded mask, for any spec and budget."""
    shape, spec, dtype, markers, seed, tight = case
    images = _case_images(shape, dtype, seed)
    max_memory = spec.min_memory(shape, dtype) if tight else "512MiB"
    expected, total = _brute_counts(images, spec, markers)
    counts, got_total = nodata_counts(images, spec, markers, max_memory=max_memory)
    assert got_total == total
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(nodata_fractions(images, spec, markers, max_memory=max_memory), expected / total)


@pytest.mark.parametrize(
    "markers, expected_markers",
    [((-9999,), ()), ((256,), ()), ((-1.5,), ()), ((0, -9999, 300), (0,)), ((2.0,), (2,))],
)
def test_unrepresentable_markers_ignored(markers, expected_markers):
    """Markers a uint8 image cannot hold (-9999, 256, -1.5) never count; representable ones do."""
    images = np.random.default_rng(5).integers(0, 4, size=(2, 9, 11, 2), dtype=np.uint8)
    spec = PatchSpec(3, 2, padding="SAME")
    expected, _ = _brute_counts(images, spec, expected_markers)
    np.testing.assert_array_equal(nodata_counts(images, spec, markers)[0], expected)


@pytest.mark.parametrize(
    "spec, chunks",
    [
        (PatchSpec(5, 3, padding="SAME"), (1, 7, 10, 2)),
        (PatchSpec((4, 6), (2, 5), rates=2, padding="SAME"), (2, 5, 41, 3)),
        (PatchSpec(7, 4), (1, 37, 13, 1)),
        (PatchSpec((3, 2), (3, 1), rates=(3, 1)), (2, 9, 8, 3)),
        (PatchSpec(6, 5, rates=(1, 2), padding="SAME"), (1, 37, 13, 1)),
    ],
)
def test_dask_counts_match_numpy(spec, chunks):
    """A chunked dask image under the smallest budget counts the same as numpy and the brute force."""
    da = pytest.importorskip("dask.array")
    images = _noisy_float((2, 37, 41, 3), seed=11)
    lazy = da.from_array(images, chunks=chunks)
    max_memory = spec.min_memory(images.shape, images.dtype, lazy=True, chunks=lazy.chunks)
    counts, total = nodata_counts(lazy, spec, (-9999.0,), max_memory=max_memory)
    eager, eager_total = nodata_counts(images, spec, (-9999.0,))
    expected, expected_total = _brute_counts(images, spec, (-9999.0,))
    assert total == eager_total == expected_total
    np.testing.assert_array_equal(counts, eager)
    np.testing.assert_array_equal(counts, expected)


# ---- through the accessor -------------------------------------------------------------------------

ACCESSOR_SPECS = [PatchSpec(8, 6, padding="SAME"), PatchSpec(5, 4, rates=2, padding="SAME")]


def _args(spec: PatchSpec) -> tuple:
    """A spec's arguments, for the helpers that work out TensorFlow's geometry from them."""
    return spec.sizes, spec.strides, spec.rates, spec.padding


@functools.lru_cache(maxsize=8)
def _reference_shares(path, spec: PatchSpec) -> np.ndarray:
    """Nodata share (nodata value, NaN, outside the image) of every patch, from a rasterio read of its window."""
    import rasterio

    with rasterio.open(path) as src:
        h, w, nodata = src.height, src.width, src.nodata
    oh, ow = tf_grid_shape((h, w), *_args(spec))
    shares = np.full((oh, ow), np.nan)
    for i in range(oh):
        for j in range(ow):
            win = tf_window(i, j, (h, w), *_args(spec))
            data = window_read(path, win, spec.rates)
            rows = np.arange(win.row_off, win.row_off + win.height, spec.rates[0])
            cols = np.arange(win.col_off, win.col_off + win.width, spec.rates[1])
            outside = ~(((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :])
            bad = (data == nodata) | np.isnan(data) | outside[None]
            shares[i, j] = bad.sum() / bad.size
    return shares


def _reference_kept(path, spec: PatchSpec, fraction: float) -> list[tuple[int, int]]:
    """The ``(row, col)`` of the patches whose reference share is at most ``fraction``, row-major."""
    shares = _reference_shares(str(path), spec)
    return [(i, j) for i in range(shares.shape[0]) for j in range(shares.shape[1]) if shares[i, j] <= fraction]


def _extract(da, spec: PatchSpec, fraction):
    return da.patches.extract(spec.sizes, spec.strides, spec.rates, spec.padding, max_nodata_fraction=fraction)


@pytest.mark.parametrize("spec", ACCESSOR_SPECS)
@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_accessor_keeps_reference_patches(geotiffs, open_raster, spec, fraction):
    """extract(max_nodata_fraction=f) keeps exactly the patches rasterio reads say, row-major, with their pixels."""
    path = geotiffs["nodata"]
    expected = _reference_kept(path, spec, fraction)
    assert expected  # the fixture has clean patches for every fraction
    da = open_raster(path)
    out = _extract(da, spec, fraction)
    assert out.dims == ("patch", "band", "y", "x")
    assert list(zip(out.patch_row.values.tolist(), out.patch_col.values.tolist())) == expected
    shape = (da.sizes["y"], da.sizes["x"])
    for k, (i, j) in enumerate(expected):
        np.testing.assert_array_equal(out.isel(patch=k).values, window_read(path, tf_window(i, j, shape, *_args(spec)), spec.rates))


def test_accessor_fractions_differ(geotiffs, open_raster):
    """The fixture makes the three fractions keep different, growing sets of patches (so the tests above bite)."""
    spec = ACCESSOR_SPECS[0]
    sizes = [_extract(open_raster(geotiffs["nodata"]), spec, f).sizes["patch"] for f in (0.0, 0.3, 1.0)]
    assert sizes[0] < sizes[1] < sizes[2] == np.prod(tf_grid_shape((40, 45), *_args(spec)))


@pytest.mark.parametrize("spec", ACCESSOR_SPECS)
@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_accessor_dask_matches_eager(geotiffs, open_raster, spec, fraction):
    """A dask-chunked raster gives a lazy result identical, once computed, to the eager one."""
    dask_array = pytest.importorskip("dask.array")
    path = geotiffs["nodata"]
    eager = _extract(open_raster(path), spec, fraction)
    lazy = _extract(open_raster(path, chunks={"x": 16, "y": 16}), spec, fraction)
    assert isinstance(lazy.data, dask_array.Array)
    xr.testing.assert_identical(lazy.compute(), eager)


@pytest.mark.parametrize("spec", ACCESSOR_SPECS)
@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("max_memory", ["8KiB", "16KiB"])
def test_accessor_iter_matches_extract(geotiffs, open_raster, spec, fraction, max_memory):
    """Bands from .patches.iter, concatenated along ``patch``, equal .patches.extract with the same filter."""
    da = open_raster(geotiffs["nodata"])
    eager = _extract(da, spec, fraction)
    bands = [band.copy() for band in da.patches.iter(spec.sizes, spec.strides, spec.rates, spec.padding,
                                                      max_memory=max_memory, max_nodata_fraction=fraction)]
    assert len(bands) > 1
    xr.testing.assert_identical(xr.concat(bands, dim="patch"), eager)
