"""Patches of xarray objects: the operations behind the accessor and the sinks' shared band machinery.

:func:`prepare` checks the arguments, finds each array's dims (:mod:`patchkit.labelled.dims`) and,
when patches are filtered by their nodata share, counts it: everything but the extraction, refused
before a sink touches its output. :func:`stream_plan` is the one row-band plan every streamed run
follows (``.patches.iter``, every sink, ``.patches.plan``); :func:`bands` yields its labelled bands
(:mod:`patchkit.labelled.labels`), leaving out bands already done or without a kept patch.
:func:`extract`, :func:`iterate` and :func:`grid` are the accessor's ``extract``, ``iter`` and ``grid``;
:func:`template` the whole result's structure with lazy data, for sinks that create a store first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any, Iterator

import numpy as np

from ..core.backends import get_backend
from ..core.budget import DEFAULT_MAX_MEMORY, LAZY_CHUNK_MEMORY, Budget, Plan, check_row_fits, plan_for, require_memory
from ..core.chunking import _bands, compact, kept_patches, lazy_patches
from ..core.extract import extract_patches
from ..core.sources import Source, as_source, origin_of, reading
from ..core.spec import PatchSpec
from ..errors import DimensionError
from .dims import Layout, _spatial_dims, arrange, arranged_rows, find_layout, unarrange
from .geo import crs_of, geotransform_of, grid_table, source_transform, write_grid
from .labels import SPEC_ATTR, _check_labels, _Labels, _labels, _wrap, recorded_spec
from .nodata import check_fraction, nodata_counts, nodata_values

__all__ = ["Layout", "find_layout", "Prepared", "prepare", "template", "stream_plan", "band_plan", "bands", "todo_bands", "patch_table", "extract", "iterate",
           "grid", "recorded_spec", "SPEC_ATTR"]


# --------------------------------------------------------------------------------------------------
# The operations behind the accessor
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """One DataArray to cut: its layout, the array the backends read, and (made when first needed) its labels."""

    obj: Any
    layout: Layout
    spec: PatchSpec
    images: Any

    @functools.cached_property
    def labels(self) -> _Labels:
        """The coordinates of every patch (checked against the memory available before they are made)."""
        return _labels(self.obj, self.layout, self.spec)

    @functools.cached_property
    def source(self) -> Source:
        """``images`` as a :class:`Source` whose read errors name the file ``obj`` was opened from (and, for dask
        data, whose rows are cut before they are arranged: :func:`~patchkit.labelled.dims.arranged_rows`)."""
        source = as_source(self.images, origin=origin_of(self.obj))
        return replace(source, rows=functools.partial(arranged_rows, self.obj, self.layout)) if source.kind == "dask" else source


def _jobs(obj: Any, spec: PatchSpec, spatial_dims, channel_dims) -> dict:
    """``{name: _Job}`` for a DataArray (one, named None) or for every spatial variable of a Dataset."""
    import xarray as xr

    if isinstance(obj, xr.DataArray):
        arrays = {None: obj}
    else:
        y, x = spatial_dims or _spatial_dims(obj)
        arrays = {name: var for name, var in obj.data_vars.items() if y in var.dims or x in var.dims}
        for name, var in arrays.items():
            if not (y in var.dims and x in var.dims):
                raise DimensionError(f"variable {name!r} has dims {var.dims}: it needs both {y!r} and {x!r}, or neither; drop it first")
        spatial_dims = (y, x)
        if not arrays:
            raise DimensionError(f"no variable of the Dataset has the spatial dims {spatial_dims}")
    jobs = {}
    for name, array in arrays.items():
        layout = find_layout(array, spatial_dims, channel_dims)
        with reading(origin_of(array)):  # data that is not lazy is read here
            images = arrange(array, layout)
        spec.check(images.shape)
        jobs[name] = _Job(array, layout, spec, images)
    return jobs


def _shares(jobs: dict, spec: PatchSpec, max_memory) -> np.ndarray:
    """The nodata share of every patch ``[out_rows, out_cols]``, over all the arrays together."""
    counts, total = 0, 0
    for job in jobs.values():
        c, t = nodata_counts(job.source, spec, nodata_values(job.obj), max_memory=max_memory)
        counts, total = counts + c, total + t
    return counts / total


def _keep(jobs: dict, spec: PatchSpec, fraction: float | None, max_memory) -> np.ndarray | None:
    """Which patches have a nodata share of at most ``fraction`` (None: keep all)."""
    return None if fraction is None else _shares(jobs, spec, max_memory) <= fraction


def _result(obj: Any, arrays: dict):
    """A DataArray for a DataArray input; a Dataset of the patched (and untouched) variables otherwise."""
    import xarray as xr

    if isinstance(obj, xr.DataArray):
        return arrays[None]
    untouched = {name: var for name, var in obj.data_vars.items() if name not in arrays}
    return xr.Dataset({**arrays, **untouched}, attrs=dict(obj.attrs))


@dataclass(frozen=True)
class Prepared:
    """An object ready to cut: its jobs (one per spatial variable) and the kept patches (None: all)."""

    obj: Any
    spec: PatchSpec
    jobs: dict
    keep: np.ndarray | None

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self.spec.grid_shape(next(iter(self.jobs.values())).images.shape)

    @property
    def grid(self) -> tuple[str, ...]:
        return ("patch_row", "patch_col") if self.keep is None else ("patch",)

    def labels(self, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        """Patch rows and cols of output rows ``rows``: the grid's, or one pair per kept patch."""
        if self.keep is None:
            return np.arange(rows.start, rows.stop), np.arange(self.grid_shape[1])
        r, c = np.nonzero(self.keep[rows])
        return r + rows.start, c


