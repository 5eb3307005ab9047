"""Patches as TensorFlow tensors: their HWC layout (features) and streaming ``tf.data`` pipelines (:func:`to_tf_dataset`).

Layout of a patch
    Every patch is a tensor ``(kh, kw, C)`` in TensorFlow's HWC order. Every dim of the source other
    than the spatial ones is folded into ``C``, slowest first in the order ``(*leading, *channels)`` of
    ``.patches`` (a ``(time, band, y, x)`` stack gives ``C = time x band``, time slowest). So there is
    one element per place on the map, ``(row, col)``, whatever the leading dims. A DataArray (or a
    Dataset with one variable of patches) gives the key ``"patch"``; a Dataset with several gives one
    key per variable, under the variable's name. :class:`Feature` describes one such array, and
    :func:`band_arrays` lays a band of patches out so; the TFRecord sink
    (:mod:`patchkit.sinks.tfcodec`) writes the same features.

Streaming
    :func:`to_tf_dataset` cuts a scene one row band at a time (:func:`patchkit.labelled.layout.prepare`
    and :func:`~patchkit.labelled.layout.bands`, as the sinks stream) or reads patches already cut (a
    Zarr store, a Dataset or DataArray of patches) a chunk of the grid at a time, under ``max_memory``.

TensorFlow is imported by the functions that need it, never by ``import patchkit``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, Sequence

import numpy as np
import xarray as xr

from ..core.budget import DEFAULT_MAX_MEMORY, Budget
from ..core.dtypes import check_dtype
from ..core.spec import PatchSpec
from ..errors import BackendUnavailableError, DimensionError, PatchkitTypeError, PatchkitValueError
from .layout import bands, find_layout, prepare
from .nodata import check_fraction

__all__ = ["to_tf_dataset", "Feature", "scene_features", "store_features", "band_arrays", "grid_of", "tensorflow",
           "PATCH", "RESERVED"]

#: The key of the pixels of a DataArray, or of a Dataset with one variable of patches.
PATCH = "patch"
#: Keys the elements and records use for themselves: no variable may take them.
RESERVED = ("row", "col", "transform", "shape", "dtype")
#: The grid dims of patches: a grid, or a list of kept patches.
GRIDS = (("patch_row", "patch_col"), ("patch",))
#: One band of patches as flat arrays: ``rows``, ``cols`` (one per patch, row-major), ``{key: (n, kh, kw, *channels)}``.
BandArrays = tuple[np.ndarray, np.ndarray, dict]


def tensorflow():
    """Import TensorFlow, or raise :class:`BackendUnavailableError` saying how to install it."""
    try:
        import tensorflow as tf
    except ImportError as err:
        raise BackendUnavailableError(
            "TFRecord and tf.data output need TensorFlow, which is not installed; install it with "
            "`pip install tensorflow` (or `pip install patchkit[tensorflow]`)"
        ) from err
    return tf


def _check_count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise PatchkitValueError(f"{name}={value!r} must be a positive integer, or None; pass e.g. {name}=32")
    return int(value)


# --------------------------------------------------------------------------------------------------
# Features: what one patch holds
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Feature:
    """One array of every patch: its key, variable, the dims folded into channels, shape ``(kh, kw, C)`` and dtype."""

    key: str
    var: Hashable | None
    channels: tuple[Hashable, ...]
    shape: tuple[int, int, int]
    dtype: np.dtype

    @property
    def shape_key(self) -> str:
        """The record's key of this feature's shape (``"shape"``, or ``"{key}/shape"``)."""
        return "shape" if self.key == PATCH else f"{self.key}/shape"

    @property
    def dtype_key(self) -> str:
        """The record's key of this feature's dtype (``"dtype"``, or ``"{key}/dtype"``)."""
        return "dtype" if self.key == PATCH else f"{self.key}/dtype"


def _keyed(found: list[tuple[Hashable | None, tuple, tuple, np.dtype]]) -> list[Feature]:
    """Features from ``(variable, channel dims, shape, dtype)``: one is ``"patch"``, several keep their names."""
    if len(found) == 1:
        var, channels, shape, dtype = found[0]
        return [Feature(PATCH, var, channels, shape, dtype)]
    features = []
    for var, channels, shape, dtype in found:
        key = str(var)
        if key in RESERVED:
            raise PatchkitValueError(
                f"variable {var!r} has a name that the records use for themselves ({', '.join(RESERVED)}); "
                f"rename it first, e.g. ds.rename({{{var!r}: '{key}_'}})"
            )
        features.append(Feature(key, var, channels, shape, dtype))
    return features


def scene_features(obj: Any, spec: PatchSpec) -> tuple[list[Feature], tuple[int, int]]:
    """The features of the patches ``spec`` cuts from ``obj``, and the image ``(height, width)``; checks the spec.

    Raises
    ------
    PatchkitTypeError
        When ``obj`` is not an xarray DataArray or Dataset.
    """
    if isinstance(obj, xr.DataArray):
        arrays, spatial = {None: obj}, None
    elif isinstance(obj, xr.Dataset):
        first = find_layout(obj)
        spatial = (first.y, first.x)
        arrays = {name: var for name, var in obj.data_vars.items() if first.y in var.dims or first.x in var.dims}
    else:
        raise PatchkitTypeError(
            f"obj is a {type(obj).__name__}; patches are cut from an xarray DataArray or Dataset: wrap "
            "an array with xr.DataArray(array, dims=('band', 'y', 'x')), or use patchkit.iter_patches"
        )
    found, image = [], None
    for name, array in arrays.items():
        layout = find_layout(array, spatial)
        image = (array.sizes[layout.y], array.sizes[layout.x])
        spec.check(image)
        channels = layout.leading + layout.channels
        depth = math.prod(array.sizes[d] for d in channels)
        found.append((name, channels, (*spec.sizes, depth), check_dtype(array.dtype, "obj")))
    return _keyed(found), image


def grid_of(var: xr.DataArray) -> tuple[str, ...] | None:
    """``("patch_row", "patch_col")`` or ``("patch",)`` when ``var`` holds patches, else None."""
    for grid in GRIDS:
        if all(d in var.dims for d in grid) and var.ndim >= len(grid) + 2 and not set(grid) & set(var.dims[-2:]):
            return grid
    return None


def store_features(ds: xr.Dataset) -> list[Feature]:
    """The features of a Dataset of patches (as ``.patches.extract`` and ``to_zarr`` make them).

    Raises
    ------
    DimensionError
        When no variable holds patches, a list of patches has no places, or grids and lists are mixed.
    """
    found, grids = [], set()
    for name, var in ds.data_vars.items():
        grid = grid_of(var)
        if grid is None:
            continue
        grids.add(grid)
        if grid == ("patch",) and not {"patch_row", "patch_col"} <= set(var.coords):
            raise DimensionError(
                f"variable {name!r} lists patches along 'patch' without 'patch_row' and 'patch_col' "
                "coordinates, so their places are unknown; write the patches as .patches.extract makes them"
            )
        channels = tuple(d for d in var.dims[:-2] if d not in grid)
        depth = math.prod(var.sizes[d] for d in channels)
        shape = (var.sizes[var.dims[-2]], var.sizes[var.dims[-1]], depth)
        found.append((name, channels, shape, check_dtype(var.dtype, "source")))
    if not found:
        raise DimensionError(
            f"the source holds no variable of patches among {list(ds.data_vars)}: patches have the dims "
            "(..., 'patch_row', 'patch_col', ..., y, x) or (..., 'patch', ..., y, x); to cut a scene "
            "instead, pass sizes and strides"
        )
    if len(grids) > 1:
        raise DimensionError(
            f"the source mixes a patch grid and a list of kept patches ({sorted(grids)}); keep variables of one kind"
        )
    return _keyed(found)


def band_arrays(band: Any, features: Sequence[Feature], copy: bool = False) -> BandArrays:
    """``rows``, ``cols`` (int64, one per patch, row-major) and ``{key: array (n, kh, kw, *channels)}`` of a band.

    The arrays are native-endian views of the band's data where numpy can make them (``copy=True``
    copies): a band of :func:`patchkit.labelled.layout.bands` may be a view of a buffer that the next band reuses.
    """
    first = band if features[0].var is None else band[features[0].var]
    grid = grid_of(first)
    if grid == ("patch",):
        rows, cols = band["patch_row"].values, band["patch_col"].values
    else:
        r, c = band["patch_row"].values, band["patch_col"].values
        rows, cols = np.repeat(r, c.size), np.tile(c, r.size)
    arrays = {}
    for feature in features:
        var = band if feature.var is None else band[feature.var]
        data = np.asarray(var.transpose(*grid, *var.dims[-2:], *feature.channels).data)
        if not data.dtype.isnative:
            data = data.astype(data.dtype.newbyteorder("="))
        data = data.reshape((-1,) + data.shape[len(grid):])
        arrays[feature.key] = np.array(data, order="C") if copy else data
    return rows.astype(np.int64), cols.astype(np.int64), arrays


# --------------------------------------------------------------------------------------------------
# Sources of patches: a scene cut band by band, or patches already cut
# --------------------------------------------------------------------------------------------------


def _open_patches(source: Any) -> xr.Dataset:
    """A Dataset of patches from a Dataset, a DataArray of patches, or a Zarr store (path or store object).

    A store that ``.patches.to_zarr`` wrote (its root attributes hold the fingerprint) is opened with
    :func:`patchkit.sinks.zarr.open_patches`, which refuses it until it is complete and whole.
    """
    if isinstance(source, xr.Dataset):
        return source
    if isinstance(source, xr.DataArray):
        name = source.name if source.name is not None and source.name not in source.dims else "patches"
        return source.to_dataset(name=name)
    from ..sinks._store import read_json
    from ..sinks.zarr import FINGERPRINT, open_patches

    if isinstance(source, (str, os.PathLike)):
        attrs = (read_json(Path(source) / "zarr.json") or {}).get("attributes", {})  # patchkit writes Zarr v3
        if FINGERPRINT in attrs:
            return open_patches(source, chunks=None)  # written by .patches.to_zarr: refused until complete
    try:  # without dask: xarray's lazy indexing reads just the slices asked for
        return xr.open_zarr(source, mask_and_scale=False, chunks=None)
    except Exception as err:  # zarr raises its own errors for a missing or malformed store
        raise PatchkitValueError(
            f"source={source!r} does not open as a Zarr store ({type(err).__name__}: {err}); pass a store "
            "written with patches.to_zarr(...), or a DataArray scene with sizes and strides"
        ) from err


def _store_chunks(first: xr.DataArray, axis: str) -> tuple[int, ...]:
    """The chunks of ``first`` along ``axis``: dask's, or those a Zarr array opened without dask records."""
    if first.chunks is not None:
        return first.chunks[first.get_axis_num(axis)]
    n = first.sizes[axis]
    size = first.encoding.get("preferred_chunks", {}).get(axis, n)
    return (size,) * (n // size) + ((n % size,) if n % size else ())


def _store_bands(ds: xr.Dataset, features: Sequence[Feature], budget: int) -> Iterator[BandArrays]:
    """:func:`band_arrays` of stored patches, read lazily a chunk (or less, under ``budget``) along the grid at a time."""
    names = [f.var for f in features]
    first = ds[names[0]]
    axis = grid_of(first)[0]
    per_index = sum(ds[name].nbytes for name in names) // max(ds.sizes[axis], 1)
    step = max(1, budget // max(per_index, 1))
    chunks = _store_chunks(first, axis)
    places = {}
    for name in ("patch_row", "patch_col"):  # read once, not once per band
        if name in ds.coords:
            places[name] = ds[name].variable.compute()
        elif name in ds.dims:
            places[name] = xr.Variable(name, np.arange(ds.sizes[name]))
    ds = ds[names].reset_coords(drop=True).assign_coords(places)
    start = 0
    for size in chunks:
        for a in range(start, start + size, step):
            yield band_arrays(ds.isel({axis: slice(a, min(a + step, start + size))}), features)
        start += size


def _stored(source: Any, budget: Budget, max_nodata_fraction) -> tuple[list[Feature], Callable[[], Iterator[BandArrays]]]:
    """The features of patches already cut, and a function streaming them (each call reads them again)."""
    if max_nodata_fraction is not None:
        raise PatchkitValueError(
            f"max_nodata_fraction={max_nodata_fraction!r} filters patches as a scene is cut, but the "
            "source holds patches already cut; pass max_nodata_fraction when writing them"
        )
    ds = _open_patches(source)
    features = store_features(ds)
    return features, lambda: _store_bands(ds, features, budget)


def _scene(source: Any, args: tuple, budget: Budget, max_nodata_fraction) -> tuple[list[Feature], Callable[[], Iterator[BandArrays]]]:
    """The features of a scene's patches cut by ``args`` (sizes, strides, rates, padding), and a function
    cutting them band by band (each call reads the scene again).

    The dims and the budget are checked now, reading nothing; nodata is counted as each pass starts.
    """
    if not isinstance(source, (xr.DataArray, xr.Dataset)):
        raise PatchkitTypeError(
            f"source is a {type(source).__name__}, but cutting patches (sizes={args[0]!r}) needs an xarray "
            "DataArray or Dataset: open the raster first, e.g. rioxarray.open_rasterio(path, chunks=True)"
        )
    spec = PatchSpec(*args)
    fraction = check_fraction(max_nodata_fraction)
    features, _ = scene_features(source, spec)
    bands(prepare(source, spec, max_memory=budget), max_memory=budget)  # checks the dims and the plan; reads nothing

    def stream() -> Iterator[BandArrays]:
        prepared = prepare(source, spec, max_nodata_fraction=fraction, max_memory=budget)  # counts nodata, if asked
        for _, band in bands(prepared, max_memory=budget):
            yield band_arrays(band, features, copy=True)

    return features, stream


def to_tf_dataset(
    source: Any,
    sizes=None,
    strides=None,
    rates=1,
    padding: str = "VALID",
    *,
    batch_size: int | None = None,
    prefetch: bool = True,
    max_memory: int | str = DEFAULT_MAX_MEMORY,
    max_nodata_fraction: float | None = None,
    shuffle_buffer: int | None = None,
):
    """Stream patches into a ``tf.data.Dataset`` without loading the scene.

    Parameters
    ----------
    source : xarray.DataArray or Dataset, or a Zarr store of patches
        With ``sizes`` and ``strides``: a scene, cut on the fly one row band at a time under
        ``max_memory`` (a dask-backed scene reads only each band's rows).
        Without them: patches already cut, a path or store that ``xr.open_zarr`` opens (read raw, with
        ``mask_and_scale=False``, so values and dtype are the source's), or a Dataset / DataArray of
        patches with dims ``(..., "patch_row", "patch_col", ..., y, x)`` or ``(..., "patch", ..., y, x)``,
        read a chunk of patch rows at a time.
    sizes, strides, rates, padding
        As ``tf.image.extract_patches``; only for a scene.
    batch_size : int, optional
        Batch the elements (the last batch may be smaller).
    prefetch : bool, default True
        ``.prefetch(tf.data.AUTOTUNE)``.
    max_memory : int or str, default "512MiB"
        Bound on the patches made or read at once (a prefetched band comes on top).
    max_nodata_fraction : float in [0, 1], optional
        Only for a scene: keep only patches with at most this share of nodata.
    shuffle_buffer : int, optional
        ``.shuffle(shuffle_buffer)`` of the patches, before batching.

    Returns
    -------
    tf.data.Dataset
        Elements ``{"patch": (kh, kw, C), "row": int64, "col": int64}`` (one key per variable
        instead of ``"patch"`` for a Dataset of several), patches in TensorFlow's HWC layout with
        the dims other than y, x folded into ``C``; row-major order unless shuffled. It can be
        iterated again: each pass reads the source again.
    """
    tf = tensorflow()
    batch_size = _check_count(batch_size, "batch_size")
    shuffle_buffer = _check_count(shuffle_buffer, "shuffle_buffer")
    budget = Budget.of(max_memory)
    if sizes is None and strides is None:
        features, stream = _stored(source, budget, max_nodata_fraction)
    elif sizes is None or strides is None:
        raise PatchkitValueError(
            f"sizes={sizes!r} and strides={strides!r}: pass both to cut a scene, or neither for a source of patches"
        )
    else:
        features, stream = _scene(source, (sizes, strides, rates, padding), budget, max_nodata_fraction)

    def generate():
        for rows, cols, arrays in stream():
            yield {**{f.key: arrays[f.key].reshape(rows.size, *f.shape) for f in features}, "row": rows, "col": cols}

    signature = {f.key: tf.TensorSpec((None, *f.shape), tf.as_dtype(f.dtype.name)) for f in features}
    signature.update(row=tf.TensorSpec((None,), tf.int64), col=tf.TensorSpec((None,), tf.int64))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature).unbatch()
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer)
    if batch_size:
        dataset = dataset.batch(batch_size)
    if prefetch:
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset
