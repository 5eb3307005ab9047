"""predict: a scene through a model and back onto its grid, against the model applied to the whole scene, numpy,
rasterio and TensorFlow; labels, sinks, memory, and what a model can get wrong."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest
import xarray as xr

from patchkit import PatchSpec, extract_patches
from patchkit.errors import BudgetTooSmallError, ModelError, PatchkitTypeError, PatchkitValueError, UnsupportedDtypeError
from patchkit.stitch import gaussian, predict
from patchkit.stitch.model import to_host
from patchkit.testing import lazy_scene

from ..helpers import random_image

BLENDS = ["gaussian", "mean", "cosine", "none"]
SPECS = [
    dict(sizes=8, strides=6, padding="SAME"),
    dict(sizes=(7, 5), strides=(4, 3), padding="SAME"),
    dict(sizes=(4, 3), strides=(3, 2), rates=2, padding="SAME"),
    dict(sizes=6, strides=4, padding="VALID"),
]


def identity(batch):
    return batch


def finite_image(shape, dtype="float32", seed=0) -> np.ndarray:
    """Random finite values: the identity model's predictions must pass nan_policy="raise"."""
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def covered(spec: PatchSpec, shape) -> np.ndarray:
    """Pixels ``[h, w]`` some patch samples (all of them under SAME with stride <= size)."""
    rows, cols = spec.positions(shape)
    out = np.zeros(shape, bool)
    r, c = np.unique(rows[(rows >= 0) & (rows < shape[0])]), np.unique(cols[(cols >= 0) & (cols < shape[1])])
    out[np.ix_(r, c)] = True
    return out


# ---- what comes back --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize("kwargs", SPECS)
def test_identity_model_gives_back_the_scene_where_patches_cover_it(blend, kwargs):
    """Every blend, every spec: the identity model's prediction is the scene bit for bit wherever a patch reaches,
    and the fill (NaN) elsewhere."""
    image = finite_image((2, 23, 19, 3))
    spec = PatchSpec(**kwargs)
    out = predict(image, identity, blend=blend, max_memory="1MiB", **kwargs)
    where = covered(spec, (23, 19))
    np.testing.assert_array_equal(out[:, where], image[:, where])
    assert np.isnan(out[:, ~where]).all()


@pytest.mark.filterwarnings("ignore:the model returned")  # the random images hold NaN and infinities, passed through
@pytest.mark.parametrize("dtype", ["float64", "float16", "int16", "uint8", "int64", "bool"])
def test_identity_model_is_exact_for_every_dtype_the_model_returns(dtype):
    """The prediction's dtype is the model's, and agreeing predictions come back bit for bit."""
    image = random_image((1, 21, 17, 2), dtype)
    out = predict(image, identity, 8, 5, blend="gaussian", max_memory="1MiB", nan_policy="propagate")
    assert out.dtype == image.dtype
    np.testing.assert_array_equal(out, image)


def test_a_pointwise_keras_model_equals_the_model_on_the_whole_scene(tf):
    """A 1x1 convolution with fixed weights, a real Keras model: blended patch predictions equal the model run on
    the whole scene at once (every patch agrees on every pixel), for every blend."""
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(3)
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 1, use_bias=True)])
    model.layers[0].set_weights([rng.normal(size=(1, 1, 3, 2)).astype("float32"), np.array([0.5, -1], "float32")])
    image = rng.random((1, 40, 36, 3), np.float32)
    whole = np.asarray(model(image))
    compiled, batches = model.predict_on_batch, []
    model.predict_on_batch = lambda batch: batches.append(len(batch)) or compiled(batch)  # its compiled function
    for blend in ("gaussian", "mean"):
        out = predict(image, model, 16, 12, blend=blend, batch_size=5)
        assert out.shape == (1, 40, 36, 2) and out.dtype == np.float32
        np.testing.assert_allclose(out, whole, rtol=1e-6, atol=1e-6)
    assert sum(batches) == 2 * (1 + 4 * 3)  # the probe and the 4 x 3 grid, for each blend


