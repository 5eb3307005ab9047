"""The stitched image's labels: 1-D ``y``/``x`` coordinates on the source grid from the patches' 2-D ones,
the other coordinates and attrs, the grid mapping's transform, and the DataArray around the data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.spec import PatchSpec
from ..labelled.geo import STEP_ATTR, regular_step, source_transform
from ..labelled.labels import SPEC_ATTR
from .readers import Dims, Reader, grid_labels

__all__ = ["Labels", "axis_coordinate", "transform_of"]


def axis_coordinate(values: np.ndarray, positions: np.ndarray, n: int, step: float | None = None) -> np.ndarray:
    """The 1-D coordinate of an axis of ``n`` pixels from the coordinates of the pixels patches sample.

    ``values[p, a]`` is the coordinate of the pixel at ``positions[p, a]``; those inside ``[0, n)``
    give their pixel its value. Pixels no patch samples are extrapolated from the first sampled one
    with ``step`` (the pixel size), or with the step of the sampled values when they are regular;
    without either they are NaN (and so are all pixels when no patch samples any).
    """
    values, positions = np.asarray(values), np.asarray(positions)
    inside = (positions >= 0) & (positions < n)
    known = np.zeros(n, bool)
    known[positions[inside]] = True
    if known.all():
        out = np.empty(n, values.dtype)
        out[positions[inside]] = values[inside]
        return out
    out = np.full(n, np.nan)
    out[positions[inside]] = values[inside]
    index = np.flatnonzero(known)
    if step is None and index.size > 1:
        step = regular_step(np.interp(np.arange(index[0], index[-1] + 1), index, out[index]))
    if step is not None and index.size:
        missing = np.flatnonzero(~known)
        out[missing] = out[index[0]] + (missing - index[0]) * step
    return out


def transform_of(coords: dict, dims: Dims):
    """The north-up transform of the 1-D ``x``/``y`` coordinates in ``coords``, or None when they are missing or
    not regular."""
    from ..errors import GeoreferenceError

    if dims.x not in coords or dims.y not in coords:
        return None
    x, y = coords[dims.x][1], coords[dims.y][1]
    try:
        return source_transform(x, y, steps=(None, None)) if np.isfinite(x).all() and np.isfinite(y).all() else None
    except GeoreferenceError:
        return None


@dataclass(frozen=True)
class Labels:
    """What the stitched image's labels come from: the labelled ``patches``, their ``dims``, the ``spec``, the
    image ``shape`` ``(h, w)`` and the ``reader`` (which patch rows and columns are there)."""

    patches: Any
    dims: Dims
    spec: PatchSpec
    shape: tuple[int, int]
    reader: Reader

    @property
    def sizes(self) -> tuple[int, ...]:
        """The image's shape: ``(*leading, *channels, h, w)``."""
        return tuple(self.patches.sizes[d] for d in self.dims.leading + self.dims.channels) + tuple(self.shape)

    def spatial(self) -> dict:
        """1-D ``y`` and ``x`` coordinates on the source grid, from the patches' 2-D coordinates."""
        patches, dims = self.patches, self.dims
        coords = {}
        for axis, (dim, pos, rate, n) in enumerate(zip((dims.y, dims.x), self.spec.positions(self.shape),
                                                       self.spec.rates, self.shape)):
            if dim not in patches.coords or patches[dim].ndim != 2:
                continue
            coord = patches[dim]
            if self.reader.kind == "list":
                labels = grid_labels(patches, patches.sizes["patch"], len(pos), ("patch_row", "patch_col")[axis])
            else:
                labels = np.asarray(self.reader.rows if axis == 0 else self.reader.cols)
            step = coord.attrs.get(STEP_ATTR)
            step = None if step is None else step / rate
            attrs = {k: v for k, v in coord.attrs.items() if k != STEP_ATTR}
            coords[dim] = ((dim,), axis_coordinate(np.asarray(coord.values), pos[labels], n, step), attrs)
        return coords

    def transform(self):
        """The image's north-up transform, or None (see :func:`transform_of`)."""
        return transform_of(self.spatial(), self.dims)

    def template(self, data: Any) -> Any:
        """The stitched DataArray around ``data`` (``[*leading, *channels, h, w]``), labelled like the source."""
        import xarray as xr

        patches, dims = self.patches, self.dims
        coords = {**_other_coords(patches, dims), **self.spatial()}
        coords = _with_transform(coords, patches, dims)
        attrs = {k: v for k, v in patches.attrs.items() if k != SPEC_ATTR}
        out = xr.DataArray(data, dims=dims.leading + dims.channels + (dims.y, dims.x), coords=coords, attrs=attrs)
        out.name = patches.name
        out.encoding = dict(patches.encoding)
        return out


def _other_coords(patches: Any, dims: Dims) -> dict:
    """The patches' coordinates that the image keeps: those along its leading and channel dims only."""
    kept = set(dims.leading + dims.channels)
    return {name: c.variable for name, c in patches.coords.items()
            if name not in (dims.y, dims.x) and set(c.dims) <= kept}


def _with_transform(coords: dict, patches: Any, dims: Dims) -> dict:
    """Give the grid-mapping coordinate the ``GeoTransform`` of the stitched grid (patches had it removed)."""
    name = patches.encoding.get("grid_mapping") or patches.attrs.get("grid_mapping") or "spatial_ref"
    mapping = coords.get(name)
    if mapping is None or "GeoTransform" in mapping.attrs:
        return coords
    transform = transform_of(coords, dims)
    if transform is not None:
        mapping = mapping.copy()
        mapping.attrs["GeoTransform"] = " ".join(str(v) for v in transform.to_gdal())
        coords = {**coords, name: mapping}
    return coords
