"""What every resumable sink shares: the fingerprint of a run, atomic small files, finished rows.

A run is identified by a *fingerprint*: a hash of the spec, the sink's options and a description of
the source (names, dims, shape, dtype, attrs and coordinates). A rerun with the same fingerprint
resumes; any other is refused unless the caller asks to overwrite.

Pixels are identified by *content digests*, without reading the scene twice: as each band is
written, a SHA-256 of every patch row's bytes (:func:`row_digests`) is combined into one digest per
band and logged beside the band's rows (:class:`RowLog`). On resume, :func:`check_content` extracts a
sample of the finished bands again (the first, the middle and the last) and compares their digests;
every finished band when the source's files changed size or modification time
(:func:`source_files`). A mismatch is :class:`~patchkit.errors.ChangedSourceError`.

What this detects: a scene with the same grid and other pixels (another date of the same tile,
``scene + 1``) whenever the change reaches a sampled band, and any change to a source file's size
or time stamp. What it does not: a change confined to unsampled bands of an in-memory or dask
source (or of a file rewritten with its old size and time stamp). Its cost: hashing each band once
as it is written (SHA-256 runs at 1.3-1.5 GB/s on one core here, releasing the GIL), and extracting
three bands again on resume.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..errors import ChangedSourceError, ForeignStoreError, PatchkitTypeError, PatchkitValueError, SinkWriteError, shown
from ..core.spec import PatchSpec

__all__ = ["digest", "describe", "fingerprint", "write_json", "read_json", "RowLog", "refuse_foreign", "write_error", "MODES",
           "short_write", "check_resume", "row_digests", "combine", "EMPTY_ROW", "source_files", "check_content", "sample",
           "check_path", "check_source", "check_verify", "check_mode", "remove", "partial_path", "move_into_place", "band_digest",
           "raw_bytes"]

#: ``mode`` values of the sinks: None resumes a run with the same fingerprint, "w" starts afresh.
MODES = (None, "w")
#: Bumped when what a sink writes changes, so that old outputs are not resumed by new code.
FORMAT = 2


def _describe(value: Any) -> Any:
    """A JSON-able description of an attribute or coordinate value."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    array = np.asarray(value)
    if array.size <= 4096 and array.dtype.kind in "biufcUSM":
        return [str(array.dtype), list(array.shape), hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()]
    return [str(array.dtype), list(array.shape), repr(array.ravel()[:3].tolist()), repr(array.ravel()[-3:].tolist())]


def digest(value: Any) -> str:
    """A SHA-256 of ``value``'s canonical JSON (keys sorted; other objects by ``str``)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def describe(obj: Any) -> dict:
    """A JSON-able description of a DataArray's or Dataset's variables: dims, shape, dtype, attrs, coordinates.

    Small coordinate and attribute arrays are hashed whole, large ones by their ends; pixels are never read.
    """
    variables = {obj.name: obj} if hasattr(obj, "dims") and not hasattr(obj, "data_vars") else dict(obj.data_vars)
    return {
        str(name): {
            "dims": list(var.dims),
            "shape": list(var.shape),
            "dtype": str(var.dtype),
            "attrs": {str(k): _describe(v) for k, v in sorted(var.attrs.items())},
            "coords": {str(k): [list(c.dims), _describe(c.values), {str(a): _describe(b) for a, b in sorted(c.attrs.items())}]
                       for k, c in sorted(var.coords.items(), key=lambda kv: str(kv[0]))},
        }
        for name, var in variables.items()
    }


def fingerprint(obj: Any, spec: PatchSpec, **options: Any) -> str:
    """A hash of what a sink writes: the source's description, the spec and the options."""
    return digest({
        "format": FORMAT,
        "spec": spec.to_dict(),
        "options": {k: _describe(v) if not isinstance(v, (list, tuple)) else [_describe(x) for x in v] for k, v in sorted(options.items())},
        "variables": describe(obj),
    })


