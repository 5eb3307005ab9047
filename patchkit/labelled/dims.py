"""The dims of xarray objects: find them, arrange the data for the backends and the patches back.

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

import math
import sys
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import DimensionError

__all__ = ["Layout", "find_layout", "arrange", "arranged_rows", "unarrange", "SPATIAL_NAMES", "CHANNEL_NAMES"]

SPATIAL_NAMES = (("y", "x"), ("lat", "lon"), ("latitude", "longitude"))
CHANNEL_NAMES = ("band", "bands", "channel", "channels", "variable", "wavelength")


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


def arranged_rows(obj: Any, layout: Layout, start: int, stop: int):
    """Rows ``[start, stop)`` of ``arrange(obj, layout)``, cut from ``obj`` before it is arranged.

    The same pixels; but for dask-backed data the cut comes first in the graph, where dask merges it
    into the read of each chunk (a rioxarray chunk then reads only those rows from the file): cut
    after the reshape, every chunk the rows touch is read whole.
    """
    return arrange(obj.isel({layout.y: slice(start, stop)}), layout)


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
