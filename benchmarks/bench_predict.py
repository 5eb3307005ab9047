"""Sliding-window inference with ``patchkit.predict`` against the model alone, the naive TensorFlow way and a copy.

Run ``python benchmarks/bench_predict.py [--quick] [--dir PATH] [--repeats N] [--batch N] [--json PATH]``.

The scene is a 4-band float32 GeoTIFF (4096 x 4096, 512 x 512 tiles, 256 MiB; a smooth deterministic
pattern in [0, 1]) written once (untimed) into ``--dir``; the same pixels are made in memory where a row
needs them there. The model is a small Keras convolutional net with fixed weights (seed 0):
``Conv2D(4 -> 16, 3x3, relu)``, ``Conv2D(16 -> 1, 1x1)``. Patches are 256 pixels at stride 192, SAME
(22 x 22 = 484 patches, 484 MiB of float32 input patches); every row that runs the model runs it on
batches of ``--batch`` patches (16), so that they all do the same work. ``--quick`` shrinks all that
(512 x 512, 64-pixel patches at stride 48, batches of 8, one round, processes forked from a server
that imported the libraries: seconds; its figures mean nothing).

Rows (each call in a fresh process, its imports and inputs made, and the model called once, before
the clock):

* ``model alone, model(batch)`` / ``model alone, tf.function``: the limit. The scene's patches
  extracted before the clock (not timed), cut into the batches, and the model called on each batch
  eagerly, or through ``tf.function`` (traced before the clock): the faster of the two is the
  *model limit*, the speed of the model itself on batches already in memory.
* ``predict -> memory`` / ``predict -> tif``: ``patchkit.predict`` end to end on the GeoTIFF opened
  lazily by rioxarray (dask chunks 1024 x 1024) inside the clock, ``blend="gaussian"``,
  ``max_memory`` 256 MiB, ``batch_size`` ``--batch``, into an in-memory DataArray or into
  ``out=<file>.tif``. One small ``predict`` the same way of the scene's top-left corner runs before
  the clock (the model's, GDAL's and patchkit's first-call costs, as the other rows' warm-up calls).
* ``naive TensorFlow``: the scene read eagerly (rioxarray), ``tf.image.extract_patches`` of the whole
  of it, ``model.predict(patches, batch_size=...)``, and the predictions overlap-added back with
  numpy (mean blend, float32 sums). It holds the overlapping patches several times over.
* ``predict identity, mean`` / ``, gaussian``: ``patchkit.predict`` of the in-memory scene
  (``[1, h, w, 4]`` ndarray) with a model that returns its batch: patchkit's own cost, extraction,
  batching and blending. The result must equal the scene (checked, untimed, in the first round).
* ``stitch, mean`` / ``, gaussian``: ``patchkit.stitch`` of the scene's patches, extracted before
  the clock (``[1, 22, 22, 256 * 256 * 4]``). Its result must equal the scene too.
* ``limit: warm copy, N thread(s)``: ``np.copyto`` of the patch bytes (484 MiB) into a buffer
  written beforehand, whole or in N parts on N threads: the faster is the *warm-copy limit* of the
  patch bytes that the identity and stitch rows read.

Fairness: every call runs in a freshly spawned process (``--quick`` forks it from a fork server that
imported the libraries); the rounds take turns across the rows (A B C, A B C, ...), so the drift of
a busy machine touches every row alike. Each call's time goes to stderr as it comes. The table gives
each row's median and best; ratios divide medians (the VM's cores are shared: medians resist one slow
round better than bests do), and ``--json`` holds the ratios of the bests too.

Columns: ``median s`` / ``best s``; ``patches/s`` and ``GB/s`` (bytes of the input patches, 1 GB =
10**9 B), the same numerators for every row; ``vs limit``: the limit's median over the row's (the
model limit for the rows that run the model, the warm-copy limit for identity and stitch);
``vs naive``: the naive row's median over the row's; ``RSS growth``: peak RSS of the call above its
RSS on entry (the kernel's high-water mark, reset before the call; the highest of the rounds);
``/ max_mem``: that over ``max_memory``, for the rows that run under it; ``- model``: that growth less
the model's own (the ``model(batch)`` row's, where TensorFlow's activations live), over
``max_memory``. The header gives the load average as the run began and ended: the cores are shared.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import GB, PeakRSS, copy_threads, format_size, isolated, split_copy, timed  # noqa: E402
from bench_sinks import cell, filesystem, remove, size_cell, size_of  # noqa: E402

FULL = dict(bands=4, size=4096, patch=256, stride=192, chunks=1024, batch=16, max_memory="256MiB", repeats=3)
QUICK = dict(bands=4, size=512, patch=64, stride=48, chunks=256, batch=8, max_memory="16MiB", repeats=1)
SEED = 0
#: What the fork server imports once (``--start-method forkserver``); spawned calls import what they need.
LIBRARIES = ("tensorflow", "keras", "rioxarray", "dask.array", "patchkit")
#: The issue's targets: (numerator row, denominator, op, target). Denominators ``model``, ``copy``
#: (the limits), ``eager`` (the model called eagerly), ``naive`` (its row) and ``max_memory`` (RSS growth
#: over the budget). Rows without a target are reported only.
TARGETS = (
    ("predict -> memory", "model", ">=", 0.85),
    ("predict -> tif", "model", ">=", 0.85),
    ("predict -> memory", "eager", None, None),
    ("predict -> tif", "eager", None, None),
    ("predict -> memory", "naive", ">=", 1.2),
    ("predict -> tif", "naive", ">=", 1.2),
    ("predict -> memory", "max_memory", "<=", 1.25),
    ("predict -> tif", "max_memory", "<=", 1.25),
    ("naive TensorFlow", "max_memory", None, None),
    ("predict identity, mean", "copy", ">=", 0.5),
    ("stitch, mean", "copy", ">=", 0.5),
    ("predict identity, gaussian", "copy", None, None),
    ("stitch, gaussian", "copy", None, None),
)


# --------------------------------------------------------------------------------------------------
# The scene, its patches and the model
# --------------------------------------------------------------------------------------------------


def scene_pixels(bands: int, size: int) -> np.ndarray:
    """The scene, ``[1, size, size, bands]`` float32 in [0, 1]: a smooth deterministic pattern."""
    y = np.arange(size, dtype=np.uint32)[:, None]
    x = np.arange(size, dtype=np.uint32)[None, :]
    out = np.empty((1, size, size, bands), np.float32)
    for band in range(bands):
        out[0, :, :, band] = ((31 * y + 17 * x + 7919 * band) % 65536).astype(np.float32) / np.float32(65535)
    return out


def write_scene(path: Path, pixels: np.ndarray) -> Path:
    """``pixels`` (``[1, h, w, bands]``) as a tiled float32 GeoTIFF (UTM 33N, 10 m pixels, 512 x 512 tiles)."""
    import rasterio
    from rasterio.transform import from_origin

    _, h, w, bands = pixels.shape
    profile = dict(driver="GTiff", width=w, height=h, count=bands, dtype="float32", crs="EPSG:32633",
                   transform=from_origin(500000.0, 4200000.0, 10.0, 10.0), tiled=True,
                   blockxsize=min(512, w), blockysize=min(512, h))
    with rasterio.open(path, "w", **profile) as dst:
        for band in range(bands):
            dst.write(pixels[0, :, :, band], band + 1)
    return path


def spec_of(params: dict):
    """The patches' :class:`patchkit.PatchSpec` (SAME)."""
    from patchkit import PatchSpec

    return PatchSpec(params["patch"], params["stride"], padding="SAME")


