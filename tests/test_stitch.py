"""stitch: patches back to the image, exact where they agree, blended where they differ, streamed to disk."""

from __future__ import annotations

import importlib.util
import tracemalloc

import numpy as np
import pytest
import xarray as xr
from hypothesis import assume, given
from hypothesis import strategies as st

from patchkit import PatchSpec, extract_patches
from patchkit.errors import BudgetTooSmallError, DimensionError, KernelTooLargeError, PatchkitTypeError, PatchkitValueError
from patchkit.spec import effective_size
from patchkit.stitch import axis_coordinate, axis_ops, blend_weights, normalize_crop, stitch
from patchkit.testing import lazy_scene

from .helpers import ALL_DTYPES, random_image


needs_scipy = pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="scipy.signal.windows needs scipy")


def _ramp(kh: int, kw: int) -> np.ndarray:
    """A positive, non-separable, asymmetric callable blend."""
    return 1.0 + np.add.outer(np.arange(kh), 2 * np.arange(kw)) ** 1.5


BLENDS = ["mean", "cosine", "none", pytest.param("hamming", marks=needs_scipy), _ramp]
SPECS = [
    dict(sizes=8, strides=4),
    dict(sizes=(7, 5), strides=(4, 3), padding="SAME"),
    dict(sizes=(4, 3), strides=(3, 2), rates=2, padding="SAME"),
    dict(sizes=3, strides=2, rates=2),
]


def coverage(spec: PatchSpec, shape, crop=(0, 0), keep=None) -> np.ndarray:
    """Which pixels ``[h, w]`` some kept tap of some (kept) patch samples, by brute force."""
    rows, cols = spec.positions(shape)
    (kh, kw), (ch, cw) = spec.sizes, crop
    out = np.zeros(shape, bool)
    for i in range(rows.shape[0]):
        for j in range(cols.shape[0]):
            if keep is not None and not keep[i, j]:
                continue
            r, c = rows[i, ch:kh - ch], cols[j, cw:kw - cw]
            r, c = r[(r >= 0) & (r < shape[0])], c[(c >= 0) & (c < shape[1])]
            out[np.ix_(r, c)] = True
    return out


