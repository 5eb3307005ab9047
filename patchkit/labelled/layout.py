"""Patches of xarray objects: find the dims, arrange the data for the backends, label the result.

A DataArray's dims fall in three groups (:class:`Layout`):

* the spatial dims ``y``, ``x`` (found as rioxarray finds them, or named);
* *channel* dims, kept inside each patch: those named like ``band`` and any that come after the
  spatial dims (channels-last data);
* *leading* dims (such as ``time``): every other dim, kept in front of the patch grid.

The result has dims ``(*leading, "patch_row", "patch_col", *channels, y, x)``, or
``(*leading, "patch", *channels, y, x)`` when patches are filtered by their nodata share.

The data goes to the backends as one ``[batch, height, width, channels]`` array without a transpose
of the pixels: channels-first data (rioxarray's ``band, y, x``) as ``[leading x channels, h, w, 1]``,
channels-last data as ``[leading, h, w, channels]``. The result is a reshaped, transposed *view* of
the backend's output, so its pixels are bit-exact with :func:`patchkit.extract_patches`.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence

import numpy as np

from ..core.backends import get_backend
from ..core.chunking import _bands, compact, kept_patches, lazy_patches
from ..core.budget import DEFAULT_MAX_MEMORY, LAZY_CHUNK_MEMORY, Budget, check_row_fits, plan_for, require_memory
from ..errors import DimensionError, PatchkitValueError
from ..core.extract import extract_patches
from .geo import STEP_ATTR, check_north_up, crs_of, geotransform_of, grid_table, pixel_coords, regular_step, source_transform, write_grid
from .nodata import check_fraction, nodata_counts, nodata_values
from ..core.sources import Source, as_source, origin_of, reading
from ..core.spec import PatchSpec

__all__ = ["Layout", "find_layout", "Prepared", "prepare", "template", "bands", "patch_table", "extract", "iterate", "grid", "recorded_spec", "SPEC_ATTR"]

SPATIAL_NAMES = (("y", "x"), ("lat", "lon"), ("latitude", "longitude"))
CHANNEL_NAMES = ("band", "bands", "channel", "channels", "variable", "wavelength")
#: Attribute of a patch array recording its spec and source shape (JSON), read by :func:`recorded_spec`.
SPEC_ATTR = "patchkit_spec"
#: Encoding entries a patch array keeps (the rest describe the source file).
KEPT_ENCODING = ("grid_mapping", "_FillValue", "missing_value", "scale_factor", "add_offset", "dtype")


@dataclass(frozen=True)
class Layout:
    """How the dims of a DataArray map onto ``[batch, height, width, channels]`` and back."""

    y: str
    x: str
    leading: tuple[str, ...]
    channels: tuple[str, ...]
    channels_last: bool

    @property
    def order(self) -> tuple[str, ...]:
        """The dims in the order the backends read them."""
        spatial = (self.y, self.x)
        return self.leading + (spatial + self.channels if self.channels_last else self.channels + spatial)

    def dims(self, grid: tuple[str, ...]) -> tuple[str, ...]:
        """The dims of the patch array for ``grid`` (``("patch_row", "patch_col")`` or ``("patch",)``)."""
        return self.leading + grid + self.channels + (self.y, self.x)


def _spatial_dims(obj: Any) -> tuple[str, str]:
    dims = tuple(obj.dims)
    if "rioxarray" in sys.modules:  # spatial dims set with rio.set_spatial_dims
        try:
            if obj.rio.y_dim in dims and obj.rio.x_dim in dims:
                return obj.rio.y_dim, obj.rio.x_dim
        except Exception:  # rioxarray raises its own error when it finds none
            pass
    for y, x in SPATIAL_NAMES:
        if y in dims and x in dims:
            return y, x
    raise DimensionError(
        f"found no spatial dims among {dims}: patchkit looks for {SPATIAL_NAMES}; rename them, "
        "e.g. da.rename({'row': 'y', 'col': 'x'}), or pass spatial_dims=('row', 'col')"
    )


def find_layout(obj: Any, spatial_dims: Sequence[str] | None = None, channel_dims: Sequence[str] | None = None) -> Layout:
    """The :class:`Layout` of a DataArray (see the module docstring for the rules).

    Raises
    ------
    DimensionError
        No recognisable spatial dims, a spatial dim of length 0, or a named dim that is not there.
    """
    dims = tuple(obj.dims)
    if spatial_dims is None:
        y, x = _spatial_dims(obj)
    else:
        y, x = _named(dims, spatial_dims, "spatial_dims", 2)
    for dim in (y, x):
        if obj.sizes[dim] == 0:
            raise DimensionError(f"spatial dim {dim!r} has length 0: there is nothing to cut into patches; select a non-empty region")
    last = max(dims.index(y), dims.index(x))
    others = [d for d in dims if d not in (y, x)]
    if channel_dims is None:
        channels = tuple(d for d in others if d in CHANNEL_NAMES or dims.index(d) > last)
    else:
        channels = _named(tuple(others), channel_dims, "channel_dims")
    leading = tuple(d for d in others if d not in channels)
    return Layout(y, x, leading, channels, all(dims.index(d) > last for d in channels))


def _named(dims: tuple[str, ...], names, argument: str, count: int | None = None) -> tuple[str, ...]:
    names = (names,) if isinstance(names, str) else tuple(names)
    if (count is not None and len(names) != count) or any(n not in dims for n in names):
        raise DimensionError(f"{argument}={names!r} must name {count or 'some'} of the dims {dims}; pass names from that list")
    return names


# --------------------------------------------------------------------------------------------------
# Arranging data for the backends and back
# --------------------------------------------------------------------------------------------------


def _sizes(obj, names) -> tuple[int, ...]:
    return tuple(obj.sizes[d] for d in names)


def arrange(obj: Any, layout: Layout):
    """The data of ``obj`` as ``[batch, height, width, channels]`` (numpy or dask; a view when it can be)."""
    data = obj.transpose(*layout.order).data
    lead, chan = math.prod(_sizes(obj, layout.leading)), math.prod(_sizes(obj, layout.channels))
    h, w = obj.sizes[layout.y], obj.sizes[layout.x]
    return data.reshape((lead, h, w, chan) if layout.channels_last else (lead * chan, h, w, 1))


def unarrange(out, obj: Any, layout: Layout, grid: tuple[int, ...], sizes: tuple[int, int]):
    """Backend output ``[batch, *grid, kh * kw * channels]`` as dims ``layout.dims(grid)`` (a view)."""
    lead, chan = _sizes(obj, layout.leading), _sizes(obj, layout.channels)
    nl, ng, nc = len(lead), len(grid), len(chan)
    if layout.channels_last:  # [*lead, *grid, kh, kw, *chan]
        shaped = out.reshape(lead + grid + sizes + chan)
        spatial = (nl + ng, nl + ng + 1)
        chan_axes = tuple(range(nl + ng + 2, nl + ng + 2 + nc))
        grid_axes = tuple(range(nl, nl + ng))
    else:  # [*lead, *chan, *grid, kh, kw]
        shaped = out.reshape(lead + chan + grid + sizes)
        chan_axes = tuple(range(nl, nl + nc))
        grid_axes = tuple(range(nl + nc, nl + nc + ng))
        spatial = (nl + nc + ng, nl + nc + ng + 1)
    return shaped.transpose(tuple(range(nl)) + grid_axes + chan_axes + spatial)


# --------------------------------------------------------------------------------------------------
# Coordinates
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Labels:
    """Coordinates of every patch of one object, cut to a band or a selection by :meth:`coords`."""

    obj: Any
    layout: Layout
    centres: tuple[np.ndarray, np.ndarray]  # y [out_rows, kh], x [out_cols, kw]
    attrs: tuple[dict, dict]

    def coords(self, rows: np.ndarray, cols: np.ndarray, grid: tuple[str, ...]) -> dict:
        """Coordinates for patch rows/cols ``rows``, ``cols`` (the grid's, or one pair per kept patch)."""
        y, x = self.layout.y, self.layout.x
        first, second = (grid[0], grid[-1])
        coords = {
            y: ((first, y), self.centres[0][rows], self.attrs[0]),
            x: ((second, x), self.centres[1][cols], self.attrs[1]),
        }
        if grid == ("patch",):
            coords.update(patch_row=(grid, rows), patch_col=(grid, cols))
        else:
            coords.update(patch_row=rows, patch_col=cols)
        kept = set(self.layout.leading + self.layout.channels)
        for name, coord in self.obj.coords.items():
            if name not in (y, x) and set(coord.dims) <= kept:
                coords[name] = _without_transform(coord)
        return coords


def _without_transform(coord):
    """A grid-mapping coordinate minus its ``GeoTransform``, which describes the source, not a patch.

    Without it, rioxarray derives a selected patch's transform from its coordinates.
    """
    if "GeoTransform" not in coord.attrs:
        return coord
    coord = coord.copy()
    del coord.attrs["GeoTransform"]
    return coord


def _check_labels(spec: PatchSpec, shape: tuple[int, int]) -> None:
    """Refuse (:class:`OutputTooLargeError`) coordinates that memory cannot hold, before building them.

    A patch array's ``y(patch_row, y)`` and ``x(patch_col, x)`` hold ``out_rows x kh + out_cols x kw``
    values; making them takes about three times :meth:`PatchSpec.positions_nbytes`.
    """
    require_memory(
        3 * spec.positions_nbytes(shape), f"the patch coordinates of a {spec.sizes[0]}x{spec.sizes[1]} kernel",
        "use smaller sizes (a SAME kernel may be far larger than the image, but its patches must fit in memory)"
    )


def _labels(obj: Any, layout: Layout, spec: PatchSpec) -> _Labels:
    transform = geotransform_of(obj)
    check_north_up(transform)
    shape = (obj.sizes[layout.y], obj.sizes[layout.x])
    _check_labels(spec, shape)
    positions = spec.positions(shape)
    fallback = (None, None) if transform is None else (transform.e, transform.a)
    centres, attrs = [], []
    for dim, pos, step, rate in zip((layout.y, layout.x), positions, fallback, spec.rates):
        values = obj[dim].values if dim in obj.coords else np.arange(obj.sizes[dim])
        own = regular_step(values) if values.size > 1 else step
        centres.append(pixel_coords(values, pos, step))
        attr = dict(obj[dim].attrs) if dim in obj.coords else {}
        if own is not None:
            attr[STEP_ATTR] = own * rate
        attrs.append(attr)
    return _Labels(obj, layout, tuple(centres), tuple(attrs))


def recorded_spec(patches: Any) -> tuple[PatchSpec, tuple[int, int]]:
    """The spec and the source's ``(height, width)`` that a patch array records in ``attrs["patchkit_spec"]``.

    Raises
    ------
    PatchkitValueError
        When the array carries no such record (it was not made by ``.patches``).
    """
    text = patches.attrs.get(SPEC_ATTR)
    try:
        fields = json.loads(text)
        return PatchSpec.from_dict(fields), tuple(int(n) for n in fields["image_shape"])
    except (TypeError, ValueError, KeyError) as err:
        raise PatchkitValueError(
            f"patches has no valid attrs[{SPEC_ATTR!r}] (got {text!r}): it was not made by .patches.extract "
            "or .patches.iter, or lost its attrs on the way (keep_attrs=True keeps them); pass the spec "
            "and the image shape explicitly"
        ) from err


def _user_name(obj: Any):
    """``obj.name``, unless it is the name xarray took from a dask array (``"transpose-8f3a..."``)."""
    return None if obj.name is not None and obj.name == getattr(obj.data, "name", None) else obj.name


def _wrap(data, obj: Any, layout: Layout, spec: PatchSpec, grid: tuple[str, ...], coords: dict):
    import xarray as xr

    record = {**spec.to_dict(), "image_shape": [obj.sizes[layout.y], obj.sizes[layout.x]]}
    out = xr.DataArray(data, dims=layout.dims(grid), coords=coords, attrs={**obj.attrs, SPEC_ATTR: json.dumps(record)})
    out.name = _user_name(obj)  # set after: xarray would take a dask array's name for a missing one
    out.encoding = {k: v for k, v in obj.encoding.items() if k in KEPT_ENCODING}
    return out


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
        """``images`` as a :class:`Source` whose read errors name the file ``obj`` was opened from."""
        return as_source(self.images, origin=origin_of(self.obj))


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


def bands(prepared: Prepared, *, max_memory: int | str = DEFAULT_MAX_MEMORY, backend: str = "auto",
          done: np.ndarray | None = None) -> Iterator:
    """``(rows, band)`` pairs: labelled row bands of ``prepared`` under ``max_memory``.

    Bands whose rows are all ``done`` are left out, as are bands without a kept patch. Arguments are
    checked here, before the first band is made.
    """
    jobs, spec, keep = prepared.jobs, prepared.spec, prepared.keep
    budget = Budget.of(max_memory)
    sources = {name: job.source for name, job in jobs.items()}
    chosen = {name: get_backend(backend, source) for name, source in sources.items()}
    plans = {name: plan_for(spec, sources[name], chosen[name], budget.share(len(jobs))) for name in jobs}
    oh = prepared.grid_shape[0]
    n = min(plan.band_rows for plan in plans.values())
    todo = tuple(slice(i, min(i + n, oh)) for i in range(0, oh, n))
    if keep is not None:
        todo = tuple(rows for rows in todo if keep[rows].any())
    if done is not None:
        todo = tuple(rows for rows in todo if not done[rows].all())
    streams = {name: _bands(sources[name], spec, replace(plans[name], bands=todo, band_rows=n), chosen[name]) for name in jobs}
    return _labelled_bands(prepared, streams)


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
