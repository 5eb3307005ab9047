"""The documentation site builds with warnings as errors, from the stored notebook outputs, and shows what it should.

``make docs`` builds the same site (and executes notebooks whose cells changed); this test never executes a
notebook: the user guide comes from the executed copies in ``docs/user_guide/``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built into a temporary folder (``-W --keep-going``, notebook execution off)."""
    out = tmp_path_factory.mktemp("docs")
    stored = {p: p.stat().st_mtime_ns for p in (DOCS / "user_guide").glob("*.ipynb")}
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q", "-j", "1",
         "-D", "patchkit_execute_notebooks=0", "-d", str(out / "doctrees"), str(DOCS), str(out / "html")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    assert {p: p.stat().st_mtime_ns for p in (DOCS / "user_guide").glob("*.ipynb")} == stored  # none executed
    return out / "html"


def page(site: Path, name: str) -> str:
    path = site / name
    assert path.is_file(), f"{name} was not built"
    return path.read_text(encoding="utf-8")


def text(html: str) -> str:
    """What a reader sees: the page without tags, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.mark.slow
def test_front_pages(site):
    """The index names the two commands and links every section; getting started, plugins and architecture exist."""
    index = page(site, "index.html")
    assert "make demo" in text(index) and "make test" in text(index)
    for link in ("getting_started.html", "user_guide/index.html", "api/index.html", "cli.html", "plugins.html",
                 "architecture.html", "bad_inputs.html"):
        assert f'href="{link}' in index, link
    plugins = text(page(site, "plugins.html")).replace(" ", "")  # code is split into highlighted spans
    assert '[project.entry-points."patchkit.sinks"]' in plugins and "classNpySink(Sink):" in plugins
    assert "Where a change goes" in text(page(site, "architecture.html"))
    assert page(site, "bad_inputs.html")


@pytest.mark.slow
def test_api_reference(site):
    """Every public entry has a page generated from its docstring, linked from the API index."""
    index = page(site, "api/index.html")
    for name in ("patchkit.extract_patches", "patchkit.iter_patches", "patchkit.PatchSpec",
                 "patchkit.labelled.accessor.PatchesAccessor", "patchkit.keras.ExtractPatches",
                 "patchkit.sinks.Sink", "patchkit.backends.Backend", "patchkit.explorer.PatchExplorer",
                 "patchkit.stitch.stitch", "patchkit.errors", "patchkit.testing", "patchkit.sample"):
        assert f"generated/{name}.html" in index, name
        assert page(site, f"api/generated/{name}.html")
    extract = page(site, "api/generated/patchkit.extract_patches.html")
    assert 'id="patchkit.extract_patches"' in extract and "Parameters" in extract
    accessor = page(site, "api/generated/patchkit.labelled.accessor.PatchesAccessor.html")
    assert 'id="patchkit.labelled.accessor.PatchesAccessor.to_zarr"' in accessor
    assert 'id="patchkit.errors.PatchkitError"' in page(site, "api/generated/patchkit.errors.html")


@pytest.mark.slow
def test_cli_reference(site):
    """The command-line page is generated from the parser: every sub-command and its options."""
    cli = text(page(site, "cli.html"))
    for option in ("templates", "inspect", "extract", "--max-memory", "--output-dir", "--sizes"):
        assert option in cli, option


@pytest.mark.slow
@pytest.mark.parametrize("notebook", ["01_getting_started", "03_stitching_predictions"])
def test_notebook_outputs_shown(site, notebook):
    """The user guide shows the notebooks with their outputs: printed text and the figures, as images."""
    html = page(site, f"user_guide/{notebook}.html")
    assert "cell_output" in html
    images = re.findall(r'<img[^>]+src="\.\./(_images/[^"]+\.png)"', html)
    assert images, f"{notebook}: no output image"
    assert all((site / image).stat().st_size > 1000 for image in images)