def write_json(path: str | Path, data: dict) -> None:
    """Write ``data`` as JSON atomically: a temporary file beside it, synced to disk, then a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: str | Path) -> dict | None:
    """The JSON object in ``path``, or None when there is none (or it is not JSON)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class RowLog:
    """Which patch rows are finished, kept as ``[start, stop)`` intervals (JSON-friendly), and the
    content digest of every band written, as ``[start, stop, digest]`` entries."""

    def __init__(self, rows: int, intervals: Iterable = (), bands: Iterable = ()):
        self.done = np.zeros(rows, bool)
        for start, stop in intervals:
            self.done[int(start): int(stop)] = True
        self.bands = [[int(a), int(b), str(h)] for a, b, h in bands]

    def add(self, rows: slice, content: str | None = None) -> None:
        """Mark ``rows`` finished; ``content`` is the :func:`combine` of their :func:`row_digests`."""
        self.done[rows] = True
        if content is not None:
            self.bands = [e for e in self.bands if e[1] <= rows.start or e[0] >= rows.stop]
            self.bands.append([int(rows.start), int(rows.stop), content])
            self.bands.sort()

    def forget(self, entry: list) -> None:
        """Mark the rows of a logged band unfinished again (its output is missing or damaged)."""
        self.bands.remove(entry)
        self.done[entry[0]: entry[1]] = False

    def intervals(self) -> list[list[int]]:
        edges = np.flatnonzero(np.diff(np.concatenate(([0], self.done.astype(np.int8), [0]))))
        return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]

    @property
    def count(self) -> int:
        return int(self.done.sum())


# --------------------------------------------------------------------------------------------------
# Content digests
# --------------------------------------------------------------------------------------------------


def _patch_arrays(band: Any) -> list:
    """The patch variables of a labelled band, sorted by name, each with the grid dims first."""
    variables = [band] if not hasattr(band, "data_vars") else [band[k] for k in sorted(band.data_vars, key=str)]
    out = []
    for var in variables:
        grid = [d for d in ("patch_row", "patch_col", "patch") if d in var.dims]
        if grid:
            out.append(var.transpose(*grid, ...))
    return out


#: Bytes a hash is fed at a time, at least, where the data lies in pieces (:func:`hash_into`).
HASH_PIECE = 1 << 16


def raw_bytes(array: np.ndarray) -> np.ndarray:
    """The bytes of ``array`` in C order, as a uint8 array (any dtype: bfloat16 has no buffer format)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def hash_into(h: Any, array: np.ndarray) -> None:
    """Feed ``h`` the bytes of ``array`` in C order, without copying where they lie in pieces of at least
    :data:`HASH_PIECE` bytes (a patch row of a band buffer is a view whose patches lie apart); smaller
    pieces are copied in blocks of about that size."""
    array = np.asarray(array)
    split = _contiguous_from(array)
    while split > 0 and math.prod(array.shape[split:]) * array.itemsize < HASH_PIECE:
        split -= 1
    for index in np.ndindex(*array.shape[:split]):
        h.update(raw_bytes(array[index]))


def _contiguous_from(array: np.ndarray) -> int:
    """The first axis from which ``array``'s trailing axes are laid out in C order without gaps."""
    expected = array.itemsize
    for axis in range(array.ndim - 1, -1, -1):
        if array.shape[axis] != 1 and array.strides[axis] != expected:
            return axis + 1
        expected *= array.shape[axis]
    return 0


def row_digests(band: Any, rows: slice) -> dict[int, str]:
    """A SHA-256 of the bytes of every patch row ``rows`` of a labelled band (rows without a kept patch too).

    The bytes of a row are its patches in column order, each in C order of its dims after the grid's
    (``*leading, *channels, y, x``: a GeoTIFF chip's band order), variable after variable by name.
    """
    hashes = {row: hashlib.sha256() for row in range(rows.start, rows.stop)}
    for var in _patch_arrays(band):
        data = var.data
        if "patch" in var.dims:
            places = np.asarray(var["patch_row"].values)
            starts = np.searchsorted(places, list(hashes), side="left")
            stops = np.searchsorted(places, list(hashes), side="right")
            for (row, h), a, b in zip(hashes.items(), starts, stops):
                hash_into(h, data[a:b])
        else:
            for i, h in enumerate(hashes.values()):
                hash_into(h, data[i])
    return {row: h.hexdigest() for row, h in hashes.items()}


