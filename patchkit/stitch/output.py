"""Where the stitched image goes: the raster sink for ``out`` (:mod:`patchkit.sinks.raster`: an array in
memory, a GeoTIFF or a Zarr store) with the labels each takes, and what :func:`~patchkit.stitch.stitch`
hands back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..labelled.geo import crs_of
from ..sinks.raster import ArrayRaster, GeoTiffRaster, Raster, ZarrRaster, sink_class
from .coords import Labels
from .plan import Job

__all__ = ["sink_for", "result"]


def sink_for(path: Path | None, job: Job, rows: int, shape4: tuple[int, int, int, int], labels: Labels | None) -> Raster:
    """The sink of an image ``[N, H, W, M]`` made in bands of ``rows`` rows (a Zarr store's: whole chunks).

    A labelled image is channels first, with the source's labels; an array's is TensorFlow's layout.
    """
    if path is None:
        return ArrayRaster(shape4, job.dtype, labels is not None, rows)
    if sink_class(path) is ZarrRaster:
        chunk, rows = ZarrRaster.chunk_rows(rows, shape4, job.dtype)
        return ZarrRaster(path, _lazy_image(shape4, job, chunk, labels), rows, shape4, labels is not None)
    return GeoTiffRaster(path, shape4, rows, job.dtype, **_geotiff_labels(job, labels))


def result(sink: Raster, labels: Labels | None) -> Any:
    """What stitch returns: the path of a file sink, else the array, as a labelled DataArray for labelled patches."""
    if not isinstance(sink, ArrayRaster):
        return sink.path
    return labels.template(sink.array.reshape(labels.sizes)) if labels is not None else sink.array


def _lazy_image(shape4: tuple[int, int, int, int], job: Job, chunk: int, labels: Labels | None) -> Any:
    """The image as a DataArray of lazy zeros in chunks of ``chunk`` rows, the template of a Zarr store:
    labelled like the source, or ``(batch, y, x, channel)`` for arrays in TensorFlow's layout."""
    import dask.array as da
    import xarray as xr

    if labels is not None:
        sizes = labels.sizes
        return labels.template(da.zeros(sizes, dtype=job.dtype, chunks=sizes[:-2] + (chunk, shape4[2])))
    data = da.zeros(shape4, dtype=job.dtype, chunks=(shape4[0], chunk) + shape4[2:])
    return xr.DataArray(data, dims=("batch", "y", "x", "channel"), name="stitched")


def _geotiff_labels(job: Job, labels: Labels | None) -> dict:
    """A GeoTIFF's CRS, transform and nodata (the source's nodata becomes the fill's; sums have none: 0 is a value),
    and the leading dims that a stack has."""
    if labels is None:
        return {}
    from ..labelled.nodata import nodata_values

    nodata = job.fill if nodata_values(labels.patches) and job.mode != "sum" else None
    return dict(crs=crs_of(labels.patches), transform=labels.transform(), nodata=nodata, leading=labels.dims.leading)
