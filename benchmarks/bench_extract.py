"""Benchmarks of patchkit's extraction against a plain memory copy, TensorFlow and xbatcher.

Run ``python benchmarks/bench_extract.py [--quick] [--case NAME ...]`` (``--help`` lists the options;
``benchmarks/README.md`` explains every case and how to read its ratios).

How it measures: all of a case's contenders (the copies, patchkit, xbatcher and TensorFlow) run in one
freshly spawned process and take turns, round after round, so that a noisy machine's drift touches
them all alike; each one's best call counts (:func:`race`). TensorFlow's cold call is made first in that
process, alone, before any other contender's call. Every ratio divides two figures of that one process,
never figures of different processes or runs. The memory columns come from each contender run once
more, alone, in a fresh process. Throughputs are bytes of output per second (1 GB = 10**9 bytes).

Rows:

* ``copy -> fresh memory, N threads``: ``np.copyto`` of the output's byte count into a new ``np.empty``
  (page faults timed), split over N threads; N is 1, 2, 4... up to the threads patchkit copies with
  (:func:`copy_threads`). The best N is the *fresh-copy limit*.
* ``copy -> warm memory, N threads``: the same into a buffer written beforehand (no page faults): the
  *warm-copy limit*, what a reused block buffer can reach.
* ``patchkit.extract_patches``: the whole output, a new array each call (``large``).
* ``patchkit.iter_patches (ndarray | dask scene, max_memory=...)``: the patches band by band into a
  reused buffer, each block consumed without copying it; throughput = whole output / time to the last
  block.
* ``xbatcher.BatchGenerator, each patch copied``: its first ``--xbatcher-patches`` patches, each copied
  out (``small``).
* ``tf.image.extract_patches, cold (1st call)`` and ``, warm``: on a ``tf.constant`` made beforehand, the
  result left a tensor (both favour TensorFlow); skipped where TensorFlow is not installed.

Ratios whose two sides do different work (``iter_patches`` streaming into a reused buffer against
TensorFlow building its whole output, or against xbatcher copying each patch out) are printed with that
caveat under them. Cases: ``large`` (extract and iter vs TensorFlow and both copy limits), ``small``
(iter vs the warm-copy limit, xbatcher and TensorFlow), ``dask`` (iter over a lazily generated scene:
RSS growth against ``max_memory``).

:class:`PeakRSS`, :func:`best_time` and :func:`format_size` are also used by ``classic_uses.py``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import multiprocessing
import os
import platform
import re
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np

GB = 10**9
MIB = 2**20
GIB = 2**30
SEED = 0
CASE_NAMES = ("large", "small", "dask")
#: Row fields that :func:`measure` takes from each contender's run alone.
MEMORY_COLUMNS = ("peak_rss", "growth", "rss_exact")


# --------------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """An image and the (``VALID``) patches cut from it.

    Attributes
    ----------
    shape : tuple of int
        ``(batch, height, width, channels)`` of the image.
    dtype : str
        Its dtype: float32 images are random, uint16 dask scenes synthetic (see :func:`make_scene`).
    size, stride : int
        Patch size and stride, the same along both axes.
    max_memory : str
        The budget given to :func:`patchkit.iter_patches`.
    chunks : tuple of int, optional
        ``(rows, cols)`` of the dask chunks; ``None`` for an in-memory ndarray.
    """

    shape: tuple[int, int, int, int]
    dtype: str
    size: int
    stride: int
    max_memory: str
    chunks: tuple[int, int] | None = None

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        """Shape of all the patches, ``[batch, out_rows, out_cols, size * size * channels]``."""
        from patchkit import PatchSpec

        return PatchSpec(self.size, self.stride).output_shape(self.shape)

    @property
    def output_nbytes(self) -> int:
        """Bytes of all the patches."""
        return math.prod(self.output_shape) * np.dtype(self.dtype).itemsize

    @property
    def patch_nbytes(self) -> int:
        """Bytes of one patch."""
        return self.size * self.size * self.shape[3] * np.dtype(self.dtype).itemsize

    @property
    def budget(self) -> int:
        """``max_memory`` in bytes."""
        from patchkit.core.units import parse_bytes

        return parse_bytes(self.max_memory)

    def describe(self) -> str:
        """One line: image, spec, output and (for dask) chunks."""
        dims = "×".join(map(str, self.shape))
        out = "×".join(map(str, self.output_shape))
        chunks = f", dask chunks {self.chunks[0]}×{self.chunks[1]}" if self.chunks else ""
        return (f"{dims} {self.dtype}{chunks}, sizes {self.size}, strides {self.stride}, VALID "
                f"→ {out} ({self.output_nbytes / GIB:.2f} GiB of output)")


def make_workloads(quick: bool) -> dict[str, Workload]:
    """The workload of every case: the issue's sizes, or shrunk ones for ``--quick``."""
    if quick:
        return {
            "large": Workload((1, 1024, 1024, 4), "float32", 256, 128, "16MiB"),
            "small": Workload((1, 1024, 1024, 4), "float32", 32, 16, "8MiB"),
            "dask": Workload((1, 2048, 2048, 4), "uint16", 256, 128, "64MiB", chunks=(256, 1024)),
        }
    return {
        "large": Workload((1, 4096, 4096, 4), "float32", 256, 128, "256MiB"),
        "small": Workload((1, 2048, 2048, 4), "float32", 32, 16, "64MiB"),
        "dask": Workload((1, 16384, 16384, 4), "uint16", 256, 128, "512MiB", chunks=(1024, 4096)),
    }


