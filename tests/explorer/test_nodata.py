"""explorer.nodata: counted shares match max_nodata_fraction, estimates from a decimated preview stay close."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from patchkit.core.spec import PatchSpec
from patchkit.explorer.nodata import NodataMap
from patchkit.explorer.scene import Scene
from patchkit.labelled.dims import arrange, find_layout
from patchkit.labelled.nodata import nodata_fractions

def test_exact_nodata_matches_the_filter(geotiffs, open_raster):
    """On a scene small enough to be its own preview, kept patches are counted as max_nodata_fraction keeps them."""
    da = open_raster(geotiffs["nodata"])
    scene = Scene.open(da)
    assert scene.nodata.exact and scene.preview.origin == "full resolution"
    for spec, fraction in [(PatchSpec(8, 4), 0.0), (PatchSpec(8, 4, 1, "SAME"), 0.3), (PatchSpec(5, 3, 2, "SAME"), 0.5)]:
        summary = scene.model(spec, max_nodata_fraction=fraction).summary()
        kept = len(da.patches.grid(spec.sizes, spec.strides, spec.rates, spec.padding, max_nodata_fraction=fraction))
        assert summary.nodata_exact and summary.kept == kept
        assert summary.dropped == pytest.approx(1 - kept / summary.patches)


def test_estimated_nodata_is_close_on_a_decimated_preview():
    """On a decimated preview, the estimated share of dropped patches is within a few points of the exact one."""
    h, w = 1200, 1500
    data = np.random.default_rng(1).random((2, h, w)).astype("float32")
    data[:, :, :400] = np.nan
    data[:, 700:1000, 900:1300] = -1.0
    da = xr.DataArray(data, dims=("band", "y", "x"), attrs={"_FillValue": -1.0})
    scene = Scene.open(da, preview_size=150)
    assert not scene.nodata.exact and scene.preview.origin == "every 10th pixel"
    images = arrange(da, find_layout(da))
    for spec, fraction in [(PatchSpec(100, 50), 0.2), (PatchSpec(64, 40, 1, "SAME"), 0.5), (PatchSpec(33, 20, 3, "SAME"), 0.1)]:
        exact = (nodata_fractions(images, spec, (-1.0,)) <= fraction).mean()
        summary = scene.model(spec, max_nodata_fraction=fraction).summary()
        assert not summary.nodata_exact
        assert summary.dropped == pytest.approx(1 - exact, abs=0.05)


def test_nodata_estimate_samples_huge_grids():
    """A grid of millions of patches is estimated on an even sample of rows and columns."""
    preview = np.zeros((1, 400, 400, 1), np.float32)
    preview[:, :, :200] = np.nan
    nodata = NodataMap.from_images(preview, (20000, 20000))
    shares, sampled = nodata.patch_shares(PatchSpec(16, 4))
    assert sampled and shares.shape == (256, 256)
    assert (shares == 1).mean() == pytest.approx(0.5, abs=0.01)