def prepare(obj: Any, spec: PatchSpec, *, max_nodata_fraction=None, spatial_dims=None, channel_dims=None,
            max_memory: int | str = DEFAULT_MAX_MEMORY, purpose: str = "stream") -> Prepared:
    """Check the arguments, find the dims and count nodata (when filtering): all but the extraction.

    Everything that can be refused is refused here, before nodata is counted and before a sink
    touches its output: the arguments, and what the ``purpose`` needs. ``"stream"`` (row bands under
    ``max_memory``, as sinks and :func:`iterate` make them): one row band must fit in ``max_memory``
    and the coordinates in memory. ``"extract"``: the whole result must fit in memory (or, for
    dask-backed data, one chunk of it). ``"grid"``: the table of patches must fit in memory.
    """
    fraction = check_fraction(max_nodata_fraction)
    budget = Budget.of(max_memory)
    jobs = _jobs(obj, spec, spatial_dims, channel_dims)
    _CHECKS[purpose](jobs, spec, budget, fraction is not None)
    return Prepared(obj, spec, jobs, _keep(jobs, spec, fraction, budget))


def _check_stream(jobs: dict, spec: PatchSpec, budget: int, filtered: bool) -> None:
    """One row band of every array must fit in its share of ``budget`` (as :func:`bands` plans), and the labels in memory."""
    for job in jobs.values():
        plan_for(spec, job.source, get_backend("numpy", job.source), budget.share(len(jobs)))
        _check_labels(spec, job.images.shape)


def _check_extract(jobs: dict, spec: PatchSpec, budget: int, filtered: bool) -> None:
    """The labelled result must fit in memory: all of it, or one chunk of a lazy result (the kept
    patches of a filtered result are checked once they are counted: :func:`_check_kept_fits`)."""
    for job in jobs.values():
        source, shape = job.source, job.images.shape
        if source.kind == "dask":
            check_row_fits(spec, source, lazy=True, chunks=source.chunks)
        elif not filtered:
            need = spec.nbytes(shape, source.dtype) + 3 * spec.positions_nbytes(shape)
            require_memory(
                need, f"the patches {spec.output_shape(shape)} and their coordinates",
                "stream them with da.patches.iter(..., max_memory='512MiB') or da.patches.to_zarr(...), "
                "open the raster with dask chunks for a lazy result, or use smaller sizes"
            )
        _check_labels(spec, shape)


#: Bytes of one row of the grid table: six numbers and an ``affine.Affine`` object (measured: about 350).
TABLE_ROW_BYTES = 512


def _check_grid(jobs: dict, spec: PatchSpec, budget: int, filtered: bool) -> None:
    """The table of every patch must fit in memory."""
    rows, cols = spec.grid_shape(next(iter(jobs.values())).images.shape)
    require_memory(rows * cols * TABLE_ROW_BYTES, f"the table of {rows} x {cols} patches",
                                  "use a larger stride, or a smaller region (da.isel(y=..., x=...))")


_CHECKS = {"stream": _check_stream, "extract": _check_extract, "grid": _check_grid}


