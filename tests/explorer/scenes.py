"""Small synthetic scenes shared by the explorer's test modules."""

from __future__ import annotations

import numpy as np
import xarray as xr


def small_scene(h=61, w=53, bands=3, dtype="uint16", chunks=None, seed=0):
    """A (band, y, x) DataArray with regular coordinates, numpy- or dask-backed."""
    data = np.random.default_rng(seed).integers(1, 1000, (bands, h, w)).astype(dtype)
    da = xr.DataArray(data, dims=("band", "y", "x"),
                      coords={"band": np.arange(1, bands + 1), "y": 1000.0 - 10 * np.arange(h), "x": 10.0 * np.arange(w)})
    return da.chunk({"y": chunks, "x": chunks}) if chunks else da
