"""as_source: the kinds of image patchkit reads, and reading rows of them."""

from __future__ import annotations

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