def assert_same(actual, expected) -> None:
    """Same shape, dtype and bits, except that NaN matches any NaN (signalling NaNs come back quiet)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (actual.shape, actual.dtype, expected.dtype)
    actual, expected = np.ascontiguousarray(actual), np.ascontiguousarray(expected)
    differs = (actual.view(np.uint8) != expected.view(np.uint8)).reshape(actual.shape + (-1,)).any(-1)
    if actual.dtype.kind in "fcV":
        with np.errstate(invalid="ignore"):
            nan = np.isnan(actual.astype(np.complex128 if actual.dtype.kind == "c" else np.float64))
            both = nan & np.isnan(expected.astype(np.complex128 if actual.dtype.kind == "c" else np.float64))
        differs &= ~both
    assert not differs.any(), f"{int(differs.sum())} of {actual.size} differ; first at {np.argwhere(differs)[0]}"


def expected_image(source: xr.DataArray, mask: np.ndarray, fill) -> xr.DataArray:
    """The source with pixels outside ``mask`` set to ``fill``, labels untouched."""
    return source.copy(data=np.where(mask, source.values, np.asarray(fill, source.dtype)))


def brute_force(patches6: np.ndarray, spec: PatchSpec, shape, weights, crop=(0, 0), keep=None) -> np.ndarray:
    """The weighted mean of every pixel, summed patch by patch and tap by tap in Python (NaN where none)."""
    b, oh, ow, kh, kw, c = patches6.shape
    num, den = np.zeros((b, *shape, c)), np.zeros(shape)
    rows, cols = spec.positions(shape)
    for i in range(oh):
        for j in range(ow):
            if keep is not None and not keep[i, j]:
                continue
            for a in range(crop[0], kh - crop[0]):
                for d in range(crop[1], kw - crop[1]):
                    y, x = rows[i, a], cols[j, d]
                    if 0 <= y < shape[0] and 0 <= x < shape[1]:
                        w = weights[a - crop[0], d - crop[1]]
                        num[:, y, x] += w * patches6[:, i, j, a, d].astype(np.float64)
                        den[y, x] += w
    with np.errstate(invalid="ignore"):
        return num / den[None, :, :, None]


# ---- round trips on GeoTIFFs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rasters(geotiffs) -> dict:
    """The single-date GeoTIFFs read with rioxarray and loaded, once for the module (never modified)."""
    rioxarray = pytest.importorskip("rioxarray")
    return {name: rioxarray.open_rasterio(geotiffs[name]).load() for name in ("projected", "nonsquare", "nodata")}


@pytest.mark.parametrize("crop", [0, 1])
@pytest.mark.parametrize("blend", BLENDS, ids=lambda b: getattr(b, "__name__", b))
@pytest.mark.parametrize("kwargs", SPECS)
@pytest.mark.parametrize("name", ["projected", "nonsquare", "nodata"])
def test_round_trip_on_geotiffs(rasters, name, kwargs, blend, crop):
    """extract → stitch gives the raster back, identical (values, coords, attrs, CRS), fill where nothing samples."""
    source = rasters[name]
    spec = PatchSpec(**kwargs)
    shape = (source.sizes["y"], source.sizes["x"])
    mask = coverage(spec, shape, normalize_crop(crop, spec.sizes))
    result = stitch(source.patches.extract(**kwargs), blend, crop=crop)
    fill = source.attrs.get("_FillValue", np.nan if source.dtype.kind == "f" else 0)
    xr.testing.assert_identical(result, expected_image(source, mask, fill))
    assert result.rio.crs == source.rio.crs and result.rio.transform() == source.rio.transform()
    if mask.all():
        xr.testing.assert_identical(result, source)


@pytest.mark.parametrize("kwargs", [dict(sizes=5, strides=4), dict(sizes=6, strides=3, padding="SAME")])
def test_covering_grids_give_the_source_back(rasters, kwargs):
    """VALID grids that reach the last row and column, and SAME grids with stride <= kernel, lose nothing."""
    source = rasters["projected"]
    assert coverage(PatchSpec(**kwargs), (61, 53)).all()
    for blend in ["mean", "cosine", "none", _ramp]:
        xr.testing.assert_identical(stitch(source.patches.extract(**kwargs), blend), source)


def test_leading_dims_round_trip(stacked):
    """A (time, band, y, x) stack comes back with its time and band labels."""
    source = stacked.load()
    result = stitch(source.patches.extract((6, 5), 3, padding="SAME"), "cosine")
    assert result.dims == ("time", "band", "y", "x")
    xr.testing.assert_identical(result, source)


@pytest.mark.parametrize("dtype", ["float64", "int64", "uint64", "complex64", "uint8", "float16"])
@pytest.mark.parametrize("blend", ["mean", "cosine", "none"])
def test_labelled_round_trip_of_every_kind_of_dtype(dtype, blend):
    """Random bit patterns in (time, band, y, x) come back bit for bit, through every accumulation path."""
    source = xr.DataArray(random_image((2, 3, 11, 9), dtype), dims=("time", "band", "y", "x"))
    result = stitch(source.patches.extract((4, 3), (2, 1), rates=(1, 2), padding="SAME"), blend)
    assert result.dims == source.dims
    assert_same(result.values, source.values)


def test_channels_last_source_comes_back_channels_first():
    """A (y, x, channel) array comes back as (channel, y, x): channels always precede y, x."""
    source = xr.DataArray(random_image((9, 11, 2), "float32"), dims=("y", "x", "channel"))
    result = stitch(source.patches.extract(3, 2, padding="SAME"))
    assert result.dims == ("channel", "y", "x")
    assert_same(result.values, source.transpose("channel", "y", "x").values)


# ---- TensorFlow's layout ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8", "int64", "complex64", "bool", "bfloat16"])
@pytest.mark.parametrize("kwargs", [dict(sizes=4, strides=2, padding="SAME"),
                                    dict(sizes=(3, 5), strides=(1, 2), rates=(2, 1), padding="SAME")])
@pytest.mark.parametrize("as_dict", [False, True])
def test_tf_layout_round_trip(dtype, kwargs, as_dict):
    """[batch, out_rows, out_cols, kh*kw*C] from extract_patches comes back as the [batch, h, w, C] image."""
    image = random_image((2, 13, 17, 3), dtype)
    spec = PatchSpec(**kwargs)
    patches = extract_patches(image, **kwargs)
    for blend in ("mean", "cosine", "none"):
        given = dict(spec=spec.to_dict(), image_shape=image.shape) if as_dict else dict(spec=spec, image_shape=(13, 17))
        result = stitch(patches, blend, **given)
        assert_same(result, image)


@given(
    shape=st.tuples(st.integers(1, 2), st.integers(1, 14), st.integers(1, 14), st.integers(1, 3)),
    k=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    s=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    r=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.sampled_from(["VALID", "SAME"]),
    dtype=st.sampled_from(ALL_DTYPES),
    blend=st.sampled_from(["mean", "cosine", "none", _ramp]),
    crop=st.tuples(st.integers(0, 2), st.integers(0, 2)),
)
def test_extract_then_stitch_is_identity_where_covered(shape, k, s, r, padding, dtype, blend, crop):
    """For any spec, dtype and blend, stitching extracted patches gives every covered pixel back bit for bit."""
    if padding == "VALID":
        assume(all(effective_size(a, b) <= n for a, b, n in zip(k, r, shape[1:3])))
    crop = tuple(min(c, (kk - 1) // 2) for c, kk in zip(crop, k))
    image = random_image(shape, dtype)
    spec = PatchSpec(k, s, r, padding)
    result = stitch(extract_patches(image, k, s, r, padding), blend, spec=spec, image_shape=shape, crop=crop, fill_value=0)
    mask = coverage(spec, shape[1:3], crop)[None, :, :, None]
    assert_same(result, np.where(mask, image, np.zeros((), image.dtype)))


# ---- blending --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("blend", ["mean", "cosine", pytest.param("hamming", marks=needs_scipy), _ramp],
                         ids=lambda b: getattr(b, "__name__", b))
@pytest.mark.parametrize("kwargs, crop", [(dict(sizes=4, strides=2), 0), (dict(sizes=(5, 4), strides=(2, 1), rates=2, padding="SAME"), 1),
                                          (dict(sizes=(6, 5), strides=(3, 2), padding="SAME"), (2, 1))])
def test_blend_of_different_values_is_the_weighted_mean(dtype, blend, kwargs, crop):
    """Overlapping patches of different values blend to the weighted mean a Python loop over patches computes."""
    spec, shape = PatchSpec(**kwargs), (11, 9)
    (oh, ow), (kh, kw) = spec.grid_shape(shape), spec.sizes
    patches6 = np.random.default_rng(5).normal(size=(2, oh, ow, kh, kw, 3)).astype(dtype)
    crop2 = normalize_crop(crop, spec.sizes)
    weights = blend_weights(blend, (kh - 2 * crop2[0], kw - 2 * crop2[1]))
    result = stitch(patches6.reshape(2, oh, ow, -1), blend, spec=spec, image_shape=shape, crop=crop)
    expected = brute_force(patches6, spec, shape, weights, crop2).astype(dtype)
    assert result.dtype == np.dtype(dtype)
    np.testing.assert_allclose(result, expected, rtol=1e-6 if dtype == "float32" else 1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(sizes=4, strides=2), dict(sizes=(3, 5), strides=(1, 2), rates=2, padding="SAME")])
def test_none_keeps_the_last_patch_in_row_major_order(kwargs):
    """blend='none' gives each pixel the value of the last patch (row-major) that samples it."""
    spec, shape = PatchSpec(**kwargs), (10, 12)
    (oh, ow), (kh, kw) = spec.grid_shape(shape), spec.sizes
    patches6 = np.random.default_rng(1).integers(0, 1000, (1, oh, ow, kh, kw, 2)).astype(np.int32)
    expected = np.zeros((1, *shape, 2), np.int32)
    rows, cols = spec.positions(shape)
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for b in range(kw):
                    if 0 <= rows[i, a] < shape[0] and 0 <= cols[j, b] < shape[1]:
                        expected[:, rows[i, a], cols[j, b]] = patches6[:, i, j, a, b]
    result = stitch(patches6.reshape(1, oh, ow, -1), "none", spec=spec, image_shape=shape, fill_value=0)
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("k", [1, 2, 3, 8, 9, 64, 255])
def test_cosine_weights_are_smooth_symmetric_and_never_zero(k):
    """The cosine window is positive everywhere, symmetric, at most 1, largest in the middle."""
    weights = blend_weights("cosine", (k, k + 1))
    assert weights.shape == (k, k + 1)
    assert np.all(weights > 0) and np.all(weights <= 1)
    np.testing.assert_allclose(weights, weights[::-1, ::-1])
    row = weights[:, (k + 1) // 2]
    assert np.all(np.diff(row[: (k + 1) // 2]) >= 0)


def test_cosine_hides_the_seam_that_mean_leaves():
    """Two constant patches 0 and 1 meet in a ramp under cosine, in jumps of 1/2 under mean."""
    spec = PatchSpec((1, 8), (1, 4))
    patches = np.stack([np.zeros(8), np.ones(8)]).reshape(1, 1, 2, 8)
    jump = {b: np.abs(np.diff(stitch(patches, b, spec=spec, image_shape=(1, 12))[0, 0, :, 0])).max() for b in ("mean", "cosine")}
    assert jump["mean"] == 0.5 and jump["cosine"] < 0.4


@needs_scipy
def test_scipy_windows_are_separable_outer_products():
    """A scipy.signal.windows name or (name, parameter) gives the outer product of get_window(..., fftbins=False)."""
    from scipy.signal.windows import get_window

    for blend in ("hamming", ("kaiser", 4.0)):
        expected = np.outer(get_window(blend, 6, fftbins=False), get_window(blend, 4, fftbins=False))
        np.testing.assert_allclose(blend_weights(blend, (6, 4)), expected)


# ---- geometry helpers ------------------------------------------------------------------------------


@given(n=st.integers(1, 40), k=st.integers(1, 9), s=st.integers(1, 9), r=st.integers(1, 4), crop=st.integers(0, 4),
       padding=st.sampled_from(["VALID", "SAME"]), lo=st.integers(0, 39), span=st.integers(1, 40))
def test_axis_ops_put_every_tap_on_its_pixel_once(n, k, s, r, crop, padding, lo, span):
    """The steps of an axis cover exactly the (patch, tap) pairs landing in the band, each once, in writing order."""
    from patchkit.stitch import _lines

    assume(padding == "SAME" or effective_size(k, r) <= n)
    crop, lo = min(crop, (k - 1) // 2), lo % n
    hi = min(n, lo + span)
    spec = PatchSpec((k, 1), (s, 1), (r, 1), padding)
    line = _lines(spec, (n, 1), (crop, 0))[0]
    p0, p1 = (int(v) for v in line.needed(lo, hi))
    positions = spec.positions((n, 1))[0]
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
    expected = {(i, a) for i in range(spec.grid_shape((n, 1))[0]) for a in range(crop, k - crop) if lo <= positions[i, a] < hi}
    assert set(seen) == expected


def test_axis_coordinate_fills_rows_no_patch_samples():
    """Sampled rows keep their values; gaps take the pixel step; without a step or samples they are NaN."""
    values = np.array([[10.0, 20.0], [50.0, 60.0]])
    positions = np.array([[0, 1], [4, 5]])
    np.testing.assert_array_equal(axis_coordinate(values, positions, 7, step=10.0), [10, 20, 30, 40, 50, 60, 70])
    np.testing.assert_array_equal(axis_coordinate(values, positions, 7), [10, 20, 30, 40, 50, 60, 70])
    irregular = axis_coordinate(np.array([[1.0], [5.0], [6.0]]), np.array([[0], [2], [3]]), 5)
    assert irregular[:4].tolist()[::2] == [1.0, 5.0] and np.isnan(irregular[[1, 4]]).all()
    assert axis_coordinate(np.array([[3]]), np.array([[0]]), 1).dtype == np.array([3]).dtype


# ---- labelled variants -----------------------------------------------------------------------------


def test_filtered_patches_leave_fill_where_dropped(geotiffs, open_raster):
    """Patches dropped for nodata leave the source's nodata; coordinates of unsampled rows are extrapolated."""
    source = open_raster(geotiffs["nodata"]).load()
    kwargs = dict(sizes=(6, 5), strides=(4, 4), padding="SAME")
    full = source.patches.extract(**kwargs)
    kept = source.patches.extract(**kwargs, max_nodata_fraction=0.0)
    spec, shape = PatchSpec(**kwargs), (40, 45)
    keep = np.zeros(spec.grid_shape(shape), bool)
    keep[kept["patch_row"].values, kept["patch_col"].values] = True
    assert 0 < keep.sum() < keep.size
    for blend in ("mean", "cosine", "none"):
        result = stitch(kept, blend)
        expected = expected_image(source, coverage(spec, shape, keep=keep), -9999.0)
        np.testing.assert_array_equal(result.values, expected.values)
        np.testing.assert_allclose(result.y, source.y) and np.testing.assert_allclose(result.x, source.x)
        assert result.rio.crs == source.rio.crs and result.rio.transform() == source.rio.transform()
    shuffled = kept.isel(patch=np.random.default_rng(0).permutation(kept.sizes["patch"]))
    xr.testing.assert_identical(stitch(shuffled, "cosine"), stitch(kept, "cosine"))
    np.testing.assert_array_equal(stitch(full, "mean", fill_value=-1).values, source.values)  # SAME covers all


