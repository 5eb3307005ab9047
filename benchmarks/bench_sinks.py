"""Writing patches with patchkit's sinks, against xarray alone and against the speed of the hardware.

Run ``python benchmarks/bench_sinks.py [--quick] [--dir PATH] [--repeats N] [--start-method M] [--json PATH]``.

The scene is a tiled 4-band uint16 GeoTIFF (4096 x 4096, 512 x 512 tiles, as in ``bench_xarray.py``),
written once (untimed) into ``--dir``, opened lazily by rioxarray (dask chunks 1024 x 1024) inside every
timed call (reading the file is part of every row but the limits and stitching), and cut into
256-pixel patches at stride 128 (VALID: 31 x 31 patches, 480 MiB). patchkit runs under ``max_memory``
64 MiB, which also bounds GDAL's block cache while a band is read (its share of the budget). ``--quick`` shrinks all that (512 x 512, 128-pixel patches, stride 64,
one round, processes forked from a server that has made the imports: 15-20 s; its figures mean
nothing).

Every output (and the scene) goes to ``--dir`` (default: a temporary folder), so that one run on a
memory-backed filesystem (``--dir /dev/shm/...``, standing in for a fast NVMe disk) and one on a disk show
what the filesystem costs. Nothing is synced (``fsync``): on a disk the figures include the page cache.

Rows, each the best of ``--repeats`` calls:

* ``to_zarr raw`` / ``to_zarr zstd``: ``.patches.to_zarr(store, k, s, max_memory=..., compression=None
  or "default")`` (zarr's default codec is zstd, level 0).
* ``to_geotiffs``: ``.patches.to_geotiffs(folder, k, s, max_memory=...)``, one GeoTIFF chip per patch
  (GDAL deflate, patchkit's default) and a GeoJSON index.
* ``to_tfrecord``: ``.patches.to_tfrecord(prefix, k, s, max_memory=...)``, uncompressed 128 MiB shards
  (skipped without TensorFlow).
* ``xarray raw`` / ``xarray zstd`` (eager): ``open_rasterio(...).load().patches.extract(k, s)``, then
  ``.to_zarr(store)`` in one call (zarr chooses the chunks).
* ``xarray lazy raw`` / ``xarray lazy zstd``: the lazy way with xarray alone, ``da.rolling(y=k, x=k,
  center=True).construct(y="ky", x="kx", stride=s, fill_value=0)``, the windows of patchkit's VALID
  patches kept (centred windows sit at multiples of the stride because k // 2 is one), ``.chunk(...)``
  into chunks of whole patches as patchkit stores them (one patch row, at most 4 MiB of patches along
  it) and ``.to_zarr(...)``.
  Three of its patches are checked against the scene's pixels after the first call (untimed).
* ``limit: write <output>``: the files that patchkit's sink wrote in the first round (store, chips or
  shards), read once into memory (untimed), written as plain files into a fresh folder on the same
  filesystem by a ``ThreadPoolExecutor(os.cpu_count())``: a ceiling for anything that writes those
  bytes through the filesystem.
* ``limit: zstd+write zarr``: the chunks of ``to_zarr zstd``'s store, decoded into memory (untimed),
  encoded again with the codec zarr used (numcodecs' Zstd, the level and checksum read from the store)
  on the same thread pool and written as plain files (the store's other files written as they are).
* ``limit: deflate+write chips``: ``to_geotiffs``'s chips read back into their raw blocks (the strips or
  tiles GDAL compressed, in its interleave; untimed), deflated as GDAL does (a zlib stream per block,
  level 6, with libdeflate, the library rasterio's GDAL uses, through ctypes; Python's zlib where it is
  not found, as the header then says) on the same thread pool and written, a file per chip (its blocks
  end to end: no TIFF header or directory); the index and manifest as they are.
* ``stitch -> tif``: ``patchkit.stitch`` of ``to_zarr zstd``'s store into a GeoTIFF under ``max_memory``;
  ``stitch in memory``: ``patchkit.stitch`` of the same patches loaded beforehand (untimed).

* ``to_zarr raw, 1 worker`` / ``2 workers``: ``to_zarr`` without compression on a dask ``LocalCluster``
  of that many worker processes (one thread each; the cluster started and the workers' imports made
  before the clock), each band a task on a worker; the tasks a call ran go to stderr. The RSS
  columns see only the driver.

Fairness: every call runs in a freshly spawned process (imports and inputs made before the clock
starts; ``--quick`` forks them from a fork server instead, see ``--start-method``), and the rounds
take turns across contenders (A B C, A B C, ...), so the drift of a busy machine touches every row
alike; each row keeps its best call. Each call's time goes to stderr as it comes.

Columns: ``best s``; ``GB/s``: bytes of patches (not of files) per second, 1 GB = 10**9 B, the same
numerator for every row; ``vs limit``: the limit's seconds over the row's (1.00 = as fast as the
limit; xarray's rows against the limit of patchkit's store of the same compression); ``vs xarray``:
the faster of xarray's two ways with the same compression, its seconds over the row's (above 1 =
faster than xarray); ``written``: bytes of the output files; ``RSS growth``: peak RSS of the call
above the RSS on entry (the kernel's high-water mark, the highest of the rounds); ``/ max_mem``:
that growth over ``max_memory``, for the rows that run under it. ``--json PATH`` writes every row
(with each round's seconds), the parameters, the filesystem and the contenders' settings.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import GB, PeakRSS, format_size, isolated, timed  # noqa: E402
from bench_xarray import write_scene  # noqa: E402

FULL = dict(bands=4, size=4096, patch=256, stride=128, chunks=1024, max_memory="64MiB", repeats=3)
QUICK = dict(bands=4, size=512, patch=128, stride=64, chunks=128, max_memory="16MiB", repeats=1)
#: What every call that reads the scene imports before the clock starts (the rest is imported by makers).
LIBRARIES = ("rioxarray", "dask.array", "zarr", "numcodecs", "patchkit")


# --------------------------------------------------------------------------------------------------
# What a call gets, and what a contender is
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One round's view of the benchmark: the scene, where outputs go, the parameters.

    Attributes
    ----------
    scene : str
        The GeoTIFF.
    folder : str
        Where every output goes (``folder/out``).
    params : dict
        ``bands``, ``size``, ``patch``, ``stride``, ``chunks``, ``max_memory``, ``repeats``.
    round : int
        0 for the first round, whose patchkit outputs are kept for the limits and the stitchers.
    """

    scene: str
    folder: str
    params: dict
    round: int = 0

    def output(self, contender: "Contender", round: int | None = None) -> Path:
        """Where ``contender`` writes in round ``round`` (default: this one)."""
        slug = "".join(c if c.isalnum() else "-" for c in contender.name)
        return Path(self.folder) / "out" / f"{slug}-r{self.round if round is None else round}{contender.suffix}"

    def kept(self, name: str) -> Path:
        """The first round's output of the contender ``name`` (kept: see :attr:`Contender.keep`)."""
        return self.output(CONTENDERS[name], 0)

    def open_lazy(self):
        """The scene opened lazily with rioxarray, in the benchmark's dask chunks."""
        import rioxarray

        chunks = self.params["chunks"]
        return rioxarray.open_rasterio(self.scene, chunks={"band": -1, "y": chunks, "x": chunks})


