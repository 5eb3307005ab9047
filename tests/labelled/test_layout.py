"""Dims, data layout and labels of xarray patch arrays (patchkit.labelled.layout)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

import patchkit
from patchkit.labelled.layout import Layout, find_layout

from ..helpers import dims_array, random_image, spec_cases, tf_grid


@pytest.mark.parametrize("dims", [("band", "y", "x"), ("y", "x", "channel"), ("time", "band", "y", "x")])
def test_numpy_result_is_a_view(dims, monkeypatch):
    """For C-ordered numpy data the labelled result wraps the backend's output without another copy: its
    data is that very buffer (np.shares_memory), not a copy, and not the source's."""
    outputs = []
    real = patchkit.labelled.layout.extract_patches
    monkeypatch.setattr(patchkit.labelled.layout, "extract_patches", lambda *a, **k: outputs.append(real(*a, **k)) or outputs[-1])
    da = dims_array(dims)
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
    da = dims_array(("band", "y", "x"))
    with pytest.raises(patchkit.errors.OutputTooLargeError, match=r"patches.iter"):
        da.patches.extract(4, 2, max_nodata_fraction=1.0)
