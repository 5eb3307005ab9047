"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, NamedTuple

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from patchkit.core.dtypes import SUPPORTED_DTYPES

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


def sentinel_filled(shape, dtype) -> np.ndarray:
    """An array that code under test is to write into, pre-filled so that any element it leaves (or any
    read of stale memory) shows: NaN for floating and complex dtypes, the byte 0xA5 in every byte otherwise."""
    dtype = np.dtype(dtype_of(dtype) if isinstance(dtype, str) else dtype)
    out = np.empty(shape, dtype)
    fill_sentinel(out)
    return out


def fill_sentinel(array: np.ndarray) -> None:
    """Fill ``array`` in place with the sentinel of :func:`sentinel_filled`."""
    if array.dtype.kind in "fc":
        array[...] = np.nan
    elif array.flags.c_contiguous:
        array.reshape(-1).view(np.uint8)[:] = 0xA5
    else:
        np.copyto(array, sentinel_filled(array.shape, array.dtype))


@contextmanager
def sentinel_allocations() -> Iterator[None]:
    """Within the block every ``np.empty`` (and ``np.empty_like`` of an ndarray) comes back filled with the
    sentinel of :func:`sentinel_filled` and followed by as much sentinel again: an element the code under
    test leaves unwritten, or a read past the end of a buffer it allocated (a halo too short), shows in its
    result every time instead of by the chance of what uninitialised memory held. (The fixture
    ``sentinel_buffers`` in conftest.py does this for a whole test; this form suits hypothesis tests.)"""
    import pytest

    real_empty, real_empty_like = np.empty, np.empty_like

    def empty(shape, dtype=float, order="C", **kwargs):
        dims = (int(shape),) if np.ndim(shape) == 0 else tuple(int(n) for n in shape)
        size = int(np.prod(dims, dtype=np.int64))
        raw = real_empty(2 * size + 64, dtype)
        fill_sentinel(raw)
        return raw[:size].reshape(dims, order=order)

    def empty_like(prototype, dtype=None, order="K", subok=True, shape=None, **kwargs):
        if type(prototype) is not np.ndarray:  # dask, cupy...: their own
            return real_empty_like(prototype, dtype, order, subok, shape, **kwargs)
        fortran = order in ("F", "A", "K") and prototype.flags.f_contiguous and not prototype.flags.c_contiguous
        return empty(prototype.shape if shape is None else shape, prototype.dtype if dtype is None else dtype,
                     "F" if fortran else "C")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(np, "empty", empty)
        patch.setattr(np, "empty_like", empty_like)
        yield