def test_other_channels_than_the_source(geotiffs, open_raster):
    """Predictions with one band, or with a new dim of classes in place of band, stitch on the source grid."""
    source = open_raster(geotiffs["projected"]).load()
    patches = source.patches.extract(8, 4, padding="SAME")
    xr.testing.assert_identical(stitch(patches.isel(band=[0]), "cosine"), source.isel(band=[0]))
    scores = xr.concat([xr.full_like(patches.isel(band=0), k, dtype="float32") for k in (0.25, 0.5, 0.75)], dim="class")
    scores = scores.assign_coords({"class": ["water", "land", "cloud"]}).transpose("patch_row", "patch_col", "class", "y", "x")
    result = stitch(scores, "cosine", crop=2)
    assert result.dims == ("class", "y", "x") and result.dtype == np.float32
    inner = coverage(PatchSpec(8, 4, padding="SAME"), (61, 53), (2, 2))
    np.testing.assert_array_equal(result.sel({"class": "land"}).values, np.where(inner, 0.5, np.nan))
    xr.testing.assert_identical(result.y.variable, source.y.variable)
    assert list(result["class"].values) == ["water", "land", "cloud"]


@pytest.mark.filterwarnings("ignore:Consolidated metadata")
@pytest.mark.parametrize("filtered", [False, True])
def test_dask_backed_patches_stitch_like_numpy(geotiffs, open_raster, tmp_path, filtered):
    """Chunked patches and patches read back from Zarr stitch to the same array as in-memory ones."""
    pytest.importorskip("dask")
    source = open_raster(geotiffs["nodata"]).load()
    patches = source.patches.extract(5, 3, padding="SAME", max_nodata_fraction=0.5 if filtered else None)
    expected = stitch(patches, "cosine")
    chunked = patches.chunk({"patch" if filtered else "patch_row": 4})
    xr.testing.assert_identical(stitch(chunked, "cosine", max_memory="64KiB"), expected)
    if filtered:  # patches in any order, read from wherever they lie
        shuffled = chunked.isel(patch=np.random.default_rng(2).permutation(chunked.sizes["patch"]))
        xr.testing.assert_identical(stitch(shuffled, "cosine", max_memory="256KiB"), expected)
    patches.to_dataset(name="pred").to_zarr(tmp_path / "patches.zarr")
    stored = xr.open_zarr(tmp_path / "patches.zarr", mask_and_scale=False)["pred"]
    assert stored.chunks is not None
    np.testing.assert_array_equal(stitch(stored, "cosine").values, expected.values)