#: ``make(run, out)``: a context manager that prepares a call (untimed) and yields it.
Maker = Callable[[Run, Path], ContextManager[Callable[[], object]]]


@dataclass(frozen=True)
class Contender:
    """One row of the table: how to make its timed call, and what to compare it with.

    Attributes
    ----------
    name : str
        The row's name.
    make : callable
        ``make(run, out)`` returns a context manager: entering it prepares the call (imports, inputs:
        untimed) and gives a callable without arguments, the timed call, which writes to ``out``;
        leaving it may check the output (untimed).
    family : str
        ``"patchkit"``, ``"xarray"``, ``"limit"`` or ``"stitch"``.
    compression : str
        ``"raw"`` or ``"zstd"`` for Zarr rows: ``vs xarray`` pairs a patchkit row with the xarray rows
        of the same compression; empty for the others.
    limit : str
        The name of the limit row this one is compared with (``vs limit``); empty for none.
    budgeted : bool
        Whether the call runs under ``max_memory`` (its RSS growth is compared with it).
    keep : bool
        Keep the first round's output, which limits and stitchers read (see :meth:`Run.kept`).
    suffix : str
        Of the output path (``".tif"`` for a file).
    needs : tuple of str
        Modules the call imports: without them the row is skipped, saying so.
    reads : str
        The contender whose kept output this one reads: it must run earlier in a round, and without
        it this row is skipped too.
    """

    name: str
    make: Maker
    family: str
    compression: str = ""
    limit: str = ""
    budgeted: bool = False
    keep: bool = False
    suffix: str = ""
    needs: tuple[str, ...] = ()
    reads: str = ""