def halo_in_sentinel(images: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of ``images`` as a view into a buffer whose further rows (as many as the image
    has) hold the sentinel: code that reads past the halo it was given reads the sentinel, every time."""
    b, h, w, c = images.shape
    buffer = sentinel_filled((b, stop - start + h, w, c), images.dtype)
    buffer[:, : stop - start] = images[:, start:stop]
    return buffer[:, : stop - start]


# ---- TensorFlow's patch geometry, from its documentation alone (no patchkit code) ----------------
#
# tf.image.extract_patches, for one spatial axis of length n, kernel k, stride s and rate r:
#   effective kernel  keff = k + (k - 1)(r - 1)
#   VALID: out = ceil((n - keff + 1) / s) = floor((n - keff) / s) + 1, and no padding;
#   SAME:  out = ceil(n / s); pad_total = max((out - 1) s + keff - n, 0); pad_before = pad_total // 2;
#   patch i, tap a reads pixel i s - pad_before + a r, a zero where that lies outside [0, n).
# These are the references the tests compare patchkit's geometry with: none of it calls PatchSpec.


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if np.isscalar(value) else tuple(int(v) for v in value)


def tf_axis(n: int, k: int, s: int, r: int, padding: str) -> tuple[int, int]:
    """``(out, pad_before)`` of one axis by TensorFlow's documented rule."""
    keff = k + (k - 1) * (r - 1)
    if padding == "VALID":
        return max((n - keff) // s + 1, 0), 0
    out = -(-n // s)
    return out, max((out - 1) * s + keff - n, 0) // 2


def tf_taps(n: int, k: int, s: int, r: int, padding: str) -> np.ndarray:
    """``pixel[i, a]``: the input index that tap ``a`` of patch ``i`` reads along one axis (outside ``[0, n)``: padding)."""
    out, before = tf_axis(n, k, s, r, padding)
    return np.array([[i * s - before + a * r for a in range(k)] for i in range(out)], np.int64).reshape(out, k)


def tf_grid(hw, sizes, strides, rates=1, padding: str = "VALID") -> tuple[np.ndarray, np.ndarray]:
    """``(rows[out_rows, kh], cols[out_cols, kw])``: the input rows and columns every patch reads."""
    return tuple(tf_taps(n, k, s, r, padding) for n, k, s, r in zip(hw, _pair(sizes), _pair(strides), _pair(rates)))


def tf_grid_shape(hw, sizes, strides, rates=1, padding: str = "VALID") -> tuple[int, int]:
    """``(out_rows, out_cols)``."""
    return tuple(tf_axis(n, k, s, r, padding)[0] for n, k, s, r in zip(hw, _pair(sizes), _pair(strides), _pair(rates)))


def tf_halo(rows: slice, n: int, k: int, s: int, r: int, padding: str) -> tuple[int, int]:
    """The input rows ``[start, stop)`` from the first to the last tap of output rows ``rows``, clipped to
    ``[0, n)``: what a band of those rows must read of its source, and no more."""
    taps = tf_taps(n, k, s, r, padding)[rows]
    return max(int(taps.min()), 0), min(int(taps.max()) + 1, n)


def tf_window(i: int, j: int, hw, sizes, strides, rates=1, padding: str = "VALID"):
    """The input window patch ``(i, j)`` reads: ``row_off``, ``col_off`` (negative in the padding) and the
    effective ``height`` and ``width``, for :func:`window_read`."""
    from types import SimpleNamespace

    rows, cols = tf_grid(hw, sizes, strides, rates, padding)
    (kh, kw), (rh, rw) = _pair(sizes), _pair(rates)
    return SimpleNamespace(row_off=int(rows[i, 0]), col_off=int(cols[j, 0]), height=(kh - 1) * rh + 1, width=(kw - 1) * rw + 1)


def tf_reference_patches(images: np.ndarray, sizes, strides, rates=1, padding: str = "VALID") -> np.ndarray:
    """``tf.image.extract_patches`` of a ``[batch, h, w, channels]`` array, gathered pixel by pixel from
    :func:`tf_grid` (zeros outside the image), in TensorFlow's layout ``[batch, oh, ow, kh * kw * channels]``.

    Any dtype, bit for bit (NaN payloads included): values are only copied.
    """
    images = np.asarray(images)
    b, h, w, c = images.shape
    rows, cols = tf_grid((h, w), sizes, strides, rates, padding)
    (oh, kh), (ow, kw) = rows.shape, cols.shape
    inside = ((rows >= 0) & (rows < h))[:, None, :, None] & ((cols >= 0) & (cols < w))[None, :, None, :]
    if h == 0 or w == 0:
        return np.zeros((b, oh, ow, kh * kw * c), images.dtype)
    gathered = images[:, np.clip(rows, 0, h - 1)[:, None, :, None], np.clip(cols, 0, w - 1)[None, :, None, :]]
    gathered[:, ~inside] = np.zeros((), images.dtype)
    return gathered.reshape(b, oh, ow, kh * kw * c)


# ---- one hypothesis strategy for specs and images -------------------------------------------------


class SpecCase(NamedTuple):
    """An image shape ``(batch, h, w, channels)`` and a spec's arguments, as the strategy draws them."""

    shape: tuple[int, int, int, int]
    sizes: tuple[int, int]
    strides: tuple[int, int]
    rates: tuple[int, int]
    padding: str

    @property
    def args(self) -> tuple:
        """``(sizes, strides, rates, padding)``, positional as extract_patches takes them."""
        return self.sizes, self.strides, self.rates, self.padding

    @property
    def kwargs(self) -> dict:
        return dict(sizes=self.sizes, strides=self.strides, rates=self.rates, padding=self.padding)

    @property
    def spec(self):
        from patchkit import PatchSpec

        return PatchSpec(*self.args)


@st.composite
def spec_cases(draw, height: int = 14, width: int | None = None, kernel: int = 5, stride: int = 5, rate: int = 3,
               batch: int = 2, channels: int = 3, fits: bool = True) -> SpecCase:
    """A :class:`SpecCase`: sides ``1..height`` and ``1..width``, kernels ``1..kernel``, strides ``1..stride``,
    rates ``1..rate`` per axis, either padding. With ``fits`` a VALID kernel never exceeds the image
    (TensorFlow's effective kernel rule, as :func:`tf_axis`), so the grid is never empty."""
    width = height if width is None else width
    shape = (draw(st.integers(1, batch)), draw(st.integers(1, height)), draw(st.integers(1, width)), draw(st.integers(1, channels)))
    pair = lambda top: (draw(st.integers(1, top)), draw(st.integers(1, top)))  # noqa: E731
    sizes, strides, rates = pair(kernel), pair(stride), pair(rate)
    padding = draw(st.sampled_from(["VALID", "SAME"]))
    if fits and padding == "VALID":
        assume(all(k + (k - 1) * (r - 1) <= n for k, r, n in zip(sizes, rates, shape[1:3])))
    return SpecCase(shape, sizes, strides, rates, padding)


def dims_array(dims, sizes=None):
    """A float32 DataArray of ``dims`` (sizes from a table of usual dims unless given) holding 0, 1, 2, ..."""
    import xarray as xr

    sizes = sizes or {"time": 2, "band": 3, "y": 9, "x": 8, "lat": 9, "lon": 8, "channel": 2, "level": 4}
    shape = tuple(sizes[d] for d in dims)
    return xr.DataArray(np.arange(np.prod(shape), dtype=np.float32).reshape(shape), dims=dims)


#: Specs the TFRecord and tf.data tests run over.
TFRECORD_SPECS = [
    dict(sizes=8, strides=8),
    dict(sizes=(7, 5), strides=(4, 3), padding="SAME"),
    dict(sizes=3, strides=5, rates=2, padding="SAME"),
]


def hwc(patches) -> np.ndarray:
    """Patches of ``.patches.extract`` as ``(n, kh, kw, C)``: y, x first, the other dims folded into C in order."""
    grid = [d for d in patches.dims if d in ("patch_row", "patch_col", "patch")]
    y, x = patches.dims[-2:]
    others = [d for d in patches.dims[:-2] if d not in grid]
    data = patches.transpose(*grid, y, x, *others).values
    return data.reshape(-1, *data.shape[len(grid): len(grid) + 2], int(np.prod(data.shape[len(grid) + 2:], dtype=int)))


def places(patches) -> tuple[np.ndarray, np.ndarray]:
    """``(row, col)`` of every patch of ``.patches.extract``, row-major."""
    if "patch" in patches.dims:
        return patches.patch_row.values, patches.patch_col.values
    rows, cols = np.meshgrid(patches.patch_row.values, patches.patch_col.values, indexing="ij")
    return rows.ravel(), cols.ravel()


def read_all(dataset) -> dict:
    """Every element of a tf.data dataset, stacked per key (batches concatenated)."""
    elements = list(dataset.as_numpy_iterator())
    if elements and np.ndim(elements[0]["row"]) == 1:
        return {k: np.concatenate([e[k] for e in elements]) for k in elements[0]}
    return {k: np.stack([e[k] for e in elements]) for k in elements[0]}


def recorded_scene(cls=None):
    """A dask-backed (band, y, x) uint16 scene read through ``cls``, 4 rows per chunk, and its reader."""
    import pytest
    import xarray as xr

    dask_array = pytest.importorskip("dask.array")
    cls = cls or RecordingArray
    data = np.random.default_rng(3).integers(0, 60000, (3, 61, 53), dtype=np.uint16)
    reader = cls(data)
    da = xr.DataArray(dask_array.from_array(reader, chunks=(3, 4, 53)), dims=("band", "y", "x"), name="scene")
    reader.reads.clear()  # dask reads an empty piece for its meta
    return da, reader, data