def test_a_tf_function_model_and_keras_output_tensors(tf):
    """A tf.function returning tensors, called on every batch of the grid."""
    doubled = tf.function(lambda batch: tf.cast(batch, tf.float32) * 2.0)
    image = random_image((1, 30, 30, 1), "uint16")
    out = predict(image, doubled, 10, 7, blend="mean")
    np.testing.assert_array_equal(out, image.astype(np.float32) * 2)


def test_a_centre_crop_model_fills_the_centres_it_returns():
    """A model returning the centre inside crop: every pixel some kept centre reaches gets it, the rest the fill."""
    image = finite_image((1, 40, 33, 2))
    out = predict(image, lambda b: b[:, 3:-3, 3:-3] + 1, 16, 8, padding="VALID", crop=3, blend="mean")
    spec = PatchSpec(16, 8)
    rows, cols = spec.positions((40, 33))
    reach = np.zeros((40, 33), bool)
    reach[np.ix_(np.unique(rows[:, 3:-3]), np.unique(cols[:, 3:-3]))] = True
    np.testing.assert_array_equal(out[0, reach], image[0, reach] + 1)
    assert np.isnan(out[0, ~reach]).all() and (~reach).any()


def test_a_per_patch_classifier_gives_the_patch_grid():
    """One vector a patch: ``[batch, out_rows, out_cols, k]``, patch (i, j)'s vector at (i, j)."""
    image = finite_image((2, 37, 29, 3))
    model = lambda b: np.stack([b.mean(axis=(1, 2, 3)), b.max(axis=(1, 2, 3))], axis=1)  # noqa: E731
    out = predict(image, model, 9, 7, max_memory="1MiB", batch_size=3)
    patches = extract_patches(image, 9, 7, padding="SAME").reshape(2, 6, 5, -1)
    assert out.shape == (2, 6, 5, 2)
    np.testing.assert_allclose(out[..., 0], patches.mean(-1), rtol=1e-6)
    np.testing.assert_array_equal(out[..., 1], patches.max(-1))


def test_each_patch_goes_through_the_model_once():
    """Bands share patch rows: those are kept, not predicted again."""
    seen = []
    image = finite_image((1, 64, 20, 1))
    predict(image, lambda b: seen.append(len(b)) or b, 12, 5, max_memory="64KiB", batch_size=4)
    assert sum(seen) == 1 + 13 * 4  # the probe's one patch, then the 13 x 4 grid once


# ---- labelled scenes --------------------------------------------------------------------------------------------


def test_a_georeferenced_scene_keeps_its_grid_crs_and_transform(geotiffs, open_raster):
    """The accessor: dims (band, y, x) with the model's channels, the source's coordinates, CRS and transform; the
    source's value attrs (nodata, scale) dropped."""
    da = open_raster(geotiffs["projected"])
    out = da.patches.predict(lambda b: b[..., :2].astype("float32") / 2, 16, 12)
    assert out.dims == ("band", "y", "x") and out.shape == (2, 61, 53) and out.name == "prediction"
    xr.testing.assert_equal(out.x, da.x)
    xr.testing.assert_equal(out.y, da.y)
    assert out.rio.crs == da.rio.crs and out.rio.transform() == da.rio.transform()
    np.testing.assert_array_equal(out.band, [1, 2])
    np.testing.assert_array_equal(out.values, da.values[:2].astype("float32") / 2)


def test_leading_dims_and_a_scene_without_channels(stacked):
    """(time, band, y, x) predicts image by image; one channel of a scene without a channel dim has none."""
    out = predict(stacked, lambda b: b.sum(-1, keepdims=True).astype("float32"), 8, 6)
    assert out.dims == ("time", "band", "y", "x") and out.sizes["band"] == 1
    np.testing.assert_array_equal(out.time, stacked.time)
    np.testing.assert_array_equal(out.values[:, 0], stacked.values.sum(1).astype("float32"))
    plain = stacked.isel(band=0, drop=True)
    assert predict(plain, identity, 8, 6).dims == ("time", "y", "x")