def extract(obj: Any, spec: PatchSpec, *, backend: str = "auto", max_nodata_fraction=None, spatial_dims=None,
            channel_dims=None, max_memory: int | str = DEFAULT_MAX_MEMORY, chunk_memory: int | str = LAZY_CHUNK_MEMORY):
    """Every patch of a DataArray or Dataset, labelled; see ``DataArray.patches.extract``."""
    Budget.of(chunk_memory, "chunk_memory")
    prepared = prepare(obj, spec, max_nodata_fraction=max_nodata_fraction, spatial_dims=spatial_dims,
                       channel_dims=channel_dims, max_memory=max_memory, purpose="extract")
    keep = prepared.keep
    rows, cols = prepared.labels(slice(0, prepared.grid_shape[0]))
    arrays = {}
    for name, job in prepared.jobs.items():
        source = job.source
        chosen = get_backend(backend, source)
        if source.kind == "dask":
            out = lazy_patches(source, spec, chosen, chunk_memory, keep=keep)
        elif keep is None:
            out = extract_patches(job.images, spec.sizes, spec.strides, spec.rates, spec.padding, backend=chosen.name)
        else:
            _check_kept_fits(spec, source, int(keep.sum()))
            out = kept_patches(source, spec, keep, chosen, max_memory)
        data = unarrange(out, job.obj, job.layout, tuple(out.shape[1:-1]), spec.sizes)
        arrays[name] = _wrap(data, job.obj, job.layout, spec, prepared.grid, job.labels.coords(rows, cols, prepared.grid))
    return _result(obj, arrays)


def _check_kept_fits(spec: PatchSpec, source, kept: int) -> None:
    """Raise :class:`OutputTooLargeError` before allocating kept patches that memory cannot hold."""
    b, _, _, depth = spec.output_shape(source.shape)
    need = b * kept * depth * source.dtype.itemsize
    require_memory(need, f"the {kept} kept patches", "stream them with da.patches.iter(..., max_memory='512MiB'), or "
                   "open the raster with dask chunks for a lazy result")


def template(prepared: Prepared):
    """The whole result's structure and coordinates, with lazy, never-computed data (for sinks)."""
    import dask.array as da

    rows = slice(0, prepared.grid_shape[0])
    r, c = prepared.labels(rows)
    arrays = {}
    for name, job in prepared.jobs.items():
        b, _, _, depth = prepared.spec.output_shape(job.images.shape)
        grid = (len(r),) if prepared.keep is not None else prepared.grid_shape
        shape = unarrange(np.broadcast_to(np.empty((), job.images.dtype), (b, *grid, depth)), job.obj, job.layout,
                          grid, prepared.spec.sizes).shape
        data = da.empty(shape, dtype=job.images.dtype, chunks=shape)
        arrays[name] = _wrap(data, job.obj, job.layout, prepared.spec, prepared.grid, job.labels.coords(r, c, prepared.grid))
    return _result(prepared.obj, arrays)


def iterate(obj: Any, spec: PatchSpec, *, max_memory: int | str = DEFAULT_MAX_MEMORY, backend: str = "auto",
            max_nodata_fraction=None, spatial_dims=None, channel_dims=None) -> Iterator:
    """Labelled row bands of patches under ``max_memory``; see ``DataArray.patches.iter``."""
    prepared = prepare(obj, spec, max_nodata_fraction=max_nodata_fraction, spatial_dims=spatial_dims,
                       channel_dims=channel_dims, max_memory=max_memory)
    return (band for _, band in bands(prepared, max_memory=max_memory, backend=backend))


def stream_plan(prepared: Prepared, *, max_memory: int | str = DEFAULT_MAX_MEMORY, backend: str = "auto",
                in_flight: int = 1) -> Plan:
    """The row bands :func:`bands` streams (and so every sink writes): one :class:`Plan` for all arrays.

    Each array of ``prepared`` is planned by :func:`patchkit.core.budget.plan_for` under its equal
    share of ``max_memory``, with ``in_flight`` band buffers (a pipelined sink writes one while the next
    is made); bands then hold the fewest rows any array allows, so one band of every array is made at a
    time. ``peak`` adds the arrays' peaks (an upper bound when they differ). Reads no pixels.
    """
    return plan_streams(prepared.spec, [job.source for job in prepared.jobs.values()], max_memory=max_memory,
                        backend=backend, in_flight=in_flight)


def plan_streams(spec: PatchSpec, sources: list[Source], *, max_memory: int | str = DEFAULT_MAX_MEMORY,
                 backend: str = "auto", in_flight: int = 1) -> Plan:
    """:func:`stream_plan` of the arrays ``sources`` (their geometry alone: the explorer plans with no data)."""
    budget = Budget.of(max_memory)
    share = budget.share(len(sources))
    plans = [plan_for(spec, source, get_backend(backend, source), share, blocks=in_flight) for source in sources]
    oh, n = spec.grid_shape(sources[0].shape)[0], min(plan.band_rows for plan in plans)
    peak = sum(plan.peak for plan in plans)
    caches = [plan.gdal_cache for plan in plans if plan.gdal_cache is not None]  # GDAL's one cache: the smallest bound
    return Plan(tuple(slice(i, min(i + n, oh)) for i in range(0, oh, n)), n, peak, int(budget),
                readers=min(plan.readers for plan in plans), prefetch=all(plan.prefetch for plan in plans),
                gdal_cache=min(caches) if caches else None)


