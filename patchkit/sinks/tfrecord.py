"""Patches for TensorFlow: resumable TFRecord shards (:func:`to_tfrecord`, :func:`read_tfrecord`) and
streaming ``tf.data`` pipelines (:func:`to_tf_dataset`).

Layout of a patch
    Every patch is a tensor ``(kh, kw, C)`` in TensorFlow's HWC order. Every dim of the source other
    than the spatial ones is folded into ``C``, slowest first in the order ``(*leading, *channels)`` of
    ``.patches`` (a ``(time, band, y, x)`` stack gives ``C = time x band``, time slowest). So there is
    one record per place on the map, ``(row, col)``, whatever the leading dims. A DataArray (or a
    Dataset with one variable of patches) gives the feature ``"patch"``; a Dataset with several gives
    one feature per variable, under the variable's name.

TFRecord files
    ``{prefix}-{shard:05d}-of-{count:05d}.tfrecord``, each a run of ``tf.train.Example`` records in
    row-major patch order, with the features:

    * ``patch`` -- the raw bytes of the patch, little-endian, C order of ``(kh, kw, C)``;
    * ``shape`` -- int64 list ``[kh, kw, C]``; ``dtype`` -- bytes, the numpy name (``b"uint16"``);
      with several variables: ``{name}``, ``{name}/shape``, ``{name}/dtype`` per variable;
    * ``row``, ``col`` -- int64, the patch's place on the grid (``patch_row``, ``patch_col``);
    * ``transform`` -- the raw bytes of 6 float64 ``(a, b, c, d, e, f)``, the patch's affine transform
      (as :func:`patchkit.patch_transform`; NaN on an irregular grid). A ``float_list`` would be
      float32, which rounds a UTM northing of 4,200,000 m to the nearest 0.5 m.

    Shard ``k`` holds the patches of patch rows ``[k R, (k + 1) R)``, with ``R`` (``rows_per_shard``)
    the number of patch rows whose raw bytes fit in ``shard_size``: a pure function of the arguments,
    so a rerun knows which shards it has. With ``max_nodata_fraction`` shards hold only the kept
    patches, and may be smaller or empty.

The manifest ``{prefix}.json``
    Features (dtype, shape, dims), CRS (WKT), spec, grid, shards (file, rows, patches, bytes, done),
    the count of patches, fingerprints of the source and of the arguments, and ``complete``. It is
    replaced atomically after every shard; ``complete`` becomes true last.

Resuming
    A shard is written to ``{file}.partial``, read back (every record counted, its CRCs checked, its
    SHA-256 taken) and renamed when whole; the manifest records its count, size, SHA-256 and the
    content digest of its patch rows. A rerun with the same source and arguments compares a sample of
    the finished shards with the source's pixels (all of them when a source file changed: see
    :func:`patchkit.sinks._store.check_content`), keeps every shard that the manifest records as done
    and whose file has the recorded size, and writes the others. Output from another source or other
    arguments is refused (:class:`ForeignStoreError`) unless ``mode="w"``.

Reading
    :func:`read_tfrecord` checks every shard's size against the manifest (``verify="cheap"``) or
    reads every shard through (``verify="full"``: counts, CRCs and SHA-256) before it returns.

TensorFlow is imported by the functions that need it, never by ``import patchkit``.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterator, Sequence

import numpy as np
import xarray as xr

from ..core.budget import DEFAULT_MAX_MEMORY, Budget
from ..core.dtypes import check_dtype
from ..errors import (BackendUnavailableError, DamagedOutputError, PatchkitError, DimensionError, ForeignStoreError, IncompleteStoreError,
                      PatchkitTypeError, PatchkitValueError)
from ..labelled.geo import STEP_ATTR, crs_of
from ..labelled.layout import bands, find_layout, prepare
from ..labelled.nodata import check_fraction
from ..core.spec import PatchSpec
from ..core.units import parse_bytes
from ._store import (EMPTY_ROW, check_path, check_resume, check_verify, combine, describe, digest, row_digests, short_write, source_files, write_error,
                     read_json, write_json)
from .base import Progress, Sink

__all__ = [
    "to_tfrecord",
    "read_tfrecord",
    "to_tf_dataset",
    "FORMAT",
    "DEFAULT_SHARD_SIZE",
]

#: ``format`` of the manifest; ``version`` changes when the record layout does.
FORMAT, VERSION = "patchkit-tfrecord", 1
DEFAULT_SHARD_SIZE = "128MiB"
#: ``verify`` values of :func:`read_tfrecord`.
VERIFY = ("cheap", "full", False)
#: The name of the files when the prefix names a folder (``"out/"``, or a folder that exists).
DEFAULT_NAME = "patches"
#: The key of the pixels of a DataArray, or of a Dataset with one variable of patches.
PATCH = "patch"
_RESERVED = ("row", "col", "transform", "shape", "dtype")
_COMPRESSIONS = ("GZIP", "ZLIB")
_GRIDS = (("patch_row", "patch_col"), ("patch",))
#: read_tfrecord parses records smaller than 64 KiB in batches of up to 256 and about 1 MiB: that read
#: 32 x 32 x 4 uint16 patches 2-3x faster (0.05-0.14 -> 0.17-0.31 GB/s on 2 cores); larger records
#: gain nothing and would pay an extra copy, so they are parsed one by one.
_PARSE_BATCH, _PARSE_BYTES, _PARSE_SINGLY = 256, 2**20, 2**16


# --------------------------------------------------------------------------------------------------
# Features: what one patch holds
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Feature:
    """One array of every patch: its key, variable, the dims folded into channels, shape and dtype."""

    key: str
    var: Hashable | None
    channels: tuple[Hashable, ...]
    shape: tuple[int, int, int]
    dtype: np.dtype

    @property
    def shape_key(self) -> str:
        return "shape" if self.key == PATCH else f"{self.key}/shape"

    @property
    def dtype_key(self) -> str:
        return "dtype" if self.key == PATCH else f"{self.key}/dtype"


def _keyed(found: list[tuple[Hashable | None, tuple, tuple, np.dtype]]) -> list[_Feature]:
    """Features from ``(variable, channel dims, shape, dtype)``: one is ``"patch"``, several keep their names."""
    if len(found) == 1:
        var, channels, shape, dtype = found[0]
        return [_Feature(PATCH, var, channels, shape, dtype)]
    features = []
    for var, channels, shape, dtype in found:
        key = str(var)
        if key in _RESERVED:
            raise PatchkitValueError(
                f"variable {var!r} has a name that the records use for themselves ({', '.join(_RESERVED)}); "
                f"rename it first, e.g. ds.rename({{{var!r}: '{key}_'}})"
            )
        features.append(_Feature(key, var, channels, shape, dtype))
    return features


def _scene_features(obj: Any, spec: PatchSpec) -> tuple[list[_Feature], tuple[int, int]]:
    """The features of the patches ``obj.patches`` cuts, and the image ``(height, width)``; checks the spec."""
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


def _grid_of(var: xr.DataArray) -> tuple[str, ...] | None:
    """``("patch_row", "patch_col")`` or ``("patch",)`` when ``var`` holds patches, else None."""
    for grid in _GRIDS:
        if all(d in var.dims for d in grid) and var.ndim >= len(grid) + 2 and not set(grid) & set(var.dims[-2:]):
            return grid
    return None


def _store_features(ds: xr.Dataset) -> list[_Feature]:
    """The features of a Dataset of patches (as ``.patches.extract`` and ``to_zarr`` make them)."""
    found, grids = [], set()
    for name, var in ds.data_vars.items():
        grid = _grid_of(var)
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


# --------------------------------------------------------------------------------------------------
# Bands of patches as flat arrays
# --------------------------------------------------------------------------------------------------


def _band_arrays(band: Any, features: Sequence[_Feature], copy: bool = False):
    """``rows``, ``cols`` (one per patch, row-major) and ``{key: array (n, kh, kw, *channels)}`` of a band.

    The arrays are views of the band's data where numpy can make them (``copy=True`` copies): a
    band of ``.patches.iter`` may be a view of a buffer that the next band reuses.
    """
    first = band if features[0].var is None else band[features[0].var]
    grid = _grid_of(first)
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


def _axis_origins(coord: xr.DataArray | None, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Edge of the first pixel and pixel size along one axis for each of ``n`` patches (NaN if unknown)."""
    if coord is None or coord.ndim != 2 or STEP_ATTR not in coord.attrs:
        return np.full(n, np.nan), np.full(n, np.nan)
    centres = np.asarray(coord.values, dtype=np.float64)
    step = (centres[:, -1] - centres[:, 0]) / (k - 1) if k > 1 else np.full(len(centres), float(coord.attrs[STEP_ATTR]))
    return centres[:, 0] - step / 2, step