def test_lazy_scene_to_geotiff_and_zarr_equal_the_in_memory_result(geotiffs, open_raster, tmp_path):
    """A dask-backed scene streamed to a GeoTIFF (CRS, transform, NaN nodata) and to a Zarr store: the in-memory
    result's values and labels."""
    da = open_raster(geotiffs["projected"], chunks={"y": 16})
    model = lambda b: np.sqrt(b.astype("float32"))  # noqa: E731
    expected = predict(da.load(), model, 16, 12, blend="cosine")
    tif = predict(da, model, 16, 12, blend="cosine", out=tmp_path / "p.tif", max_memory="1MiB")
    back = open_raster(tif)
    np.testing.assert_array_equal(back.values, expected.values)
    assert back.rio.crs == da.rio.crs and back.rio.transform() == da.rio.transform() and np.isnan(back.rio.nodata)
    store = predict(da, model, 16, 12, blend="cosine", out=tmp_path / "p.zarr", max_memory="1MiB")
    stored = xr.open_zarr(store)["prediction"].load()
    xr.testing.assert_equal(stored, expected)
    assert stored.rio.crs == da.rio.crs and stored.rio.transform() == da.rio.transform()


def test_per_patch_vectors_are_a_raster_centred_on_the_patches(geotiffs, open_raster, tmp_path):
    """A pixel a patch, a stride wide, centred on its patch: coordinates and transform agree with the patches'
    own (patch_transform), in memory and as a GeoTIFF."""
    da = open_raster(geotiffs["projected"])
    model = lambda b: b.reshape(len(b), -1, 3).mean(1).astype("float32")  # noqa: E731
    out = predict(da, model, 16, 12)
    patches = da.patches.extract(16, 12, padding="SAME")
    assert out.dims == ("band", "y", "x") and out.shape == (3, 6, 5)
    np.testing.assert_allclose(out.x, patches.x.mean("x"))
    np.testing.assert_allclose(out.y, patches.y.mean("y"))
    tif = open_raster(predict(da, model, 16, 12, out=tmp_path / "v.tif"))
    assert tif.rio.transform() == out.rio.transform() and tif.rio.crs == da.rio.crs
    np.testing.assert_array_equal(tif.values, out.values)


# ---- memory -----------------------------------------------------------------------------------------------------


def test_a_lazy_scene_larger_than_the_budget_streams_under_it():
    """A 32 MiB dask scene predicted into a GeoTIFF under 12 MiB: what predict allocates (tracemalloc: numpy's
    buffers, the chunks dask reads, the model's outputs) stays under max_memory."""
    pytest.importorskip("rasterio")
    import tempfile
    from pathlib import Path

    scene = lazy_scene((1, 2048, 1024, 4), "float32", chunks=(64, 1024))
    model = lambda b: b[..., :1] * 0.5  # noqa: E731
    budget = 12 * 2**20
    with tempfile.TemporaryDirectory() as folder:
        predict(scene, model, 64, 48, out=Path(folder) / "warm.tif", max_memory=budget)
        tracemalloc.start()
        try:
            written = predict(scene, model, 64, 48, out=Path(folder) / "p.tif", max_memory=budget)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        streamed = _tif(written)
    assert peak <= budget, f"predict held {peak / 2**20:.1f} MiB under max_memory=12MiB"
    np.testing.assert_array_equal(streamed, model(scene.compute()))  # several groups a band: each from its own rows


# ---- what a model can get wrong ---------------------------------------------------------------------------------


def test_a_model_that_raises_part_way_names_the_batch_and_rows():
    calls = []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 4:
            raise RuntimeError("CUDA error: out of memory")
        return batch

    with pytest.raises(ModelError, match=r"RuntimeError: CUDA error.*batch of patches \d+-\d+ of patch rows? \d+(-\d+)?"):
        predict(finite_image((1, 40, 40, 1)), flaky, 8, 8, batch_size=2)


@pytest.mark.parametrize("model, match", [
    (lambda b: b[:-1] if len(b) > 1 else b, r"returned shape \(2, 8, 8, 1\).*\(3, 8, 8, 1\) for this batch of 3"),
    (lambda b: b[:, 1:-1, 1:-1], r"6x6 pixels for 8x8 patches.*needs crop=\(1, 1\)"),
    (lambda b: b[:, :5], r"5x8 pixels for 8x8 patches"),
    (lambda b: b[..., None, None], r"predict takes \[n, height, width, channels\]"),
    (lambda b: b[0], r"one prediction per patch"),
])
def test_a_model_returning_the_wrong_shape_is_refused(model, match):
    with pytest.raises(PatchkitValueError, match=match):
        predict(finite_image((1, 20, 20, 1)), model, 8, 6, batch_size=3)


