"""One plan: ``patchkit inspect``, the ``extract_patches`` template, the explorer and ``.patches.plan`` report
the row bands each sink then streams, band for band, for the same arguments (the house issue's "same plan").

The reference is not a formula but what the sink did: the bands it logged as written (a Zarr store's
``patchkit_bands``, a chip folder's manifest).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import patchkit
from patchkit.core.units import format_bytes

rioxarray = pytest.importorskip("rioxarray")
zarr = pytest.importorskip("zarr")
pytest.importorskip("papermill")

SPEC = dict(sizes=64, strides=48)
MEMORY = "12MiB"
CHUNKS = {"band": -1, "y": 1024, "x": 1024}  # as `patchkit extract`, `inspect` and the template open a scene


def _scene():
    from patchkit.sample import sample_path

    return rioxarray.open_rasterio(sample_path(), chunks=CHUNKS)


def _logged(sink: str, path) -> list[tuple[int, int]]:
    """The ``[start, stop)`` patch rows of every band the sink logged as written."""
    if sink == "zarr":
        bands = zarr.open_group(str(path), mode="r").attrs["patchkit_bands"]
    else:
        bands = json.loads((path / "patchkit.json").read_text())["bands"]
    return sorted((int(band[0]), int(band[1])) for band in bands)


def _line(plan) -> str:
    return f"{len(plan.bands)} row bands of {plan.band_rows} patch rows, peak {format_bytes(plan.peak)}"


@pytest.mark.slow
@pytest.mark.parametrize("sink", ["zarr", "geotiff"])
def test_inspect_explorer_and_sink_agree(sink, tmp_path):
    """.patches.plan(sink=...), `patchkit inspect --to`, and the explorer's model give the bands the sink writes."""
    from patchkit.explorer.model import ExplorerModel

    scene = _scene()
    plan = scene.patches.plan(**SPEC, sink=sink, max_memory=MEMORY)
    assert len(plan.bands) > 2  # the budget matters
    written = scene.patches.to(sink, tmp_path / sink, **SPEC, max_memory=MEMORY, progress=False)
    assert _logged(sink, written) == [(b.start, b.stop) for b in plan.bands]

    shown = subprocess.run([sys.executable, "-m", "patchkit", "inspect", "sample", "--sizes", "64", "--strides", "48",
                            "--max-memory", MEMORY, "--to", sink], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert _line(plan) in shown.stdout

    model = ExplorerModel.of_dataarray(scene, spec=patchkit.PatchSpec(**SPEC), max_memory=MEMORY, sink=sink)
    explored = model.plan()
    assert (explored.bands, explored.band_rows, explored.peak) == (plan.bands, plan.band_rows, plan.peak)


def test_the_sink_changes_the_plan():
    """Zarr's chunk buffers come off the budget, so its bands are no larger than iter's, and inspect says which."""
    scene = _scene()
    streamed = scene.patches.plan(**SPEC, max_memory=MEMORY)
    stored = scene.patches.plan(**SPEC, sink="zarr", max_memory=MEMORY)
    assert stored.band_rows <= streamed.band_rows
    assert stored.peak <= int(patchkit.core.budget.Budget.of(MEMORY))


@pytest.mark.slow
def test_template_reports_the_plan_its_sink_follows(tmp_path):
    """The template's summary table shows the bands its own run then writes."""
    done = subprocess.run([sys.executable, "-m", "patchkit", "run", "extract_patches", "-p", "sizes", "64", "-p", "strides",
                           "48", "-p", "max_memory", MEMORY, "-p", "max_nodata_fraction", "None", "-p", "sink", "zarr",
                           "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    plan = _scene().patches.plan(**SPEC, sink="zarr", max_memory=MEMORY)
    assert _logged("zarr", tmp_path / "patches.zarr") == [(b.start, b.stop) for b in plan.bands]
    notebook = (tmp_path / "extract_patches.ipynb").read_text()
    assert f"{len(plan.bands)} bands of {plan.band_rows} patch rows" in notebook
    assert format_bytes(plan.peak) in notebook
