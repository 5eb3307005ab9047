"""PatchExplorer: choose a patch grid for a scene interactively, see what it gives, and run it.

Four layers, so that the numbers can be tested without a browser:

* :class:`ExplorerModel` -- pure and widget-free. The scene's shape, dtype and chunks, a
  :class:`~patchkit.core.spec.PatchSpec`, ``max_memory`` and ``max_nodata_fraction`` give a
  :class:`Summary` (grid, patch count, output bytes, peak memory and row bands of a streamed run,
  share of the scene covered, share dropped as nodata) through ``PatchSpec`` and
  :func:`~patchkit.core.budget.plan_for` alone: no pixel is read, and the cost is at most linear in the
  grid's sides.
* :class:`Scene` -- what is read, once: a :class:`Preview` (a GeoTIFF overview where the file has
  one, else a strided, decimated read of about 512 pixels a side; never the full-resolution scene)
  and a :class:`NodataMap` made from it, which estimates every patch's nodata share for any spec
  (exact when the scene is small enough to be its own preview). A selected patch is read at full
  resolution, just its window.
* :class:`SinkRun` -- one extraction to a real sink (``to_zarr``, ``to_geotiffs``, ``to_tfrecord``)
  in a background thread, with progress polled from what the sink has written and a cancel that
  stops it at the next chunk read; the sinks are resumable, so a cancelled run finishes when run again.
* :class:`PatchExplorer` -- the ipywidgets view over the three.

ipywidgets and matplotlib are imported by the view when it is built, so the model and the run can
be used (and tested) without them. Nothing else in patchkit imports this module.
"""

from __future__ import annotations

import functools
import io
import math
import shlex
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..core.backends import get_backend
from ..core.budget import DEFAULT_MAX_MEMORY, plan_for
from ..core.dtypes import check_dtype
from ..core.dtypes import SUPPORTED_DTYPES
from ..errors import (DimensionError, InvalidImageError, PatchkitError, PatchkitTypeError, PatchkitValueError, RunCancelled,
                     UnsupportedDtypeError, shown)
from ..labelled.layout import Layout, arrange, find_layout
from ..labelled.nodata import check_fraction, nodata_counts, nodata_values
from ..sinks import METHODS, check_sink
from ..sinks import geotiff as geotiff_sink
from ..sinks import zarr as zarr_sink
from ..sinks._store import read_json
from ..core.sources import Source, as_source
from ..core.spec import PatchSpec, _four_d
from ..core.budget import Plan
from ..core.units import format_bytes, parse_bytes

__all__ = [
    "ExplorerModel",
    "Summary",
    "Scene",
    "Preview",
    "NodataMap",
    "SinkRun",
    "RunCancelled",
    "PatchExplorer",
    "coverage",
    "job_code",
    "SINKS",
]

#: Sinks a run can write, by the name the explorer shows, and the accessor method each one is.
SINKS = METHODS  # the sinks by name, with the .patches method that writes each
#: The output path a sink gets until the user types one: where ``patchkit run extract_patches`` writes it.
DEFAULT_PATHS = {"zarr": "outputs/patches.zarr", "geotiff": "outputs/chips", "tfrecord": "outputs/tfrecord/patches"}
#: The notebook template ``patchkit run`` runs for an extraction (see ``patchkit.jobs.cli``).
CLI_TEMPLATE = "extract_patches"
#: Longer side of the preview, in pixels.
PREVIEW_SIZE = 512
#: A non-dask scene is read for the preview in strips of full-resolution rows of about this size.
STRIP_BYTES = "64MiB"
#: Nodata shares are estimated on at most this many patch rows (and as many columns), evenly spread.
MAX_SAMPLED = 256
#: Grid lines drawn on the preview along each axis, at most (every k-th patch edge beyond that).
MAX_LINES = 96
#: A numpy-backed scene is wrapped in dask chunks of about this size for a cancellable run.
CANCEL_CHUNK = "32MiB"


def check_spec(spec: Any) -> PatchSpec:
    """``spec`` if it is a :class:`PatchSpec`, else a :class:`PatchkitTypeError` saying how to make one."""
    if isinstance(spec, PatchSpec):
        return spec
    raise PatchkitTypeError(f"spec={shown(spec)} (a {type(spec).__name__}) is not a PatchSpec; pass PatchSpec(sizes, strides, rates, padding)")


# --------------------------------------------------------------------------------------------------
# Geometry that PatchSpec does not give directly: the share of the scene that patches sample
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _covered(n: int, k: int, s: int, r: int, before: int, out: int) -> int:
    """How many of the ``n`` input positions along one axis at least one patch samples.

    Patch ``i`` samples ``i s - before + a r`` for ``a`` in ``0 .. k - 1`` (the spec's geometry);
    positions outside ``[0, n)`` are padding. Costs ``O(k)`` slice writes of ``O(out)``.
    """
    if out <= 0:
        return 0
    if r == 1 and s <= k:  # windows touch or overlap: one run from the first start to the last end
        first, last = -before, (out - 1) * s - before + k
        return max(0, min(last, n) - max(first, 0))
    mask = np.zeros(n, bool)
    for a in range(k):
        start = a * r - before
        i0 = -(start // s) if start < 0 else 0  # first patch whose tap a is inside: ceil(-start / s)
        i1 = min(out - 1, (n - 1 - start) // s)
        if i1 >= i0:
            mask[start + i0 * s: start + i1 * s + 1: s] = True
    return int(mask.sum())


def coverage(spec: PatchSpec, image_shape: Sequence[int]) -> float:
    """The share of the image's pixels that at least one patch samples, in ``[0, 1]``.

    ``image_shape`` is ``(height, width)`` or ``(batch, height, width, channels)``.
    The patches form a full grid, so the covered pixels are the covered rows times the covered
    columns. Stride larger than the kernel (or rates above 1) leaves gaps; padding is not counted.
    """
    h, w = image_shape[-2:] if len(image_shape) == 2 else image_shape[1:3]
    oh, ow = spec.grid_shape((h, w))
    (top, _), (left, _) = spec.padding_amounts((h, w))
    rows = _covered(h, spec.sizes[0], spec.strides[0], spec.rates[0], top, oh)
    cols = _covered(w, spec.sizes[1], spec.strides[1], spec.rates[1], left, ow)
    return rows * cols / (h * w)


# --------------------------------------------------------------------------------------------------
# Nodata: estimated on the preview, once per spec
# --------------------------------------------------------------------------------------------------


def _spread(n: int, most: int) -> np.ndarray:
    """``0 .. n - 1``, or ``most`` indices evenly spread over it when ``n`` is larger."""
    if n <= most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, most).round().astype(np.int64))


def _axis_terms(n: int, k: int, s: int, r: int, before: int, idx: np.ndarray, scale: float, size: int):
    """Per patch ``idx`` along one axis: preview cells ``[p0, p1)`` its window covers, and its share of
    sampled positions inside the image."""
    start = idx * s - before
    stop = start + (k - 1) * r + 1
    lo, hi = np.clip(start, 0, n), np.clip(stop, 0, n)
    p0 = np.clip(np.floor(lo / scale).astype(np.int64), 0, size - 1)
    p1 = np.clip(np.ceil(hi / scale).astype(np.int64), 1, size)
    p1 = np.maximum(p1, p0 + 1)
    a_lo = np.where(start < 0, -(start // r), 0)  # first tap at or after 0: ceil(-start / r)
    a_hi = np.minimum(k - 1, (n - 1 - start) // r)
    inside = np.clip(a_hi - a_lo + 1, 0, k) / k
    return p0, p1, inside


@dataclass(frozen=True, eq=False)
class NodataMap:
    """The share of nodata at every pixel of a preview, and every patch's share derived from it.

    Attributes
    ----------
    shares : ndarray ``[hp, wp]``
        Share of nodata values (nodata markers, ``_FillValue``, NaN; over the batch and channels) at
        each preview pixel.
    image_shape : (int, int)
        The full-resolution ``(height, width)``.
    markers : tuple
        The nodata values counted (NaN always is, for floating-point data).
    images : ndarray, optional
        The full-resolution ``[batch, h, w, channels]`` when the preview is the scene itself: then
        :meth:`patch_shares` counts exactly, as ``max_nodata_fraction`` does.
    """

    shares: np.ndarray
    image_shape: tuple[int, int]
    markers: tuple = ()
    images: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, repr=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False)  # the view draws from another thread

    @classmethod
    def from_images(cls, images: np.ndarray, image_shape: Sequence[int], markers: Sequence = (),
                    exact: bool = False) -> "NodataMap":
        """The map of a preview ``[batch, hp, wp, channels]`` (``exact``: it is the full-resolution scene)."""
        counts, total = nodata_counts(images, PatchSpec(1, 1), tuple(markers))
        return cls(counts / total, tuple(int(n) for n in image_shape), tuple(markers), images if exact else None)

    @functools.cached_property
    def _table(self) -> np.ndarray:
        """Summed-area table of :attr:`shares`, ``[hp + 1, wp + 1]``, made once."""
        sat = np.zeros((self.shares.shape[0] + 1, self.shares.shape[1] + 1))
        sat[1:, 1:] = self.shares.cumsum(0).cumsum(1)
        return sat

    @property
    def exact(self) -> bool:
        """Whether :meth:`patch_shares` counts exactly (the preview is the scene at full resolution)."""
        return self.images is not None

    def patch_shares(self, spec: PatchSpec) -> tuple[np.ndarray, bool]:
        """Every patch's nodata share ``[rows, cols]``, and whether rows/cols are a sample of the grid.

        Exact maps count with :func:`patchkit.labelled.nodata.nodata_counts`. Otherwise a patch's share is
        its padded taps (exact) plus, for its taps inside the image, the mean share of the preview
        pixels under its window (a summed-area table, so each patch costs four lookups). Grids with
        more than :data:`MAX_SAMPLED` rows or columns are sampled evenly. Cached per spec.
        """
        with self._lock:
            if spec in self._cache:
                return self._cache[spec]
        if self.exact:
            counts, total = nodata_counts(self.images, spec, self.markers)
            result = (counts / total, False)
        else:
            result = self._estimate(spec)
        with self._lock:
            if len(self._cache) >= 16:
                self._cache.pop(next(iter(self._cache)))
            self._cache[spec] = result
        return result

    def _estimate(self, spec: PatchSpec) -> tuple[np.ndarray, bool]:
        h, w = self.image_shape
        hp, wp = self.shares.shape
        oh, ow = spec.grid_shape((h, w))
        (top, _), (left, _) = spec.padding_amounts((h, w))
        rows, cols = _spread(oh, MAX_SAMPLED), _spread(ow, MAX_SAMPLED)
        r0, r1, r_in = _axis_terms(h, spec.sizes[0], spec.strides[0], spec.rates[0], top, rows, h / hp, hp)
        c0, c1, c_in = _axis_terms(w, spec.sizes[1], spec.strides[1], spec.rates[1], left, cols, w / wp, wp)
        band = self._table[r1] - self._table[r0]  # [rows, wp + 1]: column sums over each patch's preview rows
        total = band[:, c1] - band[:, c0]
        mean = total / ((r1 - r0)[:, None] * (c1 - c0)[None, :])
        inside = r_in[:, None] * c_in[None, :]
        return np.clip(1.0 - inside * (1.0 - mean), 0.0, 1.0), (rows.size < oh or cols.size < ow)


# --------------------------------------------------------------------------------------------------
# The model: numbers of a choice, without reading pixels
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """What a spec gives on a scene; see :meth:`ExplorerModel.summary`.

    Attributes
    ----------
    grid_shape : (int, int)
        Patch rows and columns (``PatchSpec.grid_shape``).
    patches : int
        Patches on the grid (every image of the batch and every band counts as one place).
    nbytes : int
        Bytes of all patches (``PatchSpec.nbytes``).
    patch_nbytes : int
        Bytes of one patch (all bands).
    peak, bands, band_rows : int or None
        Peak memory, number of row bands and rows per band of a streamed run (``.patches.iter`` /
        the sinks) under ``max_memory``; None when ``max_memory`` does not work (see ``problem``).
    coverage : float
        Share of the scene's pixels that some patch samples.
    kept : int or None
        Patches kept by ``max_nodata_fraction`` (None without one).
    dropped : float or None
        Share of patches dropped as nodata (None without ``max_nodata_fraction``).
    nodata_exact : bool
        Whether ``kept``/``dropped`` are counted (small scenes) or estimated from the preview.
    problem : str or None
        Why the spec or the budget does not work, in patchkit's words.
    """

    grid_shape: tuple[int, int]
    patches: int
    nbytes: int
    patch_nbytes: int
    peak: int | None
    bands: int | None
    band_rows: int | None
    coverage: float
    kept: int | None = None
    dropped: float | None = None
    nodata_exact: bool = False
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """True when an extraction with these settings would run."""
        return self.problem is None

    @property
    def kept_nbytes(self) -> int:
        """Bytes of the kept patches (all of them without ``max_nodata_fraction``)."""
        return self.nbytes if self.kept is None else self.kept * self.patch_nbytes


@dataclass(frozen=True)
class ExplorerModel:
    """A scene's geometry and a choice of grid and budget: the numbers the explorer shows.

    Pure: it holds the shape, dtype and chunks of the scene as the backends read it
    (``[batch, height, width, channels]``), never its pixels; :meth:`summary` asks
    :class:`PatchSpec` and :func:`patchkit.core.budget.plan_for` and nothing else, except the nodata
    share, which comes from an optional :class:`NodataMap` (made once from the preview).

    Parameters
    ----------
    shape : (int, int, int, int)
        ``[batch, height, width, channels]``.
    dtype : numpy dtype
    chunks : tuple of tuple of int, optional
        Dask-style block sizes of a lazy scene (what a read materialises).
    kind : {"numpy", "dask", "lazy"}
        How the scene is held: in memory, as a dask array, or lazily read.
    spec : PatchSpec
    max_memory : int or str
    max_nodata_fraction : float in [0, 1], optional
    backend : {"auto", "numpy", "tensorflow"}
    nodata : NodataMap, optional
        Needed for ``kept``/``dropped`` when ``max_nodata_fraction`` is set.

    Examples
    --------
    >>> model = ExplorerModel((3, 20000, 20000, 1), "uint16", kind="dask", spec=PatchSpec(256, 128))
    >>> model.summary().grid_shape
    (155, 155)
    """

    shape: tuple[int, int, int, int]
    dtype: Any
    chunks: tuple | None = None
    kind: str = "numpy"
    spec: PatchSpec = field(default_factory=lambda: PatchSpec(256, 128))
    max_memory: int | str = DEFAULT_MAX_MEMORY
    max_nodata_fraction: float | None = None
    backend: str = "auto"
    nodata: NodataMap | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _model_shape(self.shape))
        try:
            object.__setattr__(self, "dtype", check_dtype(self.dtype, "dtype"))
        except UnsupportedDtypeError:
            raise UnsupportedDtypeError(
                f"dtype={shown(self.dtype)} is not one tf.image.extract_patches accepts; pass one of {', '.join(SUPPORTED_DTYPES)}"
            ) from None
        if self.kind not in ("numpy", "dask", "lazy"):
            raise PatchkitValueError(f"kind={shown(self.kind)} is not one of 'numpy', 'dask', 'lazy'; pass the one that holds the scene")
        check_spec(self.spec)
        check_fraction(self.max_nodata_fraction)

    @classmethod
    def of_dataarray(cls, obj: Any, layout: Layout | None = None, **kwargs: Any) -> "ExplorerModel":
        """The model of a DataArray as ``.patches`` would read it, without reading (or loading) it.

        A dask-backed DataArray keeps its chunks (kind ``"dask"``); any other is read whole by
        ``.patches`` (kind ``"numpy"``), so it is planned as such, but not loaded here.
        """
        layout = layout or find_layout(obj)
        if obj.chunks is not None:
            return cls.of(arrange(obj, layout), **kwargs)
        lead = math.prod(obj.sizes[d] for d in layout.leading)
        chan = math.prod(obj.sizes[d] for d in layout.channels)
        h, w = obj.sizes[layout.y], obj.sizes[layout.x]
        shape = (lead, h, w, chan) if layout.channels_last else (lead * chan, h, w, 1)
        return cls(shape, obj.dtype, None, "numpy", **kwargs)

    @classmethod
    def of(cls, images: Any, **kwargs: Any) -> "ExplorerModel":
        """The model of a ``[batch, height, width, channels]`` array (numpy, dask, zarr...), not read."""
        source = as_source(images)
        if source.kind == "tensorflow":
            raise PatchkitTypeError(
                f"images is a {type(images).__name__} of shape {source.shape}, but the explorer takes host or lazy arrays; "
                "pass tensor.numpy() or an xarray DataArray"
            )
        return cls(source.shape, source.dtype, source.chunks, source.kind, **kwargs)

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the scene."""
        return self.shape[1], self.shape[2]

    def update(self, **changes: Any) -> "ExplorerModel":
        """A copy with some fields changed; ``sizes``, ``strides``, ``rates`` and ``padding`` change the spec."""
        parts = {k: changes.pop(k) for k in ("sizes", "strides", "rates", "padding") if k in changes}
        fields = set(self.__dataclass_fields__)
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise PatchkitValueError(
                f"{', '.join(f'{k}={shown(changes[k])}' for k in unknown)}: not a field of ExplorerModel; use one of "
                f"{sorted(fields | {'sizes', 'strides', 'rates', 'padding'})}"
            )
        if parts:
            spec = changes.get("spec", self.spec)
            fields = {"sizes": spec.sizes, "strides": spec.strides, "rates": spec.rates, "padding": spec.padding, **parts}
            changes["spec"] = PatchSpec(**fields)
        return replace(self, **changes)

    def source(self) -> Source:
        """A :class:`~patchkit.core.sources.Source` with the scene's geometry and no data (for planning)."""
        return Source(None, self.kind, self.shape, self.dtype, self.chunks)

    def plan(self) -> Plan:
        """The row-band plan of a streamed run (``.patches.iter``, the sinks) under ``max_memory``."""
        source = self.source()
        return plan_for(self.spec, source, get_backend(self.backend, source), self.max_memory)

    def summary(self) -> Summary:
        """Grid, counts, bytes, the streamed run's plan, coverage and nodata share; no pixel is read.

        Never raises for a spec or budget that does not work: ``problem`` says why, and the numbers
        that cannot be known are None (or 0 for a grid that does not exist).
        """
        spec, shape = self.spec, self.shape
        try:
            spec.check(shape)
        except PatchkitError as err:
            return Summary((0, 0), 0, 0, 0, None, None, None, 0.0, problem=str(err))
        oh, ow = spec.grid_shape(shape)
        nbytes = spec.nbytes(shape, self.dtype)
        b, _, _, depth = spec.output_shape(shape)
        patch_nbytes = b * depth * self.dtype.itemsize
        kept = dropped = None
        exact = False
        if self.max_nodata_fraction is not None and self.nodata is not None and oh * ow:
            shares, sampled = self.nodata.patch_shares(spec)
            keep = shares <= check_fraction(self.max_nodata_fraction)
            kept = int(round(keep.mean() * oh * ow)) if sampled else int(keep.sum())
            dropped = 1.0 - kept / (oh * ow)
            exact = self.nodata.exact and not sampled
        common = dict(grid_shape=(oh, ow), patches=oh * ow, nbytes=nbytes, patch_nbytes=patch_nbytes,
                      coverage=coverage(spec, shape), kept=kept, dropped=dropped, nodata_exact=exact)
        try:
            plan = self.plan()
        except PatchkitError as err:  # a budget below the minimum (the message gives it), a bad max_memory
            return Summary(peak=None, bands=None, band_rows=None, problem=str(err), **common)
        return Summary(peak=plan.peak, bands=len(plan), band_rows=plan.band_rows, **common)


def _model_shape(shape: Any) -> tuple[int, int, int, int]:
    """``shape`` as a validated ``[batch, height, width, channels]``; errors name the argument ``shape``."""
    try:
        return _four_d(shape)
    except (InvalidImageError, TypeError, ValueError):
        raise InvalidImageError(
            f"shape={shown(shape)} must be [batch, height, width, channels]: four positive integers; "
            "pass e.g. shape=(1, 4096, 4096, 3)"
        ) from None


# --------------------------------------------------------------------------------------------------
# The scene: the preview and the selected patch (the only reads)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Preview:
    """A small picture of the scene: an overview or a decimated read, in memory.

    Attributes
    ----------
    data : DataArray
        The scene at low resolution (same dims).
    images : ndarray
        ``data`` as ``[batch, hp, wp, channels]``.
    scale : (float, float)
        Full-resolution pixels per preview pixel along y and x.
    origin : str
        Where it came from: ``"overview 1/8"``, ``"every 40th pixel"`` or ``"full resolution"``.
    """

    data: Any
    images: np.ndarray
    scale: tuple[float, float]
    origin: str

    @property
    def full_resolution(self) -> bool:
        return self.scale == (1.0, 1.0)


def _strided(obj: Any, layout: Layout, step: int):
    """``obj`` at every ``step``-th pixel, in memory, without holding the full-resolution scene.

    Dask computes the strided slice chunk by chunk; anything else (in memory, or lazily read by
    xarray's backends) is read in strips of full-resolution rows of about :data:`STRIP_BYTES`.
    """
    import xarray as xr

    y, x = layout.y, layout.x
    every = {y: slice(None, None, step), x: slice(None, None, step)}
    if obj.chunks is not None:
        return obj.isel(every).compute()
    h = obj.sizes[y]
    row_bytes = obj.dtype.itemsize * math.prod(n for d, n in obj.sizes.items() if d != y)
    rows = max(step, parse_bytes(STRIP_BYTES) // max(row_bytes, 1) // step * step)
    strips = [obj.isel({y: slice(r0, min(r0 + rows, h), step), x: every[x]}).load() for r0 in range(0, h, rows)]
    return strips[0] if len(strips) == 1 else xr.concat(strips, dim=y)


def _overview(obj: Any, layout: Layout, size: int):
    """The smallest GeoTIFF overview of ``obj``'s file at least ``size`` pixels on its longer side.

    Only for a DataArray that is its whole file (same height, width and band count, dims
    ``(band, y, x)`` or ``(y, x)``); None otherwise, or when the file has no overviews.
    """
    path = obj.encoding.get("source")
    if not isinstance(path, str) or layout.leading or layout.channels not in ((), ("band",)):
        return None
    try:
        import rasterio
        import rioxarray

        h, w = obj.sizes[layout.y], obj.sizes[layout.x]
        with rasterio.open(path) as src:
            if (src.height, src.width) != (h, w) or src.count != obj.sizes.get("band", 1):
                return None
            factors = src.overviews(1)
        if not factors:
            return None
        fitting = [level for level, f in enumerate(factors) if max(h, w) / f >= size]
        level = fitting[-1] if fitting else 0
        with rioxarray.open_rasterio(path, overview_level=level) as opened:  # closed: GDAL's blocks of it freed now
            ov = opened.load()
    except Exception:  # no rasterio, an unreadable file: fall back to a decimated read
        return None
    if "band" not in obj.dims:
        ov = ov.isel(band=0, drop=True)
    ov = ov.rename({"y": layout.y, "x": layout.x}) if (layout.y, layout.x) != ("y", "x") else ov
    return ov.transpose(*obj.dims), factors[level]


def _ordinal(n: int) -> str:
    """``2nd``, ``11th``, ``23rd``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def read_preview(obj: Any, layout: Layout, size: int = PREVIEW_SIZE) -> Preview:
    """A :class:`Preview` of about ``size`` pixels on its longer side: an overview, else a decimated read."""
    h, w = obj.sizes[layout.y], obj.sizes[layout.x]
    found = _overview(obj, layout, size) if max(h, w) > size else None
    if found is not None:
        data, factor = found
        origin = f"overview 1/{factor}"
    else:
        step = max(1, -(-max(h, w) // size))
        data = _strided(obj, layout, step) if step > 1 else obj.compute()  # compute: a copy, obj stays lazy
        origin = "full resolution" if step == 1 else f"every {_ordinal(step)} pixel"
    images = np.asarray(arrange(data, layout))
    scale = (h / data.sizes[layout.y], w / data.sizes[layout.x])
    return Preview(data, images, scale, origin)


def _planes(images: np.ndarray, layout: Layout, channels: int) -> np.ndarray:
    """``[h, w, 3]`` (three channels or more) or ``[h, w, 1]`` of the first image of ``[b, h, w, c]``."""
    k = 3 if channels >= 3 else 1
    if layout.channels_last:
        return images[0, :, :, :k]
    return np.moveaxis(images[:k, :, :, 0], 0, -1)


def _to_rgba(planes: np.ndarray, markers: Sequence) -> np.ndarray:
    """``[h, w, 4]`` uint8: planes stretched between their 2nd and 98th percentiles, nodata transparent."""
    values = planes.astype(np.float64) if planes.dtype.kind in "biuf" else np.abs(planes).astype(np.float64)
    bad = ~np.isfinite(values)
    for marker in markers:
        bad |= planes == marker
    bad = bad.any(axis=-1)
    out = np.zeros((*planes.shape[:2], 4), np.uint8)
    good = values[~bad]
    if good.size:
        lo, hi = np.percentile(good, [2, 98])
        scaled = np.clip((np.nan_to_num(values) - lo) / ((hi - lo) or 1.0), 0, 1)
        rgb = np.repeat(scaled, 3, axis=-1) if scaled.shape[-1] == 1 else scaled
        out[..., :3] = (rgb * 255).astype(np.uint8)
    out[..., 3] = np.where(bad, 0, 255)
    return out


@dataclass(frozen=True, eq=False)
class Scene:
    """A DataArray to explore: its layout, its preview and the nodata map made from the preview.

    The DataArray itself stays as it was (lazy if it was); only :meth:`read_patch` reads from it
    after :meth:`open`, one patch window at a time.
    """

    obj: Any
    layout: Layout
    preview: Preview
    nodata: NodataMap

    @classmethod
    def open(cls, obj: Any, *, preview_size: int = PREVIEW_SIZE, spatial_dims: Sequence[str] | None = None,
             channel_dims: Sequence[str] | None = None) -> "Scene":
        """Find the dims, read the preview (once) and make the nodata map from it.

        Raises
        ------
        PatchkitTypeError
            ``obj`` is not an xarray DataArray.
        DimensionError
            A Dataset (explore one variable), or no spatial dims.
        """
        import xarray as xr

        if isinstance(obj, xr.Dataset):
            raise DimensionError(
                f"obj is a Dataset of the variables {[str(n) for n in obj.data_vars]}, but PatchExplorer explores one "
                "DataArray; pick a variable (ds['name']) or stack them with ds.to_dataarray('band')"
            )
        if not isinstance(obj, xr.DataArray):
            raise PatchkitTypeError(
                f"obj is a {type(obj).__name__}, but PatchExplorer takes an xarray DataArray; open the scene with e.g. "
                "rioxarray.open_rasterio(path, chunks={'y': 1024, 'x': 1024})"
            )
        if isinstance(preview_size, bool) or not isinstance(preview_size, (int, np.integer)) or preview_size < 1:
            raise PatchkitValueError(
                f"preview_size={shown(preview_size)} must be a positive whole number of pixels (the preview's longer "
                f"side); pass e.g. preview_size={PREVIEW_SIZE}"
            )
        layout = find_layout(obj, spatial_dims, channel_dims)
        preview = read_preview(obj, layout, preview_size)
        markers = nodata_values(obj)
        nodata = NodataMap.from_images(preview.images, (obj.sizes[layout.y], obj.sizes[layout.x]), markers,
                                       exact=preview.full_resolution)
        return cls(obj, layout, preview, nodata)

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.obj.sizes[self.layout.y], self.obj.sizes[self.layout.x]

    @property
    def channels(self) -> int:
        """Values per pixel inside a patch (product of the channel dims)."""
        return math.prod(self.obj.sizes[d] for d in self.layout.channels)

    @property
    def chunks(self) -> dict | None:
        """``{dim: chunk size}`` of a dask-backed scene (the first chunk along each dim), else None."""
        if self.obj.chunks is None:
            return None
        return {str(dim): int(sizes[0]) for dim, sizes in self.obj.chunksizes.items()}

    @property
    def source_path(self) -> str | None:
        """The file the DataArray was read from (``encoding["source"]``), if any."""
        path = self.obj.encoding.get("source")
        return path if isinstance(path, str) else None

    def model(self, spec: PatchSpec, **kwargs: Any) -> ExplorerModel:
        """An :class:`ExplorerModel` of this scene with its nodata map."""
        return ExplorerModel.of_dataarray(self.obj, self.layout, spec=spec, nodata=self.nodata, **kwargs)

    def read_patch(self, spec: PatchSpec, row: int, col: int) -> np.ndarray:
        """Patch ``(row, col)`` at full resolution, ``[batch, kh, kw, channels]``: reads just its window.

        Equal to ``extract_patches(images, ...)[:, row, col]`` reshaped (padding is zeros).
        """
        h, w = self.image_shape
        win = spec.window(row, col, (h, w))
        y0, y1 = max(win.row_off, 0), min(win.row_off + win.height, h)
        x0, x1 = max(win.col_off, 0), min(win.col_off + win.width, w)
        b, _, _, c = self.preview.images.shape
        out = np.zeros((b, win.height, win.width, c), self.obj.dtype)
        if y1 > y0 and x1 > x0:
            piece = self.obj.isel({self.layout.y: slice(y0, y1), self.layout.x: slice(x0, x1)})
            out[:, y0 - win.row_off: y1 - win.row_off, x0 - win.col_off: x1 - win.col_off] = np.asarray(arrange(piece, self.layout))
        return out[:, :: win.row_step, :: win.col_step]

    @functools.cached_property
    def preview_rgba(self) -> np.ndarray:
        """The preview as ``[hp, wp, 4]`` uint8 (first three channels as RGB, or the first in grey)."""
        return _to_rgba(_planes(self.preview.images, self.layout, self.channels), self.nodata.markers)

    def patch_rgba(self, patch: np.ndarray) -> np.ndarray:
        """A patch from :meth:`read_patch` as ``[kh, kw, 4]`` uint8."""
        return _to_rgba(_planes(patch, self.layout, self.channels), self.nodata.markers)


# --------------------------------------------------------------------------------------------------
# Drawing (matplotlib's Agg canvas, no pyplot)
# --------------------------------------------------------------------------------------------------


def _edges(out: int, s: int, before: int, ke: int) -> np.ndarray:
    """Patch start edges along an axis (every k-th beyond :data:`MAX_LINES`) and the last end."""
    every = max(1, -(-out // MAX_LINES))
    starts = np.arange(0, out, every) * s - before
    return np.append(starts, (out - 1) * s - before + ke)


def render_scene(scene: Scene, spec: PatchSpec, selected: tuple[int, int] | None = None,
                 dropped: np.ndarray | None = None, width: float = 5.0) -> bytes:
    """PNG of the preview with the patch grid drawn on it, in full-resolution pixel coordinates.

    Lines mark patch starts (every k-th when there are many) and the end of the last patch; the
    dashed box is the padded extent; the selected patch is filled; ``dropped`` (boolean
    ``[out_rows, out_cols]``) puts a cross on the centre of every patch dropped as nodata.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    h, w = scene.image_shape
    fig = Figure(figsize=(width, width * min(max(h / w, 0.3), 3.0)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.08, 0.06, 0.9, 0.9))
    ax.imshow(scene.preview_rgba, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_facecolor("#ddd")
    try:
        spec.check((h, w))
        oh, ow = spec.grid_shape((h, w))
    except PatchkitError:
        oh = ow = 0
    if oh and ow:
        (top, bottom), (left, right) = spec.padding_amounts((h, w))
        keh, kew = spec.effective_sizes
        ys = _edges(oh, spec.strides[0], top, keh)
        xs = _edges(ow, spec.strides[1], left, kew)
        y_lo, y_hi, x_lo, x_hi = ys[0], ys[-1], xs[0], xs[-1]
        lines = [((x_lo, y), (x_hi, y)) for y in ys] + [((x, y_lo), (x, y_hi)) for x in xs]
        ax.add_collection(LineCollection(lines, colors="#ff3b30", linewidths=0.5, alpha=0.8))
        if top or bottom or left or right:
            ax.add_patch(Rectangle((-left, -top), w + left + right, h + top + bottom, fill=False, ls="--", lw=0.8, ec="#007aff"))
        if dropped is not None and dropped.any():
            rows, cols = np.nonzero(dropped)
            ax.scatter(cols * spec.strides[1] - left + kew / 2, rows * spec.strides[0] - top + keh / 2, marker="x",
                       s=14, c="#222", linewidths=0.8)
            ax.set_title("× dropped as nodata", fontsize=8, loc="right")
        if selected is not None:
            win = spec.window(*selected, (h, w))
            ax.add_patch(Rectangle((win.col_off, win.row_off), win.width, win.height, fc="#ffcc00", alpha=0.45, ec="#ffcc00", lw=1.5))
        pad_y, pad_x = max(top, bottom, 0), max(left, right, 0)
        ax.set_xlim(min(0, x_lo) - pad_x * 0.05, max(w, x_hi) + pad_x * 0.05)
        ax.set_ylim(max(h, y_hi) + pad_y * 0.05, min(0, y_lo) - pad_y * 0.05)
    ax.tick_params(labelsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def render_patch(scene: Scene, patch: np.ndarray, title: str = "", width: float = 3.2) -> bytes:
    """PNG of one patch at full resolution (every pixel up to 1024 a side, decimated beyond)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rgba = scene.patch_rgba(patch)
    step = max(1, -(-max(rgba.shape[:2]) // 1024))
    fig = Figure(figsize=(width, width), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.12, 0.08, 0.85, 0.82))
    ax.imshow(rgba[::step, ::step], extent=(0, rgba.shape[1], rgba.shape[0], 0), interpolation="nearest")
    ax.set_facecolor("#ddd")
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# The equivalent job: a Python call and a `patchkit run` command
# --------------------------------------------------------------------------------------------------


def _pair(value: tuple[int, int]) -> int | tuple[int, int]:
    return value[0] if value[0] == value[1] else tuple(value)


#: Where the ``extract_patches`` template writes each sink's output, under its ``output_dir``.
TEMPLATE_OUTPUTS = {"zarr": ("patches.zarr",), "geotiff": ("chips",), "tfrecord": ("tfrecord", "patches")}


def _output_dir(sink: str, path: Path) -> tuple[Path, bool]:
    """The template's ``output_dir`` for an output ``path``, and whether the template writes exactly ``path``."""
    tail = TEMPLATE_OUTPUTS[sink]
    if path.parts[-len(tail):] == tail:
        return Path(*path.parts[: -len(tail)]) if len(path.parts) > len(tail) else Path("."), True
    return path.parent, False


def _cli_value(value: Any) -> str:
    """A parameter value as ``patchkit run -p`` parses it back (Python literals; other text stays a string)."""
    if isinstance(value, tuple):
        return f"[{value[0]}, {value[1]}]"
    return str(value)


def job_code(spec: PatchSpec, sink: str, path: str | Path, *, max_memory: int | str = DEFAULT_MAX_MEMORY,
             max_nodata_fraction: float | None = None, source: str | None = None, name: str = "da",
             mode: str | None = None, chunks: dict | None = None, backend: str = "auto") -> tuple[str, str]:
    """The Python call and the ``patchkit run extract_patches`` command that run the same extraction.

    Parameters
    ----------
    spec : PatchSpec
    sink : {"zarr", "geotiff", "tfrecord"}
    path : path
        The store, chip folder or TFRecord prefix.
    max_memory, max_nodata_fraction, mode, backend
        As the sinks take them.
    source : str, optional
        The scene's file; the Python code then opens it with rioxarray, and the command passes it
        as ``input_path`` (else ``SCENE.tif`` stands for it).
    name : str
        The variable holding the DataArray in the Python code.
    chunks : dict, optional
        Dask chunks to open ``source`` with (``{"y": 1024, "x": 1024}``); None opens it unchunked.

    Returns
    -------
    (str, str)
        Python source (one call, after an ``open_rasterio`` line when ``source`` is known) and a
        shell command line for the ``extract_patches`` template, which writes ``patches.zarr``,
        ``chips`` or ``tfrecord/patches`` under its ``output_dir``; comment lines follow the command
        where the template cannot do exactly the same (another output name, ``mode="w"``).
    """
    check_sink(sink)
    check_spec(spec)
    path = Path(path)
    spec_args = {"sizes": _pair(spec.sizes), "strides": _pair(spec.strides), "rates": _pair(spec.rates), "padding": spec.padding}
    keywords = {**spec_args, "max_memory": max_memory}
    for key, value, default in (("max_nodata_fraction", max_nodata_fraction, None), ("mode", mode, None), ("backend", backend, "auto")):
        if value != default:
            keywords[key] = value
    call = f"{name}.patches.{SINKS[sink]}({str(path)!r}, " + ", ".join(f"{k}={v!r}" for k, v in keywords.items()) + ")"
    lines = ["import patchkit  # registers the .patches accessor"]
    if source is not None:
        opening = f"{source!r}" if chunks is None else f"{source!r}, chunks={chunks!r}"
        lines += ["import rioxarray", f"{name} = rioxarray.open_rasterio({opening})"]
    python = "\n".join(lines + [call])

    output_dir, exact = _output_dir(sink, path)
    memory = f"{max_memory}B" if isinstance(max_memory, int) else max_memory  # the template takes a string
    parameters = {"input_path": source if source is not None else "SCENE.tif", **spec_args, "max_memory": memory,
                  "max_nodata_fraction": max_nodata_fraction, "sink": sink, "output_dir": str(output_dir)}
    if backend != "auto":
        parameters["backend"] = backend
    words = ["patchkit", "run", CLI_TEMPLATE]
    for key, value in parameters.items():
        words += ["-p", key, shlex.quote(_cli_value(value))]
    notes = []
    if source is None:
        notes.append("# SCENE.tif: the raster file the DataArray was read from")
    if not exact:
        notes.append(f"# the template writes {Path(output_dir, *TEMPLATE_OUTPUTS[sink])}, not {path}")
    if mode == "w":
        notes.append(f"# the template resumes a run; to overwrite as mode='w' does, delete {Path(output_dir, *TEMPLATE_OUTPUTS[sink])} first")
    return python, "\n".join([" ".join(words), *notes])


# --------------------------------------------------------------------------------------------------
# Running a sink: a thread, progress from what it has written, cancel at the next chunk read
# --------------------------------------------------------------------------------------------------


class _Gate:
    """A dask block function that passes blocks through and raises :class:`RunCancelled` once ``event`` is set."""

    def __init__(self, event: threading.Event):
        self.event = event
        self.token = uuid.uuid4().hex

    def __call__(self, block: np.ndarray) -> np.ndarray:
        if self.event.is_set():
            raise RunCancelled("the run was cancelled; run it again with the same arguments to finish it")
        return block

    def __dask_tokenize__(self) -> str:
        return self.token


def cancellable(obj: Any, event: threading.Event, layout: Layout | None = None):
    """``obj`` with dask data that raises :class:`RunCancelled` on any chunk read once ``event`` is set.

    Dims, coordinates, attrs, name and encoding are kept, so a sink's fingerprint is that of
    ``obj`` and a cancelled run resumes with the plain call. A numpy-backed (or lazily read)
    DataArray is first cut into chunks of whole rows of about :data:`CANCEL_CHUNK`.
    """
    if obj.chunks is None:
        layout = layout or find_layout(obj)
        row_bytes = obj.dtype.itemsize * math.prod(n for d, n in obj.sizes.items() if d != layout.y)
        obj = obj.chunk({layout.y: max(1, parse_bytes(CANCEL_CHUNK) // max(row_bytes, 1))})
    gate = _Gate(event)
    data = obj.data.map_blocks(gate, dtype=obj.dtype, meta=np.empty((0,) * obj.ndim, obj.dtype), name=f"patchkit-gate-{gate.token}")
    return obj.copy(data=data)


def sink_progress(sink: str, path: str | Path, rows: int) -> tuple[int, int, str]:
    """``(done, total, unit)`` of a sink's output as it is on disk now (``(0, rows, ...)`` before it starts).

    zarr: finished patch rows (``patchkit_rows_done``); geotiff: chips written of the manifest's
    count; tfrecord: patch rows of the shards the manifest marks done.
    """
    path = Path(path)
    if sink == "zarr":
        attrs = (read_json(path / "zarr.json") or {}).get("attributes", {})
        if attrs.get(zarr_sink.COMPLETE):
            return rows, rows, "rows"
        return min(rows, sum(b - a for a, b in attrs.get(zarr_sink.ROWS_DONE, []))), rows, "rows"
    if sink == "geotiff":
        manifest = read_json(path / geotiff_sink.MANIFEST) or {}
        total = int(manifest.get("chips", 0))
        if manifest.get("complete"):
            return total, total, "chips"
        done = sum(1 for _ in path.glob("r*_c*.tif")) if path.is_dir() else 0
        return min(done, total), total, "chips"
    if sink == "tfrecord":
        manifest = read_json(path.with_name(path.name + ".json")) or {}
        if manifest.get("complete"):
            return rows, rows, "rows"
        done = sum(s["rows"][1] - s["rows"][0] for s in manifest.get("shards", []) if s.get("done"))
        return min(done, rows), rows, "rows"
    raise PatchkitValueError(f"sink={check_sink(sink)!r} has no progress to read; choose one of {sorted(SINKS)}")


class SinkRun:
    """One extraction to a sink in a background thread: progress polled from its output, cancellable.

    The sink is the real one (``obj.patches.to_zarr``, ``to_geotiffs`` or ``to_tfrecord``, called with
    ``progress=False``) on a view of ``obj`` whose every chunk read checks a cancel event
    (:func:`cancellable`), so a cancel stops it before its next read, between writes of finished
    work. A cancelled run keeps what it finished: starting the same run again (or the plain call
    that :func:`job_code` gives) resumes it.

    Parameters
    ----------
    obj : DataArray
    sink : {"zarr", "geotiff", "tfrecord"}
    path : path
    spec : PatchSpec
    max_memory, max_nodata_fraction, mode, backend
        As the sinks take them.
    on_progress : callable ``(done, total, unit)``, optional
        Called from a monitor thread every ``poll`` seconds while running, and once at the end.
    on_finish : callable ``(run)``, optional
        Called once the run has ended (done, cancelled or failed).
    poll : float
        Seconds between progress polls.
    """

    def __init__(self, obj: Any, sink: str, path: str | Path, spec: PatchSpec, *,
                 max_memory: int | str = DEFAULT_MAX_MEMORY, max_nodata_fraction: float | None = None,
                 mode: str | None = None, backend: str = "auto",
                 on_progress: Callable[[int, int, str], None] | None = None,
                 on_finish: Callable[["SinkRun"], None] | None = None, poll: float = 0.2, layout: Layout | None = None):
        check_sink(sink)
        check_spec(spec)
        self.obj, self.sink, self.path, self.spec = obj, sink, Path(path), spec
        self.options = dict(max_memory=max_memory, max_nodata_fraction=max_nodata_fraction, mode=mode, backend=backend)
        self.on_progress, self.on_finish, self.poll = on_progress, on_finish, poll
        self.layout = layout
        self.state = "pending"
        self.error: BaseException | None = None
        self.result: Path | None = None
        self.seconds: float | None = None
        self._cancel = threading.Event()
        self._done = threading.Event()
        layout = layout or find_layout(obj)
        self._rows = spec.grid_shape((obj.sizes[layout.y], obj.sizes[layout.x]))[0]
        self._threads: list[threading.Thread] = []

    def start(self) -> "SinkRun":
        """Start the run (and its progress monitor) in daemon threads; returns at once."""
        if self.state != "pending":
            raise PatchkitValueError(f"this run is {self.state}; make a new SinkRun to run again")
        self.state = "running"
        self._threads = [threading.Thread(target=self._work, name="patchkit-sink", daemon=True),
                         threading.Thread(target=self._monitor, name="patchkit-progress", daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def cancel(self) -> None:
        """Ask the run to stop at its next chunk read (returns at once; :meth:`join` waits)."""
        self._cancel.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the run (and the last progress report) to end; True when it has."""
        end = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def progress(self) -> tuple[int, int, str]:
        """``(done, total, unit)`` as the output stands now (see :func:`sink_progress`)."""
        return sink_progress(self.sink, self.path, self._rows)

    def _work(self) -> None:
        start = time.perf_counter()
        try:
            gated = cancellable(self.obj, self._cancel, self.layout)
            method = getattr(gated.patches, SINKS[self.sink])
            spec = self.spec
            self.result = method(self.path, spec.sizes, spec.strides, spec.rates, spec.padding, progress=False, **self.options)
            self.state = "done"
        except RunCancelled:
            self.state = "cancelled"
        except BaseException as err:  # reported through state/error; the thread must not die silently
            self.error, self.state = err, "failed"
        finally:
            self.seconds = time.perf_counter() - start
            self._done.set()

    def _monitor(self) -> None:
        while not self._done.wait(self.poll):
            self._report()
        self._report()
        if self.on_finish is not None:
            self.on_finish(self)

    def _report(self) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(*self.progress())
        except Exception:  # a progress display must never break the run
            pass


# --------------------------------------------------------------------------------------------------
# The view
# --------------------------------------------------------------------------------------------------


class _Latest:
    """Runs ``job`` in a background thread whenever asked, coalescing requests: the latest state wins.

    Drawing takes a few hundred milliseconds; the summary must not wait for it, and a slider moved
    ten times needs one drawing of where it stopped, not ten. The thread ends when idle.
    """

    def __init__(self, job: Callable[[], None]):
        self._job = job
        self._lock = threading.Lock()
        self._pending = False
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        with self._lock:
            self._pending = True
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="patchkit-draw", daemon=True)
                self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every requested job has run; True unless ``timeout`` passed first."""
        return self._idle.wait(timeout)

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    self._idle.set()
                    return
                self._pending = False
            self._job()


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.1f} %"


def summary_html(summary: Summary, model: ExplorerModel, preview_origin: str = "") -> str:
    """The summary as an HTML table; the patch count is in ``<span class="patchkit-count">``."""
    oh, ow = summary.grid_shape
    rows = [
        ("grid", f'<span class="patchkit-grid">{oh:,} × {ow:,}</span> (patch rows × columns)'),
        ("patches", f'<span class="patchkit-count">{summary.patches:,}</span>'),
        ("output", f'<span class="patchkit-nbytes">{format_bytes(summary.nbytes)}</span> ({format_bytes(summary.patch_nbytes)} a patch)'),
    ]
    if summary.peak is not None:
        rows += [
            ("peak memory", f'<span class="patchkit-peak">{format_bytes(summary.peak)}</span> of max_memory '
                            f'{format_bytes(parse_bytes(model.max_memory))} (streamed run)'),
            ("row bands", f'<span class="patchkit-bands">{summary.bands:,}</span> of up to {summary.band_rows:,} patch rows'),
        ]
    rows.append(("scene covered", f'<span class="patchkit-coverage">{_percent(summary.coverage)}</span>'))
    if model.max_nodata_fraction is None:
        rows.append(("dropped as nodata", "– (max_nodata_fraction off)"))
    elif summary.dropped is not None:
        how = "counted" if summary.nodata_exact else f"estimate from the preview ({preview_origin or 'decimated'})"
        rows.append(("dropped as nodata", f'<span class="patchkit-dropped">{_percent(summary.dropped)}</span> '
                                          f"({summary.patches - summary.kept:,} patches; {how}); kept "
                                          f"{summary.kept:,}, {format_bytes(summary.kept_nbytes)}"))
    body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th><td>{v}</td></tr>" for k, v in rows)
    problem = "" if summary.ok else f"<p class='patchkit-problem' style='color:#c00'>{_escape(summary.problem)}</p>"
    return f"<table class='patchkit-summary-table'>{body}</table>{problem}"


def _escape(text: str | None) -> str:
    import html

    return html.escape(text or "")


def _control_int(key: str, value: Any, control: Any) -> None:
    """Refuse a value a slider cannot take as given (a fraction, text, a bool, outside its range) instead of bending it."""
    whole = isinstance(value, (int, np.integer)) or isinstance(value, (float, np.floating)) and float(value).is_integer()
    if isinstance(value, (bool, np.bool_)) or not whole:
        raise PatchkitValueError(f"{key}={shown(value)} is not a whole number of pixels; pass an integer, e.g. {key}=256")
    if not control.min <= value <= control.max:
        raise PatchkitValueError(
            f"{key}={shown(value)} is outside the control's range {control.min}..{control.max}; pass a value in it "
            "(or use the sinks directly for larger values)"
        )


class PatchExplorer:
    """Choose sizes, strides, rates, padding and a memory budget for a scene, see what they give, run it.

    Controls for every parameter; a summary that follows every change without extracting (see
    :class:`ExplorerModel`); a preview of the scene (an overview or a decimated read) with the grid
    drawn on it and one selected patch at full resolution; a button that runs the extraction to a
    sink with a progress bar, cancellable and resumable; and :meth:`to_code`, the same job as a
    Python call and a ``patchkit run`` command.

    Parameters
    ----------
    obj : xarray.DataArray
        The scene, ideally lazy: ``rioxarray.open_rasterio(path, chunks={"y": 1024, "x": 1024})``.
    sizes, strides, rates, padding
        The starting spec, as ``tf.image.extract_patches`` takes them. ``sizes`` defaults to 256 (or
        the image's shorter side), ``strides`` to half of ``sizes``. The sliders set rows and
        columns together.
    max_memory : int or str, default "512MiB"
    max_nodata_fraction : float in [0, 1], optional
    backend : {"auto", "numpy", "tensorflow"}
    sink : {"zarr", "geotiff", "tfrecord"}
    path : str, optional
        Output of a run; by default ``outputs/patches.zarr``, ``outputs/chips`` or
        ``outputs/tfrecord/patches`` (a TFRecord prefix): where ``patchkit run extract_patches``
        writes them with ``-p output_dir outputs``.
    name : str
        The DataArray's variable name in :meth:`to_code`.
    preview_size : int
        Longer side of the preview in pixels.
    spatial_dims, channel_dims
        As ``.patches``.
    asynchronous : bool, default True
        Draw the preview and the selected patch in a background thread (the latest state wins), so
        the summary never waits for a drawing; False draws before each change returns.

    Examples
    --------
    >>> explorer = PatchExplorer(scene, 256, 128, max_memory="1GiB")   # doctest: +SKIP
    >>> explorer                                                       # doctest: +SKIP
    >>> print(explorer.to_code())                                      # doctest: +SKIP
    """

    def __init__(self, obj: Any, sizes=None, strides=None, rates=1, padding: str = "VALID", *,
                 max_memory: int | str = DEFAULT_MAX_MEMORY, max_nodata_fraction: float | None = None,
                 backend: str = "auto", sink: str = "zarr", path: str | Path | None = None, name: str = "da",
                 preview_size: int = PREVIEW_SIZE, spatial_dims: Sequence[str] | None = None,
                 channel_dims: Sequence[str] | None = None, asynchronous: bool = True) -> None:
        self.scene = Scene.open(obj, preview_size=preview_size, spatial_dims=spatial_dims, channel_dims=channel_dims)
        h, w = self.scene.image_shape
        if sizes is None:
            sizes = min(256, h, w)
        spec = PatchSpec(sizes, strides if strides is not None else max(1, min(PatchSpec(sizes, 1).sizes) // 2), rates, padding)
        check_sink(sink)
        self.name = name
        self.model = self.scene.model(spec, max_memory=max_memory, max_nodata_fraction=check_fraction(max_nodata_fraction),
                                      backend=backend)
        self.run_state: SinkRun | None = None
        self.timings: dict[str, float] = {}
        self._updating = False
        self._drawer = _Latest(lambda: self._guarded(self._draw)) if asynchronous else None
        self._build(sink, str(path) if path is not None else DEFAULT_PATHS[sink])
        self._refresh(preview=True)

    # ---- public ---------------------------------------------------------------------------------

    @property
    def spec(self) -> PatchSpec:
        """The spec the controls describe now."""
        return self.model.spec

    def summary(self) -> Summary:
        """The summary the explorer shows (:meth:`ExplorerModel.summary`)."""
        return self.model.summary()

    @property
    def sink(self) -> str:
        return self.controls["sink"].value

    @property
    def path(self) -> str:
        return self.controls["path"].value

    def to_code(self, name: str | None = None) -> str:
        """The equivalent Python call and ``patchkit run`` command, as one text (see :func:`job_code`)."""
        python, cli = self._code(name)
        return f"# Python\n{python}\n\n# shell\n{cli}\n"

    def _code(self, name: str | None = None) -> tuple[str, str]:
        model = self.model
        mode = "w" if self.controls["overwrite"].value else None
        return job_code(model.spec, self.sink, self.path, max_memory=model.max_memory,
                        max_nodata_fraction=model.max_nodata_fraction, source=self.scene.source_path,
                        name=name or self.name, mode=mode, chunks=self.scene.chunks, backend=model.backend)

    def set(self, **values: Any) -> None:
        """Set controls by name (``sizes``, ``strides``, ``rates``, ``padding``, ``max_memory``,
        ``max_nodata_fraction`` (None turns the filter off), ``sink``, ``path``), as a user would."""
        for key, value in values.items():  # all checked first: a refused value changes no control
            if key not in self.controls:
                raise PatchkitValueError(f"{key!r} is not a control of the explorer; use one of {sorted(self.controls)}")
            if key == "max_nodata_fraction":
                check_fraction(value)
            elif key in ("sizes", "strides", "rates"):
                _control_int(key, value, self.controls[key])
        for key, value in values.items():
            if key == "max_nodata_fraction":
                self.controls["filter_nodata"].value = value is not None
                if value is not None:
                    self.controls["max_nodata_fraction"].value = float(value)
            elif key in ("sizes", "strides", "rates"):
                self.controls[key].value = int(value)
            else:
                self.controls[key].value = value

    def run(self, *, wait: bool = False) -> SinkRun:
        """Start the extraction to the chosen sink, as the Run button does; ``wait`` blocks until it ends."""
        if self.run_state is not None and self.run_state.running:
            raise PatchkitValueError("a run is going; cancel it first (explorer.cancel())")
        model = self.model
        mode = "w" if self.controls["overwrite"].value else None
        self.controls["overwrite"].value = False  # a rerun after a cancel resumes
        self.progress.value, self.progress.bar_style = 0, ""
        self.status.value = f"running → {self.path}"
        self.run_state = SinkRun(self.scene.obj, self.sink, self.path, model.spec, max_memory=model.max_memory,
                                 max_nodata_fraction=model.max_nodata_fraction, mode=mode, backend=model.backend,
                                 on_progress=self._on_progress, on_finish=self._on_finish, layout=self.scene.layout)
        self.controls["run"].disabled, self.controls["cancel"].disabled = True, False
        self.run_state.start()
        if wait:
            self.run_state.join()
        return self.run_state

    def cancel(self) -> None:
        """Cancel the run in progress (it stops at its next chunk read and can be resumed)."""
        if self.run_state is not None:
            self.run_state.cancel()
            self.status.value = "cancelling…"

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    # ---- building -------------------------------------------------------------------------------

    def _build(self, sink: str, path: str) -> None:
        import ipywidgets as W

        h, w = self.scene.image_shape
        spec, model = self.model.spec, self.model
        style = {"description_width": "initial"}
        wide = W.Layout(width="340px")
        biggest = min(max(h, w), 8192)
        self.controls = c = {
            "sizes": W.IntSlider(value=spec.sizes[0], min=1, max=max(biggest, spec.sizes[0]), description="sizes",
                                 tooltip="sizes: patch height and width in pixels", style=style, layout=wide),
            "strides": W.IntSlider(value=spec.strides[0], min=1, max=max(biggest, spec.strides[0]), description="strides",
                                   tooltip="strides: pixels between patch starts", style=style, layout=wide),
            "rates": W.IntSlider(value=spec.rates[0], min=1, max=max(16, spec.rates[0]), description="rates",
                                 tooltip="rates: dilation, every rate-th pixel", style=style, layout=wide),
            "padding": W.ToggleButtons(options=["VALID", "SAME"], value=spec.padding, description="padding",
                                       style={**style, "button_width": "70px"}),
            "max_memory": W.Text(value=str(model.max_memory), description="max_memory", continuous_update=False,
                                 tooltip="max_memory: bound on what a streamed run holds, e.g. 512MiB", style=style, layout=wide),
            "filter_nodata": W.Checkbox(value=model.max_nodata_fraction is not None, description="filter by max_nodata_fraction",
                                        indent=False, style=style),
            "max_nodata_fraction": W.FloatSlider(value=model.max_nodata_fraction if model.max_nodata_fraction is not None else 0.1,
                                                 min=0.0, max=1.0, step=0.01, description="max_nodata_fraction",
                                                 disabled=model.max_nodata_fraction is None, style=style, layout=wide),
            "patch_row": W.IntSlider(value=0, min=0, max=0, description="patch_row", style=style, layout=W.Layout(width="300px")),
            "patch_col": W.IntSlider(value=0, min=0, max=0, description="patch_col", style=style, layout=W.Layout(width="300px")),
            "sink": W.Dropdown(options=list(SINKS), value=sink, description="sink", style=style),
            "path": W.Text(value=path, description="path", continuous_update=False, style=style, layout=W.Layout(width="320px")),
            "overwrite": W.Checkbox(value=False, description="overwrite (mode='w')", indent=False),
            "run": W.Button(description="Run", button_style="primary", icon="play", tooltip="run the extraction to the sink"),
            "cancel": W.Button(description="Cancel", button_style="warning", icon="stop", disabled=True,
                               tooltip="stop the run; running it again resumes"),
        }
        for key in ("sizes", "strides", "rates", "max_nodata_fraction", "patch_row", "patch_col"):
            c[key].add_class(f"patchkit-{key}")
        self.summary_box = W.HTML(layout=W.Layout(min_width="420px"))
        self.summary_box.add_class("patchkit-summary")
        self.scene_image = W.Image(format="png")
        self.patch_image = W.Image(format="png")
        self.code_box = W.HTML()
        self.code_box.add_class("patchkit-code")
        self.progress = W.IntProgress(value=0, min=0, max=max(1, self.model.summary().grid_shape[0]), description="progress",
                                      style=style)
        self.status = W.Label(value="")
        self.status.add_class("patchkit-status")
        note = W.HTML(f"<small>preview: {self.scene.preview.origin} of {h:,} × {w:,}; "
                      f"nodata share {'counted' if self.scene.nodata.exact else 'estimated from the preview'}</small>")
        controls = W.VBox([c["sizes"], c["strides"], c["rates"], c["padding"], c["max_memory"],
                           W.HBox([c["filter_nodata"]]), c["max_nodata_fraction"]])
        patch_box = W.VBox([self.patch_image, c["patch_row"], c["patch_col"]])
        run_box = W.HBox([c["sink"], c["path"], c["overwrite"], c["run"], c["cancel"], self.progress, self.status])
        self.widget = W.VBox([W.HBox([controls, self.summary_box]), note, W.HBox([self.scene_image, patch_box]),
                              self.code_box, run_box])
        self.widget.add_class("patchkit-explorer")
        for key in ("sizes", "strides", "rates", "padding", "max_memory", "max_nodata_fraction", "filter_nodata"):
            c[key].observe(self._on_control, names="value")
        for key in ("patch_row", "patch_col"):
            c[key].observe(self._on_select, names="value")
        c["sink"].observe(self._on_sink, names="value")
        for key in ("path", "overwrite"):
            c[key].observe(lambda change: self._show_code(), names="value")
        c["run"].on_click(lambda _: self._guarded(self.run))
        c["cancel"].on_click(lambda _: self.cancel())

    # ---- events ---------------------------------------------------------------------------------

    def _guarded(self, action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception as err:  # shown, never raised into the front end's console
            self.status.value = f"{type(err).__name__}: {err}"

    def _on_control(self, change: Any) -> None:
        if self._updating:
            return
        c = self.controls
        c["max_nodata_fraction"].disabled = not c["filter_nodata"].value
        fraction = c["max_nodata_fraction"].value if c["filter_nodata"].value else None
        changes = {"max_memory": c["max_memory"].value.strip(), "max_nodata_fraction": fraction}
        spec = self.model.spec
        for key in ("sizes", "strides", "rates"):
            value = c[key].value
            changes[key] = getattr(spec, key) if change.owner is not c[key] and getattr(spec, key)[0] == value else value
        changes["padding"] = c["padding"].value
        try:
            memory = changes["max_memory"]
            changes["max_memory"] = int(memory) if memory.isdigit() else memory
            self.model = self.model.update(**changes)
        except PatchkitError as err:
            self.summary_box.value = f"<p class='patchkit-problem' style='color:#c00'>{_escape(str(err))}</p>"
            return
        self._refresh(preview=change.owner is not c["max_memory"])

    def _on_select(self, change: Any) -> None:
        if not self._updating:
            self._request_draw()

    def _on_sink(self, change: Any) -> None:
        if self.controls["path"].value in DEFAULT_PATHS.values():
            self.controls["path"].value = DEFAULT_PATHS[change.new]
        self._show_code()

    def _on_progress(self, done: int, total: int, unit: str) -> None:
        self.progress.max = max(1, total)
        self.progress.value = min(done, self.progress.max)
        self.progress.description = unit

    def _on_finish(self, run: SinkRun) -> None:
        self.controls["run"].disabled, self.controls["cancel"].disabled = False, True
        if run.state == "done":
            self.progress.bar_style = "success"
            self.status.value = f"done in {run.seconds:.1f} s → {run.result}"
        elif run.state == "cancelled":
            self.progress.bar_style = "warning"
            self.status.value = "cancelled; Run again resumes"
        else:
            self.progress.bar_style = "danger"
            self.status.value = f"failed: {type(run.error).__name__}: {run.error}"

    # ---- refreshing -----------------------------------------------------------------------------

    def _refresh(self, preview: bool) -> None:
        start = time.perf_counter()
        summary = self.model.summary()
        self.timings["summary"] = time.perf_counter() - start
        self.summary_box.value = summary_html(summary, self.model, self.scene.preview.origin)
        self.controls["run"].disabled = not summary.ok or (self.run_state is not None and self.run_state.running)
        oh, ow = summary.grid_shape
        self._updating = True
        try:
            for key, n in (("patch_row", oh), ("patch_col", ow)):
                slider = self.controls[key]
                keep = slider.value if slider.max > 0 and slider.value <= n - 1 else n // 2
                slider.max = max(n - 1, 0)
                slider.value = min(keep, max(n - 1, 0))
                slider.disabled = n == 0
        finally:
            self._updating = False
        self._show_code()
        if preview:
            self._request_draw()

    def _request_draw(self) -> None:
        if self._drawer is None:
            self._guarded(self._draw)
        else:
            self._drawer.request()

    def wait_drawn(self, timeout: float | None = 60.0) -> bool:
        """Block until the preview and the patch show the current state (for scripts and tests)."""
        return True if self._drawer is None else self._drawer.wait(timeout)

    def _show_code(self) -> None:
        self.code_box.value = f"<pre style='font-size:11px;margin:0'>{_escape(self.to_code())}</pre>"

    def _draw(self) -> None:
        spec = self.model.spec
        start = time.perf_counter()
        try:
            spec.check(self.scene.image_shape)
            oh, ow = spec.grid_shape(self.scene.image_shape)
        except PatchkitError:
            oh = ow = 0
        selected = (self.controls["patch_row"].value, self.controls["patch_col"].value) if oh and ow else None
        dropped = None
        fraction = self.model.max_nodata_fraction
        if fraction is not None and oh and ow and oh * ow <= 20_000:
            shares, sampled = self.scene.nodata.patch_shares(spec)
            dropped = None if sampled else shares > fraction
        self.scene_image.value = render_scene(self.scene, spec, selected, dropped)
        if selected is not None:
            patch = self.scene.read_patch(spec, *selected)
            win = spec.window(*selected, self.scene.image_shape)
            title = f"patch ({selected[0]}, {selected[1]}): rows {win.row_off}…{win.row_off + win.height - 1}, cols {win.col_off}…{win.col_off + win.width - 1}"
            self.patch_image.value = render_patch(self.scene, patch, title)
        self.timings["draw"] = time.perf_counter() - start