def scene_shape(params: dict) -> tuple[int, int, int, int]:
    return 1, params["size"], params["size"], params["bands"]


def n_patches(params: dict) -> int:
    rows, cols = spec_of(params).grid_shape(scene_shape(params))
    return rows * cols


def patches_nbytes(params: dict) -> int:
    """Bytes of all the (float32) input patches of the scene."""
    return n_patches(params) * params["patch"] ** 2 * params["bands"] * 4


def scene_patches(params: dict) -> np.ndarray:
    """All the scene's patches in TensorFlow's layout, ``[1, rows, cols, k * k * bands]``."""
    import patchkit

    p = params
    return patchkit.extract_patches(scene_pixels(p["bands"], p["size"]), p["patch"], p["stride"], padding="SAME")


def batches_of(params: dict) -> list[np.ndarray]:
    """The scene's patches as batches ``[n, k, k, bands]`` of ``params["batch"]`` (the last one shorter)."""
    k, c, b = params["patch"], params["bands"], params["batch"]
    patches = scene_patches(params).reshape(-1, k, k, c)
    return [np.ascontiguousarray(patches[i:i + b]) for i in range(0, len(patches), b)]


def build_model(params: dict):
    """The Keras model, the same weights in every process: Conv2D(bands -> 16, 3x3, relu), Conv2D(16 -> 1, 1x1)."""
    import keras

    keras.utils.set_random_seed(SEED)
    k, c = params["patch"], params["bands"]
    return keras.Sequential([keras.Input((k, k, c)), keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                             keras.layers.Conv2D(1, 1)], name="bench_predict")