def band_plan(obj: Any, spec: PatchSpec, *, max_memory: int | str = DEFAULT_MAX_MEMORY, backend: str = "auto",
              spatial_dims=None, channel_dims=None) -> Plan:
    """The :func:`stream_plan` of ``obj``; see ``DataArray.patches.plan``."""
    prepared = prepare(obj, spec, spatial_dims=spatial_dims, channel_dims=channel_dims, max_memory=max_memory)
    return stream_plan(prepared, max_memory=max_memory, backend=backend)


def bands(prepared: Prepared, *, max_memory: int | str = DEFAULT_MAX_MEMORY, backend: str = "auto",
          done: np.ndarray | None = None, in_flight: int = 1) -> Iterator:
    """``(rows, band)`` pairs: labelled row bands of ``prepared`` under ``max_memory`` (:func:`stream_plan`'s bands).

    Bands whose rows are all ``done`` are left out, as are bands without a kept patch. Arguments are
    checked here, before the first band is made. A band stays valid while the next ``in_flight - 1``
    are made (its data may be a view of a buffer that a later band reuses).
    """
    jobs, spec = prepared.jobs, prepared.spec
    plan = stream_plan(prepared, max_memory=max_memory, backend=backend, in_flight=in_flight)
    todo_plan = replace(plan, bands=todo_bands(prepared, plan.bands, done))
    streams = {name: _bands(job.source, spec, todo_plan, get_backend(backend, job.source), buffers=in_flight)
               for name, job in jobs.items()}
    return _labelled_bands(prepared, streams)


def todo_bands(prepared: Prepared, planned: tuple, done: np.ndarray | None = None) -> tuple:
    """The ``planned`` bands left to make: those with a row not ``done`` and, when filtering, a kept patch."""
    keep = prepared.keep
    return tuple(rows for rows in planned
                 if (keep is None or keep[rows].any()) and (done is None or not done[rows].all()))


def _labelled_bands(prepared: Prepared, streams: dict) -> Iterator:
    spec, keep = prepared.spec, prepared.keep
    for parts in zip(*streams.values()):
        rows = parts[0][0]
        r, c = prepared.labels(rows)
        arrays = {}
        for (name, job), (_, block) in zip(prepared.jobs.items(), parts):
            out = np.asarray(block) if keep is None else compact(np.asarray(block), keep[rows])
            data = unarrange(out, job.obj, job.layout, tuple(out.shape[1:-1]), spec.sizes)
            arrays[name] = _wrap(data, job.obj, job.layout, spec, prepared.grid, job.labels.coords(r, c, prepared.grid))
        yield rows, _result(prepared.obj, arrays)


def patch_table(prepared: Prepared):
    """The :func:`patchkit.labelled.geo.grid_table` of ``prepared``: every patch, or only the kept ones."""
    _check_grid(prepared.jobs, prepared.spec, 0, False)
    job = next(iter(prepared.jobs.values()))
    obj, y, x = job.obj, job.layout.y, job.layout.x
    centres = [obj[d].values if d in obj.coords else np.arange(obj.sizes[d]) for d in (x, y)]
    gt = geotransform_of(obj)
    transform = source_transform(*centres, steps=(None, None) if gt is None else (gt.a, gt.e))
    table = grid_table(prepared.spec, (obj.sizes[y], obj.sizes[x]), transform, crs_of(prepared.obj))
    return table if prepared.keep is None else table[prepared.keep.ravel()].reset_index(drop=True)


def grid(obj: Any, spec: PatchSpec, *, max_nodata_fraction=None, spatial_dims=None, channel_dims=None,
         path=None, max_memory: int | str = DEFAULT_MAX_MEMORY):
    """The table of every patch's place; see ``DataArray.patches.grid``."""
    fraction = check_fraction(max_nodata_fraction)
    Budget.of(max_memory)
    prepared = prepare(obj, spec, spatial_dims=spatial_dims, channel_dims=channel_dims, purpose="grid")
    table = patch_table(prepared)
    if fraction is not None:
        shares = _shares(prepared.jobs, spec, max_memory).ravel()
        table["nodata_fraction"] = shares
        table = table[shares <= fraction].reset_index(drop=True)
    if path is not None:
        write_grid(table, path)
    return table