def test_a_model_returning_strings_is_refused():
    with pytest.raises(UnsupportedDtypeError, match="the model's predictions has dtype <U"):
        predict(finite_image((1, 20, 20, 1)), lambda b: b.astype(str), 8, 6)


def test_nan_predictions_are_refused_or_passed_through_counted():
    image = finite_image((1, 20, 20, 1))
    spoil = lambda b: np.where(b > 10, np.nan, b)  # noqa: E731
    image[0, 5, 5, 0] = 100.0
    with pytest.raises(ModelError, match=r"returned \d+ NaN or infinite values on the batch.*nan_policy='propagate'"):
        predict(image, spoil, 8, 6)
    with pytest.warns(RuntimeWarning, match=r"returned \d+ NaN or infinite values"):
        out = predict(image, spoil, 8, 6, nan_policy="propagate")
    assert np.isnan(out[0, 5, 5, 0]) and np.isfinite(np.delete(out.ravel(), 5 * 20 + 5)).all()
    with pytest.raises(PatchkitValueError, match="nan_policy='omit' is not one of"):
        predict(image, identity, 8, 6, nan_policy="omit")


def test_budgets_below_one_batch_are_refused_before_any_batch_runs():
    calls = []
    model = lambda b: calls.append(len(b)) or b  # noqa: E731
    image = finite_image((1, 64, 64, 4))
    with pytest.raises(BudgetTooSmallError, match=r"gpu_memory='64KiB' is below one batch of 16 patches.*at most \d+ fit"):
        predict(image, model, 32, 16, batch_size=16, gpu_memory="64KiB")
    with pytest.raises(BudgetTooSmallError, match=r"max_memory='32KiB' is below what predicting in batches of 1 patch needs.*at least \d+$"):
        predict(image, model, 32, 16, max_memory="32KiB")
    assert calls == [1, 1]  # the probes only


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(model="model.keras"), PatchkitTypeError, "is not callable.*patchkit.load_model"),
    (dict(batch_size=0), PatchkitValueError, "batch_size=0 is not a positive integer"),
    (dict(batch_size=2.5), PatchkitValueError, "batch_size=2.5 is not a positive integer"),
    (dict(sigma_scale=0.2, blend="mean"), PatchkitValueError, "sigma_scale=0.2 applies to blend='gaussian' only"),
    (dict(out="prediction.png"), PatchkitValueError, "out='prediction.png' is not a path ending in"),
    (dict(crop=4), PatchkitValueError, "crop"),
])
def test_bad_arguments_are_refused(kwargs, error, match):
    arguments = {"model": identity, **kwargs}
    with pytest.raises(error, match=match):
        predict(finite_image((1, 20, 20, 1)), arguments.pop("model"), 8, 6, **arguments)


def test_a_dataset_is_refused(geotiffs, open_raster):
    ds = open_raster(geotiffs["projected"]).to_dataset(name="scene")
    with pytest.raises(PatchkitTypeError, match=r"predict takes one DataArray: pass ds\[name\]"):
        predict(ds, identity, 8, 6)


def test_sigma_scale_is_the_gaussian_of_that_sigma():
    image = finite_image((1, 30, 30, 1))
    noisy = lambda b: b + b.mean(axis=(1, 2, 3), keepdims=True)  # noqa: E731  overlapping patches disagree
    wide = predict(image, noisy, 10, 4, sigma_scale=0.5, batch_size=1)
    same = predict(image, noisy, 10, 4, blend=gaussian(0.5), batch_size=1)
    np.testing.assert_array_equal(wide, same)
    assert not np.array_equal(wide, predict(image, noisy, 10, 4, batch_size=1))


