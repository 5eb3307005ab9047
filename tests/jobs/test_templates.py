"""Notebook templates: listed, parameters checked before a kernel starts, run by papermill on this environment's kernel."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from patchkit.jobs import templates as jobs
from patchkit.errors import ParameterFileError, PatchkitValueError

papermill = pytest.importorskip("papermill")


def test_templates_are_shipped():
    """Both templates are found with importlib.resources, each with one parameters cell."""
    found = jobs.templates()
    assert {"extract_patches", "stitch_predictions", "predict_scene"} <= set(found)
    for path in found.values():
        cells = json.loads(path.read_text())["cells"]
        assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in cells) == 1


def test_parameters_have_types_and_help():
    """Parameters come with their default, its type and the comment that explains them."""
    params = jobs.parameters("extract_patches")
    assert {"input_path", "sizes", "strides", "rates", "padding", "max_memory", "max_nodata_fraction", "sink",
            "output_dir", "backend", "scheduler_address"} <= set(params)
    assert params["sizes"].type == "int" and params["sizes"].value == 128 and "patch size" in params["sizes"].help
    assert params["max_nodata_fraction"].type == "float"


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ({"sizez": 12}, r"no parameter 'sizez'; its parameters are: input_path .*sizes \(int"),
        ({"sizes": "big"}, r"sizes='big' is of type str.*expects the type of its default 128"),
        ({"max_nodata_fraction": "half"}, "max_nodata_fraction='half'"),
        ({"padding": 3}, "padding=3"),
    ],
)
def test_bad_parameters_refused(given, match):
    """Unknown names (listing the valid ones) and wrong types are refused."""
    with pytest.raises(PatchkitValueError, match=match):
        jobs.check_parameters("extract_patches", given)


@pytest.mark.parametrize(
    "given",
    [{"sizes": [256, 128]}, {"max_nodata_fraction": None}, {"max_nodata_fraction": 0}, {"sink": "geotiff"}, {}],
)
def test_good_parameters_pass(given):
    """Lists of ints for spec parameters, None, ints for floats and strings pass unchanged."""
    assert jobs.check_parameters("extract_patches", given) == given


@pytest.mark.parametrize(("text", "value"), [("128", 128), ("[256, 128]", [256, 128]), ("None", None), ("0.2", 0.2),
                                             ("SAME", "SAME"), ("tcp://h:8786", "tcp://h:8786")])
def test_parse_value(text, value):
    """Command-line values are read as Python literals, or else kept as text."""
    assert jobs.parse_value(text) == value


def test_kernel_is_this_environment():
    """The templates' kernel runs this very Python."""
    from jupyter_client.kernelspec import KernelSpecManager

    name = jobs.ensure_kernel()
    spec = KernelSpecManager().get_kernel_spec(name)
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()


@pytest.mark.slow
@pytest.mark.parametrize("sink", ["zarr", "geotiff"])
def test_extract_template_runs(tmp_path, sink):
    """The extraction template runs headlessly: executed notebook, patches, preview and (zarr) a stitched scene."""
    executed = jobs.run_template("extract_patches", {"sizes": 256, "strides": 256, "sink": sink, "max_memory": "64MiB"},
                                 tmp_path, progress=False)
    assert executed == tmp_path / "extract_patches.ipynb" and executed.exists()
    assert (tmp_path / "preview.png").stat().st_size > 10_000 and (tmp_path / "patches.png").exists()
    if sink == "zarr":
        assert (tmp_path / "patches.zarr" / "zarr.json").exists() and (tmp_path / "stitched.tif").exists()
    else:
        assert (tmp_path / "chips" / "index.geojson").exists()


@pytest.mark.slow
def test_stitch_template_runs(tmp_path):
    """The stitching template cuts the sample, predicts NDVI, stitches it into a GeoTIFF."""
    jobs.run_template("stitch_predictions", {"max_memory": "64MiB"}, tmp_path, progress=False)
    assert (tmp_path / "prediction.tif").exists() and (tmp_path / "prediction.png").exists()


