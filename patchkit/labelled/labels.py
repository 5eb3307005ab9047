"""Coordinates of patches: every patch pixel's place on the map, the spec a patch array records, wrapping.

A patch array has 2-D coordinates ``y(patch_row, y)`` and ``x(patch_col, x)`` holding the centre of
every patch pixel (extrapolated into padding), the source's other coordinates that the patches keep,
its attrs and the encoding entries that describe values rather than the file, and a record of the
spec and source shape (:data:`SPEC_ATTR`) from which :func:`recorded_spec` rebuilds them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.budget import require_memory
from ..core.spec import PatchSpec
from ..errors import PatchkitValueError
from .dims import Layout
from .geo import STEP_ATTR, check_north_up, geotransform_of, pixel_coords, regular_step

__all__ = ["SPEC_ATTR", "KEPT_ENCODING", "recorded_spec"]

#: Attribute of a patch array recording its spec and source shape (JSON), read by :func:`recorded_spec`.
SPEC_ATTR = "patchkit_spec"
#: Encoding entries a patch array keeps (the rest describe the source file).
KEPT_ENCODING = ("grid_mapping", "_FillValue", "missing_value", "scale_factor", "add_offset", "dtype")


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
