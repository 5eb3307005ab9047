"""Where the stitched image goes: the raster sink for ``out`` (:mod:`patchkit.sinks.raster`: an array in
memory, a GeoTIFF or a Zarr store) with the labels each takes, and what :func:`~patchkit.stitch.stitch`
hands back."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..labelled.geo import crs_of
from ..sinks.raster import ArrayRaster, GeoTiffRaster, Raster, ZarrRaster, sink_class
from .coords import Labels
from .plan import Job

__all__ = ["sink_for", "raster_sink", "array_template", "result"]


def sink_for(path: Path | None, job: Job, rows: int, shape4: tuple[int, int, int, int], labels: Labels | None) -> Raster:
    """The sink of an image ``[N, H, W, M]`` made in bands of ``rows`` rows (a Zarr store's: whole chunks).

    A labelled image is channels first, with the source's labels; an array's is TensorFlow's layout.
    """
    return raster_sink(path, job.dtype, rows, shape4, labels is not None,
                       lambda chunk: _lazy_image(shape4, job, chunk, labels), lambda: _geotiff_labels(job, labels))


def raster_sink(path: Path | None, dtype: np.dtype, rows: int, shape4: tuple[int, int, int, int], labelled: bool,
                template: Callable[[int], Any], geotiff: Callable[[], dict]) -> Raster:
    """The raster sink of ``path`` (None: in memory) for an image ``[N, H, W, M]`` of ``dtype`` in bands of ``rows``
    rows: a Zarr store gets ``template(chunk rows)`` (the image as lazy data) and bands of whole chunks, a GeoTIFF
    the keywords ``geotiff()`` (CRS, transform, nodata, leading dims)."""
    if path is None:
        return ArrayRaster(shape4, dtype, labelled, rows)
    if sink_class(path) is ZarrRaster:
        chunk, rows = ZarrRaster.chunk_rows(rows, shape4, dtype)
        return ZarrRaster(path, template(chunk), rows, shape4, labelled)
    return GeoTiffRaster(path, shape4, rows, dtype, **geotiff())


def array_template(shape4: tuple[int, int, int, int], dtype: np.dtype, chunk: int, name: str) -> Any:
    """An image in TensorFlow's layout ``(batch, y, x, channel)`` as lazy zeros in chunks of ``chunk`` rows, the
    template of a Zarr store of an array's result."""
    import dask.array as da
    import xarray as xr

    data = da.zeros(shape4, dtype=dtype, chunks=(shape4[0], chunk) + tuple(shape4[2:]))
    return xr.DataArray(data, dims=("batch", "y", "x", "channel"), name=name)


def result(sink: Raster, labels: Labels | None) -> Any:
    """What stitch returns: the path of a file sink, else the array, as a labelled DataArray for labelled patches."""
    if not isinstance(sink, ArrayRaster):
        return sink.path
    return labels.template(sink.array.reshape(labels.sizes)) if labels is not None else sink.array


def _lazy_image(shape4: tuple[int, int, int, int], job: Job, chunk: int, labels: Labels | None) -> Any:
    """The image as a DataArray of lazy zeros in chunks of ``chunk`` rows, the template of a Zarr store:
    labelled like the source, or ``(batch, y, x, channel)`` for arrays in TensorFlow's layout."""
    import dask.array as da

    if labels is None:
        return array_template(shape4, job.dtype, chunk, "stitched")
    sizes = labels.sizes
    return labels.template(da.zeros(sizes, dtype=job.dtype, chunks=sizes[:-2] + (chunk, shape4[2])))


def _geotiff_labels(job: Job, labels: Labels | None) -> dict:
    """A GeoTIFF's CRS, transform and nodata (the source's nodata becomes the fill's; sums have none: 0 is a value),
    and the leading dims that a stack has."""
    if labels is None:
        return {}
    from ..labelled.nodata import nodata_values

    nodata = job.fill if nodata_values(labels.patches) and job.mode != "sum" else None
    return dict(crs=crs_of(labels.patches), transform=labels.transform(), nodata=nodata, leading=labels.dims.leading)
