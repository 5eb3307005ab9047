"""patchkit.labelled.tfdata: patches in TensorFlow's HWC layout, streamed into tf.data, checked against .patches.extract."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

import patchkit

from ..helpers import TFRECORD_SPECS, hwc, places, read_all, recorded_scene
from patchkit.errors import DamagedOutputError, DimensionError, IncompleteStoreError, PatchkitTypeError, PatchkitValueError
from patchkit.labelled.tfdata import PATCH, band_arrays, scene_features, store_features, to_tf_dataset


# ---- features and bands ----------------------------------------------------------------------------


def test_scene_features_fold_the_other_dims_into_channels(stacked):
    """A (time, band, y, x) stack is one feature of (kh, kw, time x band), time slowest."""
    (feature,), image = scene_features(stacked, patchkit.PatchSpec(6, 5, padding="SAME"))
    assert feature.key == PATCH and feature.var is None and feature.channels == ("time", "band")
    assert feature.shape == (6, 6, stacked.sizes["time"] * stacked.sizes["band"]) and feature.dtype == stacked.dtype
    assert image == (stacked.sizes["y"], stacked.sizes["x"])


def test_a_dataset_of_several_variables_keys_them_by_name(geotiffs, open_raster):
    """Several variables give one feature each, under its name, with its keys in the records."""
    da = open_raster(geotiffs["projected"])
    ds = xr.Dataset({"image": da, "mask": (da.isel(band=0, drop=True) > 30000).astype("uint8")})
    features, _ = scene_features(ds, patchkit.PatchSpec(10, 10))
    assert [(f.key, f.shape, f.dtype.name) for f in features] == [("image", (10, 10, 3), "uint16"), ("mask", (10, 10, 1), "uint8")]
    assert (features[1].shape_key, features[1].dtype_key) == ("mask/shape", "mask/dtype")
    with pytest.raises(PatchkitValueError, match="variable 'row'.*rename"):
        scene_features(xr.Dataset({"row": da, "b": da}), patchkit.PatchSpec(4, 4))


@pytest.mark.parametrize("fraction", [None, 0.3])
def test_band_arrays_are_the_patches_in_hwc_row_major(geotiffs, open_raster, fraction):
    """A band of .patches.extract (grid or kept list) lays out as extract's patches in HWC order, with their places."""
    patches = open_raster(geotiffs["nodata"]).patches.extract(7, 5, padding="SAME", max_nodata_fraction=fraction)
    (feature,) = store_features(patches.to_dataset(name="p"))
    rows, cols, arrays = band_arrays(patches.to_dataset(name="p"), [feature])
    assert rows.dtype == cols.dtype == np.int64
    np.testing.assert_array_equal(np.stack([rows, cols]), np.stack(places(patches)))
    assert arrays[PATCH].reshape(rows.size, *feature.shape).tobytes() == hwc(patches).tobytes()


def test_store_features_need_patches_with_places(geotiffs, open_raster):
    """A Dataset without patches, or a kept list without patch_row/patch_col, is refused."""
    da = open_raster(geotiffs["projected"])
    with pytest.raises(DimensionError, match="no variable of patches"):
        store_features(da.to_dataset(name="scene"))
    kept = da.patches.extract(8, 8, max_nodata_fraction=1.0).drop_vars(["patch_row", "patch_col"])
    with pytest.raises(DimensionError, match="without 'patch_row' and 'patch_col'"):
        store_features(kept.to_dataset(name="p"))


# ---- tf.data ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", TFRECORD_SPECS)
@pytest.mark.parametrize("batch_size", [None, 7])
def test_tf_dataset_of_a_scene_equals_extract(tf, geotiffs, open_raster, kwargs, batch_size):
    """to_tf_dataset on a DataArray streams extract's patches in HWC order, batched or not, with static shapes."""
    da = open_raster(geotiffs["projected"])
    dataset = to_tf_dataset(da, **kwargs, batch_size=batch_size, max_memory="64KiB")
    spec = patchkit.PatchSpec(**kwargs)
    assert dataset.element_spec["patch"].shape == ((None,) if batch_size else ()) + (*spec.sizes, 3)
    back = read_all(dataset)
    patches = da.patches.extract(**kwargs)
    assert back["patch"].tobytes() == hwc(patches).tobytes()
    np.testing.assert_array_equal(np.stack([back["row"], back["col"]]), np.stack(places(patches)))
    assert read_all(dataset)["patch"].tobytes() == back["patch"].tobytes()  # a second pass reads again


def test_tf_dataset_keeps_only_patches_with_little_nodata(tf, geotiffs, open_raster):
    """max_nodata_fraction on a scene streams exactly the patches .patches.extract keeps, with their places."""
    da = open_raster(geotiffs["nodata"])
    kept = da.patches.extract(8, 4, max_nodata_fraction=0.3)
    back = read_all(to_tf_dataset(da, 8, 4, max_nodata_fraction=0.3, max_memory="16KiB"))
    assert back["patch"].tobytes() == hwc(kept).tobytes()
    np.testing.assert_array_equal(np.stack([back["row"], back["col"]]), np.stack(places(kept)))


@pytest.mark.parametrize("fraction", [None, 0.3])
@pytest.mark.parametrize("batch_size", [None, 5])
@pytest.mark.parametrize("form", ["path", "dataset", "dataarray"])
def test_tf_dataset_of_stored_patches_equals_extract(tf, geotiffs, open_raster, tmp_path, fraction, batch_size, form):
    """Patches already cut (a grid or the kept list): a Zarr store by path or opened, or in memory, stream alike."""
    pytest.importorskip("zarr")
    da = open_raster(geotiffs["nodata"])
    patches = da.patches.extract(7, 5, padding="SAME", max_nodata_fraction=fraction)
    grid = patches.dims[0]
    patches.chunk({grid: 3}).to_dataset(name="patches").to_zarr(tmp_path / "p.zarr", zarr_format=2)
    source = {"path": tmp_path / "p.zarr", "dataset": xr.open_zarr(tmp_path / "p.zarr", mask_and_scale=False),
              "dataarray": patches}[form]
    back = read_all(to_tf_dataset(source, batch_size=batch_size, max_memory="4KiB"))
    assert back["patch"].dtype == np.float32 and back["patch"].tobytes() == hwc(patches).tobytes()
    np.testing.assert_array_equal(np.stack([back["row"], back["col"]]), np.stack(places(patches)))


