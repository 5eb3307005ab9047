"""GPU benchmarks: host→device bandwidth, the CuPy backend, device stitching, sliding-window inference.

Run ``python benchmarks/bench_gpu.py [--quick] [--json PATH]`` on a machine with a CUDA GPU, CuPy and
PyTorch (TensorFlow, rasterio, zarr and dask are not needed). Every figure is measured in this one run
and each is set beside the limit it is bounded by, measured alongside:

``transfers``
    Host→device (and device→host) GB/s from pageable memory (a plain numpy array), from pinned
    memory (``cupy.cuda.alloc_pinned_memory``) and from a numpy array page-locked in place
    (``cudaHostRegister``), for several sizes; and what page-locking costs.
``extract``
    The CuPy backend on a 4096²×4 float32 scene on the device (256/128 ``VALID``, 256/192 ``SAME``),
    against a device-to-device ``cudaMemcpy`` of the same output bytes; and from a host scene.
``stitch``
    Mean (and cosine) stitching of the 256/192 ``SAME`` patches on the device, against a
    device-to-device copy of the patch bytes it reads; with a check that the image comes back.
``inference``
    A small conv net (4→32→32→1 channels, bf16 autocast) over the scene's 256/192 ``SAME`` patches,
    in batches of whole grid rows: (a) the model alone on device-resident batches; (b) end to end from
    a host numpy scene: each batch's input rows copied to the device on a second CUDA stream while
    the model runs on the previous batch (from pinned staging buffers, or from the scene page-locked
    in place), patches extracted on the device by the CuPy backend, handed to PyTorch through DLPack,
    predictions accumulated on the device, the image copied back. (b)/(a) says how close the
    pipeline comes to the model alone. (d) ``patchkit.predict`` end to end from the host scene (an
    in-memory numpy array), the model wrapped as a callable of a CuPy or numpy batch that reaches
    PyTorch through DLPack (``torch.from_dlpack``), patches extracted by the CuPy backend or the numpy
    one, mean blend (compared with (c)) and gaussian; (d)/(a) is the issue's end-to-end ratio. Its
    notes list which of TensorFlow, rasterio, zarr and dask were imported (none should be).

Times are wall clock around a device synchronisation: the best of ``--repeats`` calls after a warm-up
call counts (the median is kept too). GB/s are 10⁹ bytes per second of the bytes named in each row.
Without CuPy or a GPU the script says so and exits 2 (0 with ``--allow-missing``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

if __package__ in (None, ""):  # run as a script from anywhere: find patchkit beside benchmarks/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from patchkit.core.spec import PatchSpec  # noqa: E402

GB = 10**9
MIB = 2**20
SECTIONS = ("transfers", "extract", "stitch", "inference")
#: ``cudaMemcpyKind`` values (CUDA's ABI).
MEMCPY_KINDS = {"h2d": 1, "d2h": 2, "d2d": 3}


@dataclass
class Config:
    """Sizes of one run (full, or ``--quick``)."""

    size: int = 4096
    channels: int = 4
    transfer_mib: tuple[int, ...] = (64, 256, 512)
    extract_specs: tuple[tuple[int, int, str], ...] = ((256, 128, "VALID"), (256, 192, "SAME"))
    patch: tuple[int, int, str] = (256, 192, "SAME")
    batch: int = 64
    repeats: int = 5

    @classmethod
    def quick(cls) -> "Config":
        return cls(size=1024, transfer_mib=(16, 64), extract_specs=((64, 32, "VALID"), (64, 48, "SAME")),
                   patch=(64, 48, "SAME"), batch=32, repeats=2)


@dataclass
class Row:
    """One measured figure: ``nbytes`` moved (or patches made) in ``best`` seconds (``median`` of repeats)."""

    section: str
    name: str
    best: float
    median: float
    nbytes: int = 0
    patches: int = 0
    ratio: float | None = None
    ratio_to: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def gbps(self) -> float | None:
        return self.nbytes / self.best / GB if self.nbytes and self.best > 0 else None

    @property
    def patches_per_s(self) -> float | None:
        return self.patches / self.best if self.patches and self.best > 0 else None

    def to_dict(self) -> dict:
        return {**asdict(self), "gbps": self.gbps, "patches_per_s": self.patches_per_s}


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def timed(cp, fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, float]:
    """``(best, median)`` seconds of ``fn()`` followed by a device synchronisation, after ``warmup`` calls."""
    device = cp.cuda.Device()
    for _ in range(warmup):
        fn()
    device.synchronize()
    times = []
    for _ in range(max(repeats, 1)):
        device.synchronize()
        start = time.perf_counter()
        fn()
        device.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


def ptr(array: Any) -> int:
    """The address of a device array's first element (or a host array's)."""
    data = array.data
    return data.ptr if hasattr(data, "ptr") else array.ctypes.data


def pinned_empty(cp, shape, dtype) -> np.ndarray:
    """A numpy array in page-locked host memory (from CuPy's pinned pool)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    memory = cp.cuda.alloc_pinned_memory(nbytes)
    return np.frombuffer(memory, dtype, int(np.prod(shape))).reshape(shape)


def memcpy(cp, dst: int, src: int, nbytes: int, kind: str, stream=None) -> None:
    """``cudaMemcpyAsync`` of ``nbytes`` (``kind`` ``"h2d"``, ``"d2h"`` or ``"d2d"``) on ``stream`` (current by default)."""
    stream = cp.cuda.get_current_stream() if stream is None else stream
    cp.cuda.runtime.memcpyAsync(dst, src, nbytes, MEMCPY_KINDS[kind], stream.ptr)


def free_pools(cp) -> None:
    cp.get_default_memory_pool().free_all_blocks()
    cp.get_default_pinned_memory_pool().free_all_blocks()


def d2d_row(cp, section: str, nbytes: int, repeats: int, what: str) -> Row:
    """A device-to-device ``cudaMemcpy`` of ``nbytes``: the limit a copy on the device can reach."""
    src = cp.ones(nbytes, cp.uint8)
    dst = cp.empty(nbytes, cp.uint8)
    best, median = timed(cp, lambda: memcpy(cp, ptr(dst), ptr(src), nbytes, "d2d"), repeats)
    del src, dst
    return Row(section, f"D2D cudaMemcpy of {what}", best, median, nbytes)


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


def register(cp, array: np.ndarray) -> tuple[float | None, str]:
    """Page-lock ``array`` in place (``cudaHostRegister``): ``(seconds, "")``, or ``(None, why not)``."""
    start = time.perf_counter()
    try:
        cp.cuda.runtime.hostRegister(array.ctypes.data, array.nbytes, 0)
    except Exception as exc:  # CUDARuntimeError: not allowed here (some containers), or out of lockable memory
        return None, f"cudaHostRegister failed: {exc}"
    return time.perf_counter() - start, ""


def bench_transfers(cp, cfg: Config, torch=None) -> list[Row]:
    """Host↔device bandwidth from pageable, pinned and registered (page-locked in place) host memory."""
    rows: list[Row] = []
    for mib in cfg.transfer_mib:
        n = mib * MIB
        device = cp.empty(n, cp.uint8)
        device.fill(1)
        hosts = {"pageable": np.ones(n, np.uint8), "pinned": pinned_empty(cp, (n,), np.uint8),
                 "registered": np.ones(n, np.uint8)}
        hosts["pinned"][:] = 1
        register_s, why = register(cp, hosts["registered"])
        if register_s is None:
            del hosts["registered"]
        size_rows = []
        try:
            for label, host in hosts.items():
                for kind in ("h2d", "d2h"):
                    src, dst = (ptr(host), ptr(device)) if kind == "h2d" else (ptr(device), ptr(host))
                    best, median = timed(cp, lambda: memcpy(cp, dst, src, n, kind), cfg.repeats)
                    arrow = "H→D" if kind == "h2d" else "D→H"
                    size_rows.append(Row("transfers", f"{arrow} {label} {mib} MiB", best, median, n))
        finally:
            if register_s is not None:
                start = time.perf_counter()
                cp.cuda.runtime.hostUnregister(hosts["registered"].ctypes.data)
                register_s += time.perf_counter() - start
        pinned = {r.name[:3]: r for r in size_rows if " pinned " in r.name}
        for r in size_rows:
            if " pinned " not in r.name:
                r.ratio, r.ratio_to = pinned[r.name[:3]].best / r.best, f"{r.name[:3]} pinned"
        if register_s is not None:
            size_rows.append(Row("transfers", f"cudaHostRegister + Unregister {mib} MiB", register_s, register_s, n,
                                 note="page-locking a numpy array in place (once)"))
        else:
            size_rows.append(Row("transfers", f"cudaHostRegister {mib} MiB", 0.0, 0.0, note=why))
        rows += size_rows
        del device, hosts
        free_pools(cp)
    return rows


def bench_extract(cp, cfg: Config, torch=None) -> list[Row]:
    """The CuPy backend against a device-to-device copy of the same output bytes."""
    from patchkit.core.backends.cupy import CupyBackend
    from patchkit.core.backends.numpy import NumpyBackend

    backend = CupyBackend()
    shape = (1, cfg.size, cfg.size, cfg.channels)
    scene = cp.asarray(np.random.default_rng(0).random(shape, dtype=np.float32))
    host_scene = cp.asnumpy(scene)
    rows = []
    for k, s, padding in cfg.extract_specs:
        spec = PatchSpec(k, s, padding=padding)
        out = cp.empty(spec.output_shape(shape), cp.float32)
        nbytes = out.nbytes
        label = f"{k}/{s} {padding}"
        copy = d2d_row(cp, "extract", nbytes, cfg.repeats, f"the {label} output bytes")
        best, median = timed(cp, lambda: backend.extract(scene, spec, out=out), cfg.repeats)
        row = Row("extract", f"cupy backend {label}, device scene", best, median, nbytes,
                  ratio=copy.best / best, ratio_to="D2D copy", extra={"output_shape": list(out.shape)})
        best, median = timed(cp, lambda: backend.extract(host_scene, spec, out=out), cfg.repeats)
        host_row = Row("extract", f"cupy backend {label}, pageable host scene", best, median, nbytes,
                       ratio=copy.best / best, ratio_to="D2D copy", note="includes the H→D copy of the scene")
        check = NumpyBackend().extract(host_scene[:, : min(cfg.size, 3 * k)], spec)  # spot check: first rows
        exact = bool(np.array_equal(cp.asnumpy(out[:, : check.shape[1]]), check)) if spec.padding == "VALID" else None
        if exact is not None:
            row.extra["first_rows_equal_numpy_backend"] = exact
        rows += [copy, row, host_row]
        del out
        free_pools(cp)
    return rows


def bench_stitch(cp, cfg: Config, torch=None) -> list[Row]:
    """Mean and cosine stitching on the device against a D2D copy of the patch bytes read."""
    from patchkit.core.backends.cupy import CupyBackend, accumulate, accumulators, finish_mean
    from patchkit.stitch import blend_weights

    k, s, padding = cfg.patch
    spec = PatchSpec(k, s, padding=padding)
    shape = (1, cfg.size, cfg.size, cfg.channels)
    scene = cp.asarray(np.random.default_rng(0).random(shape, dtype=np.float32))
    patches = CupyBackend().extract(scene, spec)
    nbytes = patches.nbytes
    rows = [d2d_row(cp, "stitch", nbytes, cfg.repeats, f"the {k}/{s} {padding} patch bytes")]
    grid = slice(0, patches.shape[1])
    cosine = cp.asarray(blend_weights("cosine", spec.sizes))
    for acc_dtype, weights, label in ((np.float64, None, "mean, float64 sums"), (np.float32, None, "mean, float32 sums"),
                                      (np.float64, cosine, "cosine, float64 sums")):
        sums, weights_sum = accumulators(shape, patches.dtype, xp=cp, acc_dtype=acc_dtype)
        best, median = timed(cp, lambda: accumulate(sums, weights_sum, patches, spec, grid, weights=weights), cfg.repeats)
        rows.append(Row("stitch", f"accumulate {label}", best, median, nbytes, ratio=rows[0].best / best,
                        ratio_to="D2D copy", note="GB/s of patch bytes read"))
        del sums, weights_sum
    sums, weights_sum = accumulators(shape, patches.dtype, xp=cp)
    accumulate(sums, weights_sum, patches, spec, grid)
    out = cp.empty(shape, cp.float32)
    best, median = timed(cp, lambda: finish_mean(sums, weights_sum, np.float32, out=out), cfg.repeats, warmup=0)
    exact = bool(cp.array_equal(out, scene))
    rows.append(Row("stitch", "finish_mean (float64 → float32)", best, median, out.nbytes,
                    note=f"image back bit for bit: {exact}", extra={"exact": exact}))
    del sums, weights_sum, out, patches, scene
    free_pools(cp)
    return rows


# --------------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------------


def make_model(torch, channels: int):
    """Three conv layers, ``channels`` → 32 → 32 → 1, on the GPU, channels-last, in eval mode."""
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(32, 1, 1),
    )
    return model.cuda().eval().to(memory_format=torch.channels_last)