# --------------------------------------------------------------------------------------------------
# patchkit's sinks
# --------------------------------------------------------------------------------------------------


def preload() -> None:
    """Import :data:`LIBRARIES` (so that no timed call pays for importing them) and register ``.patches``."""
    for name in LIBRARIES:
        importlib.import_module(name)


@contextlib.contextmanager
def patchkit_sink(run: Run, out: Path, method: str, **options) -> Iterator[Callable[[], object]]:
    """``.patches.<method>(out, k, s, max_memory=..., progress=False, **options)`` on the lazy scene."""
    preload()
    if method == "to_tfrecord":
        importlib.import_module("tensorflow")  # before the clock: TensorFlow's import is not the sink's cost
        out = out / "patches"  # a prefix: shards and manifest inside the output folder
    p = run.params

    def call():
        with run.open_lazy() as da:
            return getattr(da.patches, method)(out, p["patch"], p["stride"], max_memory=p["max_memory"],
                                               progress=False, **options)

    yield call


def sink_contenders() -> list[Contender]:
    """patchkit's sinks: Zarr raw and zstd, GeoTIFF chips, TFRecord shards."""
    return [
        Contender("to_zarr raw", functools.partial(patchkit_sink, method="to_zarr", compression=None), "patchkit",
                  "raw", "limit: write zarr raw", budgeted=True, keep=True),
        Contender("to_zarr zstd", functools.partial(patchkit_sink, method="to_zarr", compression="default"),
                  "patchkit", "zstd", "limit: zstd+write zarr", budgeted=True, keep=True),
        Contender("to_geotiffs", functools.partial(patchkit_sink, method="to_geotiffs"), "patchkit",
                  limit="limit: deflate+write chips", budgeted=True, keep=True),
        Contender("to_tfrecord", functools.partial(patchkit_sink, method="to_tfrecord"), "patchkit",
                  limit="limit: write tfrecord", budgeted=True, keep=True, needs=("tensorflow",)),
    ]


@contextlib.contextmanager
def cluster_sink(run: Run, out: Path, workers: int) -> Iterator[Callable[[], object]]:
    """``.patches.to_zarr(..., compression=None)`` on a ``distributed.LocalCluster`` of ``workers`` processes
    (one thread each), started before the clock and closed after; the tasks it ran go to stderr."""
    preload()
    import distributed

    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        client.run(preload)  # the workers import what the tasks use before the clock, as the other rows do
        with patchkit_sink(run, out, "to_zarr", compression=None, scheduler=client) as call:
            def timed_call():
                with distributed.get_task_stream(client) as stream:
                    result = call()
                print(f"  cluster {workers} worker(s): {len(stream.data)} tasks", file=sys.stderr)
                return result

            yield timed_call


def cluster_contenders() -> list[Contender]:
    """``to_zarr raw`` on a dask ``LocalCluster`` of 1 and 2 worker processes (the store is the local one's).

    The workers' memory is in other processes: the RSS growth column sees only the driver's.
    """
    return [Contender(f"to_zarr raw, {n} worker{'s' * (n > 1)}", functools.partial(cluster_sink, workers=n), "patchkit", "raw",
                      "limit: write zarr raw", needs=("distributed",)) for n in (1, 2)]


# --------------------------------------------------------------------------------------------------
# xarray alone
# --------------------------------------------------------------------------------------------------


def zarr_encoding(compression: str) -> dict:
    """xarray's ``encoding`` of the variable ``pixels``: no compressor for raw, zarr's default for zstd."""
    return {"pixels": {"compressors": ()} if compression == "raw" else {}}


@contextlib.contextmanager
def xarray_eager(run: Run, out: Path, compression: str) -> Iterator[Callable[[], object]]:
    """The scene loaded, ``.patches.extract`` in memory, written by xarray in one call."""
    preload()
    import rioxarray

    k, s = run.params["patch"], run.params["stride"]

    def call():
        patches = rioxarray.open_rasterio(run.scene).load().patches.extract(k, s)
        return patches.to_dataset(name="pixels").to_zarr(out, mode="w", zarr_format=3,
                                                         encoding=zarr_encoding(compression))

    yield call


