"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import numpy as np

from patchkit.dtypes import SUPPORTED_DTYPES

ALL_DTYPES = SUPPORTED_DTYPES


def random_image(shape, dtype, seed: int = 0) -> np.ndarray:
    """An image of random bit patterns (NaNs, infinities and signed zeros included); 0/1 for bool."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype_of(dtype))
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def dtype_of(name: str):
    """A numpy dtype from its name, bfloat16 through ml_dtypes."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


class RecordingArray:
    """A lazily read array that records every row range read (what zarr or h5py would serve)."""

    def __init__(self, data: np.ndarray, chunks=None):
        self._data = data
        self.shape = data.shape
        self.ndim = data.ndim
        self.dtype = data.dtype
        if chunks is not None:
            self.chunks = chunks
        self.reads: list[tuple[int, int]] = []

    def __getitem__(self, key):
        rows = key[1]
        self.reads.append((rows.start, rows.stop))
        return self._data[key].copy()


def write_geotiff(path, data: np.ndarray, transform, crs="EPSG:32633", nodata=None):
    """Write ``data`` (bands, rows, cols) as a GeoTIFF with rasterio; return the path."""
    import rasterio

    bands, height, width = data.shape
    profile = dict(driver="GTiff", width=width, height=height, count=bands, dtype=data.dtype.name,
                   crs=crs, transform=transform, nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def window_read(path, window, rates=(1, 1)) -> np.ndarray:
    """A patch read straight from the file: a rasterio boundless window (fill 0), every rate-th pixel."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        data = src.read(window=Window(window.col_off, window.row_off, window.width, window.height),
                        boundless=True, fill_value=0, masked=False)
    return data[:, :: rates[0], :: rates[1]]
