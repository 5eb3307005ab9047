"""Remote rasters: a Cloud-Optimized GeoTIFF read over HTTP from a real server on the loopback.

The server (``tests/http_server.py``, fixtures ``loopback`` and ``served_cog`` in conftest.py) answers
byte ranges as a web server or a bucket does, and injects faults: statuses, stalls, dropped
connections, damaged bytes. Each test reads its own copy of the COG (GDAL caches by URL).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from patchkit.core.remote import DEFAULTS, configure, is_remote
from patchkit.errors import IncompleteStoreError, SourceReadError

rioxarray = pytest.importorskip("rioxarray")
pytest.importorskip("zarr")
import xarray as xr  # noqa: E402

import patchkit  # noqa: E402

SPEC = (64, 48)  # sizes, strides: 10 x 15 patches, several row bands under MAX_MEMORY
CHUNKS = {"band": -1, "y": 512, "x": 512}  # two rows of tiles a chunk, as users chunk COGs
MAX_MEMORY = "4MiB"
#: A fault's read ends within this many seconds (GDAL retries once, 1 s timeout: see ``quick_retries``).
BOUND_SECONDS = 12


def quick_retries(monkeypatch) -> None:
    """GDAL gives up within seconds: one retry 50 ms later, 1 s per request (set as users set them)."""
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "1")
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "1")


def to_zarr(source, store: Path) -> Path:
    return rioxarray.open_rasterio(source, chunks=CHUNKS).patches.to_zarr(store, *SPEC, max_memory=MAX_MEMORY,
                                                                          progress=False)


def stored_files(store: Path) -> dict[str, bytes]:
    """Every stored chunk of the patches (``pixels/c/...``), by path inside the store."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted((store / "pixels" / "c").rglob("*")) if p.is_file()}


def assert_same_store(remote: Path, local: Path) -> None:
    """Same patches, coordinates and attrs, and every stored chunk the same bytes (the files a store was
    read from differ: none for a URL, which has no size and mtime to record)."""
    opened = [patchkit.open_patches(store, verify="full").load() for store in (remote, local)]
    assert opened[0].attrs.pop("patchkit_source_files") == [] and opened[1].attrs.pop("patchkit_source_files")
    xr.testing.assert_identical(*opened)
    assert stored_files(remote) == stored_files(local)


def requests_for(loopback, url: str) -> list:
    return [r for r in loopback.log if r.path == "/" + url.rsplit("/", 1)[1]]


@pytest.mark.parametrize("origin, remote", [
    ("https://example.org/scenes/s2.tif", True),
    ("http://127.0.0.1:8000/scene.tif", True),
    ("/vsicurl/https://example.org/s2.tif", True),
    ("/vsizip//vsicurl/https://example.org/s2.zip/s2.tif", True),
    ("s3://bucket/scene.tif", True),
    ("/vsis3/bucket/scene.tif", True),
    ("zip+https://example.org/s2.zip!s2.tif", True),
    ("/data/scenes/scene.tif", False),
    ("scene.tif", False),
    ("C:\\scenes\\scene.tif", False),
    ("/vsizip/scenes.zip/scene.tif", False),
    (None, False),
])
def test_is_remote(origin, remote):
    """URLs and GDAL's network file systems are remote; local paths (and GDAL's archives of them) are not."""
    assert is_remote(origin) is remote


def test_configure_sets_only_unset_options(served_cog, monkeypatch):
    """Remote origins get every default the user has not set, and nothing else; local paths get none."""
    url = served_cog[0]
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "7")
    assert configure("/data/scene.tif") == {}
    assert "GDAL_HTTP_TIMEOUT" not in os.environ
    assert configure(url) == {k: v for k, v in DEFAULTS.items() if k != "GDAL_HTTP_MAX_RETRY"}
    assert os.environ["GDAL_HTTP_MAX_RETRY"] == "7" and os.environ["GDAL_HTTP_TIMEOUT"] == DEFAULTS["GDAL_HTTP_TIMEOUT"]
    assert configure(url) == {}


def test_to_zarr_over_http_equals_local(served_cog, loopback, tmp_path):
    """to_zarr from the URL writes the local file's store, chunk for chunk, in byte ranges (each fetched
    about once), and sets patchkit's GDAL defaults on the way."""
    url, path, _ = served_cog
    assert "GDAL_HTTP_MAX_RETRY" not in os.environ
    remote = to_zarr(url, tmp_path / "remote.zarr")
    assert_same_store(remote, to_zarr(path, tmp_path / "local.zarr"))
    assert os.environ["GDAL_HTTP_MAX_RETRY"] == DEFAULTS["GDAL_HTTP_MAX_RETRY"]
    ranges = [r for r in requests_for(loopback, url) if r.method == "GET"]
    assert ranges and all(r.status == 206 and r.range for r in ranges)
    assert sum(r.sent for r in ranges) <= 1.2 * path.stat().st_size


