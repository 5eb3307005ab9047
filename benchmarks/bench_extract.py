"""Benchmarks of patchkit's extraction against a plain memory copy, TensorFlow and xbatcher.

Run ``python benchmarks/bench_extract.py [--quick] [--case NAME ...]`` (``--help`` lists the options;
``benchmarks/README.md`` explains every case and how to read its ratios).

Every contender runs in its own freshly spawned Python process, so that its peak memory is its own
and TensorFlow's first ("cold") call really is the first in the process. Timings are the best of
``--repeats`` calls; throughputs are bytes of output per second (1 GB = 10**9 bytes). Ratios compare
contenders measured side by side in this one run, never figures quoted from elsewhere.
"""

from __future__ import annotations

import argparse
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
#: Thread counts the memory-copy limit is measured with (its best counts).
COPY_THREADS = (1, 2)
CASE_NAMES = ("large", "small", "dask")


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
        from patchkit.units import parse_bytes

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
    import dask.array as da

    b, h, w, c = workload.shape
    rows, cols = workload.chunks
    dtype = np.dtype(workload.dtype)
    return da.map_blocks(
        _scene_block,
        dtype=dtype,
        chunks=((b,), _split(h, rows), _split(w, cols), (c,)),
        meta=np.empty((0, 0, 0, 0), dtype),
    )


def _split(n: int, size: int) -> tuple[int, ...]:
    """Dask chunk sizes cutting ``n`` into pieces of ``size`` (the last may be shorter)."""
    return tuple(min(size, n - i) for i in range(0, n, size))


def _scene_block(block_info=None) -> np.ndarray:
    """One chunk of the synthetic scene: pixel ``(y, x, band)`` is ``31 y + 17 x + 7 band`` (wrapping).

    Written in place in the chunk's dtype, so generating a chunk allocates the chunk and nothing more.
    """
    info = block_info[None]
    (b0, b1), (y0, y1), (x0, x1), (c0, c1) = info["array-location"]
    dtype = np.dtype(info["dtype"])
    out = np.empty((b1 - b0, y1 - y0, x1 - x0, c1 - c0), dtype)
    np.add(_ramp(y0, y1, 31, dtype)[:, None, None], _ramp(x0, x1, 17, dtype)[None, :, None], out=out)
    out += _ramp(c0, c1, 7, dtype)
    return out


def _ramp(start: int, stop: int, step: int, dtype: np.dtype) -> np.ndarray:
    """``step * [start, stop)`` cast (wrapping) to ``dtype``."""
    return (np.arange(start, stop, dtype=np.int64) * step).astype(dtype)


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


def measurement(key: str, label: str, seconds: float, nbytes: int, meter: PeakRSS, note: str = "") -> dict:
    """One row of a case's table (a plain dict, so that it pickles across processes and to JSON).

    ``growth`` is the peak RSS above the RSS just before the row's first timed call (``start_rss``).
    """
    return {
        "key": key,
        "label": label,
        "seconds": seconds,
        "nbytes": nbytes,
        "gbps": nbytes / seconds / GB,
        "peak_rss": meter.peak,
        "start_rss": meter.start,
        "growth": meter.growth,
        "rss_exact": meter.exact,
        "note": note,
    }


