"""Shared fixtures: random images of every dtype, TensorFlow (skipped where absent), lazy sources.

GPUs are hidden (``CUDA_VISIBLE_DEVICES=-1``) unless ``PATCHKIT_TEST_GPU`` names one: then that device is
made visible and the tests marked ``gpu`` run (``PATCHKIT_TEST_GPU=0 pytest -m gpu``, as
``benchmarks/gpu_check.sh`` does); without it they are skipped, with the reason, before any fixture runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
GPU = os.environ.get("PATCHKIT_TEST_GPU")
if GPU is not None:
    os.environ["CUDA_VISIBLE_DEVICES"] = GPU
else:
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from . import helpers
from .helpers import random_image, write_geotiff

settings.register_profile(
    "patchkit", deadline=None, max_examples=120, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("ci", parent=settings.get_profile("patchkit"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "patchkit")

GPU_SKIP_REASON = ("needs a GPU: set PATCHKIT_TEST_GPU to a CUDA device index (PATCHKIT_TEST_GPU=0 pytest -m gpu, "
                   "or benchmarks/gpu_check.sh) on a machine with one")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped, saying how to run them, unless PATCHKIT_TEST_GPU names a device."""
    if GPU is not None:
        return
    skip = pytest.mark.skip(reason=GPU_SKIP_REASON)
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cp():
    """CuPy, when it sees a CUDA device (the tests marked ``gpu``); skipped otherwise."""
    cupy = pytest.importorskip("cupy")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, or CUDA_VISIBLE_DEVICES=-1
        pytest.skip(f"CuPy sees no CUDA device: {exc}")
    if count < 1:
        pytest.skip("CuPy sees no CUDA device")
    return cupy


@pytest.fixture
def sentinel_buffers():
    """For the whole test, ``np.empty`` gives sentinel-filled buffers with sentinel after them (see helpers)."""
    with helpers.sentinel_allocations():
        yield


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, on the CPU unless PATCHKIT_TEST_GPU names a GPU (tests skip without TensorFlow)."""
    return pytest.importorskip("tensorflow")


@pytest.fixture
def image() -> np.ndarray:
    """A small float32 batch with odd sizes, so SAME padding splits unevenly."""
    return random_image((2, 37, 41, 3), "float32")


# ---- georeferenced rasters (written with rasterio, read back with rioxarray) ----------------------


@pytest.fixture(scope="session")
def geotiffs(tmp_path_factory) -> dict:
    """GeoTIFFs in a projected CRS (UTM 33N), north-up, of odd sizes so SAME padding splits unevenly.

    ``projected``: 3 bands uint16, 30 m pixels. ``nonsquare``: 1 band float32, 10 m by 20 m pixels.
    ``nodata``: 2 bands float32 with nodata -9999 in a block and a NaN margin of 4 columns on the left.
    ``stack``: three dates of 2 bands int16 (stacked along ``time`` by the ``stacked`` fixture).
    """
    pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    folder = tmp_path_factory.mktemp("rasters")
    rng = np.random.default_rng(7)
    paths = {
        "projected": write_geotiff(folder / "projected.tif", rng.integers(0, 60000, (3, 61, 53), dtype=np.uint16),
                                   from_origin(500000.0, 4200000.0, 30.0, 30.0)),
        "nonsquare": write_geotiff(folder / "nonsquare.tif", rng.normal(size=(1, 47, 58)).astype(np.float32),
                                   from_origin(399960.0, 5300040.0, 10.0, 20.0)),
    }
    masked = rng.normal(size=(2, 40, 45)).astype(np.float32)
    masked[:, 10:22, 20:33] = -9999.0
    masked[:, :, :4] = np.nan
    paths["nodata"] = write_geotiff(folder / "nodata.tif", masked, from_origin(600000.0, 4100000.0, 20.0, 20.0), nodata=-9999.0)
    paths["stack"] = [
        write_geotiff(folder / f"date{t}.tif", rng.integers(-3000, 3000, (2, 33, 38), dtype=np.int16),
                      from_origin(300000.0, 4500000.0, 10.0, 10.0))
        for t in range(3)
    ]
    return paths


@pytest.fixture
def open_raster():
    """``rioxarray.open_rasterio`` (skipped without rioxarray)."""
    rioxarray = pytest.importorskip("rioxarray")
    return rioxarray.open_rasterio


@pytest.fixture
def stacked(geotiffs, open_raster):
    """The ``stack`` GeoTIFFs as one DataArray ``(time, band, y, x)``."""
    import pandas as pd
    import xarray as xr

    dates = pd.date_range("2026-06-01", periods=len(geotiffs["stack"]), freq="10D")
    return xr.concat([open_raster(p) for p in geotiffs["stack"]], dim=pd.Index(dates, name="time"))


# ---- remote rasters: a Cloud-Optimized GeoTIFF served over HTTP on the loopback --------------------


@pytest.fixture(scope="session")
def cog(tmp_path_factory):
    """A Cloud-Optimized GeoTIFF: 3 bands uint16, 512 x 768, 256 x 256 tiles, deflate, no overviews, UTM 33N.

    Written as ``write_geotiff`` writes every test raster, then copied into GDAL's COG layout (header
    and tile index first, then the tiles, row by row).
    """
    pytest.importorskip("rasterio")
    import rasterio.shutil
    from rasterio.transform import from_origin

    folder = tmp_path_factory.mktemp("cog")
    rng = np.random.default_rng(11)
    plain = write_geotiff(folder / "plain.tif", rng.integers(0, 4000, (3, 512, 768), dtype=np.uint16),
                          from_origin(500000.0, 4200000.0, 10.0, 10.0))
    rasterio.shutil.copy(plain, folder / "scene.tif", driver="COG", blocksize=256, compress="deflate", overviews="none")
    return folder / "scene.tif"


@pytest.fixture(scope="session")
def loopback(tmp_path_factory):
    """A :class:`tests.http_server.LoopbackServer` serving a folder of its own, for the whole session."""
    from .http_server import LoopbackServer

    with LoopbackServer(tmp_path_factory.mktemp("served")) as server:
        yield server


@pytest.fixture
def served_cog(cog, loopback, request):
    """``cog`` served by ``loopback`` under a name of this test's own: ``(url, local path, first tile offset)``.

    Each test its own name, because GDAL caches what it fetched by URL for the life of the process.
    The GDAL options patchkit sets for remote sources are removed from the environment after the test.
    """
    import re
    import shutil

    import rasterio

    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name) + ".tif"
    shutil.copy(cog, loopback.folder / name)
    with rasterio.open(cog) as src:
        first_tile = int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
    with pytest.MonkeyPatch.context() as patch:
        from patchkit.core.remote import DEFAULTS

        for key in DEFAULTS:  # restored to unset afterwards, should patchkit set them
            patch.setenv(key, "")
            patch.delenv(key)
        yield loopback.url(name), cog, first_tile