def band_plan(spec: PatchSpec, shape: tuple[int, int, int, int], batch: int) -> tuple[list[slice], list[tuple[int, int]]]:
    """Bands of whole grid rows of about ``batch`` patches, and the clipped input rows each reads."""
    oh, ow = spec.grid_shape(shape)
    per = max(1, round(batch / ow))
    bands = [slice(i, min(i + per, oh)) for i in range(0, oh, per)]
    return bands, [spec.input_rows(rows, shape, clip=True) for rows in bands]


class Pipeline:
    """Sliding-window inference of a host (or device) scene, batch by batch, with copies overlapped.

    ``predict(patches) -> predictions`` takes a device array ``[1, rows, out_cols, kh * kw * C]`` and
    returns ``[1, rows, out_cols, kh * kw * M]``. Band ``k``'s input rows go to device buffer ``k % 2``
    on ``copy_stream`` (from pinned staging buffer ``k % 2``, or straight from a page-locked scene),
    while ``compute_stream`` extracts, predicts and accumulates band ``k - 1``. Events keep a buffer
    from being overwritten before the work that reads it is done.
    """

    def __init__(self, cp, spec: PatchSpec, shape, out_channels: int, batch: int, predict, streams=None):
        from patchkit.core.backends.cupy import CupyBackend, accumulators

        self.cp, self.spec, self.shape, self.predict = cp, spec, tuple(shape), predict
        self.backend = CupyBackend(xp=cp)
        self.bands, self.halos = band_plan(spec, self.shape, batch)
        _, _, w, c = self.shape
        self.row_bytes = w * c * 4
        rows = max(yb - ya for ya, yb in self.halos)
        self.device_halo = [cp.empty((1, rows, w, c), cp.float32) for _ in range(2)]
        self.stage = [pinned_empty(cp, (1, rows, w, c), np.float32) for _ in range(2)]
        ow, depth = spec.output_shape(self.shape)[2:]
        self.patch_out = {n: cp.empty((1, n, ow, depth), cp.float32) for n in {b.stop - b.start for b in self.bands}}
        b, h, w, _ = self.shape
        self.sums, self.weights_sum = accumulators((b, h, w, out_channels), np.float32, xp=cp)
        self.result = cp.empty((b, h, w, out_channels), cp.float32)
        self.host_result = pinned_empty(cp, self.result.shape, np.float32)
        self.compute = cp.cuda.Stream(non_blocking=True) if streams is None else streams[0]
        self.copy = cp.cuda.Stream(non_blocking=True) if streams is None else streams[1]
        self.copied = [cp.cuda.Event() for _ in self.bands]
        self.consumed = [cp.cuda.Event() for _ in self.bands]

    def run(self, scene: Any, mode: str, overlap: bool = True) -> np.ndarray:
        """The stitched predictions of ``scene`` (host ``[1, h, w, C]`` float32, or a device array for
        ``mode="device"``) in a pinned host array. ``mode``: ``"staged"`` (host rows copied into pinned
        buffers, then to the device), ``"registered"`` (``scene`` is page-locked: rows go straight to the
        device) or ``"device"`` (no copies). Without ``overlap`` copies go on the compute stream."""
        from patchkit.core.backends.cupy import accumulate, finish_mean

        cp = self.cp
        copy_stream = self.copy if overlap else self.compute
        with self.compute:
            self.sums.fill(0)
            self.weights_sum.fill(0)
        for k, (rows, (ya, yb)) in enumerate(zip(self.bands, self.halos)):
            slot = k % 2
            if mode == "device":
                src, row0 = scene, 0
            else:
                nbytes = (yb - ya) * self.row_bytes
                if mode == "staged":
                    if k >= 2:
                        self.copied[k - 2].synchronize()  # its H→D copy out of this staging buffer is done
                    np.copyto(self.stage[slot][:, : yb - ya], scene[:, ya:yb])
                    host = ptr(self.stage[slot])
                else:
                    host = ptr(scene) + ya * self.row_bytes
                if k >= 2:
                    copy_stream.wait_event(self.consumed[k - 2])  # band k - 2 was extracted from this buffer
                memcpy(cp, ptr(self.device_halo[slot]), host, nbytes, "h2d", copy_stream)
                self.copied[k].record(copy_stream)
                self.compute.wait_event(self.copied[k])
                src, row0 = self.device_halo[slot][:, : yb - ya], ya
            with self.compute:
                out = self.patch_out[rows.stop - rows.start]
                patches = self.backend.band(src, row0, self.shape, self.spec, rows, out=out)
                self.consumed[k].record(self.compute)
                accumulate(self.sums, self.weights_sum, self.predict(patches), self.spec, rows)
        with self.compute:
            finish_mean(self.sums, self.weights_sum, np.float32, out=self.result)
            memcpy(cp, ptr(self.host_result), ptr(self.result), self.result.nbytes, "d2h", self.compute)
        self.compute.synchronize()
        return self.host_result


