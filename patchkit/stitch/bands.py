"""Band after band: read the patch rows a band of output rows needs, add them in and finish the band
(:mod:`.accumulate`: the C kernel a few rows at a time where it takes the job, else numpy step by step), fill
what no patch reached, and hand the band to its sink. While a GeoTIFF is written, GDAL's block cache is
bounded to the one band the plan counts for it (:class:`~patchkit.sinks.raster.GeoTiffRaster` ``copies``)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..core.gdal import bounded_cache
from ..core.spec.inverse import Op, axis_ops
from .accumulate import Sums, add, finish_deviation, finish_mean, finish_sum, last_write, stitch_rows
from .plan import Job
from .readers import Band

__all__ = ["run"]


def run(job: Job, sink, rows: int, done: Callable[[int, int], bool] | None = None) -> None:
    """Stitch band after band of ``rows`` output rows into ``sink``, but those ``done(y0, y1)`` says a run before
    finished (a resumed prediction)."""
    from tqdm.auto import tqdm

    height, width = job.lines[0].n, job.lines[1].n
    n, m = job.reader.n, job.reader.m
    sums = None
    if job.mode != "none" and not job.kernel:
        weight = None if job.mode == "sum" else np.empty(rows * width)
        sums = Sums(np.empty(n * rows * width * m, job.acc_dtype), weight, np.empty(job.step_size(rows), job.acc_dtype))
    col_cache: dict[range, list[Op]] = {}
    gdal = n * rows * width * m * job.dtype.itemsize if _is_geotiff(sink) else None  # GDAL's copy of a band
    with tqdm(total=height, unit="row", desc="stitch", disable=None, leave=False) as bar, bounded_cache(gdal):
        for y0 in range(0, height, rows):
            y1 = min(y0 + rows, height)
            if done is not None and done(y0, y1):
                bar.update(y1 - y0)
                continue
            out = sink.band(y0, y1)
            with np.errstate(invalid="ignore", over="ignore"):  # NaN and inf in the data give NaN and inf
                covered = _stitch_band(job, sums, out, y0, y1, col_cache)
            if covered is not None and not covered.all():
                np.copyto(out, job.fill, where=~covered[None, :, :, None])
            sink.commit(y0, y1, out)
            bar.update(y1 - y0)


def _is_geotiff(sink) -> bool:
    """Whether ``sink`` writes through GDAL (a GeoTIFF), whose block cache keeps what it is given until flushed."""
    return bool(getattr(sink, "through_gdal", False))  # an attribute: a wrapped sink (predict's logged one) says too


def _stitch_band(job: Job, sums: Sums | None, out: np.ndarray, y0: int, y1: int, col_cache: dict) -> np.ndarray | None:
    """Stitch output rows ``[y0, y1)`` into ``out[N, h, W, M]``; returns which pixels got a value (some
    tap of positive weight sampled them; all of them for ``"sum"``, where the others are 0), or None when
    the C kernel stitched the band and filled the others itself."""
    lines = job.lines
    h, w = y1 - y0, lines[1].n
    p0, p1 = (int(v) for v in lines[0].needed(y0, y1))
    band = job.reader.read(p0, p1) if p0 < p1 else None
    if band is None:
        return np.zeros((h, w), bool)
    if job.kernel:
        stitch_rows(job, band, out, y0, y1)
        return None
    row_ops = axis_ops(lines[0], band.rows, y0, y1)
    if band.cols not in col_cache:
        col_cache[band.cols] = axis_ops(lines[1], band.cols, 0, w)
    col_ops = col_cache[band.cols]
    if job.mode in ("none", "deviation"):
        covered = np.zeros((h, w), bool)
        last_write(out, covered, band, row_ops, col_ops, lines, job.keep)
        if job.mode == "none":
            return covered
    band_sums = _band_sums(job, sums, band, h, w)
    if job.mode == "deviation":
        add(band_sums, band, row_ops, col_ops, job, ref=out)
        return finish_deviation(band_sums, out)
    add(band_sums, band, row_ops, col_ops, job)
    return finish_sum(band_sums, out) if job.mode == "sum" else finish_mean(band_sums, out)


def _band_sums(job: Job, sums: Sums, band: Band, h: int, w: int) -> Sums:
    """The accumulators of a band of ``h`` rows, cleared, in the patches' memory order."""
    n, m = job.reader.n, job.reader.m
    first = m > 1 and band.data.strides[5] > band.data.strides[4]  # follow the patches' memory order
    acc = sums.acc[: n * h * w * m]
    acc = acc.reshape(n, m, h, w).transpose(0, 2, 3, 1) if first else acc.reshape(n, h, w, m)
    # -0.0 + x is x for every x, signed zeros included; a sum starts from +0.0, as TensorFlow's gradient does
    acc.fill(0 if job.mode == "sum" else -0.0)
    weight = None
    if sums.weight is not None:
        weight = sums.weight[: h * w].reshape(h, w)
        weight.fill(0.0)
    return Sums(acc, weight, sums.tmp)