# ---- streaming -------------------------------------------------------------------------------------


@pytest.mark.parametrize("blend", ["mean", "cosine", "none"])
def test_stream_to_geotiff_equals_in_memory(geotiffs, open_raster, tmp_path, blend):
    """out='x.tif' writes the in-memory result, with CRS, transform and nodata, band by band."""
    source = open_raster(geotiffs["nodata"]).load()
    patches = source.patches.extract((6, 4), 3, padding="SAME")
    path = stitch(patches, blend, out=tmp_path / "out.tif", max_memory="40KiB")
    written = open_raster(path).load()
    expected = stitch(patches, blend)
    np.testing.assert_array_equal(written.values, expected.values)
    assert written.rio.crs == source.rio.crs and written.rio.transform() == source.rio.transform()
    assert written.rio.nodata == -9999.0


@pytest.mark.parametrize("blend", ["mean", "none"])
def test_stream_to_zarr_equals_in_memory(geotiffs, open_raster, tmp_path, blend):
    """out='x.zarr' writes the in-memory result with its labels, in chunks aligned to the bands."""
    source = open_raster(geotiffs["projected"]).load()
    patches = source.patches.extract(7, 3, padding="SAME")
    path = stitch(patches, blend, out=tmp_path / "out.zarr", max_memory="64KiB")
    written = xr.open_zarr(path, mask_and_scale=False)["stitched"]
    assert len(written.chunks[1]) > 1
    expected = stitch(patches, blend)
    np.testing.assert_array_equal(written.values, expected.values)
    np.testing.assert_array_equal(written.y, expected.y)
    kept = ("_FillValue", "grid_mapping")  # moved to the encoding by xarray on the way
    assert {k: v for k, v in written.attrs.items() if k not in kept} == {k: v for k, v in expected.attrs.items() if k not in kept}
    assert written.rio.crs == source.rio.crs


