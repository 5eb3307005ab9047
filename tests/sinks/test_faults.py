"""Faults across every sink: SIGKILL at random points and full disks (a small tmpfs, or RLIMIT_FSIZE).

Whatever point a run dies at, the output never reads as complete while it is not, and a rerun with
the same arguments gives what an uninterrupted run gives, byte for byte. A killed child counts the
Python calls it makes (``sys.setprofile`` on every thread) and kills itself with SIGKILL at call
``n``: points drawn at random (seeded: ``PATCHKIT_KILL_SEED`` draws others) over the whole run, so
they land in imports, planning, reading, extracting, encoding, writing, logging and finishing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import patchkit
from patchkit.errors import IncompleteStoreError, SinkWriteError

pytest.importorskip("rioxarray")
zarr = pytest.importorskip("zarr")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SEED = int(os.environ.get("PATCHKIT_KILL_SEED", "20261127"))

#: How each sink writes (``da``, ``out``), as code the child and this process both run.
WRITES = {
    "zarr": "da.patches.to_zarr(out, sizes=(8, 6), strides=(5, 4), padding='SAME', max_memory='40KiB', chunk_patches=4, progress=False)",
    "geotiff": "da.patches.to_geotiffs(out, sizes=(16, 12), strides=(10, 9), padding='SAME', max_memory='64KiB', progress=False)",
    "tfrecord": ("from patchkit.sinks.tfrecord import to_tfrecord\n"
                 "to_tfrecord(da, out + '/p', sizes=8, strides=5, padding='SAME', shard_size='12KiB', max_memory='40KiB', progress=False)"),
    "stitch-tif": ("patchkit.stitch(da.patches.extract(sizes=(8, 6), strides=(5, 4), padding='SAME'), blend='cosine', "
                   "out=out + '/s.tif', max_memory='100KiB')"),
    "stitch-zarr": ("patchkit.stitch(da.patches.extract(sizes=(8, 6), strides=(5, 4), padding='SAME'), blend='cosine', "
                    "out=out + '/s.zarr', max_memory='100KiB')"),
}
#: Kill points drawn per sink (38 in all).
POINTS = {"zarr": 12, "geotiff": 10, "tfrecord": 6, "stitch-tif": 5, "stitch-zarr": 5}

CHILD = textwrap.dedent(
    """
    import os, signal, sys, threading, warnings
    warnings.simplefilter("ignore")
    import rioxarray, patchkit

    source, out, n, code = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    da = rioxarray.open_rasterio(source, chunks={"y": 16, "x": 53})
    calls = [0]

    def count(frame, event, arg):
        if event == "call":
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)

    threading.setprofile(count)
    sys.setprofile(count)
    exec(code)
    sys.setprofile(None)
    print(calls[0])
    """
)


def _write(sink: str, source, out: Path) -> None:
    """Run ``sink``'s write in this process."""
    import rioxarray

    da = rioxarray.open_rasterio(source, chunks={"y": 16, "x": 53})
    exec(WRITES[sink], {"da": da, "out": str(out), "patchkit": patchkit})


def _child(sink: str, source, out: Path, n: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, str(source), str(out), str(n), WRITES[sink]], capture_output=True,
                          text=True, timeout=300)


def _files(out: Path) -> dict:
    """Every file under ``out`` (relative name -> bytes), leaving out what may differ between two runs."""
    skip = ("patchkit.json",)  # holds chip sizes and digests, compared through read_index
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name not in skip}


def _read(sink: str, out: Path):
    """The output as a reader sees it (fully verified); IncompleteStoreError when it is not complete."""
    if sink == "zarr":
        return patchkit.open_patches(out, verify="full").load()
    if sink == "geotiff":
        from patchkit.sinks.geotiff import read_index

        return read_index(out, verify="full").drop(columns="geometry")
    if sink.startswith("stitch"):
        image = out / ("s.tif" if sink == "stitch-tif" else "s.zarr")
        if not image.exists():
            raise IncompleteStoreError(f"no {image}")  # what a reader of a stitched image sees: nothing
        return xr.open_dataset(image, engine="rasterio" if sink == "stitch-tif" else "zarr").load()
    from patchkit.sinks.tfrecord import read_tfrecord

    return list(read_tfrecord(out / "p", verify="full").as_numpy_iterator())


def _same(sink: str, a: Path, b: Path) -> None:
    """Two outputs are the same, file for file, and read the same."""
    assert _files(a) == _files(b)
    if sink == "zarr" or sink.startswith("stitch"):
        xr.testing.assert_identical(_read(sink, a), _read(sink, b))
    elif sink == "geotiff":
        assert _read(sink, a).equals(_read(sink, b))
        manifests = [json.loads((x / "patchkit.json").read_text()) for x in (a, b)]
        assert manifests[0] == manifests[1]


@pytest.fixture(scope="module")
def whole(geotiffs, tmp_path_factory):
    """``{sink: (output of an uninterrupted child run, its count of calls)}``."""
    found = {}
    for sink in WRITES:
        if sink == "tfrecord" and not _has_tensorflow():
            continue
        out = tmp_path_factory.mktemp(f"whole-{sink}") / "out"
        done = _child(sink, geotiffs["projected"], out, 0)
        assert done.returncode == 0, done.stderr
        found[sink] = (out, int(done.stdout.split()[-1]))
    return found


