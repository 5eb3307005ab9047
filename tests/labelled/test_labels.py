"""Tests of patchkit.labelled.labels: the spec a patch array records, and the names it keeps."""

from __future__ import annotations

import pytest
import xarray as xr

import patchkit
from patchkit.labelled.labels import recorded_spec

from ..helpers import dims_array


@pytest.mark.parametrize("kwargs", [dict(sizes=3, strides=2), dict(sizes=(4, 2), strides=(1, 3), rates=2, padding="SAME")])
def test_patches_record_their_spec(kwargs):
    """A patch array records its spec and source shape; an array without the record is refused clearly."""
    da = dims_array(("band", "y", "x"))
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
