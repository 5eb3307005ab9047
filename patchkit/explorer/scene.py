"""What the explorer reads of a scene, once: a decimated :class:`Preview`, the nodata map made from it,
and one selected patch at full resolution.

The preview is a GeoTIFF overview where the file has one, else a strided, decimated read of about
:data:`PREVIEW_SIZE` pixels a side; never the full-resolution scene. A selected patch is read at full
resolution, just the part of its window (:meth:`PatchSpec.window`) inside the image
(:func:`patchkit.core.spec.coverage.clipped`). The preview's pixels as RGBA for drawing are here too;
the drawing itself is :mod:`patchkit.explorer.render`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..core.spec import PatchSpec
from ..core.spec.coverage import clipped
from ..core.units import parse_bytes
from ..errors import DimensionError, PatchkitTypeError, PatchkitValueError, shown
from ..labelled.dims import Layout, arrange, find_layout
from ..labelled.nodata import nodata_values
from .model import ExplorerModel
from .nodata import NodataMap

__all__ = ["Scene", "Preview", "read_preview", "PREVIEW_SIZE", "STRIP_BYTES"]

#: Longer side of the preview, in pixels.
PREVIEW_SIZE = 512
#: A non-dask scene is read for the preview in strips of full-resolution rows of about this size.
STRIP_BYTES = "64MiB"


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
        """True when the preview is the scene itself (no decimation)."""
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
        """``(height, width)`` of the scene at full resolution."""
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
        win = spec.window(row, col, self.image_shape)
        (y0, y1), (x0, x1) = clipped(win, self.image_shape)
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