def warm_model(fn: Callable[[np.ndarray], Any], params: dict) -> None:
    """Call ``fn`` once on a full batch and once on the last, shorter one (shapes a compiled model traces for)."""
    k, c, b = params["patch"], params["bands"], params["batch"]
    tail = n_patches(params) % b
    for n in {b, tail} - {0}:
        fn(np.zeros((n, k, k, c), np.float32))


def overlap_add(predictions: np.ndarray, grid: tuple[int, int], stride: int, hw: tuple[int, int]) -> np.ndarray:
    """The naive way back: SAME patches' predictions ``[rows * cols, k, k, m]`` averaged onto ``[1, h, w, m]``.

    Each patch is added into a float32 canvas of the padded image at ``(i * stride, j * stride)``,
    a count of patches beside it; the padding (TensorFlow's SAME: half before, the rest after) is
    cut off and the sums divided by the counts.
    """
    rows, cols = grid
    n, kh, kw, m = predictions.shape
    h, w = hw
    top = max((rows - 1) * stride + kh - h, 0) // 2
    left = max((cols - 1) * stride + kw - w, 0) // 2
    sums = np.zeros(((rows - 1) * stride + kh, (cols - 1) * stride + kw, m), np.float32)
    counts = np.zeros(sums.shape[:2], np.float32)
    for index in range(n):
        i, j = divmod(index, cols)
        sums[i * stride:i * stride + kh, j * stride:j * stride + kw] += predictions[index]
        counts[i * stride:i * stride + kh, j * stride:j * stride + kw] += 1
    sums, counts = sums[top:top + h, left:left + w], counts[top:top + h, left:left + w]
    return (sums / counts[:, :, None])[None]


# --------------------------------------------------------------------------------------------------
# What a call gets, and what a row is
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One round's view of the benchmark: the scene, where outputs go, the parameters, the round (from 0)."""

    scene: str
    folder: str
    params: dict
    round: int = 0

    def output(self, contender: "Contender") -> Path:
        """Where ``contender`` writes in this round (``folder/out/<name>-r<round><suffix>``)."""
        slug = "".join(c if c.isalnum() else "-" for c in contender.name)
        return Path(self.folder) / "out" / f"{slug}-r{self.round}{contender.suffix}"

    def open_lazy(self):
        """The scene opened lazily with rioxarray, in the benchmark's dask chunks."""
        import rioxarray

        chunks = self.params["chunks"]
        return rioxarray.open_rasterio(self.scene, chunks={"band": -1, "y": chunks, "x": chunks})


#: ``make(run, out)``: a context manager that prepares a call (untimed) and yields it.
Maker = Callable[[Run, Path], ContextManager[Callable[[], object]]]
#: ``check(result, run, out)``: a note on the first round's result; raises CheckFailed when it is wrong.
Check = Callable[[Any, Run, Path], str]


class CheckFailed(Exception):
    """A row's result is wrong (its first-round check)."""