def _has_tensorflow() -> bool:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def _points() -> list:
    rng = np.random.default_rng(SEED)
    return [(sink, float(f)) for sink, count in POINTS.items() for f in np.sort(rng.uniform(0.02, 0.98, count))]


@pytest.mark.slow
@pytest.mark.parametrize(("sink", "at"), _points(), ids=lambda v: v if isinstance(v, str) else f"{v:.3f}")
def test_sigkill_at_a_random_point_then_rerun(geotiffs, whole, tmp_path, sink, at):
    """Killed at a random point (a fraction ``at`` of the run's Python calls), the output is complete and
    right, or refused as incomplete; a rerun then equals an uninterrupted run, file for file."""
    if sink not in whole:
        pytest.skip("TensorFlow is not installed")
    reference, calls = whole[sink]
    out = tmp_path / "out"
    killed = _child(sink, geotiffs["projected"], out, max(1, int(at * calls)))
    assert killed.returncode in (-signal.SIGKILL, 0), killed.stderr
    if out.exists():
        try:
            _read(sink, out)
        except IncompleteStoreError:
            pass  # refused: the rerun finishes it
        else:
            _same(sink, reference, out)  # it died after finishing: then it must be whole
    _write(sink, geotiffs["projected"], out)
    _same(sink, reference, out)


# ---- full disks -------------------------------------------------------------------------------------


@pytest.fixture
def small_filesystem(tmp_path):
    """A 1 MiB tmpfs (root and mount(8) needed; skipped where the sandbox forbids mounting)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small filesystem here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.fixture
def file_size_limit():
    """``limit(nbytes)``: files of this process cannot grow past ``nbytes`` (RLIMIT_FSIZE; SIGXFSZ
    ignored), so writes fail with EFBIG; lifted after the test, or by ``limit(None)``."""
    import resource

    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def limit(nbytes):
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit if nbytes is None else (nbytes, old_limit[1]))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)


def _scene() -> xr.DataArray:
    """Random float32 (band, y, x) pixels that compress badly: 1.4 MB, and patches of it over 1 MiB."""
    rng = np.random.default_rng(0)
    return xr.DataArray(rng.random((2, 420, 420)).astype(np.float32), dims=("band", "y", "x"))


#: ``(sink, call, read)`` for a DataArray and a target path: 32x32 patches of 8 KiB, a chip of 8 KiB.
FULL = {
    "zarr": (lambda da, out, **kw: da.patches.to_zarr(out, 32, 16, compression=None, chunk_patches=2, max_memory="8MiB", progress=False, **kw),
             lambda out: patchkit.open_patches(out)),
    "geotiff": (lambda da, out, **kw: da.patches.to_geotiffs(out, 32, 16, compress=None, max_memory="8MiB", progress=False, **kw),
                lambda out: __import__("patchkit.sinks.geotiff", fromlist=["read_index"]).read_index(out)),
    "tfrecord": (lambda da, out, **kw: _tfrecord().to_tfrecord(da, Path(out) / "p", 32, 16, shard_size="64KiB", max_memory="8MiB", progress=False, **kw),
                 lambda out: _tfrecord().read_tfrecord(Path(out) / "p")),
    "stitch": (lambda da, out: patchkit.stitch(da.patches.extract(32, 16), out=Path(out) / "s.tif", max_memory="1MiB"),
               lambda out: _stitched(Path(out) / "s.tif")),
}


def _stitched(path: Path):
    """The stitched GeoTIFF; IncompleteStoreError when there is none (a partial one is never at ``path``)."""
    if not path.exists():
        raise IncompleteStoreError(f"no {path}")
    import rasterio

    with rasterio.open(path) as src:
        return src.read()


def _tfrecord():
    pytest.importorskip("tensorflow")
    from patchkit.sinks import tfrecord

    return tfrecord


@pytest.mark.parametrize("sink", sorted(FULL))
def test_a_full_disk_raises_and_never_reads_complete(small_filesystem, sink):
    """A full disk raises SinkWriteError (no space; free some; rerun), and the output never reads as complete."""
    write, read = FULL[sink]
    match = "free some space" if sink == "stitch" else "No space left on device.*free some space.*run the same call again"
    with pytest.raises(SinkWriteError, match=match):  # stitch knows its size, and refuses before it starts
        write(_scene(), small_filesystem / "out")
    with pytest.raises(IncompleteStoreError):
        read(small_filesystem / "out")


@pytest.mark.parametrize("sink", sorted(FULL))
def test_a_file_size_limit_then_a_rerun_finishes_the_work(tmp_path, file_size_limit, sink):
    """Files cut short by a size limit (a write GDAL, zarr or TensorFlow may not report) raise SinkWriteError,
    are never renamed, counted or marked complete; once the limit is lifted, a rerun equals an uninterrupted run."""
    write, read = FULL[sink]
    da = _scene()
    write(da, tmp_path / "whole")
    file_size_limit(6 * 1024)  # more than a manifest, less than a patch
    with pytest.raises(SinkWriteError, match="File too large.*(run the same call again|stitch again)"):
        write(da, tmp_path / "out")
    file_size_limit(None)
    with pytest.raises(IncompleteStoreError):
        read(tmp_path / "out")
    write(da, tmp_path / "out")
    read(tmp_path / "out")
    assert _files(tmp_path / "out") == _files(tmp_path / "whole")
