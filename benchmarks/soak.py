"""Soak test: the process's memory stays flat while patches stream for a long time.

Run ``python benchmarks/soak.py [--quick] [--iter-gib 128] [--zarr-gib 32] [--max-memory 256MiB]``
(``--help`` lists every option; ``benchmarks/README.md`` explains how to read the result). Not part
of the test suite: the full run streams 160 GiB of patches and takes a few minutes.

Two phases run one after the other in this process, under the same ``max_memory``:

``iter_patches``
    A synthetic float32 scene held in memory (1 x 1024 x 1024 x 4, 16 MiB), cut into 128-pixel
    patches at stride 8 (3.1 GiB of patches a pass: the patches overlap 16-fold each way, so output
    bytes are ~200x the input's), pass after pass until ``--iter-gib`` of patches have been yielded.
    The scene's height cycles through 1024, 1016, 1008 and 1000 rows, so that each pass plans anew
    and a cache keyed by shape would show. Every band is reduced in full (``block.sum()``): each pass's
    checksum must equal the first pass's of the same height.
``to_zarr``
    ``DataArray.patches.to_zarr`` (256-pixel patches, stride 64) of a 4-band uint16 GeoTIFF written
    to the temporary folder (a tmpfs, ``/dev/shm``): a sequence of stores, each written whole and
    then deleted, so the tmpfs never holds more than one; until ``--zarr-gib`` of patches have been
    written. Stores alternate between the GeoTIFF opened lazily with
    ``rioxarray.open_rasterio(chunks=...)`` (opened for every store and closed after it, as ``with``
    does: GDAL's block cache and file handles are part of what must stay flat) and the same scene
    loaded in memory. One random patch of each store is read back and compared with the scene.
    ``--no-close`` drops each opened DataArray without closing it instead: rioxarray's DataArray sits
    in a reference cycle (with its ``.rio`` accessor), so the file stays open, with every GDAL block
    read from it cached, until Python's cyclic garbage collector runs (see ``benchmarks/README.md``).

A thread samples the RSS every ``--interval`` seconds, with the GiB processed so far (inside a
store, estimated from the chunk files written), GDAL's block-cache use, open file descriptors and
threads. Per phase: RSS at the start, after warm-up (the highest over the first ``--warmup`` of
the phase's bytes, at least two passes or stores), the peak (the kernel's exact high-water mark),
at the end (the highest over the last ``--warmup`` of the bytes) and after the phase; the slope of
RSS against GiB processed over the second half (least squares). A phase is *flat* when

* growth, end minus warm-up, is at most ``--growth-limit`` (64 MiB);
* the slope times the phase's GiB is at most ``--growth-limit`` too (the trend, not the noise);
* the peak is at most the phase's starting RSS + ``max_memory`` + ``--allowance`` (64 MiB; GDAL's
  block cache is inside ``max_memory``: a streamed lazy raster's plan bounds it to a share).

Writes ``soak_<date>.txt``, ``.json`` (every figure and every sample) and ``.png`` (RSS against GiB
processed, one line per phase, and against time) under ``--out``; ``--quick`` runs write
``soak_quick_<date>.*``. Exits 1 when a phase is not flat.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import math
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import _high_water_mark, _reset_high_water_mark  # noqa: E402

GB = 10**9
MIB = 2**20
GIB = 2**30

#: The iter_patches scene: [batch, height, width, channels] float32, and the heights passes cycle through.
ITER_SCENE = (1, 1024, 1024, 4)
ITER_HEIGHTS = (1024, 1016, 1008, 1000)
ITER_PATCH, ITER_STRIDE = 128, 8
#: The to_zarr scene: a tiled GeoTIFF of this many bands and pixels a side (uint16); --quick shrinks it.
ZARR_BANDS, ZARR_SIZE, ZARR_SIZE_QUICK = 4, 4096, 2048
ZARR_PATCH, ZARR_STRIDE, ZARR_CHUNKS = 256, 64, 1024
#: Free space the tmpfs must keep beyond one store while the soak writes there.
TMPFS_MARGIN = 2 * GIB


# --------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------


def _rss_reader():
    """A function returning this process's RSS in bytes: psutil if installed, else ``/proc/self/status``."""
    try:
        import psutil

        process = psutil.Process()
        return lambda: process.memory_info().rss
    except ImportError:
        def from_proc() -> int:
            with open("/proc/self/status") as f:
                return int(re.search(r"^VmRSS:\s+(\d+)\s+kB", f.read(), re.MULTILINE).group(1)) * 1024
        return from_proc


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