def _band_transforms(band: Any, feature: _Feature) -> np.ndarray:
    """The affine coefficients ``(a, b, c, d, e, f)`` of every patch of a band, row-major: ``[n, 6]``.

    Vectorised :func:`patchkit.patch_transform`: from the 2-D pixel-centre coordinates and their
    ``step`` attribute; NaN where the grid is irregular.
    """
    var = band if feature.var is None else band[feature.var]
    grid = _grid_of(var)
    (ydim, xdim), (kh, kw) = var.dims[-2:], feature.shape[:2]
    ny, nx = var.sizes[grid[0]], var.sizes[grid[-1]]
    top, dy = _axis_origins(var.coords.get(ydim), kh, ny)
    left, dx = _axis_origins(var.coords.get(xdim), kw, nx)
    if grid == ("patch",):
        iy = ix = np.arange(ny)
    else:
        iy, ix = np.repeat(np.arange(ny), nx), np.tile(np.arange(nx), ny)
    out = np.zeros((iy.size, 6))
    out[:, 0], out[:, 2], out[:, 4], out[:, 5] = dx[ix], left[ix], dy[iy], top[iy]
    return out


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------


def _tensorflow():
    try:
        import tensorflow as tf
    except ImportError as err:
        raise BackendUnavailableError(
            "TFRecord and tf.data output need TensorFlow, which is not installed; install it with "
            "`pip install tensorflow` (or `pip install patchkit[tensorflow]`)"
        ) from err
    return tf