def make_image(workload: Workload) -> np.ndarray:
    """The in-memory image of ``workload``: uniform random float32, the same in every process."""
    return np.random.default_rng(SEED).random(workload.shape, dtype=np.float32).astype(workload.dtype, copy=False)


def make_scene(workload: Workload):
    """The dask scene of ``workload``, defined chunk by chunk and never materialised whole."""
    from patchkit.testing import lazy_scene

    return lazy_scene(workload.shape, workload.dtype, workload.chunks)


# --------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------


def current_rss() -> int:
    """Resident set size of this process now, in bytes."""
    import psutil

    return psutil.Process().memory_info().rss


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak-RSS counter (``VmHWM``) of this process; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _high_water_mark() is not None
    except OSError:
        return False


def _high_water_mark() -> int | None:
    """The kernel's peak RSS of this process (``VmHWM``) in bytes, or None."""
    try:
        with open("/proc/self/status") as f:
            match = re.search(r"^VmHWM:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


class PeakRSS:
    """Peak resident set size of this process inside a ``with`` block.

    On Linux the kernel's exact high-water mark is reset on entry and read on exit; elsewhere a
    thread samples the RSS every 5 ms (and may miss spikes shorter than that).

    Attributes
    ----------
    start : int
        RSS in bytes on entry.
    peak : int
        Peak RSS in bytes, after the block.
    exact : bool
        Whether ``peak`` is the kernel's counter rather than a sample.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.start = self.peak = 0
        self.exact = False

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = current_rss()
        self.exact = _reset_high_water_mark()
        if not self.exact:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, current_rss())

    def __exit__(self, *exc) -> None:
        if self.exact:
            self.peak = max(self.peak, _high_water_mark())
        else:
            self._stop.set()
            self._thread.join()
        self.peak = max(self.peak, current_rss())

    @property
    def growth(self) -> int:
        """Peak RSS above the RSS on entry, in bytes: what the block itself needed at its worst."""
        return self.peak - self.start


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Wall-clock seconds of one call of ``fn``, and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Best wall-clock seconds of ``repeats`` calls of ``fn``.

    Each result is dropped as soon as it is timed, so two results never coexist in memory.
    """
    return min(timed(fn)[0] for _ in range(max(repeats, 1)))


def isolated(worker: Callable[..., list[dict]], *args, start_method: str = "spawn") -> list[dict]:
    """Run ``worker(*args)`` in a new Python process and return its rows.

    ``start_method`` is multiprocessing's: ``"spawn"`` starts a new interpreter; ``"forkserver"``
    forks a process from a server that has only imported the modules given to
    ``multiprocessing.set_forkserver_preload`` (a fresh process as well, its imports already made).
    """
    context = multiprocessing.get_context(start_method)
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(worker, *args).result()


@dataclass
class Contender:
    """One thing to time: ``run`` (its inputs made beforehand, untimed) and how to label it.

    Attributes
    ----------
    key, label : str
        Short name (for ratios and JSON) and the table's description.
    run : callable
        Called with no arguments; its result is dropped after each call.
    nbytes : int
        Bytes of patches one call makes (the throughput's numerator).
    note : str or callable
        The table's note; a callable gets the result of a call (to check it and describe it).
    """

    key: str
    label: str
    run: Callable[[], object]
    nbytes: int
    note: str | Callable[[object], str] = ""


def race(contenders: list[Contender], rounds: int) -> list[dict]:
    """Call every contender once per round, taking turns, for ``rounds`` rounds; one row each.

    Taking turns exposes the contenders to the same drift of a noisy machine (and to the same state
    of its free memory), so their ratios hold even when absolute speeds wander. A row keeps the best
    time, and the highest peak RSS and RSS growth of any one call (each call is metered alone).
    Rows are plain dicts, so that they pickle across processes and go to JSON as they are.
    """
    rows = {c.key: {"key": c.key, "label": c.label, "nbytes": c.nbytes, "seconds": math.inf, "peak_rss": 0,
                    "growth": 0, "rss_exact": True, "note": ""} for c in contenders}
    for _ in range(max(rounds, 1)):
        for contender in contenders:
            with PeakRSS() as meter:
                seconds, result = timed(contender.run)
                note = contender.note(result) if callable(contender.note) else contender.note
                del result
            row = rows[contender.key]
            row.update(seconds=min(row["seconds"], seconds), peak_rss=max(row["peak_rss"], meter.peak),
                       growth=max(row["growth"], meter.growth), rss_exact=row["rss_exact"] and meter.exact,
                       note=note)
    for row in rows.values():
        row["gbps"] = row["nbytes"] / row["seconds"] / GB
    return list(rows.values())


# --------------------------------------------------------------------------------------------------
# Contenders
# --------------------------------------------------------------------------------------------------


def copy_threads() -> tuple[int, ...]:
    """Thread counts the memory-copy limit is measured with: 1, 2, 4... and patchkit's own count.

    patchkit copies with :func:`patchkit.core.backends._threads.num_threads` threads (the cores this
    process may use, or ``PATCHKIT_NUM_THREADS``), so the limit is measured up to that many; the
    powers of two below it are there because memory bandwidth often peaks with fewer threads.
    """
    from patchkit.core.backends._threads import num_threads

    most = num_threads()
    return tuple(sorted({*(2**i for i in range(most.bit_length()) if 2**i < most), most}))



def split_copy(dst: np.ndarray, src: np.ndarray, threads: int, pool: ThreadPoolExecutor) -> np.ndarray:
    """``dst[:] = src`` for flat arrays, cut into ``threads`` contiguous parts copied at once."""
    if threads == 1:
        np.copyto(dst, src)
        return dst
    edges = np.linspace(0, src.size, threads + 1).astype(int).tolist()
    parts = [pool.submit(np.copyto, dst[a:b], src[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    for part in parts:
        part.result()
    return dst


def _copy_into(dst: np.ndarray | None, src: np.ndarray, threads: int, pool: ThreadPoolExecutor) -> np.ndarray:
    """:func:`split_copy` into ``dst``, or into a new ``np.empty`` when ``dst`` is None."""
    return split_copy(np.empty_like(src) if dst is None else dst, src, threads, pool)


def copy_contenders(workload: Workload, mode: str, pool: ThreadPoolExecutor) -> list[Contender]:
    """The memory-copy limit: the output's bytes copied into ``mode`` memory, with each of :func:`copy_threads`.

    ``"fresh"``: a new ``np.empty`` each call, whose page faults are timed, as for any new output
    array; ``"warm"``: one buffer written beforehand, as a reused block buffer is.
    """
    nbytes = workload.output_nbytes
    src = np.full(nbytes // np.dtype(workload.dtype).itemsize, 1, workload.dtype)  # np.zeros: the zero page
    dst = None if mode == "fresh" else np.full_like(src, 0)
    return [
        Contender(f"copy-{mode}-{threads}", f"copy → {mode} memory, {threads} thread{'s' * (threads > 1)}",
                  functools.partial(_copy_into, dst, src, threads, pool), nbytes)
        for threads in copy_threads()
    ]


def extract_contender(workload: Workload, image: np.ndarray) -> Contender:
    """``patchkit.extract_patches``, a new output array each call."""
    import patchkit

    run = functools.partial(patchkit.extract_patches, image, workload.size, workload.stride)
    return Contender("extract", "patchkit.extract_patches", run, workload.output_nbytes)


def drain(blocks: Iterable) -> tuple[int, int, int]:
    """Consume ``(rows, block)`` pairs without copying them: ``(bands, rows, checksum)``.

    The checksum adds the first and last element of every block, so every block is really made.
    """
    bands = rows_seen = checksum = 0
    for rows, block in blocks:
        bands += 1
        rows_seen += rows.stop - rows.start
        checksum += int(block[0, 0, 0, 0]) + int(block[-1, -1, -1, -1])
    return bands, rows_seen, checksum


def iter_contender(workload: Workload, source) -> Contender:
    """``patchkit.iter_patches`` over an ndarray or a dask scene, every block consumed by :func:`drain`."""
    import patchkit

    def run():
        return drain(patchkit.iter_patches(source, workload.size, workload.stride, max_memory=workload.max_memory))

    def note(result: tuple[int, int, int]) -> str:
        bands, rows, _ = result
        if rows != workload.output_shape[1]:
            raise RuntimeError(f"iter_patches yielded {rows} output rows, expected {workload.output_shape[1]}")
        return f"{bands} bands"

    kind = "dask scene" if workload.chunks else "ndarray"
    label = f"patchkit.iter_patches ({kind}, max_memory={workload.max_memory})"
    return Contender("iter", label, run, workload.output_nbytes, note)


def copy_each(patches: Iterable) -> int:
    """Copy every xarray patch out to a new ndarray (as a training loop would) and drop it; the count."""
    count = 0
    for patch in patches:
        np.array(patch.values)
        count += 1
    return count


def xbatcher_contender(workload: Workload, image: np.ndarray, count: int) -> Contender:
    """xbatcher's ``BatchGenerator`` over an xarray DataArray: its first ``count`` patches, each copied.

    The throughput is that of those patches; building the generator is timed apart (the note) and
    left out, which favours xbatcher.
    """
    import xarray as xr
    import xbatcher

    overlap = workload.size - workload.stride
    built, generator = timed(lambda: xbatcher.BatchGenerator(
        xr.DataArray(image[0], dims=("y", "x", "band")),
        input_dims={"y": workload.size, "x": workload.size},
        input_overlap={"y": overlap, "x": overlap},
    ))
    total = len(generator)
    if total != math.prod(workload.output_shape[:3]):
        raise RuntimeError(f"xbatcher makes {total} patches, patchkit {math.prod(workload.output_shape[:3])}")
    count = min(count, total)
    note = (f"xbatcher {xbatcher.__version__}; first {count} of {total} patches timed; "
            f"generator built in {built:.2f} s")
    return Contender("xbatcher", "xbatcher.BatchGenerator, each patch copied",
                     lambda: copy_each(itertools.islice(generator, count)), count * workload.patch_nbytes, note)


def tensorflow_contenders(workload: Workload, image: np.ndarray) -> list[Contender]:
    """``tf.image.extract_patches`` on a tensor of ``image`` made beforehand: its cold (first) call and warm calls.

    Both favour TensorFlow: the conversion to a tensor is not timed, and the result stays a tensor.
    :func:`host_worker` makes the cold call alone, before any other contender's, then races the warm
    one with patchkit's in the same process.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    images = tf.constant(image)
    k, s = workload.size, workload.stride
    run = functools.partial(tf.image.extract_patches, images, sizes=[1, k, k, 1], strides=[1, s, s, 1],
                            rates=[1, 1, 1, 1], padding="VALID")
    note = f"TensorFlow {tf.__version__}"
    return [Contender("tf-cold", "tf.image.extract_patches, cold (1st call)", run, workload.output_nbytes, note),
            Contender("tf-warm", "tf.image.extract_patches, warm", run, workload.output_nbytes, note)]


def make_contenders(workload: Workload, key: str, source, pool: ThreadPoolExecutor,
                    xbatcher_patches: int) -> list[Contender]:
    """The contenders called ``key`` (``copy-fresh``, ``copy-warm``, ``extract``, ``iter``, ``xbatcher``, ``tf``)."""
    if key.startswith("copy-"):
        return copy_contenders(workload, key.removeprefix("copy-"), pool)
    if key == "extract":
        return [extract_contender(workload, source)]
    if key == "iter":
        return [iter_contender(workload, source)]
    if key == "xbatcher":
        return [xbatcher_contender(workload, source, xbatcher_patches)]
    if key == "tf":
        return tensorflow_contenders(workload, source)
    raise ValueError(f"unknown contender {key!r}")


def host_worker(workload: Workload, keys: tuple[str, ...], rounds: int, xbatcher_patches: int) -> list[dict]:
    """Make the input (an ndarray, or the dask scene) and the contenders ``keys``, then :func:`race` them.

    With ``"tf"`` among the keys, TensorFlow's cold call is made first, alone (it is the first
    call of any contender in this process); its warm calls then take turns with the others.
    """
    source = make_scene(workload) if workload.chunks else make_image(workload)
    with ThreadPoolExecutor(max(copy_threads())) as pool:
        contenders = [c for key in keys for c in make_contenders(workload, key, source, pool, xbatcher_patches)]
        cold = [c for c in contenders if c.key == "tf-cold"]
        return race(cold, 1) + race([c for c in contenders if c.key != "tf-cold"], rounds)


def has_tensorflow() -> bool:
    """Whether TensorFlow is installed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def measure(workload: Workload, keys: tuple[str, ...], args: argparse.Namespace) -> list[dict]:
    """Rows for the contenders ``keys``: timed taking turns in one process, memory of each alone.

    The times come from one process where the contenders take turns (:func:`race`); the memory
    columns from a fresh process per contender, one call each, so that the peak RSS is that
    contender's only (with a single contender, the race's process is already that).
    """
    rows = isolated(host_worker, workload, keys, args.repeats, args.xbatcher_patches)
    if len(keys) > 1:
        alone = {row["key"]: row for key in keys
                 for row in isolated(host_worker, workload, (key,), 1, args.xbatcher_patches)}
        for row in rows:
            row.update({name: alone[row["key"]][name] for name in MEMORY_COLUMNS})
    return rows


# --------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------


@dataclass
class Ratio:
    """A ratio of two measurements and, where the issue sets one, its target.

    ``caveat`` says how the two differ where they do not do the same work (printed under the ratio).
    """

    name: str
    value: float
    target: float | None = None
    op: str = ">="
    caveat: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the target is met (None without a target)."""
        if self.target is None:
            return None
        return self.value >= self.target if self.op == ">=" else self.value <= self.target

    def as_dict(self) -> dict:
        return {**asdict(self), "met": self.met}


@dataclass
class CaseResult:
    """What one case measured: its workload, one row per contender, and its ratios."""

    name: str
    workload: Workload
    rows: list[dict]
    ratios: list[Ratio] = field(default_factory=list)

    def gbps(self, key: str) -> float:
        """Throughput of the row ``key``."""
        return self.row(key)["gbps"]

    def row(self, key: str) -> dict:
        """The row ``key``."""
        return next(r for r in self.rows if r["key"] == key)

    def has(self, key: str) -> bool:
        """Whether there is a row ``key`` (TensorFlow's are missing where it is not installed)."""
        return any(r["key"] == key for r in self.rows)

    def copy_limit(self, mode: str) -> tuple[float, str]:
        """The best copy throughput into ``mode`` ("fresh" or "warm") memory, and its ``"N threads"``."""
        best = max((r for r in self.rows if r["key"].startswith(f"copy-{mode}-")), key=lambda r: r["gbps"])
        threads = int(best["key"].rsplit("-", 1)[1])
        return best["gbps"], f"{threads} thread{'s' * (threads > 1)}"

    def as_dict(self) -> dict:
        return {"workload": asdict(self.workload), "rows": self.rows, "ratios": [r.as_dict() for r in self.ratios]}


#: Said of every ratio of ``iter_patches`` to TensorFlow: the two do not do the same work.
ITER_VS_TF = ("different work: iter_patches fills a reused buffer band by band, nothing copied out; "
              "TensorFlow builds its whole output anew")


def tensorflow_keys() -> tuple[str, ...]:
    """``("tf",)`` where TensorFlow is installed: its rows then join the case's race; else nothing."""
    return ("tf",) if has_tensorflow() else ()


def run_large(workload: Workload, args: argparse.Namespace) -> CaseResult:
    """Whole-image extraction and streaming of large patches against TensorFlow and the copy limit."""
    case = CaseResult("large", workload,
                      measure(workload, ("copy-fresh", "copy-warm", "extract", "iter", *tensorflow_keys()), args))
    (fresh, fresh_threads), (warm, warm_threads) = case.copy_limit("fresh"), case.copy_limit("warm")
    case.ratios = [
        Ratio(f"extract_patches / fresh-copy limit ({fresh:.2f} GB/s, {fresh_threads})",
              case.gbps("extract") / fresh, 0.9),
        Ratio(f"iter_patches / warm-copy limit ({warm:.2f} GB/s, {warm_threads})", case.gbps("iter") / warm, 0.75),
    ]
    if case.has("tf-warm"):
        case.ratios[:0] = [Ratio("extract_patches / tf warm", case.gbps("extract") / case.gbps("tf-warm"), 5.0)]
        case.ratios.append(Ratio("iter_patches / tf warm", case.gbps("iter") / case.gbps("tf-warm"), caveat=ITER_VS_TF))
    return case


def run_small(workload: Workload, args: argparse.Namespace) -> CaseResult:
    """Streaming many small patches against the warm-copy limit, xbatcher and TensorFlow."""
    case = CaseResult("small", workload, measure(workload, ("copy-warm", "iter", "xbatcher", *tensorflow_keys()), args))
    warm, warm_threads = case.copy_limit("warm")
    case.ratios = [
        Ratio(f"iter_patches / warm-copy limit ({warm:.2f} GB/s, {warm_threads})", case.gbps("iter") / warm, 0.7),
        Ratio("iter_patches / xbatcher", case.gbps("iter") / case.gbps("xbatcher"), 50.0,
              caveat="different work: xbatcher copies each patch out into a new array; iter_patches's blocks "
                     "are consumed in place"),
    ]
    if case.has("tf-warm"):
        case.ratios.append(Ratio("iter_patches / tf warm", case.gbps("iter") / case.gbps("tf-warm"), caveat=ITER_VS_TF))
    return case


def run_dask(workload: Workload, args: argparse.Namespace) -> CaseResult:
    """Streaming a lazily generated dask scene: peak memory against the budget."""
    case = CaseResult("dask", workload, measure(workload, ("iter",), args))
    growth = case.row("iter")["growth"]
    case.ratios = [
        Ratio(f"RSS growth ({format_size(growth)}) / max_memory ({workload.max_memory})",
              growth / workload.budget, 1.25, "<="),
    ]
    return case


CASES: dict[str, Callable[[Workload, argparse.Namespace], CaseResult]] = {
    "large": run_large,
    "small": run_small,
    "dask": run_dask,
}


# --------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------


def format_size(nbytes: float) -> str:
    """Bytes with a binary unit: ``'0.94 GiB'``, ``'512 MiB'``."""
    if abs(nbytes) >= GIB:
        return f"{nbytes / GIB:.2f} GiB"
    return f"{nbytes / MIB:.0f} MiB"


def format_ratio(ratio: Ratio) -> str:
    """``'7.31×  target ≥ 5×  met'`` (or just the value, without a target)."""
    if ratio.target is None:
        return f"{ratio.value:8.2f}×  (no target)"
    sign = "≥" if ratio.op == ">=" else "≤"
    return f"{ratio.value:8.2f}×  target {sign} {ratio.target:g}×  {'met' if ratio.met else 'NOT MET'}"


def print_header(args: argparse.Namespace) -> None:
    """The machine and the run's settings."""
    import psutil

    import patchkit

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"patchkit {patchkit.__version__}, numpy {np.__version__}, Python {platform.python_version()} "
          f"on {platform.machine()}, {cores} cores, {format_size(psutil.virtual_memory().total)} RAM")
    mode = "quick (shrunk workloads: not for numbers)" if args.quick else "full"
    tf = ("TensorFlow included, its cold call first" if has_tensorflow()
          else "TensorFlow not installed: its rows and ratios are left out")
    print(f"mode: {mode}; times: best of {args.repeats} rounds in which a case's contenders take turns in the same "
          f"process ({tf}); copy limits with {', '.join(map(str, copy_threads()))} threads (patchkit uses "
          f"{max(copy_threads())})")
    print("GB/s: bytes of output per second (1 GB = 10^9 B); peak RSS: the contender alone in a fresh process; "
          "growth: that peak above the RSS just before the call")


def print_case(case: CaseResult) -> None:
    """One case: its workload, a table of contenders, and its ratios."""
    print(f"\n== {case.name}: {case.workload.describe()}")
    print(f"{'contender':<58} {'best s':>8} {'GB/s':>7} {'peak RSS':>10} {'growth':>10}  notes")
    for row in case.rows:
        sampled = "" if row["rss_exact"] else "~"  # sampled every 5 ms rather than the kernel's exact peak
        peak, growth = (sampled + format_size(row[name]) for name in ("peak_rss", "growth"))
        print(f"{row['label']:<58} {row['seconds']:8.3f} {row['gbps']:7.2f} {peak:>10} {growth:>10}  {row['note']}")
    print("ratios:")
    for ratio in case.ratios:
        print(f"  {ratio.name:<60} {format_ratio(ratio)}")
        if ratio.caveat:
            print(f"      ({ratio.caveat})")


def print_summary(results: Iterable[CaseResult]) -> None:
    """Every ratio that has a target, met or not, and a count."""
    targeted = [(case.name, r) for case in results for r in case.ratios if r.target is not None]
    print("\n== summary: ratios vs targets")
    for name, ratio in targeted:
        caveat = "  [different work]" if ratio.caveat else ""
        print(f"  {name:<6} {ratio.name:<60} {format_ratio(ratio)}{caveat}")
    met = sum(bool(r.met) for _, r in targeted)
    print(f"{met} of {len(targeted)} targets met")


def write_json(path: str, args: argparse.Namespace, results: list[CaseResult]) -> None:
    """All figures, for comparing runs."""
    data = {
        "quick": args.quick,
        "repeats": args.repeats,
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "numpy": np.__version__},
        "cases": {case.name: case.as_dict() for case in results},
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    parser = argparse.ArgumentParser(
        description="Benchmark patchkit's extract_patches and iter_patches against a plain memory copy, "
                    "tf.image.extract_patches and xbatcher; print ratios, peak RSS and the issue's targets.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="shrink every case (1024×1024 images, a 2048×2048 dask scene, 2 repeats, "
                             "200 xbatcher patches): about 35 s, most of it importing TensorFlow four times (the "
                             "race's process and TensorFlow's memory run, per case); checks that the script works, "
                             "its figures mean little")
    parser.add_argument("--case", nargs="+", action="extend", choices=CASE_NAMES, metavar="NAME",
                        help=f"cases to run, in order (any of {', '.join(CASE_NAMES)}; default: all); "
                             "repeatable")
    parser.add_argument("--repeats", type=int, default=None, metavar="N",
                        help="timed calls per measurement, the best counts (default 3; 2 with --quick)")
    parser.add_argument("--xbatcher-patches", type=int, default=None, metavar="N",
                        help="patches xbatcher is timed on before extrapolating (default 2000; 200 with --quick)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    args.case = list(dict.fromkeys(args.case or CASE_NAMES))
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    if args.xbatcher_patches is None:
        args.xbatcher_patches = 200 if args.quick else 2000
    if args.repeats < 1 or args.xbatcher_patches < 1:
        parser.error("--repeats and --xbatcher-patches must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the chosen cases, print a table per case and a summary; return 0 (unmet targets are reported, not errors)."""
    args = parse_args(argv)
    workloads = make_workloads(args.quick)
    print_header(args)
    results = []
    for name in args.case:
        results.append(CASES[name](workloads[name], args))
        print_case(results[-1])
    print_summary(results)
    if args.json:
        write_json(args.json, args, results)
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