def isolated(worker: Callable[..., list[dict]], *args) -> list[dict]:
    """Run ``worker(*args)`` in a freshly spawned Python process and return its rows."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(worker, *args).result()


# --------------------------------------------------------------------------------------------------
# Contenders (each runs in its own process, through ``isolated``)
# --------------------------------------------------------------------------------------------------


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


def time_copy(src: np.ndarray, mode: str, threads: int, pool: ThreadPoolExecutor, repeats: int) -> float:
    """Best seconds of copying ``src`` into ``"fresh"`` or ``"warm"`` memory (see :func:`copy_worker`)."""
    if mode == "fresh":
        return best_time(lambda: split_copy(np.empty_like(src), src, threads, pool), repeats)
    warm = np.full_like(src, 0)  # written once, so its pages are mapped before the clock starts
    return best_time(lambda: split_copy(warm, src, threads, pool), repeats)


def copy_worker(nbytes: int, dtype: str, repeats: int, modes: Iterable[str]) -> list[dict]:
    """The memory-copy limit: ``nbytes`` copied with 1 and 2 threads into fresh and/or warm memory.

    ``fresh``: a new ``np.empty`` each call (its page faults are timed, as for a new output array);
    ``warm``: a preallocated buffer written once beforehand (as a reused block buffer).
    """
    src = np.full(nbytes // np.dtype(dtype).itemsize, 1, dtype)  # written: np.zeros would read the zero page
    rows = []
    with ThreadPoolExecutor(max(COPY_THREADS)) as pool:
        for mode, threads in itertools.product(modes, COPY_THREADS):
            with PeakRSS() as meter:
                seconds = time_copy(src, mode, threads, pool, repeats)
            label = f"copy → {mode} memory, {threads} thread{'s' if threads > 1 else ''}"
            rows.append(measurement(f"copy-{mode}-{threads}", label, seconds, nbytes, meter))
    return rows


def tensorflow_worker(workload: Workload, repeats: int) -> list[dict]:
    """``tf.image.extract_patches`` on a tensor made beforehand: its first call, then the best of the rest."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    images = tf.constant(make_image(workload))
    k, s = workload.size, workload.stride
    args = dict(sizes=[1, k, k, 1], strides=[1, s, s, 1], rates=[1, 1, 1, 1], padding="VALID")
    with PeakRSS() as cold_meter:
        cold = best_time(lambda: tf.image.extract_patches(images, **args), 1)
    with PeakRSS() as warm_meter:
        warm = best_time(lambda: tf.image.extract_patches(images, **args), repeats)
    note = f"TensorFlow {tf.__version__}"
    nbytes = workload.output_nbytes
    return [
        measurement("tf-cold", "tf.image.extract_patches, cold (1st call)", cold, nbytes, cold_meter, note),
        measurement("tf-warm", "tf.image.extract_patches, warm", warm, nbytes, warm_meter, note),
    ]


def extract_worker(workload: Workload, repeats: int) -> list[dict]:
    """``patchkit.extract_patches``, a fresh output array each call."""
    import patchkit

    image = make_image(workload)
    with PeakRSS() as meter:
        seconds = best_time(lambda: patchkit.extract_patches(image, workload.size, workload.stride), repeats)
    return [measurement("extract", "patchkit.extract_patches", seconds, workload.output_nbytes, meter)]


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


def iter_worker(workload: Workload, repeats: int) -> list[dict]:
    """``patchkit.iter_patches`` over an ndarray or a dask scene, every block consumed by :func:`drain`."""
    import patchkit

    image = make_scene(workload) if workload.chunks else make_image(workload)

    def run():
        return drain(patchkit.iter_patches(image, workload.size, workload.stride, max_memory=workload.max_memory))

    with PeakRSS() as meter:
        runs = [timed(run) for _ in range(repeats)]  # drain's results are three ints: keep them all
    seconds = min(t for t, _ in runs)
    bands, rows, _ = runs[-1][1]
    if rows != workload.output_shape[1]:
        raise RuntimeError(f"iter_patches yielded {rows} output rows, expected {workload.output_shape[1]}")
    source = "dask scene" if workload.chunks else "ndarray"
    label = f"patchkit.iter_patches ({source}, max_memory={workload.max_memory})"
    return [measurement("iter", label, seconds, workload.output_nbytes, meter, f"{bands} bands")]


def copy_each(patches: Iterable) -> int:
    """Copy every xarray patch out to a new ndarray (as a training loop would) and drop it; the count."""
    count = 0
    for patch in patches:
        np.array(patch.values)
        count += 1
    return count


def xbatcher_worker(workload: Workload, repeats: int, count: int) -> list[dict]:
    """xbatcher's ``BatchGenerator`` over an xarray DataArray: the first ``count`` patches, each copied.

    The throughput is extrapolated from those patches; building the generator is timed apart and
    left out of it (which favours xbatcher).
    """
    import xarray as xr
    import xbatcher

    image = xr.DataArray(make_image(workload)[0], dims=("y", "x", "band"))
    overlap = workload.size - workload.stride
    with PeakRSS() as meter:
        built, generator = timed(
            lambda: xbatcher.BatchGenerator(image, input_dims={"y": workload.size, "x": workload.size},
                                            input_overlap={"y": overlap, "x": overlap})
        )
        total = len(generator)
        count = min(count, total)
        seconds = best_time(lambda: copy_each(itertools.islice(generator, count)), repeats)
    expected = math.prod(workload.output_shape[:3])
    if total != expected:
        raise RuntimeError(f"xbatcher made {total} patches, patchkit {expected}: the grids differ")
    full = built + seconds * total / count
    note = (f"xbatcher {xbatcher.__version__}; first {count} of {total} patches timed; "
            f"generator built in {built:.2f} s; whole run ≈ {full:.0f} s")
    return [measurement("xbatcher", "xbatcher.BatchGenerator, each patch copied", seconds,
                        count * workload.patch_nbytes, meter, note)]


# --------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------