def _check_compression(compression: str | None) -> str | None:
    if compression is None or compression == "":
        return None
    if isinstance(compression, str) and compression.upper() in _COMPRESSIONS:
        return compression.upper()
    raise PatchkitValueError(f"compression={compression!r} is not one TFRecord files have; pass None, 'GZIP' or 'ZLIB'")


def _check_mode(mode: str | None) -> None:
    if mode not in (None, "w"):
        raise PatchkitValueError(
            f"mode={mode!r} is not a mode to_tfrecord knows; pass None (write, or finish an interrupted "
            "run with the same arguments) or 'w' (delete what the prefix holds and write anew)"
        )


def _check_count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise PatchkitValueError(f"{name}={value!r} must be a positive integer, or None; pass e.g. {name}=32")
    return int(value)


# --------------------------------------------------------------------------------------------------
# Fingerprints and the manifest
# --------------------------------------------------------------------------------------------------


def _source_fingerprint(obj: Any, crs: str | None) -> str:
    """A digest of what identifies the source without reading its pixels (as every sink identifies it)."""
    return digest({"variables": describe(obj), "crs": crs})


def _json_values(values: Any) -> list:
    values = np.asarray(values)
    return values.tolist() if values.dtype.kind in "biuf" else [str(v) for v in values.tolist()]


def _feature_record(obj: Any, feature: _Feature) -> dict:
    var = obj if feature.var is None else obj[feature.var]
    return {
        "variable": None if feature.var is None else str(feature.var),
        "dtype": feature.dtype.name,
        "shape": list(feature.shape),
        "dims": ["y", "x", "channel"],
        "channels": {
            "dims": [str(d) for d in feature.channels],
            "sizes": [var.sizes[d] for d in feature.channels],
            "coords": {str(d): _json_values(var[d].values) for d in feature.channels if d in var.coords},
        },
        "keys": {"pixels": feature.key, "shape": feature.shape_key, "dtype": feature.dtype_key},
    }


def _crs_wkt(obj: Any) -> str | None:
    crs = crs_of(obj)
    if crs is None:
        return None
    return crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs)


@dataclass(frozen=True)
class _Target:
    """Where a TFRecord set lives: ``{folder}/{name}.json`` and ``{folder}/{name}-KKKKK-of-NNNNN.tfrecord``."""

    folder: Path
    name: str

    @classmethod
    def of(cls, prefix: str | os.PathLike) -> "_Target":
        """The target of ``prefix``; one ending in a separator, or naming a folder, holds ``patches-*`` files."""
        check_path(prefix, "prefix", "out/scene")
        text = os.fspath(prefix)
        if not isinstance(text, str):
            raise PatchkitValueError(f"prefix={prefix!r} names no file; pass a path such as 'out/scene'")
        path = Path(text)
        if text.endswith(("/", os.sep)) or path.is_dir() or path.name in ("", ".", ".."):
            return cls(path, DEFAULT_NAME)
        return cls(path.parent, path.name)

    @property
    def manifest(self) -> Path:
        return self.folder / f"{self.name}.json"

    def shard(self, k: int, count: int) -> str:
        return f"{self.name}-{k:05d}-of-{count:05d}.tfrecord"

    def existing_shards(self) -> list[Path]:
        """Every shard file (and ``.partial``) of this prefix, whatever its count."""
        if not self.folder.is_dir():
            return []
        pattern = re.compile(re.escape(self.name) + r"-\d{5}-of-\d{5}\.tfrecord(\.partial)?")
        return sorted(p for p in self.folder.iterdir() if pattern.fullmatch(p.name))

    def load(self) -> dict | None:
        """The manifest, None when there is none; an unreadable one is :class:`ForeignStoreError`."""
        try:
            text = self.manifest.read_text()
        except FileNotFoundError:
            return None
        try:
            manifest = json.loads(text)
            if manifest.get("format") != FORMAT:
                raise ValueError(f"format {manifest.get('format')!r}")
        except (ValueError, AttributeError) as err:
            raise ForeignStoreError(
                f"{str(self.manifest)!r} is not a patchkit TFRecord manifest ({err}); choose another prefix, "
                "or pass mode='w' to replace it"
            ) from err
        return manifest

    def save(self, manifest: dict) -> None:
        """Replace the manifest atomically (a temporary file, synced, then ``os.replace``)."""
        write_json(self.manifest, manifest)

    def drop_partials(self) -> None:
        """Delete the ``.partial`` files a killed run left: shards, and manifests being replaced (call
        when nothing is being written)."""
        for path in self.existing_shards():
            if path.suffix == ".partial":
                path.unlink()
        for path in self.folder.glob(f".{glob.escape(self.manifest.name)}.*.partial"):
            path.unlink(missing_ok=True)

    def clear(self) -> None:
        for path in self.existing_shards():
            path.unlink()
        self.manifest.unlink(missing_ok=True)