class GdalCache:
    """GDAL's block cache: its limit and current use (``GDALGetCacheMax64``/``Used64``), when libgdal is loaded."""

    def __init__(self) -> None:
        self._used = self._max = None
        try:
            import rasterio  # noqa: F401  (loads libgdal)

            with open("/proc/self/maps") as f:
                path = next((line.split()[-1] for line in f if "libgdal" in line), None)
            if path:
                lib = ctypes.CDLL(path)
                self._used, self._max = lib.GDALGetCacheUsed64, lib.GDALGetCacheMax64
                self._used.restype = self._max.restype = ctypes.c_int64
        except Exception:  # no rasterio, or a GDAL without these symbols: report nothing
            self._used = self._max = None

    def used(self) -> int:
        return int(self._used()) if self._used else -1

    def limit(self) -> int:
        return int(self._max()) if self._max else -1


class Sampler:
    """A thread recording ``(seconds, phase, bytes processed, rss, gdal cache, fds, threads)`` every ``interval``.

    The phase and the progress function are set by the main thread; :meth:`mark` records a sample
    at once (at the end of each pass or store, with the exact bytes).
    """

    FIELDS = ("t", "phase", "bytes", "rss", "gdal_cache", "fds", "threads")

    def __init__(self, interval: float, gdal: GdalCache) -> None:
        self.interval = interval
        self.gdal = gdal
        self.rss = _rss_reader()
        self.samples: list[tuple] = []
        self.phase: str | None = None
        self.progress = lambda: 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def begin(self, phase: str, progress) -> None:
        """Sample ``phase`` from now on, its progress given by ``progress()`` (bytes)."""
        with self._lock:
            self.progress, self.phase = progress, phase

    def pause(self) -> None:
        with self._lock:
            self.phase = None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.mark()

    def mark(self, nbytes: int | None = None) -> tuple:
        with self._lock:
            phase = self.phase
            if phase is None:
                return ()
            try:
                done = self.progress() if nbytes is None else nbytes
            except Exception:  # a store being deleted under the walk: the next sample will do
                return ()
            sample = (time.perf_counter() - self._t0, phase, int(done), self.rss(), self.gdal.used(), _open_fds(),
                      threading.active_count())
            self.samples.append(sample)
            return sample

    def of(self, phase: str) -> dict[str, np.ndarray]:
        rows = [s for s in self.samples if s[1] == phase]
        return {name: np.array([r[i] for r in rows]) for i, name in enumerate(self.FIELDS) if name != "phase"}


@dataclass
class Phase:
    """What one phase did and how its memory behaved."""

    name: str
    target: int
    max_memory: int
    allowance: int
    growth_limit: int
    warmup: float
    nbytes: int = 0
    seconds: float = 0.0
    units: list[dict] = field(default_factory=list)  # one per pass or store: bytes at its end, rss, seconds
    start: dict = field(default_factory=dict)  # rss, fds, threads, gc objects, gdal cache at the start
    end: dict = field(default_factory=dict)  # the same after the phase
    hwm: int | None = None
    notes: list[str] = field(default_factory=list)
    tracemalloc: list[str] = field(default_factory=list)

    def snapshot(self, gdal: GdalCache, rss) -> dict:
        gc.collect()
        return dict(rss=rss(), fds=_open_fds(), threads=threading.active_count(), gc_objects=len(gc.get_objects()),
                    gdal_cache=gdal.used())

    def figures(self, samples: dict[str, np.ndarray]) -> dict:
        """RSS at warm-up, peak, end; growth, slope and the verdict (see the module's docstring)."""
        done, rss = samples["bytes"], samples["rss"]
        total = self.nbytes
        # warm-up: the first `warmup` of the bytes, and at least two units (both sources, two heights)
        warm_until = max(self.warmup * total, self.units[min(1, len(self.units) - 1)]["bytes"] if self.units else 0)
        warm = rss[done <= warm_until]
        # the end: the last `warmup` of the bytes, and at least the last two units
        late_from = min(total - self.warmup * total, self.units[-3]["bytes"] if len(self.units) >= 3 else 0)
        late = rss[done > late_from]
        half = done >= total / 2
        slope = float(np.polyfit(done[half] / GIB, rss[half] / MIB, 1)[0]) if half.sum() >= 3 else float("nan")
        peak_sampled = int(rss.max()) if rss.size else 0
        peak = max(peak_sampled, self.hwm or 0)
        figures = dict(
            gib=total / GIB, seconds=self.seconds, gbps=total / self.seconds / GB, gibps=total / self.seconds / GIB,
            rss_start=self.start["rss"], rss_warm=int(warm.max()) if warm.size else self.start["rss"],
            rss_peak=peak, rss_peak_exact=self.hwm is not None, rss_end=int(late.max()) if late.size else self.end["rss"],
            rss_after=self.end["rss"], warmup_gib=warm_until / GIB, end_from_gib=late_from / GIB, slope_mib_per_gib=slope,
        )
        figures["growth"] = figures["rss_end"] - figures["rss_warm"]
        figures["trend"] = slope * total / GIB * MIB if math.isfinite(slope) else 0.0
        figures["peak_limit"] = self.start["rss"] + self.max_memory + self.allowance
        checks = {
            "growth": figures["growth"] <= self.growth_limit,
            "trend": figures["trend"] <= self.growth_limit,
            "peak": figures["rss_peak"] <= figures["peak_limit"],
        }
        figures["checks"] = checks
        figures["flat"] = all(checks.values())
        return figures


