"""The explorer's numbers: :class:`ExplorerModel` and the :class:`Summary` it gives, without widgets or pixels.

The scene's shape, dtype and chunks, a :class:`~patchkit.core.spec.PatchSpec`, ``max_memory`` and
``max_nodata_fraction`` give a :class:`Summary` (grid, patch count, output bytes, peak memory and row
bands of a streamed run, share of the scene covered, share dropped as nodata) through ``PatchSpec``,
:mod:`patchkit.core.spec.coverage` and :func:`patchkit.labelled.layout.plan_streams` alone: no pixel is read
(the nodata share comes from a :class:`~patchkit.explorer.nodata.NodataMap` made once from the
preview), and the cost is at most linear in the grid's sides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from ..core.budget import DEFAULT_MAX_MEMORY, Plan
from ..core.dtypes import SUPPORTED_DTYPES, check_dtype
from ..core.sources import Source, as_source
from ..core.spec import PatchSpec, _four_d
from ..core.spec.coverage import coverage
from ..errors import InvalidImageError, PatchkitError, PatchkitTypeError, PatchkitValueError, UnsupportedDtypeError, shown
from ..labelled.dims import Layout, arrange, find_layout
from ..labelled.nodata import check_fraction
from .nodata import NodataMap

__all__ = ["ExplorerModel", "Summary", "check_spec"]


def check_spec(spec: Any) -> PatchSpec:
    """``spec`` if it is a :class:`PatchSpec`, else a :class:`PatchkitTypeError` saying how to make one."""
    if isinstance(spec, PatchSpec):
        return spec
    raise PatchkitTypeError(f"spec={shown(spec)} (a {type(spec).__name__}) is not a PatchSpec; pass PatchSpec(sizes, strides, rates, padding)")


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
    :class:`PatchSpec` and :func:`patchkit.labelled.layout.plan_streams` and nothing else, except the nodata
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
    sink : str, optional
        The sink a run writes to: its buffers come off ``max_memory`` (:meth:`patchkit.sinks.Sink.band_budget`),
        so the plan is the one that sink streams. None plans ``.patches.iter``.

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
    sink: str | None = None

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
        """The row-band plan of a streamed run (``.patches.iter``, or the run to :attr:`sink`) under ``max_memory``."""
        from ..labelled.layout import plan_streams

        source = self.source()

        def planner(budget, in_flight=1):  # what .patches.iter and every sink plan with (layout.stream_plan)
            return plan_streams(self.spec, [source], max_memory=budget, backend=self.backend, in_flight=in_flight)

        if self.sink is None:
            return planner(self.max_memory)
        from ..sinks import get

        return get(self.sink).pipeline(self.spec, [(self.shape, self.dtype)], self.max_memory, planner,
                                       filtered=self.max_nodata_fraction is not None)[1]

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

