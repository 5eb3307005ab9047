"""What every resumable sink shares: the fingerprint of a run, atomic small files, finished rows.

A run is identified by a *fingerprint*: a hash of the spec, the sink's options and a description of
the source (names, dims, shape, dtype, attrs and coordinates; not the pixels, which would mean reading
the scene twice). A rerun with the same fingerprint resumes; any other is refused unless the caller
asks to overwrite.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import ForeignStoreError, SinkWriteError
from ..spec import PatchSpec

__all__ = ["digest", "describe", "fingerprint", "write_json", "read_json", "RowLog", "refuse_foreign", "write_error", "MODES"]

#: ``mode`` values of the sinks: None resumes a run with the same fingerprint, "w" starts afresh.
MODES = (None, "w")
#: Bumped when what a sink writes changes, so that old outputs are not resumed by new code.
FORMAT = 1


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
    """Which patch rows are finished, kept as ``[start, stop)`` intervals (JSON-friendly)."""

    def __init__(self, rows: int, intervals: Iterable = ()):
        self.done = np.zeros(rows, bool)
        for start, stop in intervals:
            self.done[int(start): int(stop)] = True

    def add(self, rows: slice) -> None:
        self.done[rows] = True

    def intervals(self) -> list[list[int]]:
        edges = np.flatnonzero(np.diff(np.concatenate(([0], self.done.astype(np.int8), [0]))))
        return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]

    @property
    def count(self) -> int:
        return int(self.done.sum())


def refuse_foreign(what: str, where: Any, found: str | None) -> None:
    """Raise :class:`ForeignStoreError` for an output that another run (or not patchkit) wrote."""
    origin = "is not a patchkit output" if found is None else "was written from another source, spec or options"
    raise ForeignStoreError(
        f"{what} {str(where)!r} exists and {origin}; pass mode='w' to overwrite it, or choose another path"
    )


def write_error(what: str, where: Any, err: OSError, finished: str) -> SinkWriteError:
    """A :class:`SinkWriteError` that says what failed, why, and how to finish the run."""
    if err.errno == errno.ENOSPC:
        fix = "free some space"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a writable path (or fix its permissions)"
    else:
        fix = "fix the cause"
    error = SinkWriteError(
        f"writing {what} {str(where)!r} failed: {err.strerror or err}; {fix}, then run the same call again "
        f"with the same arguments: {finished} are kept and will not be written twice"
    )
    error.errno = err.errno
    return error
