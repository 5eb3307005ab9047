"""The ``.patches`` accessor on real GeoTIFFs read with rioxarray, checked against rasterio itself."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import patchkit
from patchkit.errors import DimensionError, PatchkitValueError

from ..helpers import RecordingArray, window_read

SPECS = [
    dict(sizes=8, strides=8),
    dict(sizes=(7, 5), strides=(4, 3), padding="SAME"),
    dict(sizes=3, strides=5, rates=2, padding="SAME"),
    dict(sizes=(4, 6), strides=(3, 7), rates=(3, 2)),
]


@pytest.mark.parametrize("name", ["projected", "nonsquare"])
@pytest.mark.parametrize("kwargs", SPECS)
def test_patches_equal_rasterio_windows(geotiffs, open_raster, name, kwargs):
    """Every patch's pixels are a boundless rasterio window read, and its coordinates that window's centres."""
    import rasterio
    from rasterio.windows import Window, transform as window_transform

    path = geotiffs[name]
    patches = open_raster(path).patches.extract(**kwargs)
    spec = patchkit.PatchSpec(**kwargs)
    with rasterio.open(path) as src:
        shape, src_transform, crs = (src.height, src.width), src.transform, src.crs
    assert patches.dims == ("patch_row", "patch_col", "band", "y", "x")
    assert patches.shape[:2] == spec.grid_shape(shape)
    assert patches.rio.crs == crs
    rates = spec.rates
    for i in range(patches.sizes["patch_row"]):
        for j in range(patches.sizes["patch_col"]):
            window = spec.window(i, j, shape)
            one = patches.isel(patch_row=i, patch_col=j)
            np.testing.assert_array_equal(one.values, window_read(path, window, rates))
            t = window_transform(Window(window.col_off, window.row_off, 1, 1), src_transform)
            rows = np.arange(spec.sizes[0]) * rates[0]
            cols = np.arange(spec.sizes[1]) * rates[1]
            np.testing.assert_allclose(one.x.values, t.c + t.a * (cols + 0.5), rtol=0, atol=1e-6)
            np.testing.assert_allclose(one.y.values, t.f + t.e * (rows + 0.5), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kwargs", SPECS)
def test_bit_exact_with_tensorflow(tf, geotiffs, open_raster, kwargs):
    """The labelled pixels are tf.image.extract_patches' numbers, rearranged to (band, y, x)."""
    da = open_raster(geotiffs["nonsquare"]).astype("float32")
    patches = da.patches.extract(**kwargs)
    spec = patchkit.PatchSpec(**kwargs)
    image = da.transpose("y", "x", "band").values[None]
    expected = tf.image.extract_patches(image, [1, *spec.sizes, 1], [1, *spec.strides, 1], [1, *spec.rates, 1],
                                        spec.padding).numpy()
    oh, ow = expected.shape[1:3]
    expected = expected.reshape(oh, ow, *spec.sizes, da.sizes["band"]).transpose(0, 1, 4, 2, 3)
    assert patches.values.tobytes() == expected.tobytes()


def test_metadata_survives(geotiffs, open_raster):
    """attrs, _FillValue, band labels, the CRS and the grid mapping survive; the GeoTransform does not."""
    da = open_raster(geotiffs["nodata"])
    patches = da.patches.extract(5, 5)
    assert {k: v for k, v in patches.attrs.items() if k != "patchkit_spec"} == da.attrs
    assert patches.attrs["_FillValue"] == -9999.0
    assert patches.encoding["grid_mapping"] == "spatial_ref"
    np.testing.assert_array_equal(patches.band.values, da.band.values)
    assert patches.rio.crs == da.rio.crs
    assert "GeoTransform" not in patches.spatial_ref.attrs and "GeoTransform" in da.spatial_ref.attrs


