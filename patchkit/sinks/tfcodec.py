"""The records of the TFRecord sink: features to ``tf.train.Example`` and back.

Every record is one patch (a place on the map, ``(row, col)``), its arrays laid out as
:mod:`patchkit.labelled.tfdata` lays them out (:class:`~patchkit.labelled.tfdata.Feature`: HWC, the
dims other than y, x folded into ``C``), with the features:

* ``patch`` -- the raw bytes of the patch, little-endian, C order of ``(kh, kw, C)``;
* ``shape`` -- int64 list ``[kh, kw, C]``; ``dtype`` -- bytes, the numpy name (``b"uint16"``);
  with several variables: ``{name}``, ``{name}/shape``, ``{name}/dtype`` per variable;
* ``row``, ``col`` -- int64, the patch's place on the grid (``patch_row``, ``patch_col``);
* ``transform`` -- the raw bytes of 6 float64 ``(a, b, c, d, e, f)``, the patch's affine transform
  (:class:`PatchTransforms`: :func:`patchkit.labelled.geo.patch_transforms` of the source's
  :func:`~patchkit.labelled.geo.source_transform`, the numbers of ``.patches.grid`` and of the
  GeoTIFF chips; NaN along an axis that is not regular). A ``float_list`` would be float32, which
  rounds a UTM northing of 4,200,000 m to the nearest 0.5 m.

:func:`examples` makes records, :class:`RecordFile` writes them to a file that is whole once it is
at its path, and :func:`parse` reads them back as tensors with static shapes; :class:`Target` names a
set's files and keeps its manifest. TensorFlow is passed in by the caller, never imported here.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..core.spec import PatchSpec
from ..errors import ForeignStoreError, GeoreferenceError, PatchkitValueError
from ..labelled.geo import crs_of, geotransform_of, patch_transforms, source_transform
from ..labelled.tfdata import Feature
from ._store import (check_path, describe, digest, move_into_place, partial_path, read_json, remove, short_write, source_files,
                     write_json)

__all__ = ["FORMAT", "VERSION", "Target", "DEFAULT_NAME", "PatchTransforms", "RecordFile", "new_manifest", "difference", "feature_record", "examples", "decode", "record_bytes", "parse", "count_records",
           "file_sha256"]

#: ``format`` of the manifest; ``version`` changes when the record layout does.
FORMAT, VERSION = "patchkit-tfrecord", 1
#: Records smaller than 64 KiB are parsed in batches of up to 256 and about 1 MiB: that read 32 x 32 x 4
#: uint16 patches 2-3x faster (0.05-0.14 -> 0.17-0.31 GB/s on 2 cores); larger records gain nothing
#: and would pay an extra copy, so they are parsed one by one.
PARSE_BATCH, PARSE_BYTES, PARSE_SINGLY = 256, 2**20, 2**16
#: A regular axis of unit pixels, beside which :func:`~patchkit.labelled.geo.source_transform` judges one axis alone.
_UNIT_AXIS = np.array([0.5, 1.5])


# --------------------------------------------------------------------------------------------------
# The manifest: what a set holds, and of which run
# --------------------------------------------------------------------------------------------------


def _json_values(values: Any) -> list:
    values = np.asarray(values)
    return values.tolist() if values.dtype.kind in "biuf" else [str(v) for v in values.tolist()]


def feature_record(obj: Any, feature: Feature) -> dict:
    """The manifest's entry of ``feature``: variable, dtype, shape, the dims folded into channels, the record's keys."""
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


def _source_fingerprint(obj: Any, crs: str | None) -> str:
    """A digest of what identifies the source without reading its pixels (as every sink identifies it)."""
    return digest({"variables": describe(obj), "crs": crs})


def _crs_wkt(obj: Any) -> str | None:
    crs = crs_of(obj)
    if crs is None:
        return None
    return crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs)


def new_manifest(obj: Any, features: Sequence[Feature], spec: PatchSpec, image: tuple[int, int], fraction: float | None,
                 compression: str | None, shard_size: int, shard_name: Callable[[int, int], str]) -> dict:
    """The manifest of a run that has written nothing yet; ``shard_name(k, count)`` names shard ``k``."""
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
        "features": {f.key: feature_record(obj, f) for f in features},
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
            {"path": shard_name(k, count), "rows": [k * per_shard, min((k + 1) * per_shard, oh)],
             "count": None, "bytes": None, "done": False}
            for k in range(count)
        ],
        "count": None,
        "complete": False,
    }


def difference(old: dict, new: dict) -> str:
    """What differs between two manifests' runs, for the refusal message."""
    if old.get("fingerprint", {}).get("source") != new["fingerprint"]["source"]:
        return "it was written from another source (its dims, coordinates, attrs, CRS or file differ)"
    changed = [k for k in ("spec", "max_nodata_fraction", "rows_per_shard", "compression", "features", "version")
               if old.get(k) != new.get(k)]
    changes = "; ".join(f"{k} {old.get(k)!r}, now {new.get(k)!r}" for k in changed)
    return f"it was written with other arguments: {changes}"