def test_tf_dataset_reads_a_lazy_scene_band_by_band(tf):
    """A dask-backed scene is read only as the dataset is iterated, a few chunks at a time, never whole."""
    da, reader, data = recorded_scene()
    dataset = to_tf_dataset(da, 8, 8, max_memory="32KiB", prefetch=False)
    assert not [r for r in reader.reads if r[1] > r[0]]
    elements = iter(dataset)
    first = next(elements)
    read = [r for r in reader.reads if r[1] > r[0]]
    plan = da.patches.plan(8, 8, max_memory="32KiB")
    ahead = 2 if plan.prefetch else 1  # the first band's input rows, and the next band's when read ahead
    spec = patchkit.PatchSpec(8, 8)
    assert read and max(stop for _, stop in read) <= spec.input_rows(plan.bands[ahead - 1], (1, *data.shape[1:], 1))[1] < data.shape[1]
    rest = [e["patch"].numpy() for e in elements]
    assert max(stop - start for start, stop in reader.reads) <= 4  # one chunk of rows per read
    assert max(stop for _, stop in reader.reads) == 56  # VALID 8 x 8 uses rows 0..55
    got = np.stack([first["patch"].numpy(), *rest])
    assert got.tobytes() == hwc(xr.DataArray(data, dims=("band", "y", "x")).patches.extract(8, 8)).tobytes()


def test_tf_dataset_shuffles_every_patch_once(tf, geotiffs, open_raster):
    """shuffle_buffer reorders the patches but keeps each exactly once."""
    da = open_raster(geotiffs["projected"])
    back = read_all(to_tf_dataset(da, 8, 4, shuffle_buffer=50, batch_size=16))
    order = np.lexsort((back["col"], back["row"]))
    assert not np.array_equal(order, np.arange(order.size))
    assert back["patch"][order].tobytes() == hwc(da.patches.extract(8, 4)).tobytes()


def test_the_accessor_and_the_package_stream_alike(tf, geotiffs, open_raster):
    """da.patches.to_tf_dataset and patchkit.to_tf_dataset are this module's function."""
    da = open_raster(geotiffs["projected"])
    assert patchkit.to_tf_dataset is to_tf_dataset
    assert read_all(da.patches.to_tf_dataset(8, 8))["patch"].tobytes() == hwc(da.patches.extract(8, 8)).tobytes()


# ---- Zarr stores -----------------------------------------------------------------------------------


def test_to_tf_dataset_of_a_patchkit_store(tf, geotiffs, open_raster, tmp_path):
    """A store written by .patches.to_zarr streams its patches, and is refused while incomplete."""
    zarr = pytest.importorskip("zarr")
    da = open_raster(geotiffs["projected"])
    store = da.patches.to_zarr(tmp_path / "p.zarr", 8, 8, progress=False)
    expected = da.patches.extract(8, 8).transpose("patch_row", "patch_col", "y", "x", "band").values.reshape(-1, 8, 8, 3)
    got = np.stack([element["patch"].numpy() for element in to_tf_dataset(str(store))])
    np.testing.assert_array_equal(got, expected)
    del zarr.open_group(str(store), mode="r+").attrs["patchkit_complete"]
    with pytest.raises(IncompleteStoreError, match="to_zarr"):
        to_tf_dataset(str(store))


def test_to_tf_dataset_refuses_a_damaged_store(tf, geotiffs, open_raster, tmp_path):
    """A patchkit store missing a chunk is refused by to_tf_dataset as by open_patches."""
    path = open_raster(geotiffs["projected"]).patches.to_zarr(tmp_path / "s.zarr", 6, 6, chunk_patches=3, progress=False)
    next(p for p in sorted((path / "pixels" / "c").rglob("*")) if p.is_file()).unlink()
    with pytest.raises(DamagedOutputError, match="missing"):
        to_tf_dataset(path)


# ---- errors and imports ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda da, p: to_tf_dataset(da, 4), PatchkitValueError, "strides=None.*pass both"),
        (lambda da, p: to_tf_dataset(da), PatchkitValueError, "no variable of patches.*pass sizes and strides"),
        (lambda da, p: to_tf_dataset(str(p), 4, 4), PatchkitTypeError, "open the raster first"),
        (lambda da, p: to_tf_dataset(p / "missing.zarr"), PatchkitValueError, "does not open as a Zarr store"),
        (lambda da, p: to_tf_dataset(da, 4, 4, batch_size=0), PatchkitValueError, "batch_size=0"),
        (lambda da, p: to_tf_dataset(da.patches.extract(4, 4), max_nodata_fraction=0.5), PatchkitValueError,
         "already cut"),
    ],
)
def test_bad_arguments(tf, geotiffs, open_raster, tmp_path, call, error, match):
    """Bad arguments raise patchkit errors naming the argument, the value and the fix; nothing is written."""
    with pytest.raises(error, match=match):
        call(open_raster(geotiffs["projected"]), tmp_path)
    assert not list(tmp_path.iterdir())


def test_import_does_not_load_tensorflow():
    """Importing the module leaves TensorFlow unimported."""
    code = "import sys, patchkit.labelled.tfdata; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