class _DLPackOnly:
    """An array from another framework: only the DLPack protocol."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_predictions_that_speak_dlpack_are_read_on_the_host():
    image = finite_image((1, 20, 20, 2))
    assert isinstance(to_host(_DLPackOnly(image)), np.ndarray)
    np.testing.assert_array_equal(predict(image, lambda b: _DLPackOnly(b * 2), 8, 6), image * 2)


# ---- resuming ---------------------------------------------------------------------------------------------------

#: Which call of :func:`failing` raises (None: none); read when called, so the model's fingerprint stays the same.
FAIL_AT = {"call": None, "calls": 0}


def failing(batch):
    FAIL_AT["calls"] += 1
    if FAIL_AT["calls"] == FAIL_AT["call"]:
        raise RuntimeError("the GPU fell off the bus")
    return np.sqrt(np.abs(batch)) - 1


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_a_model_that_raises_part_way_leaves_nothing_at_out_and_a_rerun_resumes(tmp_path, suffix):
    """The run stops naming the batch; nothing is at ``out``; the next run predicts only the bands not finished and
    writes what one uninterrupted run writes. A changed model starts afresh."""
    pytest.importorskip("rasterio" if suffix == ".tif" else "zarr")
    image = finite_image((1, 240, 50, 3))
    out = tmp_path / f"p{suffix}"
    expected = predict(image, failing, 16, 10, max_memory="128KiB", batch_size=3)
    whole = FAIL_AT["calls"]
    FAIL_AT.update(call=whole * 3 // 4, calls=0)
    with pytest.raises(ModelError, match="the GPU fell off the bus on the batch of patches"):
        predict(image, failing, 16, 10, max_memory="128KiB", batch_size=3, out=out)
    assert not out.exists() and (tmp_path / f".p{suffix}.predict.json").exists()
    FAIL_AT.update(call=None, calls=0)
    assert predict(image, failing, 16, 10, max_memory="128KiB", batch_size=3, out=out) == out
    assert 1 < FAIL_AT["calls"] < whole  # the finished bands were not predicted again
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    written = xr.open_zarr(out)["prediction"].values if suffix == ".zarr" else _tif(out)
    np.testing.assert_array_equal(written, expected)
    FAIL_AT.update(call=2, calls=0)
    with pytest.raises(ModelError):
        predict(image, failing, 16, 10, max_memory="128KiB", batch_size=3, out=out)
    FAIL_AT.update(call=None, calls=0)
    predict(image, lambda b: np.sqrt(np.abs(b)), 16, 10, max_memory="128KiB", batch_size=3, out=out)
    np.testing.assert_allclose(_tif(out) if suffix == ".tif" else xr.open_zarr(out)["prediction"].values,
                               expected + 1, rtol=1e-6, atol=1e-6)  # another model: nothing of the partial image kept


def _tif(path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read().transpose(1, 2, 0)[None]


KILLED = """
import os, signal, sys
import numpy as np
from patchkit import predict
calls = [0]
def model(batch):
    calls[0] += 1
    if calls[0] == int(os.environ.get("KILL_AT", 0)):
        os.kill(os.getpid(), signal.SIGKILL)
    return batch[..., :1] * 2 + 1
image = np.random.default_rng(5).normal(size=(1, 240, 50, 3)).astype("float32")
predict(image, model, 16, 10, max_memory="128KiB", batch_size=3, blend="cosine", out=sys.argv[1])
print(calls[0])
"""


def test_a_run_killed_part_way_is_resumed_identically(tmp_path):
    """SIGKILL mid-run (GDAL's cache and all): nothing at ``out``; the rerun finishes with fewer model calls and
    the same bytes as one uninterrupted run."""
    pytest.importorskip("rasterio")
    import subprocess
    import sys

    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    clean, out = tmp_path / "clean.tif", tmp_path / "resumed.tif"
    whole = int(subprocess.run([sys.executable, str(script), str(clean)], capture_output=True, text=True,
                               check=True).stdout)
    killed = subprocess.run([sys.executable, str(script), str(out)], env={**os.environ, "KILL_AT": str(whole * 3 // 4)})
    assert killed.returncode == -9 and not out.exists()
    rest = int(subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True,
                              check=True).stdout)
    assert rest < whole  # the bands logged before the kill were not predicted again
    assert out.read_bytes() == clean.read_bytes()