def test_selected_patch_is_a_raster(geotiffs, open_raster, tmp_path):
    """One selected patch is a valid raster for rioxarray: its transform and a round trip through a GeoTIFF."""
    from rasterio.windows import Window, transform as window_transform

    da = open_raster(geotiffs["projected"])
    spec = patchkit.PatchSpec(16, 12, padding="SAME")
    one = da.patches.extract(16, 12, padding="SAME").isel(patch_row=2, patch_col=3)
    w = spec.window(2, 3, da.shape[1:])
    assert one.rio.transform().almost_equals(window_transform(Window(w.col_off, w.row_off, 16, 16), da.rio.transform()))
    one.rio.to_raster(tmp_path / "chip.tif")
    back = pytest.importorskip("rioxarray").open_rasterio(tmp_path / "chip.tif")
    np.testing.assert_array_equal(back.values, one.values)
    assert back.rio.crs == da.rio.crs


@pytest.mark.parametrize("kwargs", SPECS)
@pytest.mark.parametrize("chunks", [{"x": 16, "y": 16}, {"band": 1, "x": 53, "y": 7}])
def test_lazy_equals_eager(geotiffs, open_raster, kwargs, chunks):
    """On a dask-backed raster, extract stays lazy (chunks are row bands) and computes to the eager result."""
    eager = open_raster(geotiffs["projected"]).patches.extract(**kwargs)
    lazy = open_raster(geotiffs["projected"], chunks=chunks).patches.extract(**kwargs)
    assert lazy.chunks is not None
    assert len(lazy.chunks[lazy.get_axis_num("patch_col")]) == 1  # whole rows of patches per chunk
    xr.testing.assert_identical(lazy.compute(), eager)


def test_lazy_reads_only_a_bands_rows():
    """Computing one row band of a lazy result reads only the source rows of that band's halo."""
    dask_array = pytest.importorskip("dask.array")
    data = np.arange(3 * 61 * 53, dtype=np.uint16).reshape(3, 61, 53)
    recording = RecordingArray(data)
    da = xr.DataArray(dask_array.from_array(recording, chunks=(3, 4, 53)), dims=("band", "y", "x"), name="scene")
    recording.reads.clear()  # dask reads an empty piece for its meta
    lazy = da.patches.extract(8, 8, chunk_memory="16KiB")
    assert len(lazy.chunks[0]) > 1
    assert not [read for read in recording.reads if read[1] > read[0]]
    first = lazy.isel(patch_row=0).compute()
    assert recording.reads and max(stop for _, stop in recording.reads) <= 8
    xr.testing.assert_identical(first, xr.DataArray(data, dims=("band", "y", "x"), name="scene").patches.extract(8, 8).isel(patch_row=0))


@pytest.mark.parametrize("budget", ["16KiB", "40KiB", "512MiB"])
@pytest.mark.parametrize("lazy", [False, True])
def test_iter_bands_concatenate_to_extract(geotiffs, open_raster, budget, lazy):
    """Row bands under max_memory, each labelled, concatenate to the extract result."""
    da = open_raster(geotiffs["projected"], chunks={"y": 10, "x": 20} if lazy else None)
    kwargs = dict(sizes=(9, 7), strides=(4, 5), padding="SAME")
    bands = [band.copy() for band in da.patches.iter(**kwargs, max_memory=budget)]
    assert len(bands) > 1 or budget == "512MiB"
    xr.testing.assert_identical(xr.concat(bands, dim="patch_row"), da.patches.extract(**kwargs).compute())


def test_stacked_time_leads(stacked):
    """A (time, band, y, x) stack gives (time, patch_row, patch_col, band, y, x), time labels kept."""
    patches = stacked.patches.extract(6, 6, padding="SAME")
    assert patches.dims == ("time", "patch_row", "patch_col", "band", "y", "x")
    np.testing.assert_array_equal(patches.time.values, stacked.time.values)
    for t in range(stacked.sizes["time"]):
        xr.testing.assert_identical(patches.isel(time=t), stacked.isel(time=t).patches.extract(6, 6, padding="SAME"))


@pytest.mark.parametrize("kwargs", SPECS)
def test_channels_last_and_plain_arrays(kwargs):
    """Without georeference: pixel-index coordinates, channels after y/x kept inside the patch, TF order."""
    image = np.random.default_rng(1).random((30, 27, 2)).astype(np.float32)
    da = xr.DataArray(image, dims=("y", "x", "channel"))
    patches = da.patches.extract(**kwargs)
    spec = patchkit.PatchSpec(**kwargs)
    assert patches.dims == ("patch_row", "patch_col", "channel", "y", "x")
    flat = patchkit.extract_patches(image[None], **kwargs)[0]
    oh, ow = flat.shape[:2]
    expected = flat.reshape(oh, ow, *spec.sizes, 2).transpose(0, 1, 4, 2, 3)
    assert patches.values.tobytes() == expected.tobytes()
    rows, cols = spec.positions(image.shape[:2])
    np.testing.assert_array_equal(patches.y.values, rows)
    np.testing.assert_array_equal(patches.x.values, cols)


def test_dataset_patches_every_spatial_variable(geotiffs, open_raster):
    """Dataset.patches cuts every variable with the spatial dims on one grid and carries the others."""
    da = open_raster(geotiffs["projected"])
    ds = xr.Dataset({"image": da, "mask": (da.isel(band=0, drop=True) > 30000).astype("uint8"),
                     "gain": ("band", [1.0, 2.0, 3.0])})
    patches = ds.patches.extract(10, 10)
    xr.testing.assert_identical(patches["image"], da.patches.extract(10, 10).rename("image"))
    xr.testing.assert_identical(patches["mask"], ds["mask"].patches.extract(10, 10))
    xr.testing.assert_identical(patches["gain"].drop_vars("spatial_ref"), ds["gain"].drop_vars("spatial_ref"))
    bands = [band.copy(deep=True) for band in ds.patches.iter(10, 10, max_memory="32KiB")]
    assert len(bands) > 1
    xr.testing.assert_identical(xr.concat(bands, dim="patch_row", data_vars="minimal"), patches)


def test_grid_matches_extract(geotiffs, open_raster, tmp_path):
    """The grid table's transforms are the extracted patches' transforms; it writes to GeoJSON."""
    da = open_raster(geotiffs["nonsquare"])
    table = da.patches.grid(9, 6, rates=2, padding="SAME", path=tmp_path / "grid.geojson")
    patches = da.patches.extract(9, 6, rates=2, padding="SAME")
    assert len(table) == patches.sizes["patch_row"] * patches.sizes["patch_col"]
    for row in table.sample(10, random_state=0).itertuples():
        assert row.transform.almost_equals(patchkit.patch_transform(patches, row.row, row.col))
    assert (tmp_path / "grid.geojson").exists()
    assert table.attrs["crs"] == da.rio.crs


@pytest.mark.parametrize(
    ("make", "call", "error", "match"),
    [
        (lambda: xr.DataArray(np.zeros((4, 4)), dims=("row", "col")), dict(), DimensionError, "found no spatial dims"),
        (lambda: xr.DataArray(np.zeros((0, 4)), dims=("y", "x")), dict(), DimensionError, "length 0"),
        (lambda: xr.DataArray(np.zeros((4, 4)), dims=("y", "x")), dict(spatial_dims=("y", "q")), DimensionError, "spatial_dims"),
        (lambda: xr.DataArray(np.zeros((4, 4)), dims=("y", "x")), dict(max_nodata_fraction=2), PatchkitValueError,
         "max_nodata_fraction=2"),
    ],
)
def test_bad_input(make, call, error, match):
    """Bad dims and fractions raise patchkit errors that name the argument, the value and the fix."""
    with pytest.raises(error, match=match):
        make().patches.extract(2, 2, **call)


def test_irregular_coords_extract_but_refuse_a_transform():
    """Irregular x coordinates: extraction works (NaN in padding), patch_transform explains the need."""
    x = np.array([0.0, 1.0, 3.0, 4.0, 8.0, 9.0])
    da = xr.DataArray(np.arange(30.0).reshape(5, 6), dims=("y", "x"), coords={"x": x, "y": np.arange(5.0)})
    patches = da.patches.extract(3, 1, padding="SAME")
    np.testing.assert_array_equal(patches.x.values[0], [np.nan, 0.0, 1.0])
    np.testing.assert_array_equal(patches.x.values[2], [1.0, 3.0, 4.0])
    with pytest.raises(patchkit.errors.GeoreferenceError, match="regular grid"):
        patchkit.patch_transform(patches, 0, 1)