def test_stream_tf_layout_to_zarr(tmp_path):
    """Arrays in TensorFlow's layout stream too, as (batch, y, x, channel)."""
    image = random_image((2, 30, 20, 3), "int16")
    patches = extract_patches(image, 6, 4, padding="SAME")
    spec = PatchSpec(6, 4, padding="SAME")
    path = stitch(patches, "cosine", spec=spec, image_shape=(30, 20), out=tmp_path / "t.zarr", max_memory="20KiB")
    np.testing.assert_array_equal(xr.open_zarr(path)["stitched"].values, image)


def test_streaming_a_scene_larger_than_the_budget_stays_within_it(tmp_path):
    """Dask-backed patches stitch to an 8 MiB .zarr and .tif under a 4 MiB budget: traced peak within 1.25x."""
    dask = pytest.importorskip("dask")
    scene = xr.DataArray(lazy_scene((1, 1024, 1024, 4), "uint16", chunks=(128, 1024))[0].compute(), dims=("y", "x", "band"))
    patches = scene.patches.extract(16, 12, padding="SAME").chunk({"patch_row": 1})
    budget = 4 * 2**20
    assert scene.nbytes >= 2 * budget
    for suffix in (".zarr", ".tif"):  # imports and first-use caches outside the trace
        stitch(patches.isel(patch_row=slice(0, 2)), out=tmp_path / f"warm{suffix}")
    for suffix in (".zarr", ".tif"):
        with dask.config.set(scheduler="synchronous"):
            tracemalloc.start()
            try:
                stitch(patches, "cosine", out=tmp_path / f"scene{suffix}", max_memory=budget)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert peak <= 1.25 * budget, f"{suffix}: peak {peak} exceeds 1.25 x {budget}"
    expected = scene.transpose("band", "y", "x").values
    np.testing.assert_array_equal(xr.open_zarr(tmp_path / "scene.zarr")["stitched"].values, expected)
    import rasterio

    with rasterio.open(tmp_path / "scene.tif") as src:
        np.testing.assert_array_equal(src.read(), expected)