def test_to_geotiffs_over_http_equals_local(served_cog, tmp_path):
    """to_geotiffs from the URL writes the same chips, byte for byte."""
    url, path, _ = served_cog
    folders = [rioxarray.open_rasterio(src, chunks=CHUNKS).patches.to_geotiffs(tmp_path / name, *SPEC, max_memory=MAX_MEMORY,
                                                                                 progress=False)
               for name, src in (("remote", url), ("local", path))]
    chips = [{p.name: p.read_bytes() for p in sorted(Path(folder).rglob("*.tif"))} for folder in folders]
    assert len(chips[0]) == 10 * 15 and chips[0] == chips[1]


def test_iter_and_extract_over_http_equal_local(served_cog):
    """.patches.iter's bands and .patches.extract's result from the URL are the local file's."""
    url, path, _ = served_cog
    remote, local = rioxarray.open_rasterio(url, chunks=CHUNKS), rioxarray.open_rasterio(path, chunks=CHUNKS)
    count = 0
    for band, expected in zip(remote.patches.iter(*SPEC, max_memory=MAX_MEMORY), local.patches.iter(*SPEC, max_memory=MAX_MEMORY),
                              strict=True):  # each band compared before the next reuses its buffer
        xr.testing.assert_identical(band, expected)
        count += 1
    assert count > 1
    extracted = remote.patches.extract(*SPEC).compute()
    xr.testing.assert_identical(extracted, local.load().patches.extract(*SPEC))
    assert np.any(extracted.values != 0)


def test_transient_500_is_retried(served_cog, loopback, tmp_path, monkeypatch):
    """Two 500s on the tile reads are retried by GDAL (patchkit's defaults, with a short delay), and the
    store is the local file's."""
    url, path, first_tile = served_cog
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")
    loopback.fault(url.rsplit("/", 1)[1], "status", code=500, times=2, after=first_tile)
    remote = to_zarr(url, tmp_path / "remote.zarr")
    assert [r.status for r in requests_for(loopback, url)].count(500) == 2
    assert_same_store(remote, to_zarr(path, tmp_path / "local.zarr"))


FAULTS = {
    "404": (dict(kind="status", code=404), r"the server sent none of the bytes asked for \(.*404 Not Found"),
    "500": (dict(kind="status", code=500), r"the server answered HTTP 500 Internal Server Error"),
    "timeout": (dict(kind="delay", seconds=3), r"no answer came from the server, nor when GDAL retried \(.*timed out\)"),
    "dropped": (dict(kind="drop"), r"the server sent fewer bytes than asked for \(the connection dropped"),
    "corrupt": (dict(kind="corrupt"), r"the bytes received do not decode \(damaged on the way"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_fails_fast_and_a_rerun_finishes(fault, served_cog, loopback, tmp_path, monkeypatch):
    """A lasting fault on the tile reads (the file opens) ends within seconds in SourceReadError naming the
    URL, what the server did, what to check and that a rerun resumes; the store does not read as
    complete; once the fault is gone the same call on the same DataArray (in the same process, where
    GDAL had cached a short or damaged body) finishes the store, equal to the local file's."""
    url, path, first_tile = served_cog
    options, answer = FAULTS[fault]
    quick_retries(monkeypatch)
    loopback.fault(url.rsplit("/", 1)[1], after=first_tile, **options)
    scene, store = rioxarray.open_rasterio(url, chunks=CHUNKS), tmp_path / "remote.zarr"
    started = time.perf_counter()
    with pytest.raises(SourceReadError, match=rf"reading '{url}' over the network failed: {answer}.*Check the URL, the "
                                              r"server and the network .*run the same call again: a sink's output resumes"):
        scene.patches.to_zarr(store, *SPEC, max_memory=MAX_MEMORY, progress=False)
    assert time.perf_counter() - started < BOUND_SECONDS
    with pytest.raises(IncompleteStoreError, match="not complete"):
        patchkit.open_patches(store)
    loopback.clear(url.rsplit("/", 1)[1])
    scene.patches.to_zarr(store, *SPEC, max_memory=MAX_MEMORY, progress=False)
    assert_same_store(store, to_zarr(path, tmp_path / "local.zarr"))
