"""Third-party sinks and backends through entry points: a tiny distribution on sys.path, used from the accessor and the CLI.

The distribution ``patchkit-toy`` is real metadata (a ``.dist-info`` with ``entry_points.txt``) in a
temporary folder, found by ``importlib.metadata`` as an installed package would be. Its sink writes
each row band of patches as a ``.npy`` file; its backend copies patches with plain Python loops.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import patchkit
from patchkit.core import backends as core_backends

from .helpers import random_image

TOY = '''
"""patchkit-toy: a sink and a backend written against patchkit's public plugin interfaces."""
from pathlib import Path

import numpy as np

import patchkit
from patchkit.sinks import Progress, Sink


class NpySink(Sink):
    name = "npy"
    output = ("npy",)
    description = "one .npy file per row band of patches"

    def write(self, obj, path, spec, *, max_memory="512MiB", mode=None, max_nodata_fraction=None, backend="auto",
              progress=True, **options):
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if (path / "COMPLETE").exists() and mode != "w":
            return path
        for band in obj.patches.iter(spec.sizes, spec.strides, spec.rates, spec.padding, max_memory=max_memory,
                                     backend=backend):
            rows = band["patch_row"].values
            np.save(path / f"rows_{rows[0]:05d}_{rows[-1] + 1:05d}.npy", band.values)
        (path / "COMPLETE").touch()
        return path

    def progress(self, path, rows):
        done = sum(int(f.stem.split("_")[2]) - int(f.stem.split("_")[1]) for f in Path(path).glob("rows_*.npy"))
        return Progress(done, rows, "rows")

    def open(self, path, **kwargs):
        return np.concatenate([np.load(f) for f in sorted(Path(path).glob("rows_*.npy"))])  # along patch_row


class LoopBackend:
    """Patches copied one by one (slow, obviously right): proof that the interface is enough."""

    name = "loop"
    pad_copy = True
    calls = []

    def extract(self, images, spec, out=None):
        return self.band(images, 0, images.shape, spec, slice(0, spec.output_shape(images.shape)[1]), out)

    def band(self, src, row0, shape, spec, rows, out=None):
        type(self).calls.append((rows.start, rows.stop))
        (top, _), (left, right) = spec.padding_amounts(shape)
        b, _, ow, depth = spec.output_shape(shape)
        src = np.pad(np.asarray(src), ((0, 0), (0, 0), (left, right), (0, 0)))
        out = np.empty((b, rows.stop - rows.start, ow, depth), src.dtype) if out is None else out
        (kh, kw), (sr, sc), (rr, rc) = spec.sizes, spec.strides, spec.rates
        for n, i in enumerate(range(rows.start, rows.stop)):
            for j in range(ow):
                patch = np.zeros((b, kh, kw, shape[3]), src.dtype)
                for a in range(kh):
                    y = i * sr - top + a * rr
                    if 0 <= y < shape[1]:
                        patch[:, a] = src[:, y - row0, j * sc : j * sc + (kw - 1) * rc + 1 : rc]
                out[:, n, j] = patch.reshape(b, -1)
        return out
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The ``patchkit-toy`` distribution on ``sys.path``; the registries read the entry points again, before and after."""
    site = tmp_path / "site"
    (site / "patchkit_toy").mkdir(parents=True)
    (site / "patchkit_toy" / "__init__.py").write_text(textwrap.dedent(TOY))
    info = site / "patchkit_toy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: patchkit-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[patchkit.sinks]\nnpy = patchkit_toy:NpySink\n\n"
                                           "[patchkit.backends]\nloop = patchkit_toy:LoopBackend\n")
    monkeypatch.syspath_prepend(str(site))
    registries = (patchkit.sinks.registry, core_backends.registry)
    for registry in registries:
        registry.refresh()
    yield site
    monkeypatch.undo()
    for registry in registries:
        registry.refresh()
    sys.modules.pop("patchkit_toy", None)


def test_installed_plugins_are_listed_without_importing_them(toy):
    """available() lists the entry points' names next to the built-ins and imports no plugin to do so."""
    assert "npy" in patchkit.sinks.available() and "zarr" in patchkit.sinks.available()
    assert "loop" in patchkit.backends.available() and "numpy" in patchkit.backends.available()
    assert "patchkit_toy" not in sys.modules


@pytest.mark.parametrize(("spec", "shape"), [((3, 2, 1, "VALID"), (1, 9, 8, 2)), (((4, 3), (3, 2), (2, 1), "SAME"), (2, 11, 7, 3))])
def test_installed_backend_equals_numpy(toy, spec, shape):
    """A backend from an entry point runs extract_patches and iter_patches, with the same numbers as numpy."""
    images = random_image(shape, "float32", seed=3)
    got = patchkit.extract_patches(images, *spec, backend="loop")
    np.testing.assert_array_equal(got, patchkit.extract_patches(images, *spec, backend="numpy"))
    streamed = np.concatenate([block.copy() for _, block in patchkit.iter_patches(images, *spec, max_memory="4KiB",
                                                                                  backend="loop")], axis=1)
    np.testing.assert_array_equal(streamed, got)
    assert patchkit.backends.get_backend("loop", None).calls


def test_installed_sink_and_backend_from_the_accessor(toy, tmp_path):
    """da.patches.to("npy", ...) writes through the installed sink (its bands cut by the installed backend), its
    progress reads the output, and open() gives back the accessor's patches."""
    import xarray as xr

    da = xr.DataArray(random_image((3, 20, 17), "uint16", seed=5), dims=("band", "y", "x"))
    out = da.patches.to("npy", tmp_path / "out", 5, 4, max_memory="1KiB", backend="loop")
    sink = patchkit.sinks.get("npy")
    rows = patchkit.PatchSpec(5, 4).grid_shape((1, 20, 17, 3))[0]
    assert sink.progress(out, rows) == (rows, rows, "rows")
    assert len(list(out.glob("rows_*.npy"))) > 1  # several bands under the budget
    np.testing.assert_array_equal(sink.open(out), da.patches.extract(5, 4).values)
    assert da.patches.plan(5, 4, sink="npy", max_memory="1KiB") == da.patches.plan(5, 4, max_memory="1KiB")


def test_unknown_names_list_the_installed_ones(toy):
    """An unknown sink or backend names what is installed, plugins included."""
    with pytest.raises(patchkit.errors.UnknownSinkError, match=r"sink='parquet'.*npy"):
        patchkit.sinks.get("parquet")
    with pytest.raises(patchkit.errors.UnknownBackendError, match=r"backend='jax'.*loop"):
        patchkit.extract_patches(np.zeros((1, 4, 4, 1)), 2, 2, backend="jax")


def test_installed_sink_and_backend_from_the_cli(toy, tmp_path):
    """The command offers the installed sink and backend (--to npy, --backend loop) and writes through them."""
    pytest.importorskip("rioxarray")
    env = {"PYTHONPATH": str(toy), "PATH": ""}
    run = lambda *args: subprocess.run([sys.executable, "-m", "patchkit", *args], capture_output=True, text=True,  # noqa: E731
                                       env=env, timeout=120)
    assert "npy" in run("extract", "--help").stdout
    done = run("extract", "sample", "--sizes", "64", "--strides", "64", "--to", "npy", "--backend", "loop",
               "--output", str(tmp_path / "cli"), "--max-memory", "24MiB")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli" / "COMPLETE").exists() and list((tmp_path / "cli").glob("rows_*.npy"))
    plan = run("inspect", "sample", "--sizes", "64", "--strides", "64", "--to", "npy", "--max-memory", "24MiB")
    assert plan.returncode == 0 and "row bands" in plan.stdout, plan.stderr
