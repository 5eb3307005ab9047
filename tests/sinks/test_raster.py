"""sinks.raster: an image made band by band, in memory or written beside its path (GeoTIFF, Zarr) and moved into
place when whole; its path checked first; write errors as SinkWriteError. Read back with rasterio and zarr."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import xarray as xr

from patchkit.errors import PatchkitValueError, SinkWriteError
from patchkit.sinks.raster import (SUFFIXES, ArrayRaster, GeoTiffRaster, ZarrRaster, check_room, out_path, sink_class,
                                   writing)
from patchkit.stitch import stitch


def _fill(sink, image: np.ndarray) -> None:
    """Write ``image[N, H, W, M]`` into ``sink`` band after band, as stitch does."""
    height = image.shape[1]
    for y0 in range(0, height, sink.rows):
        y1 = min(y0 + sink.rows, height)
        band = sink.band(y0, y1)
        band[...] = image[:, y0:y1]
        sink.commit(y0, y1, band)


def _image(shape4, dtype="float32") -> np.ndarray:
    return (np.random.default_rng(0).random(shape4) * 100).astype(dtype)


@pytest.mark.parametrize("channels_first", [False, True])
def test_array_sink_fills_its_array_in_place(channels_first):
    """In memory, bands are views of the image: [N, M, H, W] when channels first, else [N, H, W, M]."""
    image = _image((2, 7, 5, 3))
    with ArrayRaster(image.shape, image.dtype, channels_first, rows=3) as sink:
        _fill(sink, image)
    expected = image.transpose(0, 3, 1, 2) if channels_first else image
    np.testing.assert_array_equal(sink.array, expected)
    assert sink.array.flags.c_contiguous


@pytest.mark.parametrize("dtype", ["float32", "int16", "bool"])
def test_geotiff_sink_writes_what_rasterio_reads(tmp_path, dtype):
    """A GeoTIFF of one raster band per channel, with CRS, transform and nodata (bool as uint8), and nothing
    else left in its folder."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    image, transform = _image((1, 10, 7, 3), dtype), from_origin(500000.0, 4000000.0, 10.0, 10.0)
    path = tmp_path / "image.tif"
    with GeoTiffRaster(path, image.shape, 4, image.dtype, crs="EPSG:32633", transform=transform, nodata=0) as sink:
        _fill(sink, image)
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(), image[0].transpose(2, 0, 1).astype(src.dtypes[0]))
        assert (src.crs.to_epsg(), src.transform, src.nodata) == (32633, transform, 0)
        assert src.dtypes[0] == ("uint8" if dtype == "bool" else dtype)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tif"]


@pytest.mark.parametrize("channels_first", [False, True])
def test_zarr_sink_writes_the_template_and_the_bands(tmp_path, channels_first):
    """The template's metadata through xarray, each band raw into its region of rows; _FillValue moves to the
    encoding (the values are not masked by it on the way)."""
    pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    image = _image((2, 9, 6, 3))
    data = image.transpose(0, 3, 1, 2) if channels_first else image
    dims = ("time", "band", "y", "x") if channels_first else ("batch", "y", "x", "channel")
    chunk, rows = ZarrRaster.chunk_rows(5, image.shape, image.dtype)
    assert (chunk, rows) == (5, 5)
    chunks = data.shape[:-2] + (chunk, 6) if channels_first else (2, chunk, 6, 3)
    template = xr.DataArray(da.zeros(data.shape, data.dtype, chunks=chunks), dims=dims, name="image",
                            attrs={"_FillValue": -1.0, "units": "m"})
    path = tmp_path / "image.zarr"
    with ZarrRaster(path, template, rows, image.shape, channels_first) as sink:
        _fill(sink, image)
    written = xr.open_zarr(path, mask_and_scale=False)["image"]
    np.testing.assert_array_equal(written.values, data)
    assert written.dims == dims and written.attrs["units"] == "m" and written.encoding["chunks"][dims.index("y")] == chunk