def torch_predictor(cp, torch, model, spec: PatchSpec, channels: int, stream, bf16: bool):
    """``predict`` for :class:`Pipeline`: patches to PyTorch through DLPack, the model, predictions back.

    Everything runs on ``stream`` (a ``torch.cuda.ExternalStream`` of the pipeline's compute stream, so
    DLPack needs no synchronisation). Also returns ``to_torch(patches)`` (the NCHW view of a band of
    patches, channels-last in memory) and ``run_model(x)``, for timing the model alone.
    """
    kh, kw = spec.sizes

    def to_torch(patches):
        _, n, ow, _ = patches.shape
        with torch.cuda.stream(stream):
            return torch.from_dlpack(patches).view(n * ow, kh, kw, channels).permute(0, 3, 1, 2)

    def run_model(x):
        with torch.cuda.stream(stream), torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=bf16):
            return model(x).float().contiguous()

    def predict(patches):
        _, n, ow, _ = patches.shape
        y = run_model(to_torch(patches))  # [n * ow, M, kh, kw]
        with torch.cuda.stream(stream), torch.inference_mode():
            y = y.permute(0, 2, 3, 1).reshape(1, n, ow, kh * kw * y.shape[1])  # TensorFlow's layout
            return cp.from_dlpack(y)

    return predict, run_model, to_torch


