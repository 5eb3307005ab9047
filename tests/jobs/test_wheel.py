"""The wheel carries the notebook templates: built from this checkout's files, unpacked, and run from there.

In the checkout the templates live in ``templates/`` beside ``patchkit/``; ``setup.py`` maps them into the
wheel as ``patchkit/templates/*.ipynb``. These tests build the wheel from a copy of the packaging files
(so nothing is written into the work tree), then run patchkit with the unpacked wheel first on
``sys.path`` and from a folder outside the checkout, so that only the wheel's files can be found.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

setuptools = pytest.importorskip("setuptools", reason="building the wheel without isolation needs setuptools")
if tuple(int(p) for p in setuptools.__version__.split(".")[:2]) < (70, 1):  # bdist_wheel joined setuptools in 70.1
    pytest.importorskip("wheel", reason="building the wheel with setuptools < 70.1 needs the wheel package")

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("extract_patches", "stitch_predictions", "predict_scene")
#: What a build reads: pyproject.toml names README.md as the long description.
BUILD_FILES = ("pyproject.toml", "setup.py", "README.md")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of patchkit, built offline (no build isolation, no index) from a copy of the checkout."""
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_FILES:
        shutil.copy2(ROOT / name, source / name)
    leave_out = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", ".ipynb_checkpoints")
    for folder in ("patchkit", "templates"):
        shutil.copytree(ROOT / folder, source / folder, ignore=leave_out)
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--quiet", "--wheel-dir", str(dist), str(source)],
                           capture_output=True, text=True, timeout=180)
    assert built.returncode == 0, f"pip wheel failed:\n{built.stdout}\n{built.stderr}"
    (found,) = dist.glob("patchkit-*.whl")
    return found


@pytest.fixture(scope="module")
def unpacked(wheel, tmp_path_factory) -> Path:
    """The wheel's files, as an installer would lay them in site-packages."""
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def from_wheel(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python *args`` with ``site`` first on ``sys.path``, run from ``cwd`` (not the checkout)."""
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_wheel_carries_templates_and_every_module(wheel):
    """The notebooks are package data under patchkit/templates/, as in templates/; no module is left out
    (a subpackage without ``__init__.py`` would be); nothing is installed as a top-level ``templates``."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"patchkit/templates/{p.name}" for p in (ROOT / "templates").glob("*.ipynb")} <= names
    assert {f"patchkit/templates/{name}.ipynb" for name in NAMES} <= names
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "patchkit").rglob("*.py")}
    assert not modules - names, f"left out of the wheel: {sorted(modules - names)}"
    assert not [n for n in names if n.split("/")[0] in ("templates", "tests", "benchmarks", "notebooks")]


def test_installed_wheel_lists_and_finds_templates(unpacked, tmp_path):
    """`python -m patchkit templates` lists both templates from the wheel alone, and template_path
    resolves inside it."""
    listed = from_wheel(unpacked, "-m", "patchkit", "templates", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert set(NAMES) <= {line for line in listed.stdout.splitlines() if line and not line.startswith(" ")}

    found = from_wheel(unpacked, "-c", "import patchkit, patchkit.jobs.templates as t; "
                       "print(patchkit.__file__); print(t.template_path('extract_patches'))", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    package, notebook = (Path(line) for line in found.stdout.split())
    assert package == unpacked / "patchkit" / "__init__.py"
    assert notebook == unpacked / "patchkit" / "templates" / "extract_patches.ipynb"


def test_installed_wheel_bench_needs_a_checkout(unpacked, tmp_path):
    """`patchkit bench` from a wheel (which has no benchmarks/) says to run it from a source checkout."""
    done = from_wheel(unpacked, "-m", "patchkit", "bench", "--quick", cwd=tmp_path)
    assert done.returncode == 1
    assert "run it from a source checkout" in done.stderr
