"""Tests of patchkit.labelled.dims: finding the spatial, channel and leading dims, arranging data and back."""

from __future__ import annotations

import numpy as np
import pytest

import patchkit
from patchkit.errors import DimensionError
from patchkit.labelled.dims import Layout, arrange, arranged_rows, find_layout, unarrange

from ..helpers import dims_array, tf_grid


@pytest.mark.parametrize(
    ("dims", "expected"),
    [
        (("band", "y", "x"), Layout("y", "x", (), ("band",), False)),
        (("time", "band", "y", "x"), Layout("y", "x", ("time",), ("band",), False)),
        (("y", "x", "channel"), Layout("y", "x", (), ("channel",), True)),
        (("time", "y", "x"), Layout("y", "x", ("time",), (), True)),
        (("lat", "lon"), Layout("lat", "lon", (), (), True)),
        (("level", "x", "y", "band"), Layout("y", "x", ("level",), ("band",), True)),
    ],
)
def test_layout_rules(dims, expected):
    """band-like dims and dims after y/x stay in the patch; the others lead; spatial dims are found by name."""
    assert find_layout(dims_array(dims)) == expected


def test_layout_by_name():
    """spatial_dims and channel_dims override the rules."""
    da = dims_array(("time", "level", "y", "x")).rename(y="row", x="col")
    layout = find_layout(da, spatial_dims=("row", "col"), channel_dims=["level"])
    assert layout == Layout("row", "col", ("time",), ("level",), False)
    assert da.patches.extract(3, 2, spatial_dims=("row", "col"), channel_dims="level").dims == (
        "time", "patch_row", "patch_col", "level", "row", "col")


def test_spatial_dims_from_rioxarray(open_raster, geotiffs):
    """Dims set with rio.set_spatial_dims are found without naming them."""
    da = open_raster(geotiffs["projected"]).rename(x="easting", y="northing").rio.set_spatial_dims("easting", "northing")
    layout = find_layout(da)
    assert (layout.y, layout.x) == ("northing", "easting")


@pytest.mark.parametrize(
    ("dims", "kwargs", "match"),
    [
        (("band", "row", "col"), {}, "found no spatial dims"),
        (("y", "x"), {"spatial_dims": ("y",)}, "spatial_dims"),
        (("y", "x"), {"channel_dims": ("band",)}, "channel_dims"),
    ],
)
def test_layout_errors(dims, kwargs, match):
    """Missing or misnamed dims raise DimensionError naming the argument and the dims there are."""
    sizes = {"band": 2, "row": 4, "col": 4, "y": 4, "x": 4}
    with pytest.raises(DimensionError, match=match):
        find_layout(dims_array(dims, sizes), **kwargs)


@pytest.mark.parametrize("dims", [("band", "y", "x"), ("time", "band", "y", "x"), ("y", "x", "channel"),
                                  ("time", "y", "x", "channel"), ("level", "x", "y", "band")])
@pytest.mark.parametrize("lazy", [False, True])
def test_arrange_round_trip(dims, lazy):
    """arrange then unarrange of TF-ordered patches gives each patch as (channels, y, x), numpy or dask."""
    da = dims_array(dims)
    if lazy:
        da = da.chunk({dims[0]: 1})
    layout = find_layout(da)
    images = arrange(da, layout)
    assert images.ndim == 4 and images.shape[1:3] == (da.sizes[layout.y], da.sizes[layout.x])
    spec = patchkit.PatchSpec(3, 2, padding="SAME")
    out = patchkit.extract_patches(np.asarray(images), 3, 2, padding="SAME")
    patches = np.asarray(unarrange(out, da, layout, out.shape[1:3], spec.sizes))
    assert patches.shape[-2:] == spec.sizes
    # a patch pixel is the image pixel it samples, by TensorFlow's rule (helpers.tf_grid)
    ordered = da.transpose(*layout.leading, layout.y, layout.x, *layout.channels).values
    nl = len(layout.leading)
    rows, cols = tf_grid(ordered.shape[nl:nl + 2], 3, 2, 1, "SAME")
    lead = (0,) * nl
    for i, j, a, b in [(1, 2, 1, 1), (0, 0, 0, 0), (0, 1, 2, 2), (2, 3, 0, 2)]:  # inside, and (0, 0) in the padding
        inside = 0 <= rows[i, a] < ordered.shape[nl] and 0 <= cols[j, b] < ordered.shape[nl + 1]
        expected = ordered[lead + (rows[i, a], cols[j, b])] if inside else np.zeros(ordered.shape[nl + 2:], ordered.dtype)
        np.testing.assert_array_equal(patches[lead + (i, j)][(Ellipsis, a, b)], expected)


class _Reads:
    """A (band, y, x) array read lazily, recording the rows of every read (as rioxarray's reader would serve)."""

    def __init__(self, data: np.ndarray):
        self._data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.rows: list[tuple[int, int]] = []

    def __getitem__(self, key):
        piece = self._data[key]
        if piece.size:
            rows = range(self.shape[1])[key[1]]
            self.rows.append((rows.start, rows.stop))
        return piece.copy()


def test_arranged_rows_read_only_those_rows():
    """Rows cut before the data is arranged are the arranged data's rows, and dask reads only them from each chunk
    it touches (as from a rioxarray scene, band, y, x); cut after the arrangement (a reshape), it reads every
    chunk whole."""
    dask_array = pytest.importorskip("dask.array")
    plain = dims_array(("band", "y", "x"), {"band": 3, "y": 40, "x": 12})
    reads = _Reads(plain.values)
    da = plain.copy(data=dask_array.from_array(reads, chunks=(-1, 16, 6), meta=np.empty((0, 0, 0), np.float32)))
    layout = find_layout(da)
    cut = arranged_rows(da, layout, 10, 20).compute()
    assert set(reads.rows) == {(10, 16), (16, 20)}
    reads.rows.clear()
    np.testing.assert_array_equal(cut, arrange(da, layout)[:, 10:20].compute())
    assert set(reads.rows) == {(0, 16), (16, 32)}