@dataclass(frozen=True)
class Contender:
    """One row of the table.

    Attributes
    ----------
    name : str
        The row's name.
    make : callable
        ``make(run, out)``: a context manager whose entry prepares the call (imports, inputs, warm-up:
        untimed) and gives the timed call, a callable without arguments.
    family : str
        ``"model"`` (the model limit's rows), ``"copy"`` (the warm-copy limit's), ``"predict"``,
        ``"naive"``, ``"overhead"`` (identity and stitch: set against the warm-copy limit).
    budgeted : bool
        The call runs under ``max_memory``: its RSS growth is set against it.
    suffix : str
        Of the output path (``".tif"`` for a file); empty for rows that write nothing.
    needs : tuple of str
        Modules the call imports: without them the row is skipped, saying so.
    predict : bool
        The call uses ``patchkit.predict``: skipped where this patchkit has none.
    check : callable, optional
        ``check(result, run, out)``, called on the first round's result, untimed: a note for the table.
    """

    name: str
    make: Maker
    family: str
    budgeted: bool = False
    suffix: str = ""
    needs: tuple[str, ...] = ()
    predict: bool = False
    check: Check | None = None


# --------------------------------------------------------------------------------------------------
# The model alone (the limit) and the naive way
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def model_alone(run: Run, out: Path, compiled: bool) -> Iterator[Callable[[], object]]:
    """The model on every batch of the scene's patches, already in memory (eager, or through tf.function)."""
    import tensorflow as tf

    p = run.params
    model = build_model(p)
    fn = model
    if compiled:
        spec = tf.TensorSpec([None, p["patch"], p["patch"], p["bands"]], tf.float32)
        fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    batches = batches_of(p)
    warm_model(fn, p)

    def call():
        for batch in batches:
            fn(batch)

    yield call


def check_prediction(result: Any, run: Run, out: Path) -> str:
    """A prediction (array, DataArray or GeoTIFF path) has the scene's grid, one channel, finite values."""
    p = run.params
    if isinstance(result, (str, os.PathLike)):
        import rasterio

        with rasterio.open(result) as src:
            values, crs = src.read(), src.crs
    else:
        values, crs = np.asarray(result), (result.rio.crs if hasattr(result, "rio") else None)
    got = values.shape
    if values.squeeze().shape != (p["size"], p["size"]):
        raise CheckFailed(f"prediction of shape {got}: the scene is {p['size']} x {p['size']}, the model gives 1 channel")
    if not np.isfinite(values).all():
        raise CheckFailed("prediction has values that are not finite")
    where = f", CRS {crs}" if crs is not None else ""
    return f"{'x'.join(map(str, got))} {values.dtype}{where}"


@contextlib.contextmanager
def naive_tensorflow(run: Run, out: Path) -> Iterator[Callable[[], object]]:
    """Read the scene, ``tf.image.extract_patches`` of it whole, ``model.predict``, overlap-added back with numpy."""
    import rioxarray
    import tensorflow as tf

    p = run.params
    k, s, c, size = p["patch"], p["stride"], p["bands"], p["size"]
    model = build_model(p)
    warm_model(functools.partial(model.predict, batch_size=p["batch"], verbose=0), p)
    tf.image.extract_patches(tf.zeros((1, k, k, c)), [1, k, k, 1], [1, s, s, 1], [1, 1, 1, 1], "SAME")

    def call():
        with rioxarray.open_rasterio(run.scene) as da:
            image = da.values  # [bands, h, w]
        x = tf.constant(np.moveaxis(image, 0, -1)[None])
        patches = tf.image.extract_patches(x, [1, k, k, 1], [1, s, s, 1], [1, 1, 1, 1], "SAME")
        grid = tuple(patches.shape[1:3])
        predictions = model.predict(tf.reshape(patches, [-1, k, k, c]), batch_size=p["batch"], verbose=0)
        return overlap_add(predictions, grid, s, (size, size))

    yield call


def model_contenders() -> list[Contender]:
    """The model limit: eager and through tf.function."""
    tf = ("tensorflow", "keras")
    return [
        Contender("model alone, model(batch)", functools.partial(model_alone, compiled=False), "model", needs=tf),
        Contender("model alone, tf.function", functools.partial(model_alone, compiled=True), "model", needs=tf),
    ]


# --------------------------------------------------------------------------------------------------
# patchkit: predict end to end, and its own overhead (identity model, stitch)
# --------------------------------------------------------------------------------------------------


def predict_options(params: dict, blend: str) -> dict:
    return dict(padding="SAME", batch_size=params["batch"], blend=blend, max_memory=params["max_memory"])