def _new_manifest(obj, target: _Target, features, spec: PatchSpec, image: tuple[int, int], fraction, compression,
                  shard_size: int) -> dict:
    """The manifest of a run that has written nothing yet."""
    oh, ow = spec.grid_shape(image)
    row_bytes = ow * sum(math.prod(f.shape) * f.dtype.itemsize for f in features)
    per_shard = max(1, shard_size // row_bytes)
    count = math.ceil(oh / per_shard)
    crs = _crs_wkt(obj)
    arguments = {"spec": spec.to_dict(), "max_nodata_fraction": fraction, "rows_per_shard": per_shard,
                 "compression": compression, "features": [f.key for f in features], "version": VERSION}
    return {
        "format": FORMAT,
        "version": VERSION,
        "features": {f.key: _feature_record(obj, f) for f in features},
        "crs": crs,
        "spec": spec.to_dict(),
        "image_shape": list(image),
        "grid_shape": [oh, ow],
        "max_nodata_fraction": fraction,
        "compression": compression,
        "rows_per_shard": per_shard,
        "fingerprint": {"source": _source_fingerprint(obj, crs), "arguments": digest(arguments)},
        "source_files": source_files(obj),
        "shards": [
            {"path": target.shard(k, count), "rows": [k * per_shard, min((k + 1) * per_shard, oh)],
             "count": None, "bytes": None, "done": False}
            for k in range(count)
        ],
        "count": None,
        "complete": False,
    }


def _difference(old: dict, new: dict) -> str:
    """What differs between two manifests' runs, for the refusal message."""
    if old.get("fingerprint", {}).get("source") != new["fingerprint"]["source"]:
        return "it was written from another source (its dims, coordinates, attrs, CRS or file differ)"
    changed = [k for k in ("spec", "max_nodata_fraction", "rows_per_shard", "compression", "features", "version")
               if old.get(k) != new.get(k)]
    changes = "; ".join(f"{k} {old.get(k)!r}, now {new.get(k)!r}" for k in changed)
    return f"it was written with other arguments: {changes}"


def _resume(target: _Target, fresh: dict, mode: str | None) -> tuple[dict, list | None]:
    """The manifest to continue from: ``fresh`` with the shards already done, after checking the prefix;
    and the source's files as recorded when the set was started."""
    if mode == "w":
        target.clear()
        return fresh, fresh["source_files"]
    old = target.load()
    if old is None:
        stray = target.existing_shards()
        if stray:
            raise ForeignStoreError(
                f"prefix {str(target.folder / target.name)!r} has shard files ({stray[0].name}, ...) but no "
                f"manifest {target.manifest.name!r}, so they cannot be resumed; pass mode='w' to replace "
                "them, or choose another prefix"
            )
        return fresh, fresh["source_files"]
    if old.get("fingerprint") != fresh["fingerprint"]:
        raise ForeignStoreError(
            f"prefix {str(target.folder / target.name)!r} holds a TFRecord set that this call would not "
            f"write: {_difference(old, fresh)}; pass mode='w' to replace it, or choose another prefix"
        )
    for shard, before in zip(fresh["shards"], old["shards"]):
        path = target.folder / shard["path"]
        if before.get("done") and path.is_file() and path.stat().st_size == before.get("bytes"):
            shard.update({k: before.get(k) for k in ("count", "bytes", "sha256", "content")}, done=True)
    if all(s["done"] for s in fresh["shards"]):
        fresh.update(count=sum(s["count"] for s in fresh["shards"]), complete=bool(old.get("complete")))
    return fresh, old.get("source_files")


def _tf_write_error(what: str, where: Path, err: Exception) -> Exception:
    """A :class:`SinkWriteError` for a TensorFlow error while writing (TensorFlow raises no OSError)."""
    text = str(err)
    code = errno.ENOSPC if "No space left" in text else errno.EFBIG if "too large" in text else errno.EIO
    return write_error(what, where, OSError(code, text.strip().splitlines()[0] if text.strip() else type(err).__name__),
                       "the finished shards")


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


class _ShardWriter:
    """Writes the shards of a manifest in order: each to ``.partial``, renamed when whole, then recorded."""

    def __init__(self, tf, target: _Target, manifest: dict, compression: str | None, digests: dict) -> None:
        self._tf, self._target, self._manifest, self._digests = tf, target, manifest, digests
        self._options = tf.io.TFRecordOptions(compression_type=compression or "")
        self._next = 0  # the first shard not yet finished
        self._open = None  # [writer, partial path, records] of shard self._next
        self._bytes = 0  # the bytes of its records

    def pending(self, k: int) -> bool:
        return not self._manifest["shards"][k]["done"]

    @contextlib.contextmanager
    def _writing(self):
        """Raise the file system's and TensorFlow's errors while writing as :class:`SinkWriteError`."""
        try:
            yield
        except PatchkitError:
            raise
        except OSError as err:
            raise write_error("the TFRecord set", self._target.manifest, err, "the finished shards") from err
        except self._tf.errors.OpError as err:
            raise _tf_write_error("the TFRecord set", self._target.manifest, err) from err

    def write(self, k: int, records: Iterator[bytes]) -> None:
        """Append ``records`` to shard ``k``, finishing every shard before it."""
        with self._writing():
            self._write(k, records)

    def _write(self, k: int, records: Iterator[bytes]) -> None:
        while self._next < k:
            self._finish(self._next)
            self._next += 1
        if not self.pending(k):
            return
        if self._open is None:
            partial = self._target.folder / (self._manifest["shards"][k]["path"] + ".partial")
            self._open = [self._tf.io.TFRecordWriter(str(partial), options=self._options), partial, 0]
            self._bytes = 0
        for record in records:
            self._open[0].write(record)
            self._open[2] += 1
            self._bytes += len(record)

    def close(self) -> None:
        """Finish every remaining shard (those that got no patch are written empty)."""
        self.write(len(self._manifest["shards"]) - 1, iter(()))
        self._finish(self._next)
        self._next = len(self._manifest["shards"])

    def abort(self) -> None:
        """Drop the shard being written (a rerun writes it again)."""
        if self._open is not None:
            self._open[0].close()
            self._open[1].unlink(missing_ok=True)
            self._open = None

    def _finish(self, k: int) -> None:
        with self._writing():
            self._finish_shard(k)

    def _finish_shard(self, k: int) -> None:
        shard = self._manifest["shards"][k]
        if shard["done"]:
            return
        if self._open is None:
            self._write(k, iter(()))
        writer, partial, records = self._open
        writer.close()
        sha = self._check(partial, records)
        final = self._target.folder / shard["path"]
        os.replace(partial, final)
        self._open = None
        content = combine(self._digests.get(r, EMPTY_ROW) for r in range(*shard["rows"]))
        shard.update(count=records, bytes=final.stat().st_size, sha256=sha, content=content, done=True)
        self._target.save(self._manifest)

    def _check(self, partial: Path, records: int) -> str:
        """Sync ``partial`` and read it back: its SHA-256; OSError unless it holds ``records`` whole records."""
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        found = _count_records(self._tf, partial, self._options.compression_type)
        if found != records:
            expected = self._bytes + 16 * records  # each record: its bytes, a length and two CRCs
            raise short_write(partial, expected, f"the shard reads back with {max(found, 0)} of its {records} records")
        return _sha256(partial)


def _examples(tf, features: Sequence[_Feature], rows, cols, arrays: dict, transforms: np.ndarray,
              index) -> Iterator[bytes]:
    """Serialized ``tf.train.Example`` of patches ``index`` of a band."""
    train = tf.train
    fixed = {}
    for f in features:
        fixed[f.shape_key] = train.Feature(int64_list=train.Int64List(value=list(f.shape)))
        fixed[f.dtype_key] = train.Feature(bytes_list=train.BytesList(value=[f.dtype.name.encode()]))
    coefficients = transforms.astype("<f8")
    for i in index:
        feature = dict(fixed)
        for f in features:
            feature[f.key] = train.Feature(bytes_list=train.BytesList(value=[arrays[f.key][i].tobytes()]))
        feature["row"] = train.Feature(int64_list=train.Int64List(value=[int(rows[i])]))
        feature["col"] = train.Feature(int64_list=train.Int64List(value=[int(cols[i])]))
        feature["transform"] = train.Feature(bytes_list=train.BytesList(value=[coefficients[i].tobytes()]))
        yield train.Example(features=train.Features(feature=feature)).SerializeToString(deterministic=True)  # map keys sorted: the same bytes in every process


def to_tfrecord(
    obj: xr.DataArray | xr.Dataset,
    prefix: str | os.PathLike,
    sizes,
    strides,
    rates=1,
    padding: str = "VALID",
    *,
    max_memory: int | str = DEFAULT_MAX_MEMORY,
    shard_size: int | str = DEFAULT_SHARD_SIZE,
    max_nodata_fraction: float | None = None,
    compression: str | None = None,
    mode: str | None = None,
    progress: bool = True,
    backend: str = "auto",
) -> Path:
    """Write every patch of ``obj`` as ``tf.train.Example`` records in sharded TFRecord files; resumable.

    Streams row bands of patches (``obj.patches.iter``) under ``max_memory``. The record layout,
    the shard files and the manifest ``{prefix}.json`` are described in :mod:`patchkit.sinks.tfrecord`.

    Parameters
    ----------
    obj : xarray.DataArray or Dataset
        The scene; a Dataset gives one feature per variable with the spatial dims (one variable:
        ``"patch"``). Dims other than the spatial ones are folded into the patch's channels.
    prefix : str or path
        Files are ``{prefix}-{k:05d}-of-{count:05d}.tfrecord`` and ``{prefix}.json``; folders are made.
    sizes, strides, rates, padding
        As ``tf.image.extract_patches``.
    max_memory : int or str, default "512MiB"
        Bound on what the extraction holds at once, as :func:`patchkit.iter_patches`.
    shard_size : int or str, default "128MiB"
        About how many bytes of patches a shard holds: whole patch rows, at least one.
    max_nodata_fraction : float in [0, 1], optional
        Write only patches with at most this share of nodata (as ``.patches.iter``).
    compression : {None, "GZIP", "ZLIB"}
    mode : {None, "w"}
        None writes, finishes an interrupted run with the same source and arguments, or does nothing
        when that run is complete; it refuses a prefix holding another run. ``"w"`` deletes the
        prefix's manifest and shards first.
    progress : bool, default True
        A progress bar over patch rows (shown where the output is a terminal or a notebook).
    backend : {"auto", "numpy", "tensorflow"}

    Returns
    -------
    pathlib.Path
        The manifest, which :func:`read_tfrecord` takes.

    Raises
    ------
    ForeignStoreError
        When ``prefix`` holds shards or a manifest from another source or other arguments.
    """
    tf = _tensorflow()
    spec = PatchSpec(sizes, strides, rates, padding)
    fraction = check_fraction(max_nodata_fraction)
    compression = _check_compression(compression)
    _check_mode(mode)
    max_memory = Budget.of(max_memory)
    features, image = _scene_features(obj, spec)
    prepared = prepare(obj, spec, max_nodata_fraction=fraction, max_memory=max_memory)
    bands(prepared, max_memory=max_memory, backend=backend)  # checks the budget and the backend; reads nothing
    target = _Target.of(prefix)
    shard_bytes = parse_bytes(shard_size, "shard_size")
    fresh = _new_manifest(obj, target, features, spec, image, fraction, compression, shard_bytes)
    try:
        target.folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error("the TFRecord folder", target.folder, err, "no shards") from err
    manifest, files = _resume(target, fresh, mode)
    finished = [[*s["rows"], s["content"]] for s in manifest["shards"] if s["done"] and s.get("content")]
    check_resume(prepared, finished, files, max_memory, f"the TFRecord set {str(target.manifest)!r}")
    if any(not shard["done"] for shard in manifest["shards"]):
        try:
            target.save(manifest)
        except OSError as err:  # the folder takes no new file (permissions, a read-only disk, no space)
            raise write_error("the TFRecord set", target.manifest, err, "no shards") from err
        _write_shards(tf, target, manifest, prepared, features, compression, max_memory, backend, progress)
    target.drop_partials()
    if not manifest["complete"]:
        manifest.update(count=sum(s["count"] for s in manifest["shards"]), complete=True)
        target.save(manifest)
    return target.manifest


def _write_shards(tf, target: _Target, manifest: dict, prepared, features, compression, max_memory, backend, progress) -> None:
    """Write every shard not done, band by band; TensorFlow's and the file system's errors as SinkWriteError."""
    from tqdm.auto import tqdm

    per_shard, oh = manifest["rows_per_shard"], manifest["grid_shape"][0]
    done = np.zeros(oh, bool)
    for shard in manifest["shards"]:
        done[slice(*shard["rows"])] = shard["done"]
    digests: dict[int, str] = {}
    writer = _ShardWriter(tf, target, manifest, compression, digests)
    with tqdm(total=oh, initial=int(done.sum()), unit="row", desc=f"patch rows -> {target.name}",
              disable=not progress or None) as bar:
        try:
            for band_rows, band in bands(prepared, max_memory=max_memory, backend=backend, done=done):
                digests.update(row_digests(band, band_rows))
                rows, cols, arrays = _band_arrays(band, features)
                shard_of = rows // per_shard
                transforms = None
                for piece in np.split(np.arange(rows.size), np.flatnonzero(np.diff(shard_of)) + 1):
                    k = int(shard_of[piece[0]]) if piece.size else None
                    if k is None or not writer.pending(k):
                        continue
                    transforms = _band_transforms(band, features[0]) if transforms is None else transforms
                    writer.write(k, _examples(tf, features, rows, cols, arrays, transforms, piece))
                bar.update(int((~done[band_rows]).sum()))
            writer.close()
        except BaseException:
            writer.abort()
            raise
        bar.update(oh - bar.n)


def _count_records(tf, path: Path, compression: str) -> int:
    """The number of whole records in a TFRecord file (every CRC checked); -1 when it is cut or damaged."""
    try:
        return int(tf.data.TFRecordDataset(str(path), compression_type=compression).reduce(np.int64(0), lambda n, _: n + 1))
    except tf.errors.OpError:  # DataLossError: a record cut short, or a CRC that does not match
        return -1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def _decode(tf, raw, dtype: str, shape: Sequence[int]):
    """Raw little-endian bytes (one string, or a batch with ``shape`` starting at -1) as a tensor of ``shape``.

    ``decode_raw`` has no uint32/uint64: those are decoded as bytes and bitcast.
    """
    if dtype in ("uint32", "uint64"):
        size = np.dtype(dtype).itemsize
        flat = tf.bitcast(tf.reshape(tf.io.decode_raw(raw, tf.uint8), [-1, size]), tf.as_dtype(dtype))
    else:
        flat = tf.io.decode_raw(raw, tf.as_dtype(dtype))
    return tf.reshape(flat, shape)


def _record_bytes(features: dict) -> int:
    return sum(math.prod(f["shape"]) * np.dtype(f["dtype"] if f["dtype"] != "bfloat16" else "uint16").itemsize
               for f in features.values())


def _manifest_path(prefix_or_manifest: str | os.PathLike) -> Path:
    path = Path(prefix_or_manifest)
    if path.suffix == ".json":
        return path
    target = _Target.of(prefix_or_manifest)
    return target.manifest


def _check_files(tf, path: Path, manifest: dict, files: list[Path], full: bool) -> None:
    """Raise :class:`DamagedOutputError` unless every shard has its size (and, ``full``, its records and SHA-256)."""
    for shard, file in zip(manifest["shards"], files):
        size = file.stat().st_size
        problem = None
        if size != shard["bytes"]:
            problem = f"has {size} bytes, {shard['bytes']} when it was written (cut short, or written over)"
        elif full and _count_records(tf, file, manifest["compression"] or "") != shard["count"]:
            problem = f"does not read back as its {shard['count']} whole records"
        elif full and shard.get("sha256") and _sha256(file) != shard["sha256"]:
            problem = "holds other bytes than were written"
        if problem:
            raise DamagedOutputError(
                f"the TFRecord set {str(path)!r} is damaged: shard {file.name!r} {problem}; run to_tfrecord again "
                "with mode='w' to write it anew"
            )


def read_tfrecord(prefix_or_manifest: str | os.PathLike, *, verify: str | bool = "cheap"):
    """The patches that :func:`to_tfrecord` wrote, as a ``tf.data.Dataset`` in row-major order.

    Parameters
    ----------
    prefix_or_manifest : str or path
        The ``prefix`` given to :func:`to_tfrecord`, or its manifest ``{prefix}.json``.
    verify : {"cheap", "full", False}, default "cheap"
        ``"cheap"`` checks that every shard is there with the size it was written with (one
        ``stat`` per shard: a shard cut short, even at a record boundary, is found); ``"full"`` also
        reads every shard through (every record counted, every CRC checked, the SHA-256 of the
        file compared); False checks only the completion marker and that the shards exist.

    Returns
    -------
    tf.data.Dataset
        Elements ``{"patch": (kh, kw, C), "row": int64, "col": int64, "transform": float64 (6,)}``
        with static shapes and the source's dtype (one key per variable instead of ``"patch"`` for
        a Dataset of several). ``transform`` holds ``(a, b, c, d, e, f)`` of ``affine.Affine``.

    Raises
    ------
    IncompleteStoreError
        When the manifest is not marked complete or a shard file is missing.
    DamagedOutputError
        When a shard has another size than was written, or (``verify="full"``) other records.
    """
    tf = _tensorflow()
    check_verify(verify, VERIFY, "shard")
    path = _manifest_path(check_path(prefix_or_manifest, "prefix_or_manifest", "out/scene"))
    manifest = _Target.of(path.with_suffix("")).load()
    if manifest is None:
        raise IncompleteStoreError(
            f"no TFRecord manifest at {str(path)!r}; check the path: pass the prefix given to to_tfrecord (or its "
            ".json manifest), or write the set first with to_tfrecord(...)"
        )
    files = [path.parent / shard["path"] for shard in manifest["shards"]]
    missing = [p.name for p in files if not p.is_file()]
    if not manifest.get("complete") or missing:
        done = sum(bool(s.get("done")) for s in manifest["shards"])
        what = f"shard {missing[0]!r} is missing" if missing else f"only {done} of {len(files)} shards are done"
        raise IncompleteStoreError(
            f"the TFRecord set {str(path)!r} is incomplete ({what}): its to_tfrecord run was interrupted; run "
            "to_tfrecord again with the same arguments to finish it"
        )
    if verify:
        _check_files(tf, path, manifest, files, full=verify == "full")
    features = manifest["features"]
    description = {f["keys"]["pixels"]: tf.io.FixedLenFeature([], tf.string) for f in features.values()}
    description.update(row=tf.io.FixedLenFeature([], tf.int64), col=tf.io.FixedLenFeature([], tf.int64),
                       transform=tf.io.FixedLenFeature([], tf.string))

    size = _record_bytes(features)
    batch = 1 if size >= _PARSE_SINGLY else max(1, min(_PARSE_BATCH, _PARSE_BYTES // size))
    lead = [] if batch == 1 else [-1]

    def parse(records):
        example = (tf.io.parse_single_example if batch == 1 else tf.io.parse_example)(records, description)
        out = {key: _decode(tf, example[f["keys"]["pixels"]], f["dtype"], lead + f["shape"])
               for key, f in features.items()}
        transform = _decode(tf, example["transform"], "float64", lead + [6])
        out.update(row=example["row"], col=example["col"], transform=transform)
        return out

    records = tf.data.TFRecordDataset([str(p) for p in files], compression_type=manifest["compression"] or "")
    if batch == 1:
        return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # small records: parsing them one at a time costs more than their bytes
    return records.batch(batch).map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()


# --------------------------------------------------------------------------------------------------
# Streaming into tf.data
# --------------------------------------------------------------------------------------------------


def _open_patches(source: Any) -> xr.Dataset:
    """A Dataset of patches from a Dataset, a DataArray of patches, or a Zarr store (path or store object)."""
    if isinstance(source, xr.Dataset):
        return source
    if isinstance(source, xr.DataArray):
        name = source.name if source.name is not None and source.name not in source.dims else "patches"
        return source.to_dataset(name=name)
    from .zarr import FINGERPRINT, _open_group, open_patches

    group = _open_group(Path(source)) if isinstance(source, (str, os.PathLike)) else None
    if group is not None and FINGERPRINT in group.attrs:
        return open_patches(source, chunks=None)  # written by .patches.to_zarr: refused until complete
    try:  # without dask: xarray's lazy indexing reads just the slices asked for
        return xr.open_zarr(source, mask_and_scale=False, chunks=None)
    except Exception as err:  # zarr raises its own errors for a missing or malformed store
        raise PatchkitValueError(
            f"source={source!r} does not open as a Zarr store ({type(err).__name__}: {err}); pass a store "
            "written with patches.to_zarr(...), or a DataArray scene with sizes and strides"
        ) from err


def _store_bands(ds: xr.Dataset, features: Sequence[_Feature], budget: int) -> Iterator:
    """``_band_arrays`` of stored patches, read lazily a chunk (or less, under ``budget``) along the grid at a time."""
    names = [f.var for f in features]
    first = ds[names[0]]
    axis = _grid_of(first)[0]
    n = ds.sizes[axis]
    per_index = sum(ds[name].nbytes for name in names) // max(n, 1)
    step = max(1, budget // max(per_index, 1))
    if first.chunks is not None:
        chunks = first.chunks[first.get_axis_num(axis)]
    else:  # a Zarr array opened without dask records its chunks in the encoding
        size = first.encoding.get("preferred_chunks", {}).get(axis, n)
        chunks = (size,) * (n // size) + ((n % size,) if n % size else ())
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
            yield _band_arrays(ds.isel({axis: slice(a, min(a + step, start + size))}), features)
        start += size


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
        With ``sizes`` and ``strides``: a scene, cut on the fly one row band at a time
        (``.patches.iter`` under ``max_memory``; a dask-backed scene reads only each band's rows).
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
    tf = _tensorflow()
    batch_size = _check_count(batch_size, "batch_size")
    shuffle_buffer = _check_count(shuffle_buffer, "shuffle_buffer")
    budget = Budget.of(max_memory)
    if sizes is None and strides is None:
        if max_nodata_fraction is not None:
            raise PatchkitValueError(
                f"max_nodata_fraction={max_nodata_fraction!r} filters patches as a scene is cut, but the "
                "source holds patches already cut; pass max_nodata_fraction when writing them"
            )
        ds = _open_patches(source)
        features = _store_features(ds)

        def bands():
            return _store_bands(ds, features, budget)
    elif sizes is None or strides is None:
        raise PatchkitValueError(
            f"sizes={sizes!r} and strides={strides!r}: pass both to cut a scene, or neither for a source of patches"
        )
    else:
        if not isinstance(source, (xr.DataArray, xr.Dataset)):
            raise PatchkitTypeError(
                f"source is a {type(source).__name__}, but cutting patches (sizes={sizes!r}) needs an xarray "
                "DataArray or Dataset: open the raster first, e.g. rioxarray.open_rasterio(path, chunks=True)"
            )
        spec = PatchSpec(sizes, strides, rates, padding)
        fraction = check_fraction(max_nodata_fraction)
        features, _ = _scene_features(source, spec)
        args = (spec.sizes, spec.strides, spec.rates, spec.padding)
        source.patches.iter(*args, max_memory=budget)  # checks dims and budget now; reads nothing

        def bands():
            for band in source.patches.iter(*args, max_memory=budget, max_nodata_fraction=fraction):
                yield _band_arrays(band, features, copy=True)

    def generate():
        for rows, cols, arrays in bands():
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


class TFRecordSink(Sink):
    """Sharded ``tf.train.Example`` records and a manifest: :func:`to_tfrecord`, :func:`read_tfrecord`."""

    name = "tfrecord"
    output = ("tfrecord", "patches")
    description = "sharded TFRecord files of tf.train.Example patches and a manifest (read_tfrecord reads them)"

    def write(self, obj: Any, path: str | os.PathLike, spec: PatchSpec, **options: Any) -> Path:
        return to_tfrecord(obj, path, spec.sizes, spec.strides, spec.rates, spec.padding, **options)

    def progress(self, path: str | os.PathLike, rows: int) -> Progress:
        """Patch rows of the shards the manifest marks done (all of them once the set is complete)."""
        path = Path(path)
        manifest = read_json(path.with_name(path.name + ".json")) or {}
        done = rows if manifest.get("complete") else sum(b - a for s in manifest.get("shards", []) if s.get("done")
                                                         for a, b in [s["rows"]])
        return Progress(min(done, rows), rows, "rows")

    def open(self, path: str | os.PathLike, **kwargs: Any):
        return read_tfrecord(path, **kwargs)