def bench_inference(cp, cfg: Config, torch=None) -> list[Row]:
    """(a) the model alone on device-resident batches; (b) end to end from a host scene, several ways."""
    if torch is None:
        raise RuntimeError("the inference section needs PyTorch (import torch failed)")
    torch.backends.cudnn.benchmark = True
    k, s, padding = cfg.patch
    spec = PatchSpec(k, s, padding=padding)
    shape = (1, cfg.size, cfg.size, cfg.channels)
    host_scene = np.random.default_rng(0).random(shape, dtype=np.float32)
    device_scene = cp.asarray(host_scene)
    torch.manual_seed(0)
    model = make_model(torch, cfg.channels)
    compute, copy = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)
    stream = torch.cuda.ExternalStream(compute.ptr)
    predict, run_model, to_torch = torch_predictor(cp, torch, model, spec, cfg.channels, stream, bf16=True)
    pipeline = Pipeline(cp, spec, shape, 1, cfg.batch, predict, streams=(compute, copy))
    n_patches = int(np.prod(spec.grid_shape(shape)))
    batch = (pipeline.bands[0].stop - pipeline.bands[0].start) * spec.grid_shape(shape)[1]
    common = {"patches": n_patches, "batch": batch, "bands": len(pipeline.bands)}

    with compute:  # (a) inputs made beforehand, on the device, as PyTorch tensors
        inputs = [to_torch(pipeline.backend.band(device_scene, 0, shape, spec, rows)) for rows in pipeline.bands]

    def model_only():
        for x in inputs:
            run_model(x)

    best, median = timed(cp, model_only, cfg.repeats, warmup=2)
    model_row = Row("inference", f"(a) model alone, {k}/{s} {padding}, batches of {batch}", best, median,
                    patches=n_patches, extra=common)
    rows = [model_row]
    del inputs

    reference = pipeline.run(device_scene, "device").copy()

    def variant(scene, mode: str, overlap: bool, label: str) -> Row:
        best, median = timed(cp, lambda: pipeline.run(scene, mode, overlap), cfg.repeats, warmup=1)
        diff = float(np.max(np.abs(pipeline.host_result - reference)))  # a missing wait would show here
        return Row("inference", label, best, median, patches=n_patches, ratio=model_row.best / best, ratio_to="(a)",
                   note=f"max |diff| vs (c) {diff:.3g}", extra={**common, "max_abs_diff": diff})

    rows.append(variant(device_scene, "device", True, "(c) scene on the device: extract + model + stitch"))
    for overlap, label in ((True, "(b) pageable host scene via pinned staging, copies overlapped"),
                           (False, "(b) pageable host scene via pinned staging, copies not overlapped")):
        rows.append(variant(host_scene, "staged", overlap, label))
    register_s, why = register(cp, host_scene)
    if register_s is None:
        rows.append(Row("inference", "(b) host scene page-locked in place", 0.0, 0.0, note=why))
    else:
        try:
            for overlap, label in ((True, "(b) host scene page-locked in place, copies overlapped"),
                                   (False, "(b) host scene page-locked in place, copies not overlapped")):
                rows.append(variant(host_scene, "registered", overlap, label))
        finally:
            cp.cuda.runtime.hostUnregister(host_scene.ctypes.data)
        rows.append(Row("inference", f"cudaHostRegister of the {host_scene.nbytes // MIB} MiB scene", register_s,
                        register_s, host_scene.nbytes, note="once per scene; not in the (b) times"))
    rows += predict_rows(cp, torch, model, cfg, host_scene, batch, model_row, reference, common)
    del pipeline, device_scene
    free_pools(cp)
    return rows


