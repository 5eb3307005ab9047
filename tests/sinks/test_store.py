"""What the resumable sinks share: fingerprints, atomic JSON, finished-row logs, write errors."""

from __future__ import annotations

import errno
import hashlib

import numpy as np
import pytest
import xarray as xr

from patchkit import PatchSpec
from patchkit.errors import SinkWriteError
from patchkit.sinks._store import RowLog, fingerprint, read_json, write_error, write_json


def _scene(**attrs):
    return xr.DataArray(np.zeros((2, 5, 4)), dims=("band", "y", "x"),
                        coords={"y": np.arange(5.0), "x": np.arange(4.0), "band": [1, 2]}, attrs=attrs)


@pytest.mark.parametrize(
    "other",
    [
        lambda da, spec: (da, PatchSpec(3, 1)),
        lambda da, spec: (da.assign_attrs(nodata=5), spec),
        lambda da, spec: (da.assign_coords(x=da.x + 1), spec),
        lambda da, spec: (da.astype("float32"), spec),
        lambda da, spec: (da.rename("other"), spec),
    ],
)
def test_fingerprint_changes_with_source_or_spec(other):
    """A different spec, attrs, coordinates, dtype or name gives another fingerprint."""
    da, spec = _scene(), PatchSpec(3, 2)
    assert fingerprint(*other(da, spec)) != fingerprint(da, spec)


def test_fingerprint_is_stable_and_ignores_pixels():
    """The same description gives the same fingerprint (pixels are not read); options count."""
    da, spec = _scene(), PatchSpec(3, 2)
    assert fingerprint(da, spec, a=1) == fingerprint(da.copy(data=np.ones(da.shape)), spec, a=1)
    assert fingerprint(da, spec, a=1) != fingerprint(da, spec, a=2)


def test_json_written_whole(tmp_path):
    """write_json replaces the file in one step and leaves no temporary file; read_json of nothing is None."""
    write_json(tmp_path / "m.json", {"a": 1})
    write_json(tmp_path / "m.json", {"a": 2})
    assert read_json(tmp_path / "m.json") == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    assert read_json(tmp_path / "missing.json") is None


def test_row_log_intervals():
    """Finished rows round-trip through their intervals."""
    log = RowLog(10)
    for rows in (slice(0, 2), slice(5, 7), slice(2, 3), slice(9, 10)):
        log.add(rows)
    assert log.intervals() == [[0, 3], [5, 7], [9, 10]]
    assert RowLog(10, log.intervals()).done.tolist() == log.done.tolist() and log.count == 6


@pytest.mark.parametrize(("code", "fix"), [(errno.ENOSPC, "free some space"), (errno.EACCES, "writable"), (errno.EIO, "fix the cause")])
def test_write_error_says_what_to_do(code, fix):
    """Write errors name the output and the fix, and promise that finished work is kept."""
    error = write_error("the Zarr store", "/data/p.zarr", OSError(code, "boom"), "the 3 finished patch rows")
    assert isinstance(error, SinkWriteError) and error.errno == code
    assert fix in str(error) and "/data/p.zarr" in str(error) and "3 finished patch rows are kept" in str(error)


@pytest.mark.parametrize(("shape", "order", "cut", "views"), [
    ((4, 2, 5, 32768), (1, 2, 0, 3), (), True),              # a patch row of a band buffer: 64 KiB patches apart
    ((4, 2, 5, 32768), (1, 2, 0, 3), (slice(1, 2),), True),
    ((3, 4, 5), (2, 0, 1), (Ellipsis, slice(None, None, 2)), False),  # pieces too small: copied in blocks
    ((2, 3, 1, 7), (0, 1, 2, 3), (), True),                  # contiguous: fed as it is
    ((0, 3), (1, 0), (), False),                             # empty: no bytes to share
])
def test_hash_into_feeds_the_bytes_in_c_order(shape, order, cut, views, monkeypatch):
    """The hash of a strided view is that of its C-order bytes; pieces of HASH_PIECE bytes or more are fed
    as views of the array (no copy), smaller ones as copies."""
    from patchkit.sinks import _store

    view = np.random.default_rng(0).integers(0, 1000, size=shape).astype(np.uint16).transpose(order)[cut]
    fed = []
    real = _store.raw_bytes
    monkeypatch.setattr(_store, "raw_bytes", lambda a: fed.append(np.shares_memory(real(a), view)) or real(a))
    h = hashlib.sha256()
    _store.hash_into(h, view)
    assert h.hexdigest() == hashlib.sha256(np.ascontiguousarray(view).tobytes()).hexdigest()
    assert fed and all(fed) == views