@pytest.mark.slow
def test_predict_template_runs(tmp_path):
    """The prediction template, with no model given, trains the demo Keras model, saves it, loads it back and writes
    the prediction GeoTIFF on the scene's grid (CRS, transform, size), a preview and a summary that says what ran."""
    rioxarray = pytest.importorskip("rioxarray")
    pytest.importorskip("tensorflow")
    import numpy as np

    import patchkit
    from patchkit.sample import write_sample

    scene_path = write_sample(tmp_path / "scene.tif", (96, 120))
    given = {"input_path": str(scene_path), "sizes": 48, "strides": [40, 36], "crop": 2, "blend": "hann",
             "training_epochs": 1, "max_memory": "16MiB"}
    jobs.run_template("predict_scene", given, tmp_path / "out", progress=False)
    out = tmp_path / "out"
    scene, prediction = rioxarray.open_rasterio(scene_path), rioxarray.open_rasterio(out / "prediction.tif")
    assert prediction.rio.crs == scene.rio.crs and prediction.rio.transform() == scene.rio.transform()
    assert prediction.shape == (1, 96, 120) and np.isfinite(prediction.values).all() and prediction.values.std() > 0
    assert (out / "prediction_preview.png").stat().st_size > 10_000
    summary = json.loads((out / "prediction_summary.json").read_text())
    rows, cols = patchkit.PatchSpec(48, [40, 36], padding="SAME").grid_shape((1, 96, 120, 4))
    assert summary["patches"]["count"] == rows * cols and summary["patches"]["grid"] == [rows, cols]
    assert summary["prediction"]["shape"] == [1, 96, 120] and summary["prediction"]["crs"] == "EPSG:32633"
    assert summary["blend"] == "hann" and summary["crop"] == 2 and summary["training"]["epochs"] == 1
    assert summary["model"] == str(out / "demo_model.keras") and summary["seconds"]["predict"] > 0
    model = patchkit.load_model(out / "demo_model.keras")  # the saved model is a model: 4 bands in, 1 out
    assert tuple(model(np.zeros((1, 8, 8, 4), np.float32)).shape) == (1, 8, 8, 1)


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ({"blend": "median"}, r"blend='median' is not a blend"),
        ({"crop": 64}, r"crop=64 drops 64 rows from each side of patches of 128 rows"),
        ({"batch_size": 0}, r"batch_size=0 is not a positive integer; pass e.g. -p batch_size 16"),
        ({"sizes": 16, "crop": 8}, r"crop=8 drops 8 rows from each side of patches of 16 rows"),
    ],
)
def test_prediction_values_are_checked_before_a_kernel_starts(tmp_path, monkeypatch, given, match):
    """The prediction template's blend, crop (for its patch size) and batch size are refused before a kernel starts."""
    monkeypatch.setattr(jobs, "ensure_kernel", lambda *a, **k: pytest.fail("a kernel was started"))
    with pytest.raises(PatchkitValueError, match=match):
        jobs.run_template("predict_scene", given, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_failing_cell_is_reported(tmp_path):
    """A cell that raises gives NotebookError with the cell, the error and its value; the notebook is kept."""
    with pytest.raises(jobs.NotebookError, match="RasterioIOError: .*missing.tif") as info:
        jobs.run_template("extract_patches", {"input_path": str(tmp_path / "missing.tif")}, tmp_path, progress=False)
    assert info.value.ename == "RasterioIOError" and info.value.notebook.exists()


@pytest.mark.slow
def test_extract_template_on_a_dask_cluster(tmp_path):
    """With scheduler_address, the template's reads run on a real dask LocalCluster (worker processes)."""
    distributed = pytest.importorskip("distributed")
    transitions = lambda dask_scheduler: dask_scheduler.transition_counter  # noqa: E731
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            before = client.run_on_scheduler(transitions)
            jobs.run_template("extract_patches", {"sizes": 256, "strides": 256, "scheduler_address": cluster.scheduler_address},
                              tmp_path, progress=False)
            assert client.run_on_scheduler(transitions) > before + 50  # the reads ran as tasks on the cluster
    assert (tmp_path / "patches.zarr" / "zarr.json").exists() and (tmp_path / "stitched.tif").exists()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("sizes: [256, 128\nstrides: 2\n",
         r"params\.yaml' is not valid YAML: line 2, column 8: expected ',' or '\]', but got ':' \(while parsing a flow "
         r"sequence that starts at line 1, column 8\); fix that line"),
        ("sizes: 1\n\tstrides: 2\n", r"line 2, column 1: found character '\\t' that cannot start any token"),
        ("- 1\n- 2\n", r"holds \[1, 2\], not a mapping of parameter names to values; write one 'name: value' per line"),
        ("just text\n", r"holds 'just text', not a mapping"),
        ("1: 2\n", r"holds \{1: 2\}, not a mapping of parameter names"),
    ],
)
def test_malformed_parameter_files_name_the_file_and_line(tmp_path, text, match):
    """A YAML file that does not parse, or holds no mapping of names, is a ParameterFileError naming the file
    (and the line and column where it went wrong), never a raw scanner traceback."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParameterFileError, match=match):
        jobs.read_parameters_file(path)


def test_parameter_file_that_cannot_be_read(tmp_path):
    """A missing file, or one that is not UTF-8 text, names the option and the path."""
    with pytest.raises(ParameterFileError, match=r"missing\.yaml' cannot be read \(FileNotFoundError.*-f/--parameters-file"):
        jobs.read_parameters_file(tmp_path / "missing.yaml")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ParameterFileError, match=r"cannot be read \(UnicodeDecodeError"):
        jobs.read_parameters_file(tmp_path / "binary.yaml")


def test_parameter_files_give_their_mapping(tmp_path):
    """A valid file gives its mapping; an empty one none."""
    (tmp_path / "p.yaml").write_text("sizes: 128\nstrides: [64, 32]\n")
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    assert jobs.read_parameters_file(tmp_path / "p.yaml") == {"sizes": 128, "strides": [64, 32]}
    assert jobs.read_parameters_file(tmp_path / "empty.yaml") == {}


def test_cli_reports_a_malformed_parameter_file_in_one_line(tmp_path, capsys):
    """`patchkit run TEMPLATE -f bad.yaml` exits 1 with one line on stderr naming the file and the line."""
    from patchkit.jobs.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("sizes: [256, 128\nstrides: 2\n")
    assert main(["run", "extract_patches", "-f", str(path), "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("patchkit run: the parameters file") and "line 2, column 8" in err
    assert not (tmp_path / "out").exists()  # refused before anything ran


@pytest.mark.parametrize(
    ("given", "error", "match"),
    [
        ({"sizes": 0}, "InvalidSpecError", r"sizes=0 must be positive"),
        ({"strides": [64, 2**40]}, "InvalidSpecError", r"more than 2\*\*31 - 1"),
        ({"padding": "FULL"}, "InvalidSpecError", r"padding='FULL' is not supported"),
        ({"max_memory": "lots"}, "InvalidMemoryError", r"max_memory='lots' does not parse"),
        ({"max_nodata_fraction": 2.0}, "PatchkitValueError", r"max_nodata_fraction=2.0 must be a share"),
    ],
)
def test_values_are_checked_before_a_kernel_starts(tmp_path, monkeypatch, given, error, match):
    """A value of the right type that patchkit refuses (sizes 0, a budget that does not parse) is refused at
    once, not by a failing cell minutes later; no kernel starts and no output folder is made."""
    import patchkit.errors

    monkeypatch.setattr(jobs, "ensure_kernel", lambda *a, **k: pytest.fail("a kernel was started"))
    with pytest.raises(getattr(patchkit.errors, error), match=match):
        jobs.run_template("extract_patches", given, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_output_dir_under_a_file_is_a_sink_write_error(tmp_path, monkeypatch):
    """An --output-dir that cannot be made names it and says to choose another, before a kernel starts."""
    from patchkit.errors import SinkWriteError

    monkeypatch.setattr(jobs, "ensure_kernel", lambda *a, **k: pytest.fail("a kernel was started"))
    (tmp_path / "a-file.txt").write_text("x")
    with pytest.raises(SinkWriteError, match=r"output_dir='.*a-file\.txt/out' cannot be made: Not a directory; choose another"):
        jobs.run_template("extract_patches", {}, tmp_path / "a-file.txt" / "out", progress=False)
