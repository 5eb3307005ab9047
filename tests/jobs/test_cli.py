"""The ``patchkit`` command, run as users run it: in a subprocess."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

import patchkit

pytest.importorskip("papermill")
rioxarray = pytest.importorskip("rioxarray")
zarr = pytest.importorskip("zarr")


def patchkit_command(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "patchkit.jobs.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_help_for_every_command():
    """Every command and option has help."""
    for command in ("templates", "run", "inspect", "extract", "predict", "bench"):
        done = patchkit_command(command, "--help")
        assert done.returncode == 0 and "usage: patchkit" in done.stdout
    assert "--max-nodata-fraction" in patchkit_command("extract", "--help").stdout


def test_templates_lists_parameters():
    """`patchkit templates` lists each template and its parameters with their defaults."""
    done = patchkit_command("templates")
    assert done.returncode == 0
    assert "extract_patches" in done.stdout and "stitch_predictions" in done.stdout and "predict_scene" in done.stdout
    assert "max_nodata_fraction" in done.stdout and "default 0.25" in done.stdout


def test_unknown_parameter_refused_quickly(tmp_path):
    """An unknown parameter exits 1 within seconds, lists the valid ones, and starts no kernel."""
    start = time.perf_counter()
    done = patchkit_command("run", "extract_patches", "-p", "sizez", "12", "--output-dir", str(tmp_path))
    assert done.returncode == 1 and time.perf_counter() - start < 20
    assert "no parameter 'sizez'" in done.stderr and "strides (int" in done.stderr
    assert not list(tmp_path.iterdir())


def test_usage_error_exits_2():
    """A missing required option is a usage error (status 2)."""
    assert patchkit_command("inspect", "sample").returncode == 2


@pytest.mark.parametrize(
    ("name", "sizes", "strides", "padding"),
    [("nonsquare", (7, 7), (3, 3), "VALID"), ("projected", (10, 6), (7, 5), "SAME")],
)
def test_inspect_numbers_are_patchspecs(geotiffs, tmp_path, name, sizes, strides, padding):
    """inspect prints PatchSpec's grid, count and bytes for the raster without extracting, and the row-band
    plan that extract then streams: the bands the store logs as written, band for band."""
    as_text = lambda pair: ",".join(map(str, pair))  # noqa: E731
    args = ["--sizes", as_text(sizes), "--strides", as_text(strides), "--padding", padding, "--max-memory", "64KiB"]
    done = patchkit_command("inspect", str(geotiffs[name]), *args)
    assert done.returncode == 0, done.stderr
    da = rioxarray.open_rasterio(geotiffs[name])
    spec = patchkit.PatchSpec(sizes, strides, padding=padding)
    shape = (1, da.sizes["y"], da.sizes["x"], da.sizes["band"])
    rows, cols = spec.grid_shape(shape)
    assert f"{rows} x {cols} = {rows * cols} patches" in done.stdout
    assert f"({spec.nbytes(shape, da.dtype)} bytes)" in done.stdout
    written = patchkit_command("extract", str(geotiffs[name]), *args, "--to", "zarr", "--output", str(tmp_path / "p.zarr"))
    assert written.returncode == 0, written.stderr
    logged = sorted(tuple(band[:2]) for band in zarr.open_group(tmp_path / "p.zarr").attrs["patchkit_bands"])
    assert len(logged) > 1  # the budget makes several bands
    assert f"{len(logged)} row bands of {logged[0][1] - logged[0][0]} patch rows" in done.stdout


def test_extract_to_zarr(geotiffs, tmp_path):
    """extract writes a complete store equal to the accessor's result: values, coordinates (pixel centres,
    CRS) and attrs (the spec), under the name a nameless DataArray is stored as."""
    done = patchkit_command("extract", str(geotiffs["projected"]), "--sizes", "8", "--strides", "6", "--padding", "SAME",
                            "--to", "zarr", "--output", str(tmp_path / "p.zarr"))
    assert done.returncode == 0, done.stderr
    stored = patchkit.open_patches(tmp_path / "p.zarr")["pixels"].compute()
    expected = rioxarray.open_rasterio(geotiffs["projected"]).patches.extract(8, 6, padding="SAME")
    assert (expected != 0).any()  # the comparison below is not of zeros
    xr.testing.assert_identical(stored, expected.rename("pixels"))


def test_extract_from_url(served_cog, loopback, tmp_path):
    """extract takes an http(s) URL (nothing refuses it as a missing file) and writes the store the accessor
    writes from the local file, reading the COG in byte ranges from the server."""
    url, path, _ = served_cog
    done = patchkit_command("extract", url, "--sizes", "64", "--strides", "48", "--max-memory", "8MiB",
                            "--output", str(tmp_path / "p.zarr"))
    assert done.returncode == 0, done.stderr
    stored = patchkit.open_patches(tmp_path / "p.zarr", verify="full")["pixels"].compute()
    xr.testing.assert_identical(stored, rioxarray.open_rasterio(path).patches.extract(64, 48).rename("pixels"))
    assert any(r.path.endswith(url.rsplit("/", 1)[1]) and r.status == 206 for r in loopback.log)


def test_extract_from_vsicurl_path(served_cog, tmp_path, capsys):
    """extract takes GDAL's /vsicurl/ form of a URL too (run in this process: the command's imports are paid
    once, by the test above)."""
    from patchkit.jobs.cli import main

    url, path, _ = served_cog
    assert main(["extract", "/vsicurl/" + url, "--sizes", "64", "--strides", "48", "--output", str(tmp_path / "p.zarr")]) == 0
    assert "wrote" in capsys.readouterr().out
    stored = patchkit.open_patches(tmp_path / "p.zarr", verify="full")["pixels"].compute()
    xr.testing.assert_identical(stored, rioxarray.open_rasterio(path).patches.extract(64, 48).rename("pixels"))


def test_failing_notebook_exits_1(tmp_path):
    """A template whose cell raises exits 1 with the cell's error on stderr."""
    done = patchkit_command("run", "extract_patches", "-p", "input_path", str(tmp_path / "missing.tif"),
                            "--output-dir", str(tmp_path))
    assert done.returncode == 1 and "RasterioIOError" in done.stderr and "missing.tif" in done.stderr


