"""Where patches lie on the map: pixel-centre coordinates, affine transforms, bounds and the grid table.

Pure functions of a :class:`~patchkit.core.spec.PatchSpec`, an image shape and the 1-D pixel-centre
coordinates that xarray and rioxarray hold. Patch pixel ``(r, c)`` of patch ``(i, j)`` samples input
pixel ``(i s - pad_top + r rate, j s - pad_left + c rate)`` (:meth:`PatchSpec.positions`).

* A *regular* axis (evenly spaced, monotonic) is extrapolated into padded cells, so every patch pixel
  has a real-world centre; an irregular one keeps its values inside the image and gives NaN in padding.
* A patch's affine transform has the source pixel size times the rate, placed so that
  ``transform * (c + 0.5, r + 0.5)`` is the centre of the input pixel that patch pixel ``(r, c)`` samples.
  For rate 1 it is ``rasterio.windows.transform`` of the patch's window.
* Grids are north-up: rotated or sheared transforms are refused with a :class:`GeoreferenceError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import GeoreferenceError, MissingDependencyError, PatchIndexError, PatchkitTypeError, PatchkitValueError, SinkWriteError
from ..core.spec import PatchSpec

__all__ = [
    "regular_step",
    "pixel_coords",
    "source_transform",
    "patch_transforms",
    "patch_grid_transform",
    "patch_transform",
    "grid_table",
    "write_grid",
    "crs_of",
    "geotransform_of",
    "check_north_up",
]

#: Steps that differ by less than this fraction of the step count as equal (float coordinates).
RTOL = 1e-6
#: Attribute of the spatial coordinates of a patch array: the distance between sampled pixel centres.
STEP_ATTR = "step"
#: The OGR drivers :func:`write_grid` picks by suffix.
GRID_DRIVERS = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG", ".shp": "ESRI Shapefile"}


def regular_step(values: Sequence[float]) -> float | None:
    """The constant step between ``values``, or ``None`` when it has none.

    ``None`` for fewer than two values, non-numeric values, uneven spacing (beyond :data:`RTOL` of the
    step) and non-monotonic or repeated values. Integer coordinates with an integer step keep an
    integer step.
    """
    v = np.asarray(values)
    if v.ndim != 1 or v.size < 2 or v.dtype.kind not in "iuf":
        return None
    f = v.astype(np.float64)
    step = (f[-1] - f[0]) / (f.size - 1)
    if step == 0 or not np.all(np.abs(np.diff(f) - step) <= RTOL * abs(step)):
        return None
    if v.dtype.kind in "iu" and float(step).is_integer():
        return int(step)
    return float(step)


def pixel_coords(values: Sequence[float], positions: np.ndarray, step: float | None = None) -> np.ndarray:
    """Coordinates of the pixels at integer ``positions`` along an axis whose centres are ``values``.

    Positions inside ``[0, len(values))`` take the value there. Positions outside (padding) are
    extrapolated with the axis' regular step (or ``step`` when the axis has fewer than two pixels);
    without a step they are NaN.
    """
    v = np.asarray(values)
    positions = np.asarray(positions)
    inside = (positions >= 0) & (positions < v.size)
    if inside.all():
        return v[positions]
    step = regular_step(v) if v.size > 1 else step
    if step is None:
        out = np.full(positions.shape, np.nan)
    else:
        out = v[0] + positions * step
    out[inside] = v[positions[inside]]
    return out


def _step_or_raise(values: np.ndarray, fallback: float | None, what: str) -> float:
    step = regular_step(values) if values.size > 1 else fallback
    if step is None:
        raise GeoreferenceError(
            f"{what} needs a regular grid, but the {values.size} pixel centres {_preview(values)} are "
            "not evenly spaced and monotonic (or a single pixel has no known size); resample onto a "
            "regular grid first (da.rio.reproject(...) or da.interp(...))"
        )
    return step


def _preview(values: np.ndarray) -> str:
    return np.array2string(np.asarray(values)[:6], precision=6, separator=", ") + ("..." if len(values) > 6 else "")


def source_transform(x: Sequence[float], y: Sequence[float], steps: tuple[float | None, float | None] = (None, None)):
    """The north-up ``affine.Affine`` of a grid whose pixel centres are ``x`` (columns) and ``y`` (rows).

    ``steps`` gives the pixel size ``(x, y)`` for axes of a single pixel (from a GeoTransform).

    Raises
    ------
    GeoreferenceError
        When an axis is irregular or non-monotonic.
    """
    from affine import Affine

    x, y = np.asarray(x), np.asarray(y)
    dx = _step_or_raise(x, steps[0], "an affine transform")
    dy = _step_or_raise(y, steps[1], "an affine transform")
    return Affine(dx, 0.0, float(x[0]) - dx / 2, 0.0, dy, float(y[0]) - dy / 2)


def patch_transforms(transform, spec: PatchSpec, shape: Sequence[int]) -> np.ndarray:
    """The six north-up coefficients ``(a, b, c, d, e, f)`` of every patch's transform.

    Returns an array ``[out_rows, out_cols, 6]``: pixel size ``(a rate_col, e rate_row)`` and origin
    ``transform * (col0 - (rate_col - 1) / 2, row0 - (rate_row - 1) / 2)``, where ``(row0, col0)`` is the
    first input pixel the patch samples.
    """
    check_north_up(transform)
    rows, cols = spec.starts(shape)  # the grid's size, whatever the kernel
    rr, rc = spec.rates
    tx = cols - (rc - 1) / 2
    ty = rows - (rr - 1) / 2
    out = np.zeros((len(ty), len(tx), 6))
    out[..., 0] = transform.a * rc
    out[..., 2] = transform.c + transform.a * tx[None, :]
    out[..., 4] = transform.e * rr
    out[..., 5] = transform.f + transform.e * ty[:, None]
    return out


def patch_grid_transform(transform, spec: PatchSpec, shape: Sequence[int]):
    """The transform of a raster with one pixel per patch: pixel ``(i, j)`` is centred on patch ``(i, j)``'s centre
    and is a stride wide (a per-patch prediction on the map).

    A patch's centre lies ``(k - 1) r / 2 + 1 / 2`` pixels past its first input pixel (its taps span
    ``(k - 1) r + 1`` pixels). ``transform`` is the source's (north-up); None gives pixel units.
    """
    from affine import Affine

    check_north_up(transform)
    rows, cols = spec.starts(shape)
    (kh, kw), (sh, sw), (rh, rw) = spec.sizes, spec.strides, spec.rates
    centre_row = (rows[0] if len(rows) else 0) + ((kh - 1) * rh + 1) / 2
    centre_col = (cols[0] if len(cols) else 0) + ((kw - 1) * rw + 1) / 2
    grid = Affine.translation(centre_col - sw / 2, centre_row - sh / 2) * Affine.scale(sw, sh)
    return grid if transform is None else transform * grid


def check_north_up(transform) -> None:
    """Raise :class:`GeoreferenceError` for a rotated or sheared transform (``b`` or ``d`` not 0)."""
    if transform is not None and (transform.b != 0 or transform.d != 0):
        raise GeoreferenceError(
            f"the raster's transform is rotated or sheared (b={transform.b}, d={transform.d}); patchkit "
            "needs a north-up grid: warp it first, e.g. da.rio.reproject(da.rio.crs)"
        )


def geotransform_of(obj: Any):
    """The ``affine.Affine`` in the GDAL ``GeoTransform`` of ``obj``'s grid-mapping coordinate, or None.

    That is where rioxarray records a raster's transform (in the ``spatial_ref`` coordinate).
    """
    mapping = _grid_mapping(obj)
    text = mapping.attrs.get("GeoTransform") if mapping is not None else None
    if not text:
        return None
    from affine import Affine

    c, a, b, f, d, e = (float(v) for v in str(text).split())
    return Affine(a, b, c, d, e, f)


def _grid_mapping(obj: Any):
    name = obj.encoding.get("grid_mapping") or obj.attrs.get("grid_mapping") or "spatial_ref"
    return obj.coords.get(name)


def crs_of(obj: Any):
    """The CRS of a DataArray/Dataset: ``obj.rio.crs`` with rioxarray, else the grid mapping's WKT, else None."""
    try:
        import rioxarray  # noqa: F401  (registers .rio)
    except ImportError:
        mapping = _grid_mapping(obj)
        if mapping is None:
            return None
        return mapping.attrs.get("crs_wkt") or mapping.attrs.get("spatial_ref")
    return obj.rio.crs