@contextlib.contextmanager
def predict_scene(run: Run, out: Path, to_file: bool) -> Iterator[Callable[[], object]]:
    """``patchkit.predict`` of the lazily read GeoTIFF with the Keras model, into memory or ``out`` (a .tif).

    Before the clock: the imports, and one ``predict`` the same way of the lazily read scene's top-left
    corner (one patch and a stride on each side), which pays the first-call costs (the model's, GDAL's,
    dask's, patchkit's) as the other rows' warm-up calls do.
    """
    import dask.array  # noqa: F401  (imported before the clock)
    import rioxarray  # noqa: F401

    import patchkit

    p = run.params
    model = build_model(p)
    options = predict_options(p, "gaussian")
    corner = {"y": slice(0, p["patch"] + p["stride"]), "x": slice(0, p["patch"] + p["stride"])}
    warm = out.with_name("warm-up.tif") if to_file else None
    with run.open_lazy() as da:
        patchkit.predict(da.isel(corner), model, p["patch"], p["stride"], out=warm, **options)
    if warm is not None:
        remove(warm)

    def call():
        with run.open_lazy() as da:
            result = patchkit.predict(da, model, p["patch"], p["stride"], out=out if to_file else None, **options)
            return result if to_file else result.load()

    yield call


def identity(batch: Any) -> Any:
    """The identity model: its batch back, as it came."""
    return batch


def check_scene(result: Any, run: Run, out: Path) -> str:
    """The result (``[1, h, w, bands]``) equals the scene bit for bit."""
    expected = scene_pixels(run.params["bands"], run.params["size"])
    got = np.asarray(result)
    if got.shape != expected.shape:
        raise CheckFailed(f"result of shape {got.shape}, the scene is {expected.shape}")
    if not np.array_equal(got, expected):
        diff = np.nanmax(np.abs(got.astype(np.float64) - expected))
        raise CheckFailed(f"result differs from the scene: max |diff| {diff:.3g}, {np.isnan(got).sum()} NaN")
    return "equals the scene, bit for bit"


@contextlib.contextmanager
def predict_identity(run: Run, out: Path, blend: str) -> Iterator[Callable[[], object]]:
    """``patchkit.predict`` of the in-memory scene with the identity model."""
    import patchkit

    p = run.params
    scene = scene_pixels(p["bands"], p["size"])
    options = predict_options(p, blend)
    patchkit.predict(scene_pixels(p["bands"], p["patch"] + p["stride"]), identity, p["patch"], p["stride"],
                     **options)  # first-call costs, before the clock
    yield functools.partial(patchkit.predict, scene, identity, p["patch"], p["stride"], **options)


@contextlib.contextmanager
def stitch_patches(run: Run, out: Path, blend: str) -> Iterator[Callable[[], object]]:
    """``patchkit.stitch`` of the scene's patches, extracted before the clock."""
    import patchkit

    p = run.params
    patches = scene_patches(p)
    yield functools.partial(patchkit.stitch, patches, blend, spec=spec_of(p), image_shape=scene_shape(p))


def patchkit_contenders() -> list[Contender]:
    """predict end to end (memory, GeoTIFF), the naive TensorFlow way, predict with the identity model and
    stitch (mean and gaussian)."""
    lazy = ("tensorflow", "keras", "rioxarray")
    rows = [
        Contender("predict -> memory", functools.partial(predict_scene, to_file=False), "predict", budgeted=True,
                  needs=lazy, predict=True, check=check_prediction),
        Contender("predict -> tif", functools.partial(predict_scene, to_file=True), "predict", budgeted=True,
                  suffix=".tif", needs=lazy, predict=True, check=check_prediction),
        Contender("naive TensorFlow", naive_tensorflow, "naive", needs=lazy, check=check_prediction),
    ]
    for blend in ("mean", "gaussian"):
        rows.append(Contender(f"predict identity, {blend}", functools.partial(predict_identity, blend=blend),
                              "overhead", budgeted=True, predict=True, check=check_scene))
    for blend in ("mean", "gaussian"):
        rows.append(Contender(f"stitch, {blend}", functools.partial(stitch_patches, blend=blend), "overhead",
                              check=check_scene))
    return rows