def _revision() -> str:
    """The repository's commit, and how many files under ``patchkit/`` differ from it (others may be editing)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "patchkit"], capture_output=True,
                                 text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}" + (f" with {len(changed)} uncommitted file(s) under patchkit/" if changed else "")


def fmt_mib(nbytes: float) -> str:
    return f"{nbytes / MIB:.0f} MiB"


# --------------------------------------------------------------------------------------------------
# The phases
# --------------------------------------------------------------------------------------------------


def iter_scene() -> np.ndarray:
    """The float32 scene: pixel ``(y, x, c)`` holds ``(31y + 17x + 7c) mod 251``."""
    b, h, w, c = ITER_SCENE
    y, x, ch = np.ogrid[:h, :w, :c]
    return ((31 * y + 17 * x + 7 * ch) % 251).astype(np.float32)[None].reshape(b, h, w, c)


def run_iter(phase: Phase, sampler: Sampler, tqdm, tracing: bool) -> None:
    """Pass after pass of ``iter_patches`` over the scene until ``phase.target`` bytes are yielded."""
    import patchkit

    scene = iter_scene()
    phase.start = phase.snapshot(sampler.gdal, sampler.rss)
    state = {"bytes": 0}
    checksums: dict[int, float] = {}
    warm_marked = False
    _reset_high_water_mark()
    sampler.begin(phase.name, lambda: state["bytes"])
    t0 = time.perf_counter()
    with tqdm(total=phase.target, unit="B", unit_scale=True, unit_divisor=1024, desc="iter_patches", dynamic_ncols=True) as bar:
        unit = 0
        while state["bytes"] < phase.target:
            height = ITER_HEIGHTS[unit % len(ITER_HEIGHTS)]
            image = scene[:, :height]  # a contiguous view
            stream = patchkit.iter_patches(image, ITER_PATCH, ITER_STRIDE, max_memory=phase.max_memory)
            total, complete = 0.0, True
            for _, block in stream:
                total += float(block.sum(dtype=np.float64))  # every byte of the band is read
                state["bytes"] += block.nbytes
                bar.update(block.nbytes)
                if state["bytes"] >= phase.target:
                    complete = False
                    break
            stream.close()
            del stream, block, image
            if complete:
                expected = checksums.setdefault(height, total)
                if total != expected:
                    phase.notes.append(f"pass {unit} (height {height}): checksum {total!r} != first pass's {expected!r}")
            unit += 1
            sample = sampler.mark(state["bytes"])
            phase.units.append(dict(unit=unit, bytes=state["bytes"], rss=sample[3], seconds=time.perf_counter() - t0))
            if tracing and not warm_marked and state["bytes"] >= phase.warmup * phase.target and unit >= 2:
                _trace_mark(phase)
                warm_marked = True
    phase.seconds = time.perf_counter() - t0
    phase.nbytes = state["bytes"]
    phase.hwm = _high_water_mark()
    sampler.pause()
    phase.notes.append(f"{unit} passes ({'the last cut short at the target' if not complete else 'all whole'}); "
                       f"checksums {'match' if not any('checksum' in n for n in phase.notes) else 'DIFFER'} between passes "
                       f"of the same height ({len(checksums)} heights)")
    del scene
    if tracing:
        _trace_report(phase)
    phase.end = phase.snapshot(sampler.gdal, sampler.rss)


def _store_patch_bytes(size: int) -> int:
    n = (size - ZARR_PATCH) // ZARR_STRIDE + 1
    return n * n * ZARR_BANDS * ZARR_PATCH * ZARR_PATCH * 2


class StoreProgress:
    """Bytes of patches written so far: finished stores exactly, the current one by its chunk files."""

    def __init__(self) -> None:
        self.done = 0
        self.store: Path | None = None
        self.store_bytes = 0
        self._chunks: int | None = None
        self._lock = threading.Lock()  # the sampler must not see a finished store counted twice

    def begin(self, store: Path, store_bytes: int) -> None:
        with self._lock:
            self.store, self.store_bytes, self._chunks = store, store_bytes, None

    def finish(self) -> None:
        with self._lock:
            self.done += self.store_bytes
            self.store = None

    def __call__(self) -> int:
        with self._lock:
            store, done = self.store, self.done
            if store is None:
                return done
            if self._chunks is None:
                meta = store / "pixels" / "zarr.json"
                if not meta.exists():
                    return done
                spec = json.loads(meta.read_text())
                shape, chunks = spec["shape"], spec["chunk_grid"]["configuration"]["chunk_shape"]
                self._chunks = math.prod(math.ceil(n / c) for n, c in zip(shape, chunks))
            written = sum(len(files) for _, _, files in os.walk(store / "pixels" / "c"))
            return done + min(written, self._chunks) * self.store_bytes // self._chunks


def run_zarr(phase: Phase, sampler: Sampler, tqdm, folder: Path, size: int, compression, tracing: bool,
             leave_open: bool = False) -> None:
    """Stores of the GeoTIFF's patches, lazily read and in memory by turns, each deleted once written."""
    import rioxarray
    import zarr

    import patchkit  # noqa: F401  (registers .patches)

    from bench_xarray import write_scene

    tif = write_scene(folder / "scene.tif", ZARR_BANDS, size)
    with rioxarray.open_rasterio(tif) as opened:  # closed: GDAL's blocks of the file are freed
        in_memory = opened.load()
    reference = in_memory.values
    store_bytes = _store_patch_bytes(size)
    chunks = {"band": -1, "y": ZARR_CHUNKS, "x": ZARR_CHUNKS}
    phase.start = phase.snapshot(sampler.gdal, sampler.rss)
    progress = StoreProgress()
    rng = np.random.default_rng(0)
    warm_marked = False
    _reset_high_water_mark()
    sampler.begin(phase.name, progress)
    t0 = time.perf_counter()
    unit = 0
    with tqdm(total=phase.target, unit="B", unit_scale=True, unit_divisor=1024, desc="to_zarr", dynamic_ncols=True) as bar:
        while progress.done < phase.target:
            lazy = unit % 2 == 0
            free = shutil.disk_usage(folder).free
            if free < store_bytes + TMPFS_MARGIN:
                raise SystemExit(f"{folder} has {free / GIB:.1f} GiB free, too little for a {store_bytes / GIB:.1f} GiB store "
                                 f"and a {TMPFS_MARGIN / GIB:.0f} GiB margin; stopping")
            store = folder / f"store-{unit}.zarr"
            progress.begin(store, store_bytes)
            if lazy:
                opened = rioxarray.open_rasterio(tif, chunks=chunks)
                source = contextlib.nullcontext(opened) if leave_open else contextlib.closing(opened)
            else:
                source = contextlib.nullcontext(in_memory)
            with source as da:
                da.patches.to_zarr(store, ZARR_PATCH, ZARR_STRIDE, max_memory=phase.max_memory, compression=compression,
                                   progress=False)
            del source, da
            if lazy:
                del opened
            progress.finish()  # before the store is read back and deleted
            # read one patch back: the store holds the scene's pixels
            n = (size - ZARR_PATCH) // ZARR_STRIDE + 1
            r, c = (int(v) for v in rng.integers(0, n, 2))
            got = zarr.open_array(str(store / "pixels"), mode="r")[r, c]
            want = reference[:, r * ZARR_STRIDE: r * ZARR_STRIDE + ZARR_PATCH, c * ZARR_STRIDE: c * ZARR_STRIDE + ZARR_PATCH]
            if not np.array_equal(got, want):
                phase.notes.append(f"store {unit}: patch ({r}, {c}) differs from the scene")
            del got
            shutil.rmtree(store)
            unit += 1
            bar.update(store_bytes)
            sample = sampler.mark(progress.done)
            phase.units.append(dict(unit=unit, bytes=progress.done, rss=sample[3], seconds=time.perf_counter() - t0,
                                    source="geotiff (lazy)" if lazy else "in memory", gdal_cache=sample[4], fds=sample[5],
                                    gc_objects=len(gc.get_objects())))
            if tracing and not warm_marked and progress.done >= phase.warmup * phase.target and unit >= 2:
                _trace_mark(phase)
                warm_marked = True
    phase.seconds = time.perf_counter() - t0
    phase.nbytes = progress.done
    phase.hwm = _high_water_mark()
    sampler.pause()
    lazy_stores = (unit + 1) // 2
    phase.notes.append(f"{unit} stores of {store_bytes / GIB:.2f} GiB of patches ({lazy_stores} from the GeoTIFF read lazily, "
                       f"{lazy_stores * store_bytes / GIB:.1f} GiB; {unit - lazy_stores} from memory); "
                       f"{'every read-back patch matches' if not any('differs' in n for n in phase.notes) else 'READ-BACK MISMATCH'}")
    del in_memory, reference
    if tracing:
        _trace_report(phase)
    phase.end = phase.snapshot(sampler.gdal, sampler.rss)