# --------------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------------


def _axis_coefficients(values: np.ndarray, step: float | None, axis: int) -> tuple[float, float]:
    """``(a, c)`` (``axis`` 0, x) or ``(e, f)`` (``axis`` 1, y) of :func:`source_transform`; NaN when not regular."""
    pair = (values, _UNIT_AXIS) if axis == 0 else (_UNIT_AXIS, values)
    steps = (step, None) if axis == 0 else (None, step)
    try:
        t = source_transform(*pair, steps=steps)
    except GeoreferenceError:
        return math.nan, math.nan
    return (t.a, t.c) if axis == 0 else (t.e, t.f)


class PatchTransforms:
    """The affine coefficients of the patches of a prepared source (:func:`patchkit.labelled.layout.prepare`).

    :func:`~patchkit.labelled.geo.patch_transforms` of the source's north-up transform, kept per
    axis: a north-up patch's ``(a, c)`` depend on its column only and ``(e, f)`` on its row only, so
    this holds ``O(rows + cols)`` numbers, not the whole grid's. An axis whose pixel centres are not
    regular gives NaN coefficients.
    """

    def __init__(self, prepared: Any) -> None:
        from affine import Affine

        job = next(iter(prepared.jobs.values()))
        obj, layout, spec = job.obj, job.layout, prepared.spec
        gt = geotransform_of(obj)
        coefficients = []
        for axis, dim in enumerate((layout.x, layout.y)):
            values = obj[dim].values if dim in obj.coords else np.arange(obj.sizes[dim])
            coefficients.append(_axis_coefficients(values, None if gt is None else (gt.a, gt.e)[axis], axis))
        (a, c), (e, f) = coefficients
        transform = Affine(a, 0.0, c, 0.0, e, f)
        (h, w), (kh, kw) = (obj.sizes[layout.y], obj.sizes[layout.x]), spec.effective_sizes
        self.rows = patch_transforms(transform, spec, (h, kw))[:, 0]  # a grid one column wide: every row's (e, f)
        self.cols = patch_transforms(transform, spec, (kh, w))[0]  # one row high: every column's (a, c)

    def __call__(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``[n, 6]`` coefficients ``(a, b, c, d, e, f)`` of the patches at ``(rows[i], cols[i])``."""
        out = np.zeros((len(rows), 6))
        out[:, 0], out[:, 2] = self.cols[cols, 0], self.cols[cols, 2]
        out[:, 4], out[:, 5] = self.rows[rows, 4], self.rows[rows, 5]
        return out


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------


def examples(tf, features: Sequence[Feature], rows: np.ndarray, cols: np.ndarray, arrays: dict, transforms: np.ndarray,
             index: Sequence[int]) -> Iterator[bytes]:
    """Serialized ``tf.train.Example`` of patches ``index`` of a band (:func:`patchkit.labelled.tfdata.band_arrays`)."""
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


def decode(tf, raw, dtype: str, shape: Sequence[int]):
    """Raw little-endian bytes (one string, or a batch with ``shape`` starting at -1) as a tensor of ``shape``.

    ``decode_raw`` has no uint32/uint64: those are decoded as bytes and bitcast.
    """
    if dtype in ("uint32", "uint64"):
        size = np.dtype(dtype).itemsize
        flat = tf.bitcast(tf.reshape(tf.io.decode_raw(raw, tf.uint8), [-1, size]), tf.as_dtype(dtype))
    else:
        flat = tf.io.decode_raw(raw, tf.as_dtype(dtype))
    return tf.reshape(flat, shape)


def record_bytes(features: dict) -> int:
    """The bytes of the pixels of one record, from the manifest's ``features``."""
    return sum(math.prod(f["shape"]) * np.dtype(f["dtype"] if f["dtype"] != "bfloat16" else "uint16").itemsize
               for f in features.values())


def parse(tf, records, features: dict):
    """The elements of a ``tf.data`` dataset of records, from the manifest's ``features``, in order.

    Elements ``{key: (kh, kw, C), "row": int64, "col": int64, "transform": float64 (6,)}`` with static
    shapes. Small records are parsed in batches (:data:`PARSE_BATCH`), large ones one by one.
    """
    description = {f["keys"]["pixels"]: tf.io.FixedLenFeature([], tf.string) for f in features.values()}
    description.update(row=tf.io.FixedLenFeature([], tf.int64), col=tf.io.FixedLenFeature([], tf.int64),
                       transform=tf.io.FixedLenFeature([], tf.string))
    size = record_bytes(features)
    batch = 1 if size >= PARSE_SINGLY else max(1, min(PARSE_BATCH, PARSE_BYTES // size))
    lead = [] if batch == 1 else [-1]

    def one(serialized):
        example = (tf.io.parse_single_example if batch == 1 else tf.io.parse_example)(serialized, description)
        out = {key: decode(tf, example[f["keys"]["pixels"]], f["dtype"], lead + f["shape"]) for key, f in features.items()}
        transform = decode(tf, example["transform"], "float64", lead + [6])
        out.update(row=example["row"], col=example["col"], transform=transform)
        return out

    if batch == 1:
        return records.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # small records: parsing them one at a time costs more than their bytes
    return records.batch(batch).map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()


# --------------------------------------------------------------------------------------------------
# Files of records
# --------------------------------------------------------------------------------------------------


def count_records(tf, path: Path, compression: str) -> int:
    """The number of whole records in a TFRecord file (every CRC checked); -1 when it is cut or damaged."""
    try:
        return int(tf.data.TFRecordDataset(str(path), compression_type=compression).reduce(np.int64(0), lambda n, _: n + 1))
    except tf.errors.OpError:  # DataLossError: a record cut short, or a CRC that does not match
        return -1


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read 4 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class RecordFile:
    """One TFRecord file, written beside ``path`` (:func:`~patchkit.sinks._store.partial_path`) and moved
    into place (:meth:`place`) once it reads back whole (:meth:`close`): a file at ``path`` holds every record written."""

    def __init__(self, tf, path: Path, compression: str | None) -> None:
        self._tf, self.path, self.compression = tf, path, compression or ""
        self.partial = partial_path(path)
        self._writer = tf.io.TFRecordWriter(str(self.partial), options=tf.io.TFRecordOptions(compression_type=self.compression))
        self.records = 0
        self.nbytes = 0  # the bytes of the records

    def write(self, records: Iterable[bytes]) -> None:
        """Append ``records``."""
        for record in records:
            self._writer.write(record)
            self.records += 1
            self.nbytes += len(record)

    def close(self) -> OSError | None:
        """Close, sync and read the file back (every record counted, its CRCs checked).

        Returns
        -------
        OSError or None
            None when it holds every record written, whole; else the cause
            (:func:`~patchkit.sinks._store.short_write`: TensorFlow may write a short file without an error).
        """
        self._writer.close()
        with open(self.partial, "rb") as f:
            os.fsync(f.fileno())
        found = count_records(self._tf, self.partial, self.compression)
        if found == self.records:
            return None
        expected = self.nbytes + 16 * self.records  # each record: its bytes, a length and two CRCs
        return short_write(self.partial, expected, f"the shard reads back with {max(found, 0)} of its {self.records} records")

    def place(self) -> str:
        """Move the file, closed and read back whole, into place; its SHA-256."""
        sha = file_sha256(self.partial)
        move_into_place(self.partial, self.path)
        return sha

    def abort(self) -> None:
        """Close and delete the unfinished file."""
        self._writer.close()
        remove(self.partial, strict=False)


# --------------------------------------------------------------------------------------------------
# The set on disk
# --------------------------------------------------------------------------------------------------

#: The name of the files when the prefix names a folder (``"out/"``, or a folder that exists).
DEFAULT_NAME = "patches"


@dataclass(frozen=True)
class Target:
    """Where a TFRecord set lives: ``{folder}/{name}.json`` and ``{folder}/{name}-KKKKK-of-NNNNN.tfrecord``."""

    folder: Path
    name: str

    @classmethod
    def of(cls, prefix: str | os.PathLike) -> "Target":
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
        """Every shard file of this prefix, whatever its count (and the ``{file}.partial`` older runs wrote)."""
        if not self.folder.is_dir():
            return []
        pattern = re.compile(re.escape(self.name) + r"-\d{5}-of-\d{5}\.tfrecord(\.partial)?")
        return sorted(p for p in self.folder.iterdir() if pattern.fullmatch(p.name))

    def load(self) -> dict | None:
        """The manifest, None when there is none; an unreadable one is :class:`ForeignStoreError`."""
        manifest = read_json(self.manifest)
        if manifest is None and not self.manifest.exists():
            return None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            why = f"format {manifest.get('format')!r}" if isinstance(manifest, dict) else "it does not read as a JSON object"
            raise ForeignStoreError(
                f"{str(self.manifest)!r} is not a patchkit TFRecord manifest ({why}); choose another prefix, "
                "or pass mode='w' to replace it"
            )
        return manifest

    def save(self, manifest: dict) -> None:
        """Replace the manifest atomically (:func:`~patchkit.sinks._store.write_json`)."""
        write_json(self.manifest, manifest)

    def partials(self) -> list[Path]:
        """What killed runs left beside the set: shards being written and manifests being replaced."""
        hidden = [f".{glob.escape(self.name)}-*.partial", f".{glob.escape(self.manifest.name)}.*.partial"]
        found = [p for p in self.existing_shards() if p.suffix == ".partial"]
        return found + [p for pattern in hidden for p in self.folder.glob(pattern)]

    def drop_partials(self) -> None:
        """Delete :meth:`partials` (call when nothing is being written)."""
        for path in self.partials():
            remove(path, strict=False)

    def clear(self) -> None:
        """Delete the set: its shards and its manifest."""
        for path in self.existing_shards():
            remove(path)
        self.manifest.unlink(missing_ok=True)