def test_in_memory_work_stays_within_the_budget():
    """Besides patches and result, in-memory stitching holds at most max_memory (bands of accumulators)."""
    image = np.random.default_rng(0).random((1, 512, 512, 4), dtype=np.float32)
    patches = extract_patches(image, 32, 16, padding="SAME")
    budget = 2 * 2**20
    stitch(patches[:, :2], spec=PatchSpec(32, 16, padding="SAME"), image_shape=(32, 512))  # imports outside the trace
    tracemalloc.start()
    try:
        result = stitch(patches, "cosine", spec=PatchSpec(32, 16, padding="SAME"), image_shape=image.shape, max_memory=budget)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= result.nbytes + 1.25 * budget
    np.testing.assert_array_equal(result, image)


# ---- errors ----------------------------------------------------------------------------------------


def _bare(patches: xr.DataArray) -> xr.DataArray:
    return patches.copy(deep=False).assign_attrs({"patchkit_spec": None})


@pytest.fixture
def small():
    """A small labelled raster and its 4x4, stride 2 patches."""
    source = xr.DataArray(np.arange(2 * 10 * 12, dtype=np.float32).reshape(2, 10, 12), dims=("band", "y", "x"))
    return source, source.patches.extract(4, 2)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        pytest.param(dict(blend="gaussian-ish"), PatchkitValueError,
                     r"blend='gaussian-ish' is not a blend patchkit knows.*'mean', 'cosine', 'none'", marks=needs_scipy),
        pytest.param(dict(blend="hann"), PatchkitValueError, r"blend='hann' gives 12 weights that are zero.*blend='cosine'",
                     marks=needs_scipy),
        pytest.param(dict(blend=("tukey", 0.5)), PatchkitValueError, r"zero, negative or not finite", marks=needs_scipy),
        (dict(blend=lambda kh, kw: np.ones((kh, kw + 1))), PatchkitValueError,
         r"weights of shape \(4, 5\).*must return an array of shape \(kh, kw\)"),
        (dict(blend=lambda kh, kw: -np.ones((kh, kw))), PatchkitValueError,
         r"blend=.* gives 16 weights that are zero, negative or not finite"),
        (dict(blend=lambda kh, kw: np.full((kh, kw), np.nan)), PatchkitValueError, r"not finite"),
        (dict(blend=3), PatchkitTypeError, r"blend=3 \(a int\) is not a blend"),
        (dict(crop=-1), PatchkitValueError, r"crop=-1 drops -1 rows.*at least 0"),
        (dict(crop=(1, 2)), PatchkitValueError, r"crop=\(1, 2\) drops 2 cols from each side of patches of 4 cols.*at most 1"),
        (dict(crop=1.5), PatchkitValueError, r"crop=1.5 must be an integer or a \(rows, cols\) pair"),
        (dict(max_memory=1000), BudgetTooSmallError, r"max_memory=1000 \(1000 B\) is below the minimum.*at least \d+"),
        (dict(out="result.png"), PatchkitValueError, r"out='result.png' is not a path ending in .tif, .tiff, .zarr"),
        (dict(fill_value="x"), PatchkitValueError, r"fill_value='x' does not fit the patches' dtype float32"),
        (dict(spec=PatchSpec(5, 2)), PatchkitValueError, r"patches are 4x4 pixels \(y, x\), but the spec's sizes are \(5, 5\)"),
        (dict(spec=PatchSpec(4, 2), image_shape=(3, 12)), KernelTooLargeError, r"larger than the image height 3"),
        (dict(spec={"sizes": 4}), PatchkitValueError, r"spec=\{'sizes': 4\} has no 'strides'; a spec dict needs"),
        (dict(spec=42), PatchkitTypeError, r"spec=42 \(a int\) is not a PatchSpec"),
        (dict(image_shape=(10,)), PatchkitValueError, r"image_shape=\(10,\) must be \(height, width\)"),
    ],
)
def test_bad_arguments_raise_before_stitching(small, kwargs, error, match):
    """Every bad argument raises a patchkit error naming the argument, the value and the fix."""
    _, patches = small
    with pytest.raises(error, match=match):
        stitch(patches, **kwargs)