#: What a GPU image lacks, and what ``patchkit.predict`` of an in-memory array must therefore never import.
ABSENT_ON_GPU = ("tensorflow", "rasterio", "zarr", "dask")


def dlpack_model(torch, model, bf16: bool) -> Callable[[Any], Any]:
    """The PyTorch ``model`` as ``patchkit.predict`` takes it: a callable of a batch ``[n, kh, kw, C]``.

    The batch (a CuPy array on the device, or a numpy array on the host) reaches PyTorch through DLPack
    (``torch.from_dlpack``: in place on the device; a host batch is then copied to it) and is viewed as
    NCHW, channels-last in memory; the prediction goes back as a CUDA tensor ``[n, kh, kw, M]`` (float32),
    which ``predict`` reads through DLPack too. Everything runs on PyTorch's current stream, whose
    DLPack exchanges with CuPy order themselves.
    """

    def run(batch):
        x = torch.from_dlpack(batch)
        if x.device.type != "cuda":
            x = x.to("cuda")
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=bf16):
            y = model(x.permute(0, 3, 1, 2)).float()
        return y.permute(0, 2, 3, 1).contiguous()

    return run


def backend_of(name: str) -> Any:
    """What ``predict(backend=...)`` is given: the name, or for ``"cupy"`` a ``CupyBackend`` (predict takes either,
    and the name is not in the backend registry of every patchkit)."""
    if name != "cupy":
        return name
    from patchkit.core.backends.cupy import CupyBackend

    return CupyBackend()