def test_parameters_file_is_checked(tmp_path):
    """Parameters from a YAML file are checked like -p ones (and -p wins over the file)."""
    params = tmp_path / "params.yaml"
    params.write_text("sizes: 128\nstridez: 64\n")
    done = patchkit_command("run", "extract_patches", "-f", str(params), "--output-dir", str(tmp_path / "out"))
    assert done.returncode == 1 and "no parameter 'stridez'" in done.stderr


def test_bench_runs_the_benchmark():
    """`patchkit bench` runs the benchmark script of the source checkout with its arguments."""
    done = patchkit_command("bench", "--quick", "--case", "dask")
    assert done.returncode == 0 and "RSS growth" in done.stdout


def test_predict_writes_the_model_on_the_scene_grid(geotiffs, tmp_path, capsys, tf):
    """predict runs a saved Keras model over a GeoTIFF: the output GeoTIFF has the scene's CRS, transform and size,
    one band per output channel, and, for a 1x1 convolution, the convolution of the whole scene (every option
    reached predict: overlapping SAME patches, a crop, a blend, small batches and budget). It prints what it wrote."""
    import keras

    from patchkit.jobs.cli import main

    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Rescaling(1 / 60000), keras.layers.Conv2D(2, 1)])
    model.save(tmp_path / "model.keras")
    out = tmp_path / "pred.tif"
    args = ["predict", str(geotiffs["projected"]), str(tmp_path / "model.keras"), "--sizes", "16,12", "--strides", "10,6",
            "--crop", "2", "--blend", "cosine", "--batch-size", "3", "--max-memory", "8MiB", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "2 x 61 x 53 float32" in printed and "patches/s" in printed
    scene, pred = rioxarray.open_rasterio(geotiffs["projected"]), rioxarray.open_rasterio(out)
    assert pred.rio.crs == scene.rio.crs and pred.rio.transform() == scene.rio.transform()
    assert pred.shape == (2, 61, 53) and pred.dtype == "float32"
    whole = np.asarray(model(scene.values.transpose(1, 2, 0)[None].astype("float32")))[0].transpose(2, 0, 1)
    assert whole.std() > 0.01
    np.testing.assert_allclose(pred.values, whole, rtol=1e-5, atol=1e-6)


def test_predict_module_function_from_the_current_folder(geotiffs, tmp_path, monkeypatch, capsys):
    """MODEL may be module:function of a file in the current folder (found as `python -m` would find it); without
    --out the prediction is SCENE.prediction.tif here; with --out a .zarr, a Zarr store. The current folder leaves
    sys.path afterwards."""
    from patchkit.jobs.cli import main

    (tmp_path / "pk_cli_models.py").write_text("def brightness(batch):\n    return batch.mean(axis=-1, keepdims=True)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "pk_cli_models", raising=False)
    path = [p for p in sys.path]
    assert main(["predict", str(geotiffs["projected"]), "pk_cli_models:brightness", "--sizes", "8", "--strides", "8",
                 "--blend", "mean"]) == 0
    assert sys.path == path and "wrote projected.prediction.tif" in capsys.readouterr().out
    pred = rioxarray.open_rasterio(tmp_path / "projected.prediction.tif")
    scene = rioxarray.open_rasterio(geotiffs["projected"]).values.astype("float64")
    np.testing.assert_allclose(pred.values[0], scene.mean(axis=0), rtol=1e-6)
    assert main(["predict", str(geotiffs["projected"]), "pk_cli_models:brightness", "--sizes", "8", "--strides", "8",
                 "--blend", "mean", "--out", "pred.zarr"]) == 0  # a Zarr store, described with its CRS too
    assert "1 x 61 x 53 float64  EPSG:32633" in capsys.readouterr().out
    stored = xr.open_zarr(tmp_path / "pred.zarr")
    np.testing.assert_allclose(next(iter(stored.data_vars.values())).values[0], scene.mean(axis=0), rtol=1e-6)


@pytest.mark.parametrize(("text", "blend"), [("gaussian", "gaussian"), ("tukey,0.5", ("tukey", 0.5)), ("hann", "hann")])
def test_predict_blend_option(text, blend):
    """--blend takes a name, or a scipy window and its parameter as name,value (stitch's tuple)."""
    from patchkit.jobs.cli import build_parser

    args = build_parser().parse_args(["predict", "s.tif", "m.keras", "--sizes", "8", "--strides", "4", "--blend", text])
    assert args.blend == blend and args.padding == "SAME" and args.out is None and args.batch_size is None