# --------------------------------------------------------------------------------------------------
# tracemalloc (--tracemalloc): where Python-level allocations grew between warm-up and the end
# --------------------------------------------------------------------------------------------------

_TRACE: dict = {}


def _trace_mark(phase: Phase) -> None:
    import tracemalloc

    gc.collect()
    _TRACE[phase.name] = tracemalloc.take_snapshot()


def _trace_report(phase: Phase) -> None:
    import tracemalloc

    gc.collect()
    before = _TRACE.pop(phase.name, None)
    if before is None:
        return
    after = tracemalloc.take_snapshot()
    stats = after.compare_to(before, "lineno")
    phase.tracemalloc = [str(s) for s in stats[:15]]


# --------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------


def report(phases: list[Phase], figures: dict[str, dict], context: dict) -> str:
    lines = [
        f"patchkit soak {context['date']}: {context['machine']}",
        f"patchkit at {context['patchkit']}",
        f"max_memory {fmt_mib(context['max_memory'])}; RSS sampled every {context['interval']} s; "
        f"load average at start {context['load_start']}, at end {context['load_end']}",
        f"GDAL_CACHEMAX {context['gdal_cachemax']}; GeoTIFF {context.get('geotiff', '-')}",
        "",
        f"{'phase':<13}{'GiB':>8}{'seconds':>9}{'GB/s':>7}{'start':>9}{'warm-up':>9}{'peak':>9}{'end':>9}{'after':>9}"
        f"{'growth':>9}{'slope':>14}{'flat':>6}",
    ]
    for phase in phases:
        f = figures[phase.name]
        lines.append(
            f"{phase.name:<13}{f['gib']:>8.1f}{f['seconds']:>9.1f}{f['gbps']:>7.2f}{f['rss_start'] / MIB:>9.0f}"
            f"{f['rss_warm'] / MIB:>9.0f}{f['rss_peak'] / MIB:>9.0f}{f['rss_end'] / MIB:>9.0f}{f['rss_after'] / MIB:>9.0f}"
            f"{f['growth'] / MIB:>+9.1f}{f['slope_mib_per_gib']:>+10.3f}/GiB{'yes' if f['flat'] else 'NO':>6}"
        )
    lines.append("(RSS in MiB: start of the phase; warm-up = highest over its first part; peak = kernel high-water mark; "
                 "end = highest over its last part; after = once the phase's inputs are freed; slope in MiB per GiB "
                 "processed over the second half)")
    for phase in phases:
        f = figures[phase.name]
        lines += ["", f"[{phase.name}] {f['gib']:.1f} GiB of patches in {f['seconds']:.1f} s "
                      f"({f['gbps']:.2f} GB/s, {f['gibps']:.2f} GiB/s); warm-up = first {f['warmup_gib']:.1f} GiB, "
                      f"end = after {f['end_from_gib']:.1f} GiB"]
        checks = f["checks"]
        lines.append(f"  growth end - warm-up  {f['growth'] / MIB:+8.1f} MiB  limit {phase.growth_limit / MIB:.0f} MiB   "
                     f"{'ok' if checks['growth'] else 'FAIL'}")
        lines.append(f"  slope x {f['gib']:.0f} GiB       {f['trend'] / MIB:+8.1f} MiB  limit {phase.growth_limit / MIB:.0f} MiB   "
                     f"{'ok' if checks['trend'] else 'FAIL'}   (slope {f['slope_mib_per_gib']:+.3f} MiB/GiB, "
                     f"{f['slope_mib_per_gib'] * 1024:+.0f} MiB per TiB)")
        lines.append(f"  peak                  {f['rss_peak'] / MIB:8.0f} MiB  limit {f['peak_limit'] / MIB:.0f} MiB = start "
                     f"{f['rss_start'] / MIB:.0f} + max_memory {phase.max_memory / MIB:.0f} + allowance "
                     f"{phase.allowance / MIB:.0f}   {'ok' if checks['peak'] else 'FAIL'}")
        s, e = phase.start, phase.end
        lines.append(f"  start -> after: fds {s['fds']} -> {e['fds']}, threads {s['threads']} -> {e['threads']}, "
                     f"gc objects {s['gc_objects']} -> {e['gc_objects']}, GDAL cache {fmt_mib(max(s['gdal_cache'], 0))} -> "
                     f"{fmt_mib(max(e['gdal_cache'], 0))} (peak sampled {fmt_mib(max(f.get('gdal_cache_peak', 0), 0))})")
        for note in phase.notes:
            lines.append(f"  {note}")
        if phase.tracemalloc:
            lines.append("  tracemalloc, warm-up -> end (top 15 by size):")
            lines += [f"    {t}" for t in phase.tracemalloc]
        units = phase.units
        step = max(1, len(units) // 12)
        shown = units[::step] + ([units[-1]] if (len(units) - 1) % step else [])
        lines.append("  RSS after unit: " + ", ".join(f"#{u['unit']} {u['bytes'] / GIB:.0f} GiB {u['rss'] / MIB:.0f}" for u in shown))
    verdict = all(figures[p.name]["flat"] for p in phases)
    lines += ["", f"RESULT: {'PASS' if verdict else 'FAIL'}: memory {'stays' if verdict else 'does NOT stay'} flat "
                  f"({', '.join(f'{p.name} ' + ('flat' if figures[p.name]['flat'] else 'NOT flat') for p in phases)})"]
    return "\n".join(lines)


def plot(path: Path, phases: list[Phase], figures: dict[str, dict], sampler: Sampler, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw=dict(width_ratios=(3, 2)))
    colours = ("tab:blue", "tab:orange", "tab:green")
    for phase, colour in zip(phases, colours):
        s, f = sampler.of(phase.name), figures[phase.name]
        order = np.argsort(s["t"])
        left.plot(s["bytes"][order] / GIB, s["rss"][order] / MIB, color=colour, lw=1,
                  label=f"{phase.name}: {f['gib']:.0f} GiB, {f['gbps']:.2f} GB/s, {'flat' if f['flat'] else 'NOT flat'}")
        left.axhline(f["peak_limit"] / MIB, color=colour, ls="--", lw=0.8)
        left.axvline(f["warmup_gib"], color=colour, ls=":", lw=0.8)
        right.plot(s["t"][order], s["rss"][order] / MIB, color=colour, lw=1, label=phase.name)
        if (s["gdal_cache"] > 0).any():
            right.plot(s["t"][order], s["gdal_cache"][order] / MIB, color=colour, lw=0.8, ls="-.",
                       label=f"{phase.name}: GDAL block cache")
    left.set_xlabel("GiB of patches processed in the phase")
    left.set_ylabel("RSS (MiB)")
    left.set_ylim(bottom=0)
    left.legend(loc="lower right", fontsize=8)
    left.set_title("RSS against GiB processed (dashed: peak limit; dotted: end of warm-up)", fontsize=9)
    right.set_xlabel("seconds")
    right.set_ylabel("MiB")
    right.set_ylim(bottom=0)
    right.legend(loc="lower right", fontsize=8)
    right.set_title("RSS against time", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iter-gib", type=float, help="GiB of patches through iter_patches (default 128; --quick 4)")
    parser.add_argument("--zarr-gib", type=float, help="GiB of patches through to_zarr (default 32; --quick 1)")
    parser.add_argument("--max-memory", default="256MiB", help="max_memory of both phases (default 256MiB)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="folder of the .txt/.json/.png (default benchmarks/results)")
    parser.add_argument("--quick", action="store_true", help="4 GiB and 1 GiB, a 2048x2048 GeoTIFF: tries the script out")
    parser.add_argument("--tmp", type=Path, default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
                        help="where the GeoTIFF and stores go (default /dev/shm)")
    parser.add_argument("--zarr-compression", choices=("none", "zstd"), default="none",
                        help="none (default): raw chunks, so every patch byte lands on the tmpfs; zstd: zarr's default")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between RSS samples (default 0.25)")
    parser.add_argument("--warmup", type=float, default=0.1, help="share of a phase's bytes that is warm-up, and "
                        "the end window (default 0.1)")
    parser.add_argument("--growth-limit", default="64MiB", help="most RSS growth from warm-up to end (default 64MiB)")
    parser.add_argument("--allowance", default="64MiB", help="peak allowance above start + max_memory (default 64MiB)")
    parser.add_argument("--phase", nargs="+", choices=("iter", "zarr"), default=("iter", "zarr"), help="phases to run")
    parser.add_argument("--no-close", action="store_true",
                        help="leave each lazily opened GeoTIFF to the garbage collector instead of closing it (shows "
                        "rioxarray's reference cycle holding the file and its GDAL blocks)")
    parser.add_argument("--tag", default="", help="added to the file names: soak_<tag>_<date>.*")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace Python allocations and list the biggest growths from warm-up to end (slow)")
    args = parser.parse_args(argv)
    if args.iter_gib is None:
        args.iter_gib = 4.0 if args.quick else 128.0
    if args.zarr_gib is None:
        args.zarr_gib = 1.0 if args.quick else 32.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` empties the tmpfs
    warnings.simplefilter("ignore")
    from tqdm.auto import tqdm

    import patchkit  # noqa: F401
    from patchkit.core.units import parse_bytes

    max_memory = parse_bytes(args.max_memory)
    growth_limit, allowance = parse_bytes(args.growth_limit), parse_bytes(args.allowance)
    if "zarr" in args.phase:  # import up front, so the phases start from the same interpreter
        import rioxarray  # noqa: F401
        import zarr  # noqa: F401
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(10)
    gdal = GdalCache()
    sampler = Sampler(args.interval, gdal).start()
    date = datetime.date.today().isoformat()
    mem_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    configured = os.environ.get("GDAL_CACHEMAX")
    context = dict(
        date=date, machine=f"{os.cpu_count()} CPUs, {mem_total / GIB:.1f} GiB RAM, {platform.platform()}, "
                            f"Python {platform.python_version()}, numpy {np.__version__}",
        patchkit=_revision(), max_memory=max_memory, interval=args.interval, load_start=tuple(round(v, 2) for v in os.getloadavg()),
        gdal_cachemax=(f"{configured} (from the environment; {fmt_mib(gdal.limit())})" if configured else
                       f"unset: GDAL's default (5% of RAM), {fmt_mib(gdal.limit())}" if gdal.limit() > 0 else "n/a"),
        geotiff=("opened for each store and left to the garbage collector (--no-close)" if args.no_close else
                 "opened for each store and closed after it"),
        args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    )
    phases: list[Phase] = []
    folder = Path(tempfile.mkdtemp(prefix="patchkit-soak-", dir=args.tmp))
    try:
        if "iter" in args.phase:
            phase = Phase("iter_patches", int(args.iter_gib * GIB), max_memory, allowance, growth_limit, args.warmup)
            run_iter(phase, sampler, tqdm, args.tracemalloc)
            phases.append(phase)
            gc.collect()
        if "zarr" in args.phase:
            phase = Phase("to_zarr", int(args.zarr_gib * GIB), max_memory, allowance, growth_limit, args.warmup)
            run_zarr(phase, sampler, tqdm, folder, ZARR_SIZE_QUICK if args.quick else ZARR_SIZE,
                     None if args.zarr_compression == "none" else "default", args.tracemalloc, args.no_close)
            phases.append(phase)
    finally:
        sampler.stop()
        shutil.rmtree(folder, ignore_errors=True)
    context["load_end"] = tuple(round(v, 2) for v in os.getloadavg())

    figures = {}
    for phase in phases:
        samples = sampler.of(phase.name)
        figures[phase.name] = phase.figures(samples)
        figures[phase.name]["gdal_cache_peak"] = int(samples["gdal_cache"].max()) if samples["gdal_cache"].size else -1
    text = report(phases, figures, context)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"soak_{'quick_' if args.quick else ''}{args.tag + '_' if args.tag else ''}{date}"
    stem.with_suffix(".txt").write_text(text + "\n")
    payload = dict(
        context=context,
        phases=[dict(name=p.name, target_bytes=p.target, bytes=p.nbytes, max_memory=p.max_memory, allowance=p.allowance,
                     growth_limit=p.growth_limit, start=p.start, end=p.end, notes=p.notes, units=p.units,
                     tracemalloc=p.tracemalloc, figures=figures[p.name]) for p in phases],
        samples=dict(fields=list(Sampler.FIELDS), rows=sampler.samples),
    )
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=_jsonable))
    verdict = all(f["flat"] for f in figures.values())
    plot(stem.with_suffix(".png"), phases, figures, sampler,
         f"patchkit soak {date}, max_memory {args.max_memory}: {'PASS' if verdict else 'FAIL'} ({context['machine'].split(', Linux')[0]})")
    print(f"wrote {stem}.txt, .json, .png")
    return 0 if verdict else 1


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