def rolling_windows(da, k: int, s: int):
    """patchkit's VALID patches as xarray's rolling windows: dims ``band, y, x, ky, kx``.

    Centred windows of even size ``k`` start ``k // 2`` before their position; with ``k // 2`` a
    multiple of ``s`` the strided positions after the first ``k // 2 // s`` are the VALID patches.
    """
    if k % 2 or (k // 2) % s:
        raise ValueError(f"the rolling contender needs k // 2 a multiple of s (k={k}, s={s})")
    n = (da.sizes["y"] - k) // s + 1, (da.sizes["x"] - k) // s + 1
    skip = k // 2 // s
    windows = da.rolling(y=k, x=k, center=True).construct(y="ky", x="kx", stride=s, fill_value=0)
    return windows.isel(y=slice(skip, skip + n[0]), x=slice(skip, skip + n[1]))


@contextlib.contextmanager
def xarray_lazy(run: Run, out: Path, compression: str) -> Iterator[Callable[[], object]]:
    """``rolling(...).construct(...)`` on the lazy scene, chunked as patchkit stores, ``.to_zarr``."""
    preload()
    from patchkit.core.units import parse_bytes
    from patchkit.sinks.zarr import CHUNK_BYTES

    p = run.params
    k, s = p["patch"], p["stride"]
    per_chunk = max(1, parse_bytes(CHUNK_BYTES) // (2 * p["bands"] * k * k))

    def call():
        with run.open_lazy() as da:
            windows = rolling_windows(da, k, s)
            windows = windows.chunk({"band": -1, "y": 1, "x": min(per_chunk, windows.sizes["x"]), "ky": -1, "kx": -1})
            return windows.to_dataset(name="pixels").to_zarr(out, mode="w", zarr_format=3,
                                                             encoding=zarr_encoding(compression))

    yield call
    if run.round == 0:
        check_windows(out, run)


def check_windows(store: Path, run: Run) -> None:
    """Raise unless three patches that :func:`xarray_lazy` stored equal the scene's pixels there."""
    import rasterio
    import xarray as xr
    from rasterio.windows import Window

    k, s = run.params["patch"], run.params["stride"]
    n = (run.params["size"] - k) // s + 1
    with xr.open_zarr(store) as ds, rasterio.open(run.scene) as src:
        pixels = ds["pixels"]
        if (pixels.sizes["y"], pixels.sizes["x"]) != (n, n):
            raise RuntimeError(f"rolling windows: {pixels.sizes['y']} x {pixels.sizes['x']} patches, "
                               f"VALID has {n} x {n}")
        for i, j in ((0, 0), (1, 2), (n - 1, n - 1)):
            want = src.read(window=Window(j * s, i * s, k, k))
            if not np.array_equal(pixels.isel(y=i, x=j).transpose("band", "ky", "kx").values, want):
                raise RuntimeError(f"rolling windows: patch ({i}, {j}) differs from the scene's pixels")


def xarray_contenders() -> list[Contender]:
    """xarray writing the eager result, and xarray's own lazy rolling windows; raw and zstd."""
    limits = {"raw": "limit: write zarr raw", "zstd": "limit: zstd+write zarr"}
    return [
        Contender(f"xarray {way}{c}", functools.partial(make, compression=c), "xarray", c, limits[c])
        for way, make in (("", xarray_eager), ("lazy ", xarray_lazy)) for c in ("raw", "zstd")
    ]


# --------------------------------------------------------------------------------------------------
# Limits: the same bytes written (and encoded) with nothing else to do
# --------------------------------------------------------------------------------------------------


def read_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (or ``root`` itself), by path relative to ``root``."""
    if root.is_file():
        return {"": root.read_bytes()}
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _same(data: bytes) -> bytes:
    return data


def write_files(out: Path, files: dict[str, Callable[[], bytes]], pool: ThreadPoolExecutor) -> None:
    """Make the folders, then write each file's bytes (``files[rel]()``, called on the pool) at ``out/rel``."""
    for folder in sorted({(out / rel).parent for rel in files}):
        folder.mkdir(parents=True, exist_ok=True)

    def write(rel: str) -> None:
        with open(out / rel, "wb") as f:
            f.write(files[rel]())

    for _ in pool.map(write, files):
        pass


@contextlib.contextmanager
def limit_write(run: Run, out: Path, source: str) -> Iterator[Callable[[], object]]:
    """The files ``source`` wrote, in memory, written by a thread per core."""
    files = {rel: functools.partial(_same, data) for rel, data in read_files(run.kept(source)).items()}
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        yield functools.partial(write_files, out, files, pool)


def zstd_chunks(store: Path) -> tuple[dict[str, bytes], dict[str, tuple[np.ndarray, dict]]]:
    """A Zarr v3 store's files: the plain ones, and its zstd chunks decoded (raw bytes, codec config)."""
    import numcodecs

    plain, chunks = read_files(store), {}
    for meta in store.rglob("zarr.json"):
        info = json.loads(meta.read_text())
        codecs = [c["name"] for c in info.get("codecs", ())]
        if info.get("node_type") != "array" or "zstd" not in codecs:
            continue
        if codecs != ["bytes", "zstd"]:
            raise RuntimeError(f"{meta}: codecs {codecs}; the zstd limit knows only bytes + zstd")
        config = info["codecs"][1]["configuration"]
        for path in (meta.parent / "c").rglob("*"):
            if path.is_file():
                rel = str(path.relative_to(store))
                chunks[rel] = np.frombuffer(numcodecs.Zstd(**config).decode(plain.pop(rel)), np.uint8), config
    return plain, chunks


@contextlib.contextmanager
def limit_encode_write(run: Run, out: Path, source: str) -> Iterator[Callable[[], object]]:
    """``source``'s zstd chunks, raw in memory, encoded with zarr's codec and written, a thread per core."""
    import numcodecs

    plain, chunks = zstd_chunks(run.kept(source))
    files = {rel: functools.partial(_same, data) for rel, data in plain.items()}
    codecs = {}  # one codec per configuration, shared by the threads as zarr shares it
    for rel, (raw, config) in chunks.items():
        codec = codecs.setdefault(json.dumps(config, sort_keys=True), numcodecs.Zstd(**config))
        files[rel] = functools.partial(codec.encode, raw)
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        yield functools.partial(write_files, out, files, pool)


#: GDAL's deflate level (``ZLEVEL``) when none is given, as for patchkit's chips.
GDAL_ZLEVEL = 6


def _libdeflate():
    """libdeflate, which rasterio's GDAL deflates TIFF blocks with, through ctypes; None where it is not found."""
    import ctypes
    import ctypes.util
    import glob

    import rasterio

    found = glob.glob(os.path.join(os.path.dirname(rasterio.__file__), os.pardir, "rasterio.libs", "libdeflate*"))
    name = found[0] if found else ctypes.util.find_library("deflate")
    if not name:
        return None
    lib = ctypes.CDLL(name)  # its calls release the GIL
    lib.libdeflate_alloc_compressor.restype = ctypes.c_void_p
    lib.libdeflate_alloc_compressor.argtypes = [ctypes.c_int]
    lib.libdeflate_zlib_compress_bound.restype = ctypes.c_size_t
    lib.libdeflate_zlib_compress_bound.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.libdeflate_zlib_compress.restype = ctypes.c_size_t
    lib.libdeflate_zlib_compress.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                                             ctypes.c_size_t]
    return lib


class Deflate:
    """TIFF's deflate (a zlib stream per block) at ``level``: libdeflate as GDAL uses it, else Python's zlib.

    Attributes
    ----------
    name : str
        ``"libdeflate"`` or ``"zlib"`` (slower than libdeflate: then the limit may not bound GDAL).
    """

    def __init__(self, level: int = GDAL_ZLEVEL):
        import threading

        self.level, self.lib, self._local = level, _libdeflate(), threading.local()
        self.name = "zlib" if self.lib is None else "libdeflate"

    def encode(self, block: np.ndarray) -> bytes:
        """One block (C-contiguous) deflated, with the compressor of this thread."""
        import ctypes
        import zlib

        if self.lib is None:
            return zlib.compress(block, self.level)
        local = self._local
        if not hasattr(local, "compressor"):
            local.compressor = self.lib.libdeflate_alloc_compressor(self.level)
            local.out = ctypes.create_string_buffer(0)
        bound = self.lib.libdeflate_zlib_compress_bound(local.compressor, block.nbytes)
        if len(local.out) < bound:
            local.out = ctypes.create_string_buffer(bound)  # kept for the thread's next blocks
        size = self.lib.libdeflate_zlib_compress(local.compressor, block.ctypes.data, block.nbytes, local.out, bound)
        return ctypes.string_at(local.out, size)

    def encode_all(self, blocks: list[np.ndarray]) -> bytes:
        """Every block of a chip deflated, end to end."""
        return b"".join(self.encode(block) for block in blocks)


def chip_blocks(path: Path) -> list[np.ndarray] | None:
    """The raw blocks (strips or tiles, edge tiles padded) GDAL deflated into the chip; None if not deflated."""
    import rasterio
    from rasterio.enums import Compression, Interleaving

    with rasterio.open(path) as src:
        if src.compression != Compression.deflate or "PREDICTOR" in src.tags(ns="IMAGE_STRUCTURE"):
            return None
        pixels, windows = src.read(), [w for _, w in src.block_windows(1)]
        layers = [pixels.transpose(1, 2, 0)] if src.interleaving == Interleaving.pixel else list(pixels)
        shape, tiled = src.block_shapes[0], src.is_tiled
    blocks = []
    for layer in layers:
        for w in windows:
            block = layer[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width]
            if tiled and block.shape[:2] != shape:
                block = np.pad(block, [(0, shape[0] - block.shape[0]), (0, shape[1] - block.shape[1])]
                               + [(0, 0)] * (block.ndim - 2))
            blocks.append(np.ascontiguousarray(block))
    return blocks


@contextlib.contextmanager
def limit_deflate_write(run: Run, out: Path, source: str) -> Iterator[Callable[[], object]]:
    """``source``'s chips, their raw blocks in memory, deflated as GDAL does and written, a thread per core.

    Each chip is written as its deflated blocks end to end (no TIFF header or directory, a few KiB);
    the folder's other files are written as they are.
    """
    codec, folder = Deflate(), run.kept(source)
    files = {}
    for rel, data in read_files(folder).items():
        blocks = chip_blocks(folder / rel) if rel.endswith(".tif") else None
        files[rel] = functools.partial(_same, data) if blocks is None else functools.partial(codec.encode_all, blocks)
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        yield functools.partial(write_files, out, files, pool)


def limit_contenders() -> list[Contender]:
    """The write limit of every patchkit output, and the encode-and-write limits of the compressed ones."""
    writes = {"zarr raw": "to_zarr raw", "zarr zstd": "to_zarr zstd", "chips": "to_geotiffs", "tfrecord": "to_tfrecord"}
    rows = [Contender(f"limit: write {what}", functools.partial(limit_write, source=source), "limit", reads=source)
            for what, source in writes.items()]
    rows.insert(2, Contender("limit: zstd+write zarr", functools.partial(limit_encode_write, source="to_zarr zstd"),
                             "limit", reads="to_zarr zstd"))
    rows.insert(4, Contender("limit: deflate+write chips", functools.partial(limit_deflate_write, source="to_geotiffs"),
                             "limit", reads="to_geotiffs"))
    return rows


# --------------------------------------------------------------------------------------------------
# Stitching back
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def stitch(run: Run, out: Path, to_file: bool) -> Iterator[Callable[[], object]]:
    """``patchkit.stitch`` of ``to_zarr zstd``'s store: streamed into a GeoTIFF, or from loaded patches."""
    preload()
    import patchkit

    patches = patchkit.open_patches(run.kept("to_zarr zstd"))["pixels"]
    if to_file:
        yield functools.partial(patchkit.stitch, patches, out=out, max_memory=run.params["max_memory"])
    else:
        yield functools.partial(patchkit.stitch, patches.load())


def stitch_contenders() -> list[Contender]:
    """Stitching the stored patches back: into a GeoTIFF under ``max_memory``, and in memory."""
    return [
        Contender("stitch -> tif", functools.partial(stitch, to_file=True), "stitch", budgeted=True, suffix=".tif",
                  reads="to_zarr zstd"),
        Contender("stitch in memory", functools.partial(stitch, to_file=False), "stitch", reads="to_zarr zstd"),
    ]

#: Every row, in the order a round runs them: sinks (then their limits) before what reads their output.
CONTENDERS: dict[str, Contender] = {c.name: c for c in (*sink_contenders(), *cluster_contenders(),
                                                         *xarray_contenders(), *limit_contenders(),
                                                         *stitch_contenders())}


# --------------------------------------------------------------------------------------------------
# Running: one call per fresh process, rounds taking turns
# --------------------------------------------------------------------------------------------------


def size_of(path: Path) -> int:
    """Bytes of the file ``path``, or of all the files under the folder ``path`` (0 when absent)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def remove(path: Path) -> None:
    """Delete a file or a folder, if there."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def call_once(name: str, run: Run) -> list[dict]:
    """Time one call of the contender ``name`` (run in a fresh process by :func:`isolated`).

    Returns
    -------
    list of dict
        One row: ``name``, ``seconds``, ``growth`` (peak RSS above the RSS on entry) and ``written``
        (bytes of the output). The output is deleted afterwards, unless it is a kept first-round one.
    """
    warnings.simplefilter("ignore")
    contender = CONTENDERS[name]
    out = run.output(contender)
    remove(out)
    with contender.make(run, out) as call:
        with PeakRSS() as rss:
            seconds, result = timed(call)
        del result
    row = {"name": name, "seconds": seconds, "growth": rss.growth, "written": size_of(out)}
    if not (contender.keep and run.round == 0):
        remove(out)
    return [row]


def run_rounds(contenders: list[Contender], scene: str, folder: str, params: dict,
               start_method: str = "spawn") -> list[dict]:
    """``repeats`` rounds in which every contender makes one call, in a fresh process, in turn.

    ``start_method`` ``"spawn"`` starts each process anew; ``"forkserver"`` forks it from a server
    that imported :data:`LIBRARIES` once (and ran nothing else): fresh too, started in milliseconds
    rather than seconds, but the RSS growth then also counts the library pages the call maps for the
    first time in its process (10-20 MiB here), so full runs spawn.

    Returns one row per contender: its ``seconds`` of every round and the best, the highest RSS
    growth and the first round's ``written`` bytes. Each call's time goes to stderr as it comes.
    """
    rows = {c.name: {"name": c.name, "family": c.family, "rounds": [], "growth": 0, "written": None}
            for c in contenders}
    if start_method == "forkserver":
        multiprocessing.get_context("forkserver").set_forkserver_preload(["__main__", *LIBRARIES])
    for index in range(params["repeats"]):
        run = Run(scene, folder, params, index)
        for contender in contenders:
            (got,) = isolated(call_once, contender.name, run, start_method=start_method)
            print(f"  round {index + 1}/{params['repeats']}  {contender.name:<28}{got['seconds']:8.2f} s",
                  file=sys.stderr, flush=True)
            row = rows[contender.name]
            row["rounds"].append(got["seconds"])
            row["growth"] = max(row["growth"], got["growth"])
            row["written"] = got["written"] if row["written"] is None else row["written"]
    for row in rows.values():
        row["seconds"] = min(row["rounds"])
    return list(rows.values())


def add_ratios(rows: list[dict], contenders: list[Contender], params: dict) -> None:
    """Each row's ``gbps``, ``vs_limit``, ``vs_xarray`` and ``growth_vs_budget`` (None where it has none)."""
    from patchkit.core.units import parse_bytes

    by_name = {row["name"]: row for row in rows}
    budget = parse_bytes(params["max_memory"])
    for contender, row in zip(contenders, rows):
        limit = by_name.get(contender.limit)
        peers = [r["seconds"] for c, r in zip(contenders, rows)
                 if c.family == "xarray" and contender.family == "patchkit" and c.compression == contender.compression
                 and contender.compression]
        row.update(gbps=patches_nbytes(params) / row["seconds"] / GB,
                   vs_limit=limit["seconds"] / row["seconds"] if limit else None,
                   vs_xarray=min(peers) / row["seconds"] if peers else None,
                   growth_vs_budget=row["growth"] / budget if contender.budgeted else None)


# --------------------------------------------------------------------------------------------------
# Reporting and command line
# --------------------------------------------------------------------------------------------------


def patches_nbytes(params: dict) -> int:
    """Bytes of all the (VALID, uint16) patches of the scene."""
    per_side = (params["size"] - params["patch"]) // params["stride"] + 1
    return 2 * params["bands"] * params["patch"] ** 2 * per_side ** 2


def filesystem(path: str) -> str:
    """The type and mount point of the filesystem that holds ``path`` (``"tmpfs on /dev/shm"``)."""
    path = os.path.realpath(path)
    best = ("?", "")
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            _, mount, kind = line.split()[:3]
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best[1]):
                best = (kind, mount)
    return f"{best[0]} on {best[1] or '?'}"


