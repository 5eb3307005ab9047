"""``import patchkit``: the public names, the accessor registration, and no heavy imports."""

from __future__ import annotations

import subprocess
import sys

import xarray as xr

import patchkit


def test_import_is_light():
    """Importing patchkit loads none of TensorFlow, rasterio, rioxarray, zarr, dask, scipy, matplotlib, ipywidgets, papermill."""
    code = "import sys, patchkit; print(sorted(m for m in ('tensorflow', 'rasterio', 'rioxarray', 'zarr', 'dask', 'scipy', 'matplotlib', 'ipywidgets', 'papermill') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_accessor_registered():
    """DataArray.patches and Dataset.patches exist once patchkit is imported."""
    da = xr.DataArray([[1, 2], [3, 4]], dims=("y", "x"))
    assert isinstance(da.patches, patchkit.labelled.accessor.PatchesAccessor)
    assert isinstance(da.to_dataset(name="v").patches, patchkit.labelled.accessor.PatchesAccessor)


def test_public_names():
    """Every name in __all__ exists."""
    assert all(hasattr(patchkit, name) for name in patchkit.__all__)
