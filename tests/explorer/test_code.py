"""explorer.code: the generated Python call runs the same job; the command is a valid template call."""

from __future__ import annotations

import numpy as np
import pytest

import patchkit
from patchkit.core.spec import PatchSpec
from patchkit.explorer.code import job_code

from .scenes import small_scene

def _cli_parameters(cli: str) -> dict:
    """The ``-p NAME VALUE`` pairs of a ``patchkit run`` line, parsed as the CLI parses them."""
    import shlex

    from patchkit.jobs.templates import parse_value

    words = shlex.split(cli.splitlines()[0])
    assert words[:3] == ["patchkit", "run", "extract_patches"]
    pairs = words[3:]
    assert pairs[::3] == ["-p"] * (len(pairs) // 3)
    return {name: parse_value(value) for name, value in zip(pairs[1::3], pairs[2::3])}


def test_job_code_python_runs_the_same_job(tmp_path):
    """The Python call of job_code, executed, writes what extract gives; the command names every parameter."""
    da = small_scene(chunks=20)
    spec = PatchSpec((16, 8), 8, 1, "SAME")
    python, cli = job_code(spec, "zarr", tmp_path / "out" / "patches.zarr", max_memory="1MiB", max_nodata_fraction=0.5, name="scene")
    assert "scene.patches.to('zarr', " in python and "sizes=(16, 8)" in python and "max_nodata_fraction=0.5" in python
    exec(python, {"scene": da})
    got = patchkit.open_patches(tmp_path / "out" / "patches.zarr")
    want = da.patches.extract((16, 8), 8, 1, "SAME", max_nodata_fraction=0.5)
    np.testing.assert_array_equal(got["pixels"].values, want.values)
    assert _cli_parameters(cli) == {"input_path": "SCENE.tif", "sizes": [16, 8], "strides": 8, "rates": 1, "padding": "SAME",
                                    "max_memory": "1MiB", "max_nodata_fraction": 0.5, "sink": "zarr",
                                    "output_dir": str(tmp_path / "out")}
    assert cli.splitlines()[1:] == ["# SCENE.tif: the raster file the DataArray was read from"]


@pytest.mark.parametrize("sink, path", [("zarr", "outputs/patches.zarr"), ("geotiff", "run1/chips"),
                                        ("tfrecord", "outputs/tfrecord/patches"), ("zarr", "elsewhere/my.zarr")])
def test_job_code_command_is_a_valid_template_call(sink, path):
    """The command's parameters are the extract_patches template's, of its types; output_dir holds the output."""
    from patchkit.jobs.templates import check_parameters

    python, cli = job_code(PatchSpec(256, 128), sink, path, max_memory=2**29, source="/data/scene.tif",
                           chunks={"y": 1024, "x": 512}, backend="numpy")
    assert "rioxarray.open_rasterio('/data/scene.tif', chunks={'y': 1024, 'x': 512})" in python
    assert f"da.patches.to({sink!r}, {path!r}, sizes=256, strides=128, rates=1, padding='VALID', max_memory=536870912, backend='numpy')" in python
    given = _cli_parameters(cli)
    check_parameters("extract_patches", given)
    assert given["max_memory"] == "536870912B" and given["max_nodata_fraction"] is None and given["backend"] == "numpy"
    assert given["input_path"] == "/data/scene.tif" and given["sink"] == sink
    exact = not path.startswith("elsewhere")
    assert given["output_dir"] == ("elsewhere" if not exact else path.split("/")[0])
    assert ("# the template writes elsewhere/patches.zarr, not elsewhere/my.zarr" in cli) == (not exact)
