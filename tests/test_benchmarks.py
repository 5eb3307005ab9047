"""The benchmark scripts still run (their figures are printed, never asserted here)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import patchkit

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, timeout: int = 300) -> str:
    """Run ``benchmarks/<script>`` with ``args``; its stdout, after checking that it exited 0."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize(
    "script, args, expect",
    [
        ("bench_extract.py", ["--quick", "--case", "dask"], "RSS growth"),
        ("bench_xarray.py", ["--quick", "--repeats", "1"], "lazy, in memory"),
        ("bench_remote.py", ["--quick"], "range GETs"),
        ("classic_uses.py", ["--repeats", "1"], "every result equal to TensorFlow's, bit for bit"),
    ],
)
def test_script_runs(script, args, expect):
    """Each script exits 0 and prints its figures."""
    if script == "classic_uses.py":
        pytest.importorskip("tensorflow")
    assert expect in run_script(script, *args)


def test_sinks_rows(tmp_path):
    """bench_sinks --quick prints every row (sinks, xarray's two ways, the limits, stitching) with its ratios.

    Its own check runs too: xarray's rolling windows hold the scene's pixels at patchkit's VALID positions.
    """
    out = run_script("bench_sinks.py", "--quick", "--dir", str(tmp_path), "--json", str(tmp_path / "rows.json"))
    rows = ["to_zarr raw", "to_zarr zstd", "to_geotiffs", "xarray raw", "xarray zstd", "xarray lazy raw",
            "xarray lazy zstd", "limit: write zarr raw", "limit: write zarr zstd", "limit: zstd+write zarr",
            "limit: write chips", "limit: deflate+write chips", "stitch -> tif", "stitch in memory",
            "to_zarr raw, 1 worker", "to_zarr raw, 2 workers"]
    if importlib.util.find_spec("tensorflow") is not None:
        rows += ["to_tfrecord", "limit: write tfrecord"]
    for name in rows:
        assert re.search(rf"^{re.escape(name)}\s+\d", out, re.MULTILINE), f"no row {name!r} in:\n{out}"
    assert re.search(r"^to_zarr zstd(\s+\S+){2}\s+\d+\.\d\dx\s+\d+\.\d\dx", out, re.MULTILINE), out  # vs limit, vs xarray
    assert "vs limit" in out and "/ max_mem" in out
    assert (tmp_path / "rows.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["rows.json"]  # the run's folder is removed


def test_extract_tensorflow_interleaved():
    """bench_extract's TensorFlow rows come from the same process as patchkit's, taking turns with them."""
    pytest.importorskip("tensorflow")
    out = run_script("bench_extract.py", "--quick", "--case", "large", "--repeats", "1")
    assert "tf.image.extract_patches, warm" in out
    assert "extract_patches / tf warm" in out
    assert "same process" in out


def test_predict_rows(tmp_path):
    """bench_predict --quick prints every row it can run (the model limit and the naive way with TensorFlow,
    patchkit.predict's rows where patchkit has it, stitch, the warm-copy limit) with its ratios, and each
    result passes its check: predict's and the naive way's predictions cover the scene, the identity
    model and stitch give the scene back bit for bit.
    """
    out = run_script("bench_predict.py", "--quick", "--dir", str(tmp_path), "--json", str(tmp_path / "rows.json"))
    rows = ["stitch, mean", "stitch, gaussian", "limit: warm copy, 1 thread"]
    if importlib.util.find_spec("tensorflow") is not None:
        rows += ["model alone, model(batch)", "model alone, tf.function", "naive TensorFlow"]
    if hasattr(patchkit, "predict"):
        rows += ["predict identity, mean", "predict identity, gaussian"]
        if importlib.util.find_spec("tensorflow") is not None:
            rows += ["predict -> memory", "predict -> tif"]
    for name in rows:
        assert re.search(rf"^{re.escape(name)}\s+\d", out, re.MULTILINE), f"no row {name!r} in:\n{out}"
    assert re.search(r"^stitch, mean(\s+\S+){4}\s+\d+\.\d\dx", out, re.MULTILINE), out  # vs the warm-copy limit
    assert "CHECK FAILED" not in out
    report = json.loads((tmp_path / "rows.json").read_text())
    checked = {row["name"]: row.get("note") for row in report["rows"] if row["family"] != "model" and row["family"] != "copy"}
    assert all(checked.values()), checked  # every checked row's first call was checked, and passed
    assert [p.name for p in tmp_path.iterdir()] == ["rows.json"]  # the run's folder is removed


def test_predict_naive_overlap_add():
    """The naive way's overlap-add (bench_predict) averages SAME patches where they were cut, as patchkit.stitch's
    mean does: uneven padding, overlaps of 1, 2 and 4 patches, patches that disagree."""
    from benchmarks.bench_predict import overlap_add

    spec, shape = patchkit.PatchSpec(8, 5, padding="SAME"), (1, 37, 45, 3)
    patches = np.random.default_rng(0).random(spec.output_shape(shape), dtype=np.float32)
    rows, cols = spec.grid_shape(shape)
    back = overlap_add(patches.reshape(rows * cols, 8, 8, 3), (rows, cols), 5, shape[1:3])
    np.testing.assert_allclose(back, patchkit.stitch(patches, "mean", spec=spec, image_shape=shape), rtol=1e-5)


def test_gpu_without_cupy(tmp_path):
    """bench_gpu without CuPy says what it needs and exits 2, or 0 with --allow-missing (writing that to --json),
    so that gpu_check.sh and a CPU machine can run it."""
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed: bench_gpu would run for real")
    script = [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--quick"]
    refused = subprocess.run(script, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "needs CuPy and a CUDA device" in refused.stderr, refused.stderr
    allowed = subprocess.run([*script, "--allow-missing", "--json", str(tmp_path / "gpu.json")], capture_output=True,
                             text=True, timeout=60)
    assert allowed.returncode == 0, allowed.stderr
    assert "needs CuPy" in json.loads((tmp_path / "gpu.json").read_text())["skipped"]
