"""patchkit.core.gdal: GDAL's block cache bounded while patchkit streams a raster, and restored after."""

from __future__ import annotations

import pytest

from patchkit.core.gdal import bounded_cache, cache_max

rasterio = pytest.importorskip("rasterio")


@pytest.fixture
def gdal_cache():
    """GDAL's cache maximum set to 512 MiB for the test, and put back after."""
    from rasterio.env import set_gdal_config

    before = cache_max()
    set_gdal_config("GDAL_CACHEMAX", 512 * 2**20)
    yield 512 * 2**20
    set_gdal_config("GDAL_CACHEMAX", before)


def test_bounds_nest_and_restore(gdal_cache):
    """Inside the block GDAL's maximum is the bound; overlapping bounds keep the smallest, in whatever order
    they end; a bound above the maximum never raises it; the maximum found comes back when the last ends."""
    with bounded_cache(8 * 2**20):
        assert cache_max() == 8 * 2**20
        inner = bounded_cache(2 * 2**20)
        inner.__enter__()
        assert cache_max() == 2 * 2**20
        with bounded_cache(2**40):
            assert cache_max() == 2 * 2**20
        inner.__exit__(None, None, None)
        assert cache_max() == 8 * 2**20
    assert cache_max() == gdal_cache
    with bounded_cache(2**40):
        assert cache_max() == gdal_cache
    with bounded_cache(None):
        assert cache_max() == gdal_cache


def test_restored_after_an_error(gdal_cache):
    """An error inside the block still puts GDAL's maximum back."""
    with pytest.raises(KeyError):
        with bounded_cache(2**20):
            raise KeyError("inside")
    assert cache_max() == gdal_cache


def test_a_stream_of_a_geotiff_holds_the_plans_bound(gdal_cache, tmp_path):
    """While .patches.iter streams a lazily read GeoTIFF band by band, GDAL's cache is the plan's share of
    max_memory (1/16 of it when the budget allows), counted in the plan's peak; the bands equal the patches of
    the loaded scene; after the stream, the maximum found is back."""
    import numpy as np
    import rioxarray
    from rasterio.transform import from_origin

    from patchkit.core.budget import GDAL_CACHE_SHARE

    from ..helpers import write_geotiff

    data = np.arange(2 * 256 * 192, dtype="uint16").reshape(2, 256, 192)
    path = write_geotiff(tmp_path / "scene.tif", data, from_origin(500000.0, 4200000.0, 10.0, 10.0))
    scene = rioxarray.open_rasterio(path, chunks={"band": -1, "y": 64, "x": 64})
    plan = scene.patches.plan(16, 8, max_memory="256KiB")
    assert len(plan.bands) > 2 and plan.peak <= 256 * 2**10
    assert plan.gdal_cache == 256 * 2**10 // GDAL_CACHE_SHARE
    bounds, bands = set(), []
    for band in scene.patches.iter(16, 8, max_memory="256KiB"):
        bounds.add(cache_max())
        bands.append(band.values.copy())
    assert bounds == {plan.gdal_cache} and cache_max() == gdal_cache
    np.testing.assert_array_equal(np.concatenate(bands), scene.load().patches.extract(16, 8).values)