def test_patches_not_from_patchkit_need_spec_and_shape(small):
    """A DataArray without the recorded spec, or a bare array, needs spec and image_shape."""
    _, patches = small
    with pytest.raises(PatchkitValueError, match=r"no valid attrs\['patchkit_spec'\].*pass the spec and the image shape"):
        stitch(_bare(patches))
    with pytest.raises(PatchkitValueError, match=r"spec and image_shape is required for .* not a patchkit DataArray \(got a ndarray\)"):
        stitch(np.zeros((1, 4, 5, 32)))
    with pytest.raises(PatchkitValueError, match=r"image_shape is required"):
        stitch(np.zeros((1, 4, 5, 32)), spec=PatchSpec(4, 2))
    source, _ = small
    result = stitch(_bare(patches), spec=PatchSpec(4, 2), image_shape=(10, 12))
    xr.testing.assert_identical(result.drop_vars(["y", "x"]).drop_attrs(), source)


@pytest.mark.parametrize(
    "shape, image_shape, match",
    [
        ((1, 4, 5, 32), (10, 11), r"patches has shape \(1, 4, 5, 32\), but the spec .* gives \[batch, 4, 4, 4\*4\*channels\]"),
        ((1, 4, 5, 30), (10, 12), r"gives \[batch, 4, 5, 4\*4\*channels\]"),
        ((1, 4, 5, 32), (1, 10, 12, 3), r"image_shape gives batch and channels \(1, 3\), but the patches hold \(1, 2\)"),
        ((4, 5, 32), (10, 12), r"patches has shape \(4, 5, 32\)"),
    ],
)
def test_tf_layout_shape_must_match_the_spec(shape, image_shape, match):
    """An array whose grid or depth does not fit the spec and image shape is refused before any work."""
    with pytest.raises(PatchkitValueError, match=match):
        stitch(np.zeros(shape, np.float32), spec=PatchSpec(4, 2), image_shape=image_shape)