@dataclass
class Ratio:
    """A ratio of two measurements and, where the issue sets one, its target."""

    name: str
    value: float
    target: float | None = None
    op: str = ">="

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

    def copy_limit(self, mode: str) -> float:
        """The best copy throughput into ``mode`` ("fresh" or "warm") memory, over the thread counts."""
        return max(r["gbps"] for r in self.rows if r["key"].startswith(f"copy-{mode}-"))

    def as_dict(self) -> dict:
        return {"workload": asdict(self.workload), "rows": self.rows, "ratios": [r.as_dict() for r in self.ratios]}


def run_large(workload: Workload, args: argparse.Namespace) -> CaseResult:
    """Whole-image extraction and streaming of large patches against TensorFlow and the copy limit."""
    rows = (isolated(copy_worker, workload.output_nbytes, workload.dtype, args.repeats, ("fresh", "warm"))
            + isolated(tensorflow_worker, workload, args.repeats)
            + isolated(extract_worker, workload, args.repeats)
            + isolated(iter_worker, workload, args.repeats))
    case = CaseResult("large", workload, rows)
    fresh, warm = case.copy_limit("fresh"), case.copy_limit("warm")
    case.ratios = [
        Ratio("extract_patches / tf warm", case.gbps("extract") / case.gbps("tf-warm"), 5.0),
        Ratio(f"extract_patches / fresh-copy limit ({fresh:.2f} GB/s)", case.gbps("extract") / fresh, 0.9),
        Ratio(f"iter_patches / warm-copy limit ({warm:.2f} GB/s)", case.gbps("iter") / warm, 0.75),
        Ratio("iter_patches / tf warm", case.gbps("iter") / case.gbps("tf-warm")),
    ]
    return case


def run_small(workload: Workload, args: argparse.Namespace) -> CaseResult:
    """Streaming many small patches against the warm-copy limit, xbatcher and TensorFlow."""
    rows = (isolated(copy_worker, workload.output_nbytes, workload.dtype, args.repeats, ("warm",))
            + isolated(iter_worker, workload, args.repeats)
            + isolated(xbatcher_worker, workload, args.repeats, args.xbatcher_patches)
            + isolated(tensorflow_worker, workload, args.repeats))
    case = CaseResult("small", workload, rows)
    warm = case.copy_limit("warm")
    case.ratios = [
        Ratio(f"iter_patches / warm-copy limit ({warm:.2f} GB/s)", case.gbps("iter") / warm, 0.7),
        Ratio("iter_patches / xbatcher", case.gbps("iter") / case.gbps("xbatcher"), 50.0),
        Ratio("iter_patches / tf warm", case.gbps("iter") / case.gbps("tf-warm")),
    ]
    return case


def run_dask(workload: Workload, args: argparse.Namespace) -> CaseResult:
    """Streaming a lazily generated dask scene: peak memory against the budget."""
    case = CaseResult("dask", workload, isolated(iter_worker, workload, args.repeats))
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
    print(f"mode: {mode}; best of {args.repeats} repeat(s); every contender in its own spawned process")
    print("GB/s: bytes of output per second (1 GB = 10^9 B); peak RSS: the contender's process during the row; "
          "growth: that peak above the RSS just before the row's first timed call")


def print_case(case: CaseResult) -> None:
    """One case: its workload, a table of contenders, and its ratios."""
    print(f"\n== {case.name}: {case.workload.describe()}")
    print(f"{'contender':<58} {'best s':>8} {'GB/s':>7} {'peak RSS':>10} {'growth':>10}  notes")
    for row in case.rows:
        print(f"{row['label']:<58} {row['seconds']:8.3f} {row['gbps']:7.2f} {format_size(row['peak_rss']):>10} "
              f"{format_size(row['growth']):>10}  {row['note']}")
    print("ratios:")
    for ratio in case.ratios:
        print(f"  {ratio.name:<56} {format_ratio(ratio)}")


def print_summary(results: Iterable[CaseResult]) -> None:
    """Every ratio that has a target, met or not, and a count."""
    targeted = [(case.name, r) for case in results for r in case.ratios if r.target is not None]
    print("\n== summary: ratios vs targets")
    for name, ratio in targeted:
        print(f"  {name:<6} {ratio.name:<56} {format_ratio(ratio)}")
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
                             "200 xbatcher patches) so the whole run takes seconds; checks that the script "
                             "works, its figures mean little")
    parser.add_argument("--case", nargs="+", action="extend", choices=CASE_NAMES, metavar="NAME",
                        help=f"cases to run, in order (any of {', '.join(CASE_NAMES)}; default: all); "
                             "repeatable")
    parser.add_argument("--repeats", type=int, default=None,
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
