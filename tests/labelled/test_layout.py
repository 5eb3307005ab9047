"""Dims, data layout and labels of xarray patch arrays (patchkit.labelled.layout)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

import patchkit
from patchkit.errors import DimensionError
from patchkit.labelled.layout import Layout, arrange, find_layout, recorded_spec, unarrange

from ..helpers import random_image, spec_cases, tf_grid


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
    # a patch pixel is the image pixel it samples, by TensorFlow's rule (helpers.tf_grid)
    ordered = da.transpose(*layout.leading, layout.y, layout.x, *layout.channels).values
    nl = len(layout.leading)
    rows, cols = tf_grid(ordered.shape[nl:nl + 2], 3, 2, 1, "SAME")
    lead = (0,) * nl
    for i, j, a, b in [(1, 2, 1, 1), (0, 0, 0, 0), (0, 1, 2, 2), (2, 3, 0, 2)]:  # inside, and (0, 0) in the padding
        inside = 0 <= rows[i, a] < ordered.shape[nl] and 0 <= cols[j, b] < ordered.shape[nl + 1]
        expected = ordered[lead + (rows[i, a], cols[j, b])] if inside else np.zeros(ordered.shape[nl + 2:], ordered.dtype)
        np.testing.assert_array_equal(patches[lead + (i, j)][(Ellipsis, a, b)], expected)


@pytest.mark.parametrize("dims", [("band", "y", "x"), ("y", "x", "channel"), ("time", "band", "y", "x")])
def test_numpy_result_is_a_view(dims, monkeypatch):
    """For C-ordered numpy data the labelled result wraps the backend's output without another copy: its
    data is that very buffer (np.shares_memory), not a copy, and not the source's."""
    outputs = []
    real = patchkit.labelled.layout.extract_patches
    monkeypatch.setattr(patchkit.labelled.layout, "extract_patches", lambda *a, **k: outputs.append(real(*a, **k)) or outputs[-1])
    da = _array(dims)
    patches = da.patches.extract(4, 4)
    (out,) = outputs
    assert isinstance(patches.data, np.ndarray) and patches.data.size == out.size
    assert np.shares_memory(patches.data, out) and not np.shares_memory(patches.data, da.data)
    assert patches.data.__array_interface__["data"][0] == out.__array_interface__["data"][0]


@st.composite
def _labelled_cases(draw):
    """A DataArray with 0-1 leading dims, 0-2 channel dims before or after y/x, and a spec."""
    leading = draw(st.lists(st.sampled_from(["time"]), max_size=1))
    channels = draw(st.lists(st.sampled_from(["band", "channel"]), max_size=2, unique=True))
    after = draw(st.booleans())
    dims = leading + (["y", "x"] + channels if after else channels + ["y", "x"])
    sizes = {d: draw(st.integers(1, 3)) for d in leading + channels}
    case = draw(spec_cases(height=14, kernel=4, stride=4, rate=3, batch=1, channels=1))
    sizes.update(y=case.shape[1], x=case.shape[2])
    dtype = draw(st.sampled_from(["uint8", "int16", "float32", "float64", "complex64", "bool"]))
    return dims, sizes, dtype, case.kwargs


def _brute_force(da: xr.DataArray, layout: Layout, spec: patchkit.PatchSpec) -> np.ndarray:
    """Patches gathered pixel by pixel by TensorFlow's rule (helpers.tf_grid; zeros outside the image), laid
    out as (*lead, rows, cols, *chan, y, x)."""
    data = da.transpose(*layout.leading, layout.y, layout.x, *layout.channels).values
    nl = len(layout.leading)
    h, w = data.shape[nl:nl + 2]
    rows, cols = tf_grid((h, w), spec.sizes, spec.strides, spec.rates, spec.padding)
    pad = [(0, 0)] * nl + [(1, 0), (1, 0)] + [(0, 0)] * len(layout.channels)
    padded = np.pad(data, pad)  # one zero row and column in front: every tap outside the image reads them
    r = np.where((rows >= 0) & (rows < h), rows + 1, 0)[:, None, :, None]  # [oh, 1, kh, 1]
    c = np.where((cols >= 0) & (cols < w), cols + 1, 0)[None, :, None, :]  # [1, ow, 1, kw]
    gathered = padded[(slice(None),) * nl + (r, c)]  # [*lead, oh, ow, kh, kw, *chan]
    nc = len(layout.channels)
    order = tuple(range(nl + 2)) + tuple(range(nl + 4, nl + 4 + nc)) + (nl + 2, nl + 3)
    return gathered.transpose(order)


@given(_labelled_cases())
def test_extract_matches_brute_force(case):
    """For any dims layout, dtype and spec, every labelled patch pixel is the padded image's pixel it samples."""
    dims, sizes, dtype, kwargs = case
    spec = patchkit.PatchSpec(**kwargs)
    shape = tuple(sizes[d] for d in dims)
    da = xr.DataArray(random_image(shape, dtype), dims=dims)
    layout = find_layout(da)
    patches = da.patches.extract(**kwargs)
    assert patches.dims == layout.dims(("patch_row", "patch_col"))
    assert patches.values.tobytes() == np.ascontiguousarray(_brute_force(da, layout, spec)).tobytes()


def test_kept_patches_that_cannot_fit_fail_fast(monkeypatch):
    """Filtered eager extraction checks the kept patches' bytes against available memory first."""
    monkeypatch.setattr(patchkit.core.budget, "available_memory", lambda: 1000)
    da = _array(("band", "y", "x"))
    with pytest.raises(patchkit.errors.OutputTooLargeError, match=r"patches.iter"):
        da.patches.extract(4, 2, max_nodata_fraction=1.0)


@pytest.mark.parametrize("kwargs", [dict(sizes=3, strides=2), dict(sizes=(4, 2), strides=(1, 3), rates=2, padding="SAME")])
def test_patches_record_their_spec(kwargs):
    """A patch array records its spec and source shape; an array without the record is refused clearly."""
    da = _array(("band", "y", "x"))
    spec, shape = recorded_spec(da.patches.extract(**kwargs))
    assert spec == patchkit.PatchSpec(**kwargs) and shape == (9, 8)
    with pytest.raises(patchkit.errors.PatchkitValueError, match="not made by .patches.extract"):
        recorded_spec(da)


def test_dask_names_are_not_kept():
    """A DataArray named after its dask array by xarray gives an unnamed patch array; a real name is kept."""
    dask_array = pytest.importorskip("dask.array")
    da = xr.DataArray(dask_array.zeros((2, 8, 8), chunks=4), dims=("band", "y", "x"))
    assert da.name is not None  # xarray took the dask array's name
    assert da.patches.extract(4, 4).name is None
    assert da.rename("scene").patches.extract(4, 4).name == "scene"
