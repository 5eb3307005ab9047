"""Dims, data layout and labels of xarray patch arrays (patchkit.labelled)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import patchkit
from patchkit.errors import DimensionError
from patchkit.labelled import Layout, arrange, find_layout, unarrange


def _array(dims, sizes=None):
    sizes = sizes or {"time": 2, "band": 3, "y": 9, "x": 8, "lat": 9, "lon": 8, "channel": 2, "level": 4}
    shape = tuple(sizes[d] for d in dims)
    return xr.DataArray(np.arange(np.prod(shape), dtype=np.float32).reshape(shape), dims=dims)


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
    assert find_layout(_array(dims)) == expected


def test_layout_by_name():
    """spatial_dims and channel_dims override the rules."""
    da = _array(("time", "level", "y", "x")).rename(y="row", x="col")
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
        find_layout(_array(dims, sizes), **kwargs)


@pytest.mark.parametrize("dims", [("band", "y", "x"), ("time", "band", "y", "x"), ("y", "x", "channel"),
                                  ("time", "y", "x", "channel"), ("level", "x", "y", "band")])
@pytest.mark.parametrize("lazy", [False, True])
def test_arrange_round_trip(dims, lazy):
    """arrange then unarrange of TF-ordered patches gives each patch as (channels, y, x), numpy or dask."""
    da = _array(dims)
    if lazy:
        da = da.chunk({dims[0]: 1})
    layout = find_layout(da)
    images = arrange(da, layout)
    assert images.ndim == 4 and images.shape[1:3] == (da.sizes[layout.y], da.sizes[layout.x])
    spec = patchkit.PatchSpec(3, 2, padding="SAME")
    out = patchkit.extract_patches(np.asarray(images), 3, 2, padding="SAME")
    patches = np.asarray(unarrange(out, da, layout, out.shape[1:3], spec.sizes))
    assert patches.shape[-2:] == spec.sizes
    # a patch pixel is the image pixel it samples
    ordered = da.transpose(*layout.leading, layout.y, layout.x, *layout.channels).values
    rows, cols = spec.positions(ordered.shape[len(layout.leading):len(layout.leading) + 2])
    nl = len(layout.leading)
    lead = (0,) * nl
    i, j, a, b = 1, 2, 1, 1
    expected = ordered[lead + (rows[i, a], cols[j, b])]
    got = patches[lead + (i, j)][(Ellipsis, a, b)]
    np.testing.assert_array_equal(got, expected)


def test_numpy_result_is_a_view():
    """For C-ordered numpy data the labelled result wraps the backend's output without another copy."""
    da = _array(("band", "y", "x"))
    patches = da.patches.extract(4, 4)
    assert patches.data.base is not None