#: The digest of a patch row without a (kept) patch.
EMPTY_ROW = hashlib.sha256().hexdigest()


def combine(digests: Iterable[str]) -> str:
    """One digest of several (of consecutive rows, in order)."""
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def band_digest(band: Any, rows: slice) -> str:
    """The content digest of a labelled band: the :func:`combine` of its :func:`row_digests`, as a band is logged."""
    return combine(row_digests(band, rows).values())


def source_files(obj: Any) -> list[list]:
    """``[path, size, mtime_ns]`` of every file the source was read from (``encoding["source"]``), sorted."""
    variables = [obj] if not hasattr(obj, "data_vars") else list(obj.data_vars.values())
    paths = {str(v.encoding["source"]) for v in [obj, *variables] if isinstance(v.encoding.get("source"), (str, os.PathLike))}
    found = []
    for path in sorted(paths):
        try:
            stat = os.stat(path)
        except OSError:
            continue  # a URL or a file gone since: nothing to compare
        found.append([path, int(stat.st_size), int(stat.st_mtime_ns)])
    return found


def sample(entries: list) -> list:
    """The logged bands checked on resume: the first, the middle and the last."""
    if len(entries) <= 3:
        return list(entries)
    return [entries[0], entries[len(entries) // 2], entries[-1]]


def check_content(entries: list, recompute: Callable[[np.ndarray], Iterator], rows: int, where: Any) -> None:
    """Extract the rows of ``entries`` again and compare their digests with the logged ones.

    ``recompute(done)`` yields ``(rows, band)`` for the rows not ``done`` (as :func:`patchkit.labelled.layout.bands`).

    Raises
    ------
    ChangedSourceError
        When a band's pixels differ from those written: the source changed since.
    """
    if not entries:
        return
    skip = np.ones(rows, bool)
    for a, b, _ in entries:
        skip[a:b] = False
    found: dict[int, str] = {}
    for band_rows, band in recompute(skip):
        found.update(row_digests(band, band_rows))
    for a, b, logged in entries:
        if combine(found.get(r, EMPTY_ROW) for r in range(a, b)) != logged:
            raise ChangedSourceError(
                f"{where} holds patch rows {a}-{b - 1} cut from other pixels than the source has now (same grid, "
                "dims and attrs, other values: another date of the tile, or a changed file); pass mode='w' "
                "to write it again from this source, or choose another path"
            )


def check_resume(prepared: Any, logged: list, files: list | None, max_memory: Any, where: str) -> None:
    """Compare an output's logged bands with its source's pixels now, before resuming or returning it.

    A sample of the bands (:func:`sample`), or all of them when the source's files (:func:`source_files`)
    differ from ``files``, those recorded when the output was started.
    """
    from ..labelled.layout import bands

    changed = files != source_files(prepared.obj)
    check_content(logged if changed else sample(logged), lambda done: bands(prepared, max_memory=max_memory, done=done),
                  prepared.grid_shape[0], where)


# --------------------------------------------------------------------------------------------------
# Arguments every sink checks before it touches its output
# --------------------------------------------------------------------------------------------------


def check_path(value: Any, name: str, example: str) -> Path:
    """``value`` (a str or path-like naming something) as a :class:`Path`; else a patchkit error naming ``name``."""
    if not isinstance(value, (str, os.PathLike)):
        raise PatchkitTypeError(f"{name}={shown(value)} (a {type(value).__name__}) is not a path; pass one such as {example!r}")
    if not os.fspath(value):
        raise PatchkitValueError(f"{name}={shown(value)} names no file; pass a path such as {example!r}")
    return Path(value)


def check_source(obj: Any, spec: Any, method: str) -> None:
    """Refuse an ``obj`` that is not an xarray object and a ``spec`` that is not a :class:`PatchSpec`."""
    import xarray as xr

    if not isinstance(obj, (xr.DataArray, xr.Dataset)):
        raise PatchkitTypeError(
            f"obj is a {type(obj).__name__}, but {method} writes the patches of an xarray DataArray or Dataset: wrap an "
            "array with xr.DataArray(array, dims=('band', 'y', 'x')), or open a raster with rioxarray.open_rasterio(path)"
        )
    if not isinstance(spec, PatchSpec):
        raise PatchkitTypeError(
            f"spec={shown(spec)} (a {type(spec).__name__}) is not a PatchSpec; pass PatchSpec(sizes, strides, rates, "
            f"padding), or call da.patches.{method}(path, sizes, strides) instead"
        )


def check_verify(verify: Any, choices: tuple, what: str) -> None:
    """Refuse a ``verify`` that is not one of ``choices`` (``"cheap"``, ``"full"``, False), saying what each does."""
    if isinstance(verify, (str, bool)) and verify in choices:
        return
    raise PatchkitValueError(
        f"verify={shown(verify)} is not one of {choices}: pass 'cheap' (checks every {what} is there), 'full' (also "
        "reads every pixel back) or False (checks only the completion marker)"
    )


def check_mode(mode: Any) -> None:
    """Refuse a ``mode`` that is not one of :data:`MODES`."""
    if mode is not None and not (isinstance(mode, str) and mode in MODES):
        raise PatchkitValueError(
            f"mode={shown(mode)} is not one of {MODES}: pass None to resume a run with the same arguments (or return "
            "its finished output), or 'w' to overwrite"
        )


def refuse_foreign(what: str, where: Any, found: str | None) -> None:
    """Raise :class:`ForeignStoreError` for an output that another run (or not patchkit) wrote."""
    origin = "is not a patchkit output" if found is None else "was written from another source, spec or options"
    raise ForeignStoreError(
        f"{what} {str(where)!r} exists and {origin}; pass mode='w' to overwrite it, or choose another path"
    )


def remove(path: Path, strict: bool = True) -> None:
    """Delete a file or a folder tree; ``strict=False`` ignores what cannot be deleted, or is not there."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=not strict)
    elif strict:
        path.unlink()
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def partial_path(path: Path, suffix: str = "") -> Path:
    """A new hidden name beside ``path`` to write it under (``.{name}.{uuid}.partial{suffix}``), after deleting
    those an earlier, killed run left there; :func:`move_into_place` puts it at ``path`` when whole."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.partial{suffix}"):
        remove(stale, strict=False)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial{suffix}")


def move_into_place(written: Path, path: Path) -> None:
    """Replace whatever is at ``path`` by ``written`` (a file or a folder written whole beside it)."""
    if path.exists():
        remove(path)
    os.replace(written, path)


def short_write(path: str | Path, nbytes: int, detail: str) -> SinkWriteError:
    """The error (an OSError with its errno) behind a file that reads back short or damaged (GDAL and TensorFlow
    may not raise one); callers turn it into :func:`write_error`'s message, which says how to finish.

    ENOSPC when the file system has less than ``nbytes`` free, EFBIG when the process may not write
    files of ``nbytes`` (RLIMIT_FSIZE), EIO otherwise.
    """
    import resource

    code = errno.EIO
    try:
        stat = os.statvfs(Path(path).parent)
        if stat.f_bavail * stat.f_frsize < nbytes:
            code = errno.ENOSPC
    except OSError:
        pass
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if code == errno.EIO and limit != resource.RLIM_INFINITY and limit < nbytes:
        code = errno.EFBIG
    error = SinkWriteError(f"{os.strerror(code)} ({detail})")
    error.errno, error.strerror = code, f"{os.strerror(code)} ({detail})"
    return error


def write_error(what: str, where: Any, err: OSError, finished: str) -> SinkWriteError:
    """A :class:`SinkWriteError` that says what failed, why, and how to finish the run."""
    if err.errno == errno.ENOSPC:
        fix = "free some space"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a writable path (or fix its permissions)"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a folder on the way is a file: choose another path"
    else:
        fix = "fix the cause"
    kept = "nothing was finished" if finished.startswith("no ") else f"{finished} are kept and will not be written twice"
    error = SinkWriteError(
        f"writing {what} {str(where)!r} failed: {err.strerror or err}; {fix}, then run the same call again "
        f"with the same arguments: {kept}"
    )
    error.errno = err.errno
    return error