def predict_rows(cp, torch, model, cfg: Config, host_scene: np.ndarray, batch: int, model_row: Row,
                 reference: np.ndarray, common: dict) -> list[Row]:
    """(d) ``patchkit.predict`` end to end from the host scene (an in-memory numpy array) with the model wrapped
    by :func:`dlpack_model`: extraction by the CuPy backend (device batches) or the numpy one (host batches),
    mean blend (compared with (c)) and gaussian (predict's default); with the CuPy backend the predictions are
    blended on the device when the image's accumulators fit (predict's default ``gpu_memory``, most of the free
    device memory), as here. Ratios to (a). Each row's note lists the
    modules of :data:`ABSENT_ON_GPU` loaded after the call (none expected); a failure is a row with the error."""
    import patchkit

    k, s, padding = cfg.patch
    n_patches = int(np.prod(PatchSpec(k, s, padding=padding).grid_shape(host_scene.shape)))
    if not callable(getattr(patchkit, "predict", None)):
        return [Row("inference", "(d) patchkit.predict", 0.0, 0.0, note="this patchkit has no patchkit.predict")]
    fn, rows = dlpack_model(torch, model, bf16=True), []
    for name, blend in (("cupy", "mean"), ("numpy", "mean"), ("cupy", "gaussian")):
        label = f"(d) patchkit.predict, {name} backend, {blend} blend, host numpy scene"
        results: list = []  # the last call's prediction, compared with (c) after the clock

        def call(blend=blend, backend=name):
            results[:] = [patchkit.predict(host_scene, fn, k, s, padding=padding, batch_size=batch, blend=blend,
                                           backend=backend_of(backend))]

        try:
            best, median = timed(cp, call, cfg.repeats, warmup=1)
            result = np.asarray(results[0])
        except Exception as exc:  # one way failing still reports the others (and the run exits 1)
            rows.append(Row("inference", label, 0.0, 0.0, note=f"FAILED: {type(exc).__name__}: {exc}",
                            extra={"error": traceback.format_exc()}))
            continue
        loaded = [m for m in ABSENT_ON_GPU if m in sys.modules]
        diff = float(np.max(np.abs(result - reference))) if blend == "mean" else None
        note = (f"max |diff| vs (c) {diff:.3g}; " if diff is not None else "") + f"loaded {loaded or 'none'} of {list(ABSENT_ON_GPU)}"
        rows.append(Row("inference", label, best, median, patches=n_patches, ratio=model_row.best / best,
                        ratio_to="(a)", note=note, extra={**common, "max_abs_diff": diff, "loaded": loaded}))
    return rows


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def format_rows(rows: list[Row]) -> str:
    """A plain-text table of ``rows``."""
    header = f"{'section':<10} {'what':<66} {'best ms':>9} {'median':>9} {'GB/s':>8} {'patch/s':>10} {'ratio':>7}  note"
    lines = [header, "-" * len(header)]
    for r in rows:
        gbps = f"{r.gbps:8.1f}" if r.gbps is not None else f"{'':>8}"
        pps = f"{r.patches_per_s:10.0f}" if r.patches_per_s is not None else f"{'':>10}"
        ratio = f"{r.ratio:7.2f}" if r.ratio is not None else f"{'':>7}"
        note = "; ".join(x for x in (f"ratio to {r.ratio_to}" if r.ratio_to else "", r.note) if x)
        times = f"{r.best * 1e3:9.2f} {r.median * 1e3:9.2f}"
        lines.append(f"{r.section:<10} {r.name[:66]:<66} {times} {gbps} {pps} {ratio}  {note}")
    return "\n".join(lines)


