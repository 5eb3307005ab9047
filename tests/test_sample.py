"""The synthetic sample scene: deterministic, georeferenced, land-cover-like, with a nodata margin."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from patchkit import sample

rasterio = pytest.importorskip("rasterio")


def test_deterministic():
    """The same arguments give the same pixels; another seed gives others."""
    a, b = sample.make_scene((128, 160)), sample.make_scene((128, 160))
    assert hashlib.sha256(a.tobytes()).digest() == hashlib.sha256(b.tobytes()).digest()
    assert not np.array_equal(a, sample.make_scene((128, 160), seed=1))


def test_land_cover_classes_and_margin():
    """Fields, roads and water all appear; the nodata margin is on the left and only there."""
    classes, nodata = sample.land_cover((512, 512))
    names = list(sample.SIGNATURES)
    assert {"road", "water", "crop", "forest"} <= {names[i] for i in np.unique(classes)}
    assert nodata[:, 0].all() and not nodata[:, 100:].any()
    scene = sample.make_scene((512, 512))
    assert (scene[:, nodata] == sample.NODATA).all() and (scene[:, ~nodata] > 0).all()


def test_written_geotiff(tmp_path):
    """The GeoTIFF has the CRS, 10 m pixels, nodata 0, named bands and the scene's pixels; rioxarray reads it."""
    path = sample.write_sample(tmp_path / "s.tif", (96, 80))
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 32633 and src.res == (10.0, 10.0) and src.nodata == 0
        assert src.descriptions == sample.BANDS
        np.testing.assert_array_equal(src.read(), sample.make_scene((96, 80)))
    assert sample.sample_path((96, 80), folder=tmp_path).exists()


def test_open_sample_is_cached(tmp_path, monkeypatch):
    """open_sample writes the file once into PATCHKIT_CACHE and opens it with rioxarray."""
    pytest.importorskip("rioxarray")
    monkeypatch.setenv("PATCHKIT_CACHE", str(tmp_path))
    da = sample.open_sample((64, 64))
    assert da.dims == ("band", "y", "x") and da.rio.crs.to_epsg() == 32633
    stamp = next(tmp_path.glob("sample-*.tif")).stat().st_mtime_ns
    sample.open_sample((64, 64))
    assert next(tmp_path.glob("sample-*.tif")).stat().st_mtime_ns == stamp
