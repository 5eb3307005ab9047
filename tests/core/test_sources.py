"""as_source: the kinds of image patchkit reads, and reading rows of them."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from patchkit.errors import InvalidImageError, PatchkitTypeError, UnsupportedDtypeError
from patchkit.core.sources import _normalize_chunks, as_source, is_dask, is_tensor

from ..helpers import RecordingArray, random_image


def test_numpy_source_is_not_lazy(image):
    """An ndarray is used in place: no copy, not lazy."""
    source = as_source(image)
    assert (source.kind, source.lazy, source.shape) == ("numpy", False, image.shape)
    assert source.numpy() is image


def test_tensor_source_shares_memory(tf, image):
    """A CPU tensor is viewed, not copied (tensor.numpy() would copy)."""
    tensor = tf.constant(image)
    source = as_source(tensor)
    assert source.kind == "tensorflow" and is_tensor(tensor) and "CPU" in source.device
    np.testing.assert_array_equal(source.numpy(), image)


def test_dask_source_keeps_chunks(image):
    """A dask array is lazy and its chunks are known to the planner."""
    da = pytest.importorskip("dask.array")
    lazy = da.from_array(image, chunks=(1, 16, 41, 3))
    source = as_source(lazy)
    assert is_dask(lazy) and source.lazy and source.chunks == lazy.chunks


def test_xarray_source_uses_its_data(image):
    """A DataArray is read through its data."""
    xr = pytest.importorskip("xarray")
    source = as_source(xr.DataArray(image, dims=("t", "y", "x", "band")))
    assert source.kind == "numpy" and source.shape == image.shape


@pytest.mark.parametrize(
    "chunks, expected",
    [(None, None), ((1, 16, 30, 3), ((1, 1), (16, 16, 5), (30, 11), (3,))), (((2,), (37,), (41,), (3,)), ((2,), (37,), (41,), (3,)))],
)
def test_chunks_normalise_to_dask_style(chunks, expected):
    """zarr/h5py chunk shapes become dask-style block sizes, ragged last block included."""
    assert _normalize_chunks(chunks, (2, 37, 41, 3)) == expected


@pytest.mark.parametrize("chunks", [None, (1, 8, 10, 3)])
def test_read_rows_into_buffer(image, chunks):
    """Rows read from a lazy array land in the given buffer, one column of chunks at a time."""
    array = RecordingArray(image, chunks=chunks)
    out = np.empty((2, 10, 41, 3), image.dtype)
    got = as_source(array).read_rows(5, 15, out=out)
    assert got is out
    np.testing.assert_array_equal(out, image[:, 5:15])
    assert len(array.reads) == (1 if chunks is None else 5)


@pytest.mark.parametrize(
    "images, error, match",
    [
        (None, PatchkitTypeError, "images is None"),
        (object(), PatchkitTypeError, "images is a object, which is not an array"),
        (np.zeros((1, 2, 2, 1), object), UnsupportedDtypeError, "dtype object"),
        (np.zeros((4, 4)), InvalidImageError, "rank 2"),
        (random_image((1, 2, 2, 1), "float32").astype(np.longdouble), UnsupportedDtypeError, "float128"),
    ],
)
def test_rejects(images, error, match):
    """Non-arrays, wrong ranks and dtypes are refused before anything is read."""
    with pytest.raises(error, match=match):
        as_source(images)


class _Meeting:
    """A lazily read array whose reads of pixels wait for ``parties`` reads at once (or time out), and that counts
    the most reads it saw at once."""

    def __init__(self, data: np.ndarray, parties: int):
        self._data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self._barrier = threading.Barrier(parties, timeout=10) if parties > 1 else None
        self._lock, self._now, self.most = threading.Lock(), 0, 0

    def __getitem__(self, key):
        piece = self._data[key]
        if not piece.size:
            return piece.copy()
        with self._lock:
            self._now += 1
            self.most = max(self.most, self._now)
        try:
            if self._barrier is not None:
                self._barrier.wait()  # BrokenBarrierError when no other read comes
            else:
                time.sleep(0.01)  # room for another read to begin, were one running
            return piece.copy()
        finally:
            with self._lock:
                self._now -= 1


@pytest.mark.parametrize("readers", [1, 2])
def test_dask_rows_are_read_by_as_many_readers(readers):
    """A dask source's rows are stored chunk by chunk into the buffer, ``readers`` chunks at once on dask's local
    threads (two reads meet at a barrier, which one read at a time never passes), and one at a time with one
    reader; the rows are those of the image."""
    da = pytest.importorskip("dask.array")
    image = random_image((1, 32, 64, 2), "uint8")
    array = _Meeting(image, readers)
    source = as_source(da.from_array(array, chunks=(1, 16, 16, 2), meta=np.empty((0, 0, 0, 0), np.uint8)))
    out = np.empty((1, 20, 64, 2), np.uint8)
    assert source.read_rows(4, 24, out=out, readers=readers) is out
    np.testing.assert_array_equal(out, image[:, 4:24])
    assert array.most == readers


def test_dask_rows_follow_a_synchronous_scheduler():
    """Under dask's synchronous scheduler (set by the user) the chunks are read one at a time, whatever readers."""
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    image = random_image((1, 32, 64, 2), "uint8")
    array = _Meeting(image, 1)
    source = as_source(da.from_array(array, chunks=(1, 16, 16, 2), meta=np.empty((0, 0, 0, 0), np.uint8)))
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(source.read_rows(0, 32, readers=4), image)
    assert array.most == 1
