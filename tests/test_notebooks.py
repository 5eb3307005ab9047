"""Every walkthrough in notebooks/ executes without errors on this environment's kernel (small parameters)."""

from __future__ import annotations

from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")
pytest.importorskip("rioxarray")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
#: Parameters that keep each walkthrough quick in the suite (their defaults are for people).
SMALL = {"02_huge_scene_under_a_budget": {"size": 2048, "max_memory": "64MiB"}}


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(notebook, tmp_path):
    """The notebook runs top to bottom (its outputs land in a temporary folder)."""
    from patchkit.jobs.templates import ensure_kernel

    pytest.importorskip("tensorflow") if "getting_started" in notebook.stem else None
    papermill.execute_notebook(str(notebook), str(tmp_path / notebook.name), parameters=SMALL.get(notebook.stem, {}),
                               kernel_name=ensure_kernel(), cwd=str(tmp_path), progress_bar=False)
