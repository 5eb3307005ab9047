"""Patches to resumable TFRecord shards of ``tf.train.Example`` records: :func:`to_tfrecord`, :func:`read_tfrecord`.

The records and the manifest's contents are :mod:`patchkit.sinks.tfcodec`'s; a patch's layout (HWC)
is :mod:`patchkit.labelled.tfdata`'s, which also streams patches into ``tf.data`` (:func:`patchkit.to_tf_dataset`).
Bands come from :func:`patchkit.labelled.layout.bands` and the bookkeeping from :mod:`patchkit.sinks._store`, as in every sink.

TFRecord files
    ``{prefix}-{shard:05d}-of-{count:05d}.tfrecord``, each a run of records in row-major patch order.
    Shard ``k`` holds the patches of patch rows ``[k R, (k + 1) R)``, with ``R`` (``rows_per_shard``)
    the number of patch rows whose raw bytes fit in ``shard_size``: a pure function of the arguments,
    so a rerun knows which shards it has. With ``max_nodata_fraction`` shards hold only the kept
    patches, and may be smaller or empty.

The manifest ``{prefix}.json``
    Features (dtype, shape, dims), CRS (WKT), spec, grid, shards (file, rows, patches, bytes, done),
    the count of patches, fingerprints of the source and of the arguments, and ``complete``. It is
    replaced atomically after every shard; ``complete`` becomes true last.

Resuming
    A shard is written beside its file (:class:`~patchkit.sinks.tfcodec.RecordFile`), read back (every
    record counted, its CRCs checked, its SHA-256 taken) and moved into place when whole; the manifest
    records its count, size, SHA-256 and the content digest of its patch rows. A rerun with the same
    source and arguments compares a sample of the finished shards with the source's pixels (all of
    them when a source file changed: :func:`patchkit.sinks._store.check_content`), keeps every shard
    the manifest records as done whose file has the recorded size, and writes the others. Output from
    another source or other arguments is refused (:class:`ForeignStoreError`) unless ``mode="w"``.

Reading
    :func:`read_tfrecord` checks every shard's size against the manifest (``verify="cheap"``) or
    reads every shard through (``verify="full"``: counts, CRCs and SHA-256) before it returns.

TensorFlow is imported by the functions that need it, never by ``import patchkit``.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import xarray as xr

from ..core.budget import DEFAULT_MAX_MEMORY, Budget
from ..core.spec import PatchSpec
from ..core.units import parse_bytes
from ..errors import DamagedOutputError, ForeignStoreError, IncompleteStoreError, PatchkitError, PatchkitValueError, SinkWriteError
from ..labelled.layout import bands, prepare
from ..labelled.nodata import check_fraction
from ..labelled.tfdata import band_arrays, scene_features, tensorflow
from ._store import EMPTY_ROW, check_mode, check_path, check_resume, check_verify, combine, read_json, row_digests, write_error
from ._progress import JobBar
from ._pipeline import pipelined
from .base import Pipeline, Progress, Sink, overlapped
from .tfcodec import FORMAT, PatchTransforms, Target as _Target, RecordFile, count_records, difference, examples, file_sha256, new_manifest, parse

__all__ = ["to_tfrecord", "read_tfrecord", "TFRecordSink", "FORMAT", "DEFAULT_SHARD_SIZE"]

DEFAULT_SHARD_SIZE = "128MiB"
#: ``verify`` values of :func:`read_tfrecord`.
VERIFY = ("cheap", "full", False)
_COMPRESSIONS = ("GZIP", "ZLIB")


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------


def _check_compression(compression: str | None) -> str | None:
    if compression is None or compression == "":
        return None
    if isinstance(compression, str) and compression.upper() in _COMPRESSIONS:
        return compression.upper()
    raise PatchkitValueError(f"compression={compression!r} is not one TFRecord files have; pass None, 'GZIP' or 'ZLIB'")


def _check_mode(mode: str | None) -> None:
    """:func:`~patchkit.sinks._store.check_mode`, with what the modes do to a TFRecord set."""
    try:
        check_mode(mode)
    except PatchkitValueError:
        raise PatchkitValueError(
            f"mode={mode!r} is not a mode to_tfrecord knows; pass None (write, or finish an interrupted "
            "run with the same arguments) or 'w' (delete what the prefix holds and write anew)"
        ) from None


# --------------------------------------------------------------------------------------------------
# The set on disk: its files, manifest and resume
# --------------------------------------------------------------------------------------------------


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
            f"write: {difference(old, fresh)}; pass mode='w' to replace it, or choose another prefix"
        )
    for shard, before in zip(fresh["shards"], old["shards"]):
        path = target.folder / shard["path"]
        if before.get("done") and path.is_file() and path.stat().st_size == before.get("bytes"):
            shard.update({k: before.get(k) for k in ("count", "bytes", "sha256", "content")}, done=True)
    if all(s["done"] for s in fresh["shards"]):
        fresh.update(count=sum(s["count"] for s in fresh["shards"]), complete=bool(old.get("complete")))
    return fresh, old.get("source_files")


def _tf_write_error(what: str, where: Path, err: Exception) -> SinkWriteError:
    """A :class:`SinkWriteError` for a TensorFlow error while writing (TensorFlow raises no OSError)."""
    text = str(err)
    code = errno.ENOSPC if "No space left" in text else errno.EFBIG if "too large" in text else errno.EIO
    return write_error(what, where, OSError(code, text.strip().splitlines()[0] if text.strip() else type(err).__name__),
                       "the finished shards")


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


class _ShardWriter:
    """Writes the shards of a manifest in order, each a :class:`~patchkit.sinks.tfcodec.RecordFile`; a shard in
    place is recorded in the manifest (its count, size, SHA-256 and the content digest of its rows)."""

    def __init__(self, tf, target: _Target, manifest: dict, compression: str | None, digests: dict) -> None:
        self._tf, self._target, self._manifest, self._digests = tf, target, manifest, digests
        self._compression = compression
        self._next = 0  # the first shard not yet finished
        self._file: RecordFile | None = None  # shard self._next, once opened

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
            while self._next < k:
                self._finish(self._next)
                self._next += 1
            if self.pending(k):
                self._opened(k).write(records)

    def close(self) -> None:
        """Finish every remaining shard (those that got no patch are written empty)."""
        self.write(len(self._manifest["shards"]) - 1, iter(()))
        with self._writing():
            self._finish(self._next)
        self._next = len(self._manifest["shards"])

    def abort(self) -> None:
        """Drop the shard being written (a rerun writes it again)."""
        if self._file is not None:
            self._file.abort()
            self._file = None

    def _opened(self, k: int) -> RecordFile:
        if self._file is None:
            self._file = RecordFile(self._tf, self._target.folder / self._manifest["shards"][k]["path"], self._compression)
        return self._file

    def _finish(self, k: int) -> None:
        shard = self._manifest["shards"][k]
        if shard["done"]:
            return
        file = self._opened(k)
        short = file.close()
        if short is not None:
            raise write_error("the TFRecord set", self._target.manifest, short, "the finished shards") from short
        sha = file.place()
        self._file = None
        content = combine(self._digests.get(r, EMPTY_ROW) for r in range(*shard["rows"]))
        shard.update(count=file.records, bytes=file.path.stat().st_size, sha256=sha, content=content, done=True)
        self._target.save(self._manifest)


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

    Streams row bands of patches (:func:`patchkit.labelled.layout.bands`) under ``max_memory``. The
    shard files and the manifest ``{prefix}.json`` are described in :mod:`patchkit.sinks.tfrecord`, the
    records in :mod:`patchkit.sinks.tfcodec`.

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
        A progress bar: patches, bytes written and GB/s (shown where the output is a terminal or a notebook).
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
    tf = tensorflow()
    spec = PatchSpec(sizes, strides, rates, padding)
    fraction = check_fraction(max_nodata_fraction)
    compression = _check_compression(compression)
    _check_mode(mode)
    max_memory = Budget.of(max_memory)
    features, image = scene_features(obj, spec)
    prepared = prepare(obj, spec, max_nodata_fraction=fraction, max_memory=max_memory)
    pipe, _ = _SINK.write_pipeline(prepared, max_memory, backend)  # checks the budget and the backend; reads nothing
    target = _Target.of(prefix)
    shard_bytes = parse_bytes(shard_size, "shard_size")
    fresh = new_manifest(obj, features, spec, image, fraction, compression, shard_bytes, target.shard)
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
        _write_shards(tf, target, manifest, prepared, features, compression, pipe, backend, progress)
    target.drop_partials()
    if not manifest["complete"]:
        manifest.update(count=sum(s["count"] for s in manifest["shards"]), complete=True)
        target.save(manifest)
    return target.manifest


def _write_shards(tf, target: _Target, manifest: dict, prepared, features, compression, pipe: Pipeline, backend, progress) -> None:
    """Write every shard not done, band by band in the pipeline ``pipe``; TensorFlow's and the file system's errors as
    SinkWriteError."""
    per_shard, oh = manifest["rows_per_shard"], manifest["grid_shape"][0]
    done = np.zeros(oh, bool)
    for shard in manifest["shards"]:
        done[slice(*shard["rows"])] = shard["done"]
    digests: dict[int, str] = {}
    writer = _ShardWriter(tf, target, manifest, compression, digests)
    transforms = PatchTransforms(prepared)

    def write_band(band_rows: slice, band) -> None:
        digests.update(row_digests(band, band_rows))
        rows, cols, arrays = band_arrays(band, features)
        shard_of = rows // per_shard
        coefficients = None
        for piece in np.split(np.arange(rows.size), np.flatnonzero(np.diff(shard_of)) + 1):
            k = int(shard_of[piece[0]]) if piece.size else None
            if k is None or not writer.pending(k):
                continue
            coefficients = transforms(rows, cols) if coefficients is None else coefficients
            writer.write(k, examples(tf, features, rows, cols, arrays, coefficients, piece))

    def land(band_rows: slice, futures: list) -> None:
        futures[0].result()
        bar.band(band_rows, done)

    with JobBar(prepared, f"patches -> {target.name}", done, progress) as bar:
        try:  # band n's records are written on one thread (in order) while band n + 1 is made
            stream = bands(prepared, max_memory=pipe.budget, backend=backend, done=done, in_flight=pipe.in_flight)
            pipelined(stream, pipe.in_flight, 1, lambda pool, rows, band: [pool.submit(write_band, rows, band)], land)
            writer.close()
        except BaseException:
            writer.abort()
            raise


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def _manifest_path(prefix_or_manifest: str | os.PathLike) -> Path:
    path = Path(prefix_or_manifest)
    return path if path.suffix == ".json" else _Target.of(prefix_or_manifest).manifest


def _check_files(tf, path: Path, manifest: dict, files: list[Path], full: bool) -> None:
    """Raise :class:`DamagedOutputError` unless every shard has its size (and, ``full``, its records and SHA-256)."""
    for shard, file in zip(manifest["shards"], files):
        size = file.stat().st_size
        problem = None
        if size != shard["bytes"]:
            problem = f"has {size} bytes, {shard['bytes']} when it was written (cut short, or written over)"
        elif full and count_records(tf, file, manifest["compression"] or "") != shard["count"]:
            problem = f"does not read back as its {shard['count']} whole records"
        elif full and shard.get("sha256") and file_sha256(file) != shard["sha256"]:
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
    tf = tensorflow()
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
    records = tf.data.TFRecordDataset([str(p) for p in files], compression_type=manifest["compression"] or "")
    return parse(tf, records, manifest["features"])


class TFRecordSink(Sink):
    """Sharded ``tf.train.Example`` records and a manifest: :func:`to_tfrecord`, :func:`read_tfrecord`."""

    name = "tfrecord"
    output = ("tfrecord", "patches")
    description = "sharded TFRecord files of tf.train.Example patches and a manifest (read_tfrecord reads them)"
    buffers = "the record being written"
    buffers_fix = "use smaller sizes"

    def write(self, obj: Any, path: str | os.PathLike, spec: PatchSpec, **options: Any) -> Path:
        return to_tfrecord(obj, path, spec.sizes, spec.strides, spec.rates, spec.padding, **options)

    def reserve(self, spec: PatchSpec, shape: tuple[int, int, int, int], dtype: Any, *, filtered: bool = False,
                writers: int = 1, **options: Any) -> int:
        """Three copies of a patch for the writer: its HWC bytes, the ``tf.train.Example`` and its serialised record."""
        return writers * 3 * spec.patch_nbytes(shape, dtype)

    def pipelines(self) -> tuple[tuple[int, int], ...]:
        """Two bands in flight (records of one written while the next is made) when the budget allows; else one."""
        return overlapped(1)

    def progress(self, path: str | os.PathLike, rows: int) -> Progress:
        """Patch rows of the shards the manifest marks done (all of them once the set is complete)."""
        path = Path(path)
        manifest = read_json(path.with_name(path.name + ".json")) or {}
        done = rows if manifest.get("complete") else sum(b - a for s in manifest.get("shards", []) if s.get("done")
                                                         for a, b in [s["rows"]])
        return Progress(min(done, rows), rows, "rows")

    def open(self, path: str | os.PathLike, **kwargs: Any):
        return read_tfrecord(path, **kwargs)


_SINK = TFRecordSink()