# --------------------------------------------------------------------------------------------------
# The warm-copy limit
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def warm_copy(run: Run, out: Path, threads: int) -> Iterator[Callable[[], object]]:
    """``np.copyto`` of the patch bytes into a buffer written beforehand, on ``threads`` threads."""
    src = np.full(patches_nbytes(run.params) // 4, 1, np.float32)  # not np.zeros: the zero page
    dst = np.full_like(src, 0)
    with ThreadPoolExecutor(threads) as pool:
        yield functools.partial(split_copy, dst, src, threads, pool)


def copy_contenders() -> list[Contender]:
    return [Contender(f"limit: warm copy, {n} thread{'s' * (n > 1)}", functools.partial(warm_copy, threads=n), "copy")
            for n in copy_threads()]


#: Every row, in the order a round runs them.
CONTENDERS: dict[str, Contender] = {c.name: c for c in (*model_contenders(), *patchkit_contenders(),
                                                         *copy_contenders())}


# --------------------------------------------------------------------------------------------------
# Running: one call per fresh process, rounds taking turns
# --------------------------------------------------------------------------------------------------


def call_once(name: str, run: Run) -> list[dict]:
    """Time one call of the row ``name`` (run in a fresh process by :func:`isolated`).

    Returns one row: ``name``, ``seconds``, ``growth`` (peak RSS above the RSS on entry), ``written``
    (bytes of the output file) and, in the first round, the check's ``note`` (or ``failed``). The
    output is deleted afterwards.
    """
    warnings.simplefilter("ignore")
    contender = CONTENDERS[name]
    out = run.output(contender)
    remove(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    row: dict = {"name": name}
    with contender.make(run, out) as call:
        with PeakRSS() as rss:
            seconds, result = timed(call)
        row.update(seconds=seconds, growth=rss.growth, written=size_of(out))
        if contender.check is not None and run.round == 0:
            try:
                row["note"] = contender.check(result, run, out)
            except CheckFailed as exc:
                row["failed"] = str(exc)
        del result
    remove(out)
    return [row]


def load_average() -> float | None:
    """The 1-minute load average (None where the system has none)."""
    with contextlib.suppress(OSError, AttributeError):
        return os.getloadavg()[0]
    return None


def run_rounds(contenders: list[Contender], scene: str, folder: str, params: dict, start_method: str) -> list[dict]:
    """``repeats`` rounds in which every row makes one call, in a fresh process, in turn.

    Returns one row per contender: its ``rounds`` (seconds), ``median`` and ``best``, the highest RSS
    growth, the first round's ``written`` bytes and check (``note`` or ``failed``).
    """
    rows = {c.name: {"name": c.name, "family": c.family, "rounds": [], "growth": 0} for c in contenders}
    if start_method == "forkserver":
        multiprocessing.get_context("forkserver").set_forkserver_preload(["__main__", *LIBRARIES])
    for index in range(params["repeats"]):
        run = Run(scene, folder, params, index)
        for contender in contenders:
            (got,) = isolated(call_once, contender.name, run, start_method=start_method)
            print(f"  round {index + 1}/{params['repeats']}  {contender.name:<30}{got['seconds']:8.2f} s"
                  f"  load {load_average() or 0:.1f}", file=sys.stderr, flush=True)
            row = rows[contender.name]
            row["rounds"].append(got["seconds"])
            row["growth"] = max(row["growth"], got["growth"])
            for key in ("written", "note", "failed"):
                if key in got:
                    row.setdefault(key, got[key])
    for row in rows.values():
        row["median"], row["best"] = statistics.median(row["rounds"]), min(row["rounds"])
    return list(rows.values())


# --------------------------------------------------------------------------------------------------
# Ratios
# --------------------------------------------------------------------------------------------------


def limit_of(rows: list[dict], family: str, key: str = "median") -> dict | None:
    """The fastest row of ``family`` (``"model"`` or ``"copy"``) by ``key``: the limit; None without one."""
    candidates = [row for row in rows if row["family"] == family]
    return min(candidates, key=lambda row: row[key]) if candidates else None


def add_ratios(rows: list[dict], params: dict) -> None:
    """Each row's throughputs and ratios to its limit and to the naive way (medians; bests under ``*_best``)."""
    from patchkit.core.units import parse_bytes

    budget = parse_bytes(params["max_memory"])
    by_name = {row["name"]: row for row in rows}
    model_growth = by_name.get("model alone, model(batch)", {}).get("growth")
    limits = {"predict": "model", "naive": "model", "overhead": "copy"}
    for row in rows:
        contender = CONTENDERS[row["name"]]
        row["patches_per_s"] = n_patches(params) / row["median"]
        row["gbps"] = patches_nbytes(params) / row["median"] / GB
        for key, suffix in (("median", ""), ("best", "_best")):
            limit = limit_of(rows, limits[row["family"]], key) if row["family"] in limits else None
            naive = by_name.get("naive TensorFlow") if row["family"] == "predict" else None
            row["vs_limit" + suffix] = limit[key] / row[key] if limit else None
            row["vs_naive" + suffix] = naive[key] / row[key] if naive else None
        row["limit"] = limit["name"] if limit else None
        budgeted = contender.budgeted or row["family"] == "naive"
        row["growth_vs_budget"] = row["growth"] / budget if budgeted else None
        less = row["growth"] - model_growth if model_growth is not None and row["family"] in ("predict", "naive") else None
        row["growth_less_model_vs_budget"] = less / budget if less is not None else None


def target_lines(rows: list[dict]) -> list[dict]:
    """The issue's targets (:data:`TARGETS`) read off the rows: value, target, whether met."""
    by_name = {row["name"]: row for row in rows}
    column = {"model": "vs_limit", "copy": "vs_limit", "naive": "vs_naive", "max_memory": "growth_vs_budget"}
    eager = by_name.get("model alone, model(batch)")
    lines = []
    for name, against, op, target in TARGETS:
        row = by_name.get(name)
        if against == "eager":
            value = eager["median"] / row["median"] if row is not None and eager is not None else None
        else:
            value = None if row is None else row.get(column[against])
        if value is None:
            continue
        met = None if op is None else (value >= target if op == ">=" else value <= target)
        label = {"model": "model limit", "copy": "warm-copy limit", "naive": "naive TensorFlow",
                 "eager": "model(batch), eager", "max_memory": "max_memory (RSS growth)"}[against]
        lines.append({"name": name, "against": label, "value": value, "op": op, "target": target, "met": met})
    return lines


# --------------------------------------------------------------------------------------------------
# Reporting and command line
# --------------------------------------------------------------------------------------------------


def print_header(params: dict, folder: str, skipped: list[str], start_method: str, load: float | None) -> None:
    """The scene, the model, the folder and its filesystem, how the rounds run, and the rows left out."""
    p = params
    rows, cols = spec_of(p).grid_shape(scene_shape(p))
    print(f"scene: {p['bands']} bands x {p['size']}x{p['size']} float32 GeoTIFF "
          f"({format_size(4 * p['bands'] * p['size'] ** 2)}), read lazily in {p['chunks']}x{p['chunks']} chunks; "
          f"SAME patches {p['patch']} stride {p['stride']}: {rows}x{cols} = {rows * cols} patches "
          f"({format_size(patches_nbytes(p))})")
    print(f"model: Keras Conv2D({p['bands']}->16, 3x3, relu), Conv2D(16->1, 1x1), seed {SEED}; batches of "
          f"{p['batch']}; predict: blend gaussian, max_memory {p['max_memory']}")
    print(f"folder: {folder} ({filesystem(folder)}); {os.cpu_count()} cores; {p['repeats']} round(s), each call "
          f"in a fresh process ({start_method}), rows taking turns; load average at start {load or 0:.2f}")
    for line in skipped:
        print(f"skipped: {line}")


def print_table(rows: list[dict]) -> None:
    """One line per row, its check's note or failure under it."""
    print(f"\n{'row':<30}{'median s':>9}{'best s':>8}{'patches/s':>10}{'GB/s':>7}{'vs limit':>10}{'vs naive':>10}"
          f"{'RSS growth':>12}{'/ max_mem':>11}{'- model':>9}")
    for row in rows:
        print(f"{row['name']:<30}{row['median']:>9.2f}{row['best']:>8.2f}{row['patches_per_s']:>10.1f}"
              f"{row['gbps']:>7.2f}{cell(row['vs_limit'], 10)}{cell(row['vs_naive'], 10)}"
              f"{size_cell(row['growth'], 12)}{cell(row['growth_vs_budget'], 11)}"
              f"{cell(row['growth_less_model_vs_budget'], 9)}")
        if row.get("failed"):
            print(f"    CHECK FAILED: {row['failed']}")
    model, copy = limit_of(rows, "model"), limit_of(rows, "copy")
    print(f"vs limit: the limit's median s / the row's: model limit = {model['name'] if model else '-'}, "
          f"warm-copy limit = {copy['name'] if copy else '-'}; vs naive: naive TensorFlow's / the row's;\n"
          "GB/s: bytes of input patches per second; / max_mem: RSS growth over max_memory; - model: the same "
          "less the growth of model alone, model(batch)")


def print_targets(lines: list[dict]) -> None:
    print("\nratios (medians)")
    for line in lines:
        verdict = "" if line["op"] is None else \
            f"  target {'≥' if line['op'] == '>=' else '≤'} {line['target']:g}×  {'met' if line['met'] else 'NOT MET'}"
        print(f"  {line['name']:<28} / {line['against']:<24}{line['value']:7.2f}×{verdict}")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict]:
    """The command line, and the parameters it selects."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a 512x512 scene, one round: checks that the script runs, its figures mean nothing")
    parser.add_argument("--dir", type=Path, metavar="PATH",
                        help="folder for the scene and the outputs (a fresh subfolder, removed at the end); "
                             "default: a temporary folder")
    parser.add_argument("--repeats", type=int, metavar="N", help="rounds (default 3; 1 with --quick)")
    parser.add_argument("--batch", type=int, metavar="N",
                        help="patches per model call in every row (default 16; 8 with --quick)")
    parser.add_argument("--start-method", choices=("spawn", "forkserver"),
                        help="how each call's process starts (default spawn; forkserver with --quick)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every row and ratio to this JSON file")
    args = parser.parse_args(argv)
    args.start_method = args.start_method or ("forkserver" if args.quick else "spawn")
    params = dict(QUICK if args.quick else FULL)
    for name in ("repeats", "batch"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                parser.error(f"--{name} must be at least 1, not {value}")
            params[name] = value
    return args, params


def has_predict() -> bool:
    import patchkit

    return callable(getattr(patchkit, "predict", None))


def available(contenders: list[Contender]) -> tuple[list[Contender], list[str]]:
    """The rows that can run (their modules installed, ``patchkit.predict`` there), and why the others cannot."""
    kept, lines = [], []
    predict = has_predict()
    for contender in contenders:
        missing = [m for m in contender.needs if importlib.util.find_spec(m) is None]
        if missing:
            lines.append(f"{contender.name} ({', '.join(missing)} not installed)")
        elif contender.predict and not predict:
            lines.append(f"{contender.name} (this patchkit has no patchkit.predict)")
        else:
            kept.append(contender)
    return kept, lines


def main(argv: list[str] | None = None) -> int:
    """Write the scene, run the rounds, print the table and the ratios; 1 when a row's check failed."""
    args, params = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the processes that import TensorFlow inherit it
    contenders, skipped = available(list(CONTENDERS.values()))
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
    started, load_start = time.perf_counter(), load_average()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_predict-") as folder:
        scene = str(write_scene(Path(folder) / "scene.tif", scene_pixels(params["bands"], params["size"])))
        print_header(params, folder, skipped, args.start_method, load_start)
        rows = run_rounds(contenders, scene, folder, params, args.start_method)
        fs = filesystem(folder)
    add_ratios(rows, params)
    lines = target_lines(rows)
    print_table(rows)
    print_targets(lines)
    load_end = load_average()
    print(f"total {time.perf_counter() - started:.0f} s; load average at start {load_start or 0:.2f}, "
          f"at end {load_end or 0:.2f} ({os.cpu_count()} cores)")
    if args.json:
        settings = [{f.name: getattr(c, f.name) for f in fields(c) if f.name not in ("make", "check")}
                    for c in contenders]
        args.json.write_text(json.dumps({"params": params, "filesystem": fs, "cores": os.cpu_count(),
                                         "start_method": args.start_method, "load_average": [load_start, load_end],
                                         "skipped": skipped, "contenders": settings, "rows": rows,
                                         "targets": lines}, indent=2))
    return 1 if any(row.get("failed") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