def test_zarr_chunks_are_whole_bands_of_at_most_32_mib():
    """A band is whole chunks: chunk rows at most rows and ZARR_CHUNK bytes, the band rounded down to them."""
    assert ZarrRaster.chunk_rows(100, (1, 10**6, 2**20, 1), np.float64) == (4, 100)
    assert ZarrRaster.chunk_rows(7, (1, 10**6, 2**20, 1), np.float64) == (4, 4)
    assert ZarrRaster.chunk_rows(3, (1, 10**6, 2**20, 1), np.float64) == (3, 3)


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_a_failed_run_leaves_what_was_at_the_path(tmp_path, suffix):
    """An error while the bands are written closes the writer and deletes the temporary file: what was at the
    path before stays, and no partial file is left beside it."""
    pytest.importorskip("rasterio")
    pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    path = tmp_path / f"image{suffix}"
    path.write_text("old") if suffix == ".tif" else path.mkdir()
    image = _image((1, 6, 4, 2))
    if suffix == ".tif":
        sink = GeoTiffRaster(path, image.shape, 2, image.dtype)
    else:
        template = xr.DataArray(da.zeros(image.shape, image.dtype, chunks=(1, 2, 4, 2)), dims=("batch", "y", "x", "channel"))
        sink = ZarrRaster(path, template, 2, image.shape, False)
    with pytest.raises(RuntimeError, match="model failed"):
        with sink:
            sink.commit(0, 2, sink.band(0, 2))
            raise RuntimeError("model failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert (path.read_text() == "old") if suffix == ".tif" else not any(path.iterdir())


def test_sinks_by_suffix_and_their_band_copies():
    """Each suffix has its sink; None is memory; the copies of a band each holds, for the memory plan."""
    assert SUFFIXES == (".tif", ".tiff", ".zarr")
    assert [sink_class(p) for p in (None, out_path("a.TIF"), out_path("a.tiff"), out_path("a.zarr"))] == [
        ArrayRaster, GeoTiffRaster, GeoTiffRaster, ZarrRaster]
    assert [c.copies for c in (ArrayRaster, GeoTiffRaster, ZarrRaster)] == [0, 2, 5]


@pytest.mark.parametrize("out", ["image.png", 3, b"image.tif"])
def test_out_must_be_a_raster_path(out):
    """out is None or a path ending in a raster suffix; anything else is refused with the choices."""
    assert out_path(None) is None
    with pytest.raises(PatchkitValueError, match=r"is not a path ending in .tif, .tiff, .zarr; pass e.g. out='stitched.tif'"):
        out_path(out)


def test_room_for_a_geotiff_is_refused_up_front(tmp_path):
    """An existing folder where the GeoTIFF goes is refused before any work, naming the path (EEXIST)."""
    (tmp_path / "x.tif").mkdir()
    check_room(tmp_path / "new.tif", 1000)
    with pytest.raises(SinkWriteError, match=r"x\.tif' cannot be written: it exists and is a folder") as info:
        check_room(tmp_path / "x.tif", 1000)
    assert info.value.errno == errno.EEXIST


class _WriterError(Exception):
    """An error of a writing package: no errno (rasterio's "Write failed")."""


_WriterError.__module__ = "rasterio.errors"


def test_writing_turns_write_errors_into_sink_write_errors(tmp_path):
    """OSError keeps its errno; a writer's error without one takes the cause of a short write (no room for
    nbytes: ENOSPC); patchkit's errors and other errors pass unchanged; the message can be another sink's."""
    failed = r"writing the stitched image to '.*x\.tif' failed: OSError: .*; free some space, then stitch again"
    with pytest.raises(SinkWriteError, match=failed) as info:
        with writing(tmp_path / "x.tif"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(SinkWriteError, match=r"_WriterError: Write failed \(No space left on device.*\); free some space") as info:
        with writing(tmp_path / "x.tif", nbytes=2**62):
            raise _WriterError("Write failed")
    assert info.value.errno == errno.ENOSPC
    for error in (PatchkitValueError("mine"), ValueError("a bug")):
        with pytest.raises(type(error)) as info:
            with writing(tmp_path / "x.tif"):
                raise error
        assert info.value is error
    with pytest.raises(SinkWriteError, match=r"^the chip failed: 13$"):
        with writing(tmp_path / "x.tif", error=lambda err, cause: SinkWriteError(f"the chip failed: {cause.errno}")):
            raise PermissionError(errno.EACCES, "Permission denied")


def test_geotiff_needs_one_image(stacked, tmp_path):
    """A GeoTIFF holds one image of bands: a time stack must go to Zarr."""
    with pytest.raises(PatchkitValueError, match=r"a GeoTIFF holds one image of bands, but the result has 3 images .*\.zarr"):
        stitch(stacked.patches.extract(6, 3, padding="SAME"), out=tmp_path / "stack.tif")


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_stream_creates_missing_folders(geotiffs, open_raster, tmp_path, suffix):
    """Streaming into a path whose folders do not exist yet creates them."""
    patches = open_raster(geotiffs["projected"]).patches.extract(8, 8, padding="SAME")
    out = stitch(patches, out=tmp_path / "a" / "b" / f"mosaic{suffix}", max_memory="1MiB")
    assert out.exists()