def patch_transform(patches: Any, row: int, col: int):
    """The ``affine.Affine`` of patch ``(row, col)`` of a patch array made by ``.patches.extract``.

    ``transform * (c + 0.5, r + 0.5)`` is the real-world centre of that patch's pixel ``(r, c)``; with a
    dilation rate the pixel size is the source's times the rate. For rate 1 it equals
    ``rasterio.windows.transform`` of the patch's window (up to floating-point rounding).

    Parameters
    ----------
    patches : xarray.DataArray or Dataset
        Output of ``.patches.extract`` or ``.patches.iter`` (the grid form with ``patch_row``/``patch_col``
        dims, the filtered form with a ``patch`` dim, or one patch already selected).
    row, col : int
        The patch's labels on the grid (``patch_row``, ``patch_col``), not positions.

    Raises
    ------
    GeoreferenceError
        When the patch's coordinates are not a regular grid.
    PatchIndexError
        When no patch has those labels (a ``KeyError`` too).
    PatchkitTypeError
        When ``patches`` is not a DataArray or Dataset.
    """
    from affine import Affine

    if not hasattr(patches, "dims") or not hasattr(patches, "coords"):
        raise PatchkitTypeError(
            f"patches is a {type(patches).__name__}, not a patch array; pass a DataArray made by .patches.extract "
            "(or .patches.iter), which keeps every patch's coordinates"
        )
    one = _select_patch(patches, row, col)
    ydim, xdim = _spatial_names(one)
    centres = []
    for dim in (xdim, ydim):
        coord = one.coords[dim]
        values = np.asarray(coord.values, dtype=np.float64)
        centres.append((values, _step_or_raise(values, coord.attrs.get(STEP_ATTR), "patch_transform")))
    (xs, dx), (ys, dy) = centres
    return Affine(dx, 0.0, xs[0] - dx / 2, 0.0, dy, ys[0] - dy / 2)