def test_labelled_layout_errors(small):
    """Patch arrays without patch dims, or with non-contiguous patch rows, are refused with the fix."""
    _, patches = small
    with pytest.raises(DimensionError, match=r"neither 'patch_row' and 'patch_col' nor 'patch'"):
        stitch(patches.rename(patch_row="r"))
    with pytest.raises(PatchkitValueError, match=r"'patch_row' labels .* are not consecutive"):
        stitch(patches.isel(patch_row=[0, 2]))


def test_datasets_are_stitched_variable_by_variable(small):
    """A Dataset of patches is refused with how to stitch its variables."""
    _, patches = small
    with pytest.raises(PatchkitTypeError, match=r"patches is a Dataset; stitch takes one DataArray: pass ds\[name\]"):
        stitch(patches.to_dataset(name="v"))


def test_geotiff_needs_one_image(stacked, tmp_path):
    """A GeoTIFF holds one image of bands: a time stack must go to Zarr."""
    with pytest.raises(PatchkitValueError, match=r"a GeoTIFF holds one image of bands, but the result has 3 images .*\.zarr"):
        stitch(stacked.patches.extract(6, 3, padding="SAME"), out=tmp_path / "stack.tif")


def test_partial_grid_stitches_its_rows(small):
    """A contiguous block of patch rows (one .patches.iter band) stitches where it reaches, fill elsewhere."""
    source, patches = small
    result = stitch(patches.isel(patch_row=slice(1, 3)), fill_value=-1)
    rows = np.zeros(10, bool)
    rows[2:8] = True
    np.testing.assert_array_equal(result.values, np.where(rows[None, :, None], source.values, -1))


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_stream_creates_missing_folders(geotiffs, open_raster, tmp_path, suffix):
    """Streaming into a path whose folders do not exist yet creates them."""
    patches = open_raster(geotiffs["projected"]).patches.extract(8, 8, padding="SAME")
    out = stitch(patches, out=tmp_path / "a" / "b" / f"mosaic{suffix}", max_memory="1MiB")
    assert out.exists()