def print_header(params: dict, folder: str, skipped: list[str], start_method: str) -> None:
    """The scene, the folder and its filesystem, how the rounds run, and the rows left out."""
    scene = 2 * params["bands"] * params["size"] ** 2
    print(f"scene: {params['bands']} bands x {params['size']}x{params['size']} uint16 GeoTIFF ({format_size(scene)}), "
          f"read lazily in {params['chunks']}x{params['chunks']} chunks; VALID patches {params['patch']} stride "
          f"{params['stride']} ({format_size(patches_nbytes(params))}); patchkit max_memory {params['max_memory']}")
    print(f"folder: {folder} ({filesystem(folder)}); {os.cpu_count()} cores; best of {params['repeats']} "
          f"round(s), each call in a fresh process ({start_method}), contenders taking turns")
    print(f"deflate limit with {Deflate().name}")
    for line in skipped:
        print(f"skipped: {line}")


def cell(value: float | None, width: int, unit: str = "x") -> str:
    """``value`` with two decimals and ``unit``, or ``-`` where there is none, right-aligned in ``width``."""
    return f"{'-' if value is None else f'{value:.2f}{unit}':>{width}}"


def size_cell(nbytes: int | None, width: int) -> str:
    """A byte count in GiB, MiB or KiB (``-`` for None), right-aligned in ``width``."""
    if nbytes is None:
        return f"{'-':>{width}}"
    unit, scale = next((u, s) for u, s in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10), ("B", 1))
                       if abs(nbytes) >= s or s == 1)
    return f"{nbytes / scale:.{0 if scale == 1 else 1}f} {unit}".rjust(width)