def _spatial_names(one: Any) -> tuple[str, str]:
    """The y and x dims of a patch: its last two dims, which must carry coordinates."""
    dims = tuple(one.dims)
    if len(dims) < 2 or any(d not in one.coords for d in dims[-2:]):
        raise GeoreferenceError(
            f"patch_transform needs the patch's last two dims (y, x) to have coordinates; got dims {dims}; pass "
            "patches made by .patches.extract (they keep their y and x coordinates), or put them back with assign_coords"
        )
    return dims[-2], dims[-1]


def _select_patch(patches: Any, row: int, col: int):
    if "patch_row" in patches.dims:
        try:
            return patches.sel(patch_row=row, patch_col=col)
        except (KeyError, TypeError, ValueError):
            rows, cols = patches["patch_row"].values, patches["patch_col"].values
            raise PatchIndexError(
                f"no patch ({row!r}, {col!r}) in this grid of patch_row {_span(rows)} and patch_col {_span(cols)}; "
                "pass labels from those ranges"
            ) from None
    if "patch" in patches.dims:
        hits = np.flatnonzero((patches["patch_row"].values == row) & (patches["patch_col"].values == col))
        if not hits.size:
            raise PatchIndexError(
                f"no patch ({row!r}, {col!r}) among the {patches.sizes['patch']} kept patches of this grid; pass the "
                "patch_row and patch_col of one of them"
            )
        return patches.isel(patch=int(hits[0]))
    return patches


def _span(labels: np.ndarray) -> str:
    return f"{labels.min()}..{labels.max()}" if labels.size else "(none)"


def grid_table(spec: PatchSpec, shape: Sequence[int], transform, crs=None):
    """A pandas table of every patch: ``row``, ``col``, bounds and ``transform``, without extracting.

    Parameters
    ----------
    spec : PatchSpec
    shape : (height, width) or (batch, height, width, channels)
    transform : affine.Affine
        The north-up transform of the source grid.
    crs : optional
        Stored in ``table.attrs["crs"]``, used by :func:`write_grid`.

    Returns
    -------
    pandas.DataFrame
        One row per patch in row-major order. ``left, bottom, right, top`` bound the patch's pixels
        under its transform (for rate 1, its window); ``transform`` holds ``affine.Affine`` objects.
    """
    import pandas as pd
    from affine import Affine

    coeffs = patch_transforms(transform, spec, shape)
    oh, ow = coeffs.shape[:2]
    kh, kw = spec.sizes
    flat = coeffs.reshape(-1, 6)
    x0, y0 = flat[:, 2], flat[:, 5]
    x1, y1 = x0 + flat[:, 0] * kw, y0 + flat[:, 4] * kh
    rows, cols = np.divmod(np.arange(oh * ow), ow)
    table = pd.DataFrame({
        "row": rows,
        "col": cols,
        "left": np.minimum(x0, x1),
        "bottom": np.minimum(y0, y1),
        "right": np.maximum(x0, x1),
        "top": np.maximum(y0, y1),
        "transform": [Affine(*t) for t in flat],
    })
    table.attrs["crs"] = crs
    return table


def write_grid(table, path: str | Path, driver: str | None = None) -> Path:
    """Write a :func:`grid_table` as polygons with geopandas (GeoJSON, GeoPackage, ... by suffix).

    The ``transform`` column is written as text (``"a, b, c, d, e, f"``); the CRS is the table's
    ``attrs["crs"]``.
    """
    try:
        import geopandas as gpd
        import shapely
    except ImportError as err:
        raise MissingDependencyError(
            f"writing the patch grid to {str(path)!r} needs geopandas; install it with "
            "`pip install geopandas` (or `pip install patchkit[geo]`)"
        ) from err
    path = Path(path)
    driver = driver or GRID_DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise PatchkitValueError(
            f"path={str(path)!r} has a suffix geopandas is not told how to write; pass a path ending in "
            f"{', '.join(GRID_DRIVERS)} (or name the driver)"
        )
    frame = table.assign(transform=[", ".join(f"{v!r}" for v in tuple(t)[:6]) for t in table["transform"]])
    geometry = shapely.box(frame["left"], frame["bottom"], frame["right"], frame["top"])
    crs = table.attrs.get("crs")
    gdf = gpd.GeoDataFrame(frame, geometry=geometry, crs=crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    try:
        gdf.to_file(path, driver=driver)
    except Exception as err:  # pyogrio's and fiona's errors are their own, not OSError
        if not (isinstance(err, OSError) or (type(err).__module__ or "").startswith(("pyogrio", "fiona", "shapely"))):
            raise
        raise SinkWriteError(
            f"writing the patch grid to path={str(path)!r} failed: {type(err).__name__}: {err}; choose another path "
            "(in a folder you can write to)"
        ) from err
    return path