def environment(cp, torch) -> dict:
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"]
    return {
        "device": name.decode() if isinstance(name, bytes) else str(name),
        "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
        "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
        "cupy": cp.__version__,
        "torch": getattr(torch, "__version__", None),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a 1024² scene, small transfers, 2 repeats: checks that it runs")
    parser.add_argument("--section", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="sections to run (default all)")
    parser.add_argument("--repeats", type=int, help="timed calls per figure; the best counts (default 5, quick 2)")
    parser.add_argument("--batch", type=int, help="patches per inference batch, rounded to whole grid rows (default 64)")
    parser.add_argument("--json", type=Path, help="also write every row to this JSON file")
    parser.add_argument("--allow-missing", action="store_true", help="exit 0 when CuPy or a GPU is missing")
    return parser.parse_args(argv)


def write_json(path: Path | None, report: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {path}")


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = Config.quick() if args.quick else Config()
    if args.repeats:
        cfg.repeats = args.repeats
    if args.batch:
        cfg.batch = args.batch
    try:
        import cupy as cp

        cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # ImportError, or CUDARuntimeError without a driver or device
        message = (f"bench_gpu: needs CuPy and a CUDA device ({type(exc).__name__}: {exc}); "
                   "pip install cupy-cuda12x or cupy-cuda13x")
        print(message, file=sys.stderr)
        write_json(args.json, {"skipped": message})
        return 0 if args.allow_missing else 2
    try:
        import torch
    except ImportError:
        torch = None
    report: dict = {"environment": environment(cp, torch), "config": asdict(cfg), "rows": [], "errors": {}}
    print(json.dumps(report["environment"]))
    sections = {"transfers": bench_transfers, "extract": bench_extract, "stitch": bench_stitch, "inference": bench_inference}
    all_rows: list[Row] = []
    for name in SECTIONS:
        if name not in args.section:
            continue
        start = time.perf_counter()
        try:
            rows = sections[name](cp, cfg, torch)
        except Exception:  # one section failing still reports the others
            report["errors"][name] = traceback.format_exc()
            print(f"\n[{name}] FAILED\n{report['errors'][name]}", file=sys.stderr)
            rows = []
        finally:
            free_pools(cp)
        all_rows += rows
        report["rows"] += [r.to_dict() for r in rows]
        report["errors"].update({f"{name}: {r.name}": r.extra["error"] for r in rows if "error" in r.extra})
        print(f"\n[{name}] {time.perf_counter() - start:.1f} s\n{format_rows(rows)}", flush=True)
    write_json(args.json, report)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