def print_table(rows: list[dict]) -> None:
    """One line per row: seconds, GB/s of patches, ratios, bytes written, RSS growth and its budget ratio."""
    print(f"\n{'contender':<28}{'best s':>8}{'GB/s':>7}{'vs limit':>10}{'vs xarray':>11}{'written':>12}"
          f"{'RSS growth':>12}{'/ max_mem':>11}")
    for row in rows:
        print(f"{row['name']:<28}{row['seconds']:>8.2f}{row['gbps']:>7.2f}{cell(row['vs_limit'], 10)}"
              f"{cell(row['vs_xarray'], 11)}{size_cell(row['written'] or None, 12)}{size_cell(row['growth'], 12)}"
              f"{cell(row['growth_vs_budget'], 11)}")
    print("vs limit: the limit's seconds / the row's (1.00x = as fast as the limit); vs xarray: the faster xarray "
          "way's seconds (same compression) / the row's;\nGB/s: bytes of patches per second; / max_mem: RSS growth "
          "over max_memory (GDAL's block cache included: the plan gives it a share)")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict]:
    """The command line, and the scene's parameters it selects."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a 512x512 scene, one round: checks that the script runs, its figures mean little")
    parser.add_argument("--dir", type=Path, metavar="PATH",
                        help="folder for the scene and every output (a fresh subfolder is made and removed); "
                             "default: a temporary folder. Try /dev/shm/... and a folder on disk")
    parser.add_argument("--repeats", type=int, metavar="N",
                        help="rounds; each row's best call counts (default 3; 1 with --quick)")
    parser.add_argument("--start-method", choices=("spawn", "forkserver"),
                        help="how each call's process starts (default spawn; forkserver with --quick): forkserver "
                             "saves 2-3 s of imports a call but adds library pages to the RSS growth")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every row to this JSON file")
    args = parser.parse_args(argv)
    args.start_method = args.start_method or ("forkserver" if args.quick else "spawn")
    params = dict(QUICK if args.quick else FULL)
    if args.repeats is not None:
        if args.repeats < 1:
            parser.error("--repeats must be at least 1")
        params["repeats"] = args.repeats
    return args, params


def available(contenders: list[Contender]) -> tuple[list[Contender], list[str]]:
    """The contenders that can run (their modules installed, what they read kept), and why others cannot.

    Raises
    ------
    RuntimeError
        A contender reads the output of one that does not run before it.
    """
    order = [c.name for c in contenders]
    kept, lines = [], []
    for index, contender in enumerate(contenders):
        if contender.reads and contender.reads not in order[:index]:
            raise RuntimeError(f"{contender.name!r} reads {contender.reads!r}, which does not run before it")
        missing = [m for m in contender.needs if importlib.util.find_spec(m) is None]
        if missing:
            lines.append(f"{contender.name} ({', '.join(missing)} not installed)")
        elif contender.reads and contender.reads not in {c.name for c in kept}:
            lines.append(f"{contender.name} (it reads the output of {contender.reads}, skipped)")
        else:
            kept.append(contender)
    return kept, lines


def main(argv: list[str] | None = None) -> list[dict]:
    """Write the scene, run the rounds, print the table; the rows (also to ``--json``)."""
    args, params = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the processes that import TensorFlow inherit it
    contenders, skipped = available(list(CONTENDERS.values()))
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_sinks-") as folder:
        scene = str(write_scene(Path(folder) / "scene.tif", params["bands"], params["size"]))
        print_header(params, folder, skipped, args.start_method)
        rows = run_rounds(contenders, scene, folder, params, args.start_method)
        fs = filesystem(folder)
    add_ratios(rows, contenders, params)
    print_table(rows)
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        settings = [{f.name: getattr(c, f.name) for f in fields(c) if f.name != "make"} for c in contenders]
        args.json.write_text(json.dumps({"params": params, "filesystem": fs, "cores": os.cpu_count(),
                                         "start_method": args.start_method, "contenders": settings,
                                         "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
