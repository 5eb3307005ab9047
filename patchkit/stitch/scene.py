"""What :func:`patchkit.predict` reads and what it hands back: the source as ``[N, H, W, C]`` with channels last (the
batches a model takes), and the prediction's labels on the source's grid.

A DataArray's channel dims go last and its leading dims make ``N`` (:class:`Scene`); the prediction keeps the
leading dims, the spatial coordinates, the CRS and the transform, and has one channel dim (the source's, or
``band`` when the source has several or none and the model returns several channels) with the model's channel
count. A per-patch prediction (one vector a patch) is a coarse raster with a pixel per patch, centred on the
patch, a stride wide (:func:`patchkit.labelled.geo.patch_grid_transform`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..core.sources import Source, as_source, origin_of, reading
from ..core.spec import PatchSpec
from ..errors import PatchkitTypeError
from ..labelled.dims import Layout, arrange, arranged_rows, find_layout
from ..labelled.geo import crs_of, geotransform_of, patch_grid_transform, source_transform

__all__ = ["Scene", "PREDICTION"]

#: The name of a predicted DataArray.
PREDICTION = "prediction"
#: Attributes that describe the source's values, not a model's: the prediction drops them.
_VALUE_ATTRS = frozenset({"_FillValue", "missing_value", "nodata", "scale_factor", "add_offset", "units", "long_name",
                          "valid_range", "valid_min", "valid_max", "standard_name", "STATISTICS_MAXIMUM",
                          "STATISTICS_MINIMUM", "STATISTICS_MEAN", "STATISTICS_STDDEV"})


@dataclass(frozen=True)
class Scene:
    """The source of a prediction: ``source`` ``[N, H, W, C]`` (channels last) and, for a DataArray, ``obj`` and its
    ``layout``."""

    source: Source
    obj: Any = None
    layout: Layout | None = None

    @classmethod
    def of(cls, images: Any, spec: PatchSpec) -> "Scene":
        """The scene of a DataArray or an array ``[batch, height, width, channels]``, checked against ``spec``."""
        module = type(images).__module__ or ""
        if module.startswith("xarray") and not hasattr(images, "variable"):
            raise PatchkitTypeError(
                f"source is a {type(images).__name__}; predict takes one DataArray: pass ds[name], or stack the "
                "variables first with ds.to_dataarray('band')"
            )
        if not module.startswith("xarray"):
            source = as_source(images, name="source")
            spec.check(source.shape)
            return cls(source)
        layout = replace(find_layout(images), channels_last=True)
        with reading(origin_of(images)):
            data = arrange(images, layout)
        source = as_source(data, name="source", origin=origin_of(images))
        if source.kind == "dask":  # rows cut before arranging: a band reads only its rows of each chunk
            source = replace(source, rows=functools.partial(arranged_rows, images, layout))
        spec.check(source.shape)
        return cls(source, images, layout)

    @property
    def labelled(self) -> bool:
        return self.obj is not None

    @property
    def channel_dim(self) -> str | None:
        """The prediction's channel dim: the source's only one, else ``"band"``."""
        channels = self.layout.channels
        return channels[0] if len(channels) == 1 else "band"

    def dims(self, channels: int) -> tuple[str, ...]:
        """The prediction's dims: ``(*leading, channel, y, x)``; without a channel dim for one channel of a
        source that has none."""
        layout = self.layout
        keep = channels != 1 or layout.channels
        return layout.leading + ((self.channel_dim,) if keep else ()) + (layout.y, layout.x)

    def sizes(self, channels: int, shape: tuple[int, int]) -> tuple[int, ...]:
        """The prediction's shape for ``channels`` and a grid of ``shape`` (the source's, or the patch grid)."""
        lead = tuple(self.obj.sizes[d] for d in self.layout.leading)
        keep = channels != 1 or self.layout.channels
        return lead + ((channels,) if keep else ()) + tuple(shape)

    def transform(self):
        """The source's north-up transform (its GeoTransform, else from regular coordinates), or None."""
        if not self.labelled:
            return None
        found = geotransform_of(self.obj)
        if found is not None:
            return found
        y, x = self.layout.y, self.layout.x
        if y in self.obj.coords and x in self.obj.coords and self.obj.sizes[x] > 1 and self.obj.sizes[y] > 1:
            try:
                return source_transform(self.obj[x].values, self.obj[y].values)
            except Exception:  # irregular coordinates: no transform
                return None
        return None

    def crs(self):
        return crs_of(self.obj) if self.labelled else None

    def template(self, data: Any, channels: int, spec: PatchSpec | None = None) -> Any:
        """The prediction's DataArray around ``data`` (shaped :meth:`sizes`): on the source's grid, or with
        ``spec``, on its patch grid (pixel centres on patch centres)."""
        import xarray as xr

        obj, layout = self.obj, self.layout
        dims = self.dims(channels)
        coords = {name: c.variable for name, c in obj.coords.items()
                  if set(c.dims) <= set(layout.leading) | ({layout.y, layout.x} if spec is None else set())}
        if spec is not None:
            coords.update(self._grid_coords(spec))
        if dims[-3:-2] == (self.channel_dim,):
            coords.update(self._channel_coords(channels))
        coords = self._with_transform(coords, spec)
        attrs = {k: v for k, v in obj.attrs.items() if k not in _VALUE_ATTRS}
        out = xr.DataArray(data, dims=dims, coords=coords, attrs=attrs, name=PREDICTION)
        mapping = obj.encoding.get("grid_mapping")
        if mapping:
            out.encoding["grid_mapping"] = mapping
        return out

    def _channel_coords(self, channels: int) -> dict:
        dim = self.channel_dim
        if len(self.layout.channels) == 1 and dim in self.obj.coords and self.obj.sizes[dim] == channels:
            return {dim: self.obj[dim].variable}
        return {dim: np.arange(1, channels + 1) if dim == "band" else np.arange(channels)}

    def _grid_coords(self, spec: PatchSpec) -> dict:
        """Patch-centre coordinates along y and x (pixel units without a transform)."""
        shape = tuple(self.source.shape[1:3])
        transform = self.transform()
        grid = patch_grid_transform(transform, spec, shape)
        rows, cols = spec.grid_shape(shape)
        x = grid.c + grid.a * (np.arange(cols) + 0.5)
        y = grid.f + grid.e * (np.arange(rows) + 0.5)
        if transform is None:  # pixel units: the centre pixel's index, as the source's implicit coordinates
            x, y = x - 0.5, y - 0.5
        return {self.layout.y: y, self.layout.x: x}

    def _with_transform(self, coords: dict, spec: PatchSpec | None) -> dict:
        """The grid mapping's ``GeoTransform``: the source's, or the patch grid's."""
        name = self.obj.encoding.get("grid_mapping") or self.obj.attrs.get("grid_mapping") or "spatial_ref"
        mapping, transform = coords.get(name), self.grid_transform(spec)
        if mapping is None or transform is None:
            return coords
        mapping = mapping.copy()
        mapping.attrs["GeoTransform"] = " ".join(str(v) for v in transform.to_gdal())
        return {**coords, name: mapping}

    def grid_transform(self, spec: PatchSpec | None = None):
        """The prediction's transform: the source's, or with ``spec`` its patch grid's (None: no georeference)."""
        transform = self.transform()
        if spec is None or transform is None:
            return transform
        return patch_grid_transform(transform, spec, tuple(self.source.shape[1:3]))

    def leading(self) -> tuple[str, ...]:
        return self.layout.leading if self.labelled else ()
