""":func:`predict`: a scene through a model, patch rows to batches to predictions to blended rows of the map, in one
streamed pass under ``max_memory``.

The rooms it joins: :mod:`.scene` (the source, channels last, and the prediction's labels), :mod:`.model` (calling
the model and checking what it returns), :mod:`.inference` (patch rows extracted and predicted, held as stitch reads
them), and stitch's own: the blend windows, the band plan (:func:`~patchkit.stitch.plan.band_height`: the
predictions a band needs, one group of patches and one batch in flight, the accumulators and the sink, all
under ``max_memory``), the band loop and the raster sinks. Predictions one vector a patch skip the blend: they
are written as a raster with a pixel per patch.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..core.backends import get_backend
from ..core.backends.base import Backend
from ..core.budget import DEFAULT_MAX_MEMORY, GDAL_CACHE_SHARE, Budget, largest
from ..core.gdal import bounded_cache
from ..core.spec import PatchSpec
from ..core.spec.inverse import lines_of, support
from ..core.units import format_bytes
from ..errors import BudgetTooSmallError, PatchkitValueError, shown
from ..sinks.raster import ArrayRaster, Raster, check_room, out_path, sink_class
from .bands import run
from .device import Accumulation, Staging, device_bytes, free_memory, full_weights, takes
from .inference import Predictions, Runner, batch_bytes
from .inputs import fill_for
from .model import Finite, Output, check_model, probe, runnable, to_device, to_host
from .output import array_template, raster_sink
from .plan import band_height, make_job
from .resume import Resume, fingerprint
from .scene import PREDICTION, Scene
from .windows import blend_weights, gaussian, normalize_crop

__all__ = ["predict", "DEFAULT_BATCH"]

#: The largest batch ``batch_size=None`` picks (Keras' own default for ``predict``), fewer when the budget is tight.
DEFAULT_BATCH = 32


def predict(
    source: Any,
    model: Callable,
    sizes: int | Sequence[int],
    strides: int | Sequence[int],
    rates: int | Sequence[int] = 1,
    padding: str = "SAME",
    *,
    batch_size: int | None = None,
    blend: str | tuple | Callable[[int, int], Any] = "gaussian",
    sigma_scale: float | tuple[float, float] | None = None,
    crop: int | tuple[int, int] = 0,
    max_memory: int | str = DEFAULT_MAX_MEMORY,
    gpu_memory: int | str | None = None,
    out: str | os.PathLike | None = None,
    dtype: Any = None,
    backend: str = "auto",
    nan_policy: str = "raise",
    fill_value: Any = None,
) -> Any:
    """Run ``model`` over a scene, patch by patch, and blend its predictions back onto the scene's grid.

    One streamed pass: rows of patches are extracted from ``source`` (read lazily when it is dask-backed),
    cut into batches for ``model``, and the predictions are blended into bands of output rows that are
    written (``out``) or kept (in memory) as they are finished. Every patch is predicted once.

    Parameters
    ----------
    source : xarray.DataArray or array-like
        The scene: a DataArray with spatial dims (``y``/``x``, a rioxarray raster...) and optionally a channel
        dim (``band``) and leading dims (``time``...), in memory or dask-backed; or an array ``[batch, height,
        width, channels]``.
    model : callable
        A Keras model, a ``tf.function``, or any callable taking a batch ``[n, kh, kw, channels]`` (channels
        last, the source's dtype) and returning ``[n, kh, kw, c]`` (any channel count ``c``), ``[n, kh - 2 crop,
        kw - 2 crop, c]`` (the patch's centre), ``[n, kh, kw]`` (one channel), or ``[n, k]`` (one vector a patch:
        the result is a raster with one pixel per patch). What it returns may be a NumPy array, a TensorFlow
        tensor, or any DLPack array (PyTorch, JAX, CuPy; on a GPU too).
    sizes, strides, rates, padding
        The patches, as :func:`patchkit.extract_patches` (and ``tf.image.extract_patches``); ``"SAME"`` by
        default, so every pixel is predicted.
    batch_size : int, optional
        Patches per model call. Default: up to :data:`DEFAULT_BATCH`, fewer when ``max_memory`` (or
        ``gpu_memory``) is tight.
    blend : str, tuple or callable, default "gaussian"
        How overlapping predictions combine, as :func:`patchkit.stitch`: ``"gaussian"`` (MONAI's importance map),
        ``"mean"``, ``"cosine"``, ``"none"``, a scipy window, a callable.
    sigma_scale : float or (float, float), optional
        The Gaussian's sigma as a fraction of the patch (MONAI's ``sigma_scale``; default 0.125); only with
        ``blend="gaussian"``.
    crop : int or (int, int), default 0
        Pixels dropped from each side of every prediction before blending (a model's poor borders); a model
        that returns only the centre ``[kh - 2 crop, kw - 2 crop]`` needs it.
    max_memory : int or str, default "512MiB"
        Bound on what predict holds at once: the predictions a band of output rows needs, one group of
        extracted patches and the input rows it reads, one batch in flight (the patches as the model's
        framework holds them, and its predictions twice), the accumulators and the band being written. The
        model's own working memory (its activations) is the model's: a smaller ``batch_size`` lowers it.
    gpu_memory : int or str, optional
        Bound on what predict holds on the device: one batch in flight (a ``batch_size`` that does not fit is
        refused) and, with ``backend="cupy"``, the image's accumulators, which stay on the device when they fit
        (else predictions are blended on the host). Default: most of the device's free memory.
    out : path ending in .tif, .tiff or .zarr, optional
        Write the prediction there band by band (a GeoTIFF: one raster band per channel, with the source's CRS
        and transform) and return the path; written beside ``out`` and moved into place when whole.
    dtype : dtype, optional
        The prediction's dtype; default the model's.
    backend : str or Backend, default "auto"
        Who extracts the patches (:func:`patchkit.extract_patches`). ``"cupy"`` extracts them on the GPU and hands
        the model CuPy batches (``torch.from_dlpack(batch)`` takes them in place); its predictions are then
        blended on the device when the image's accumulators fit ``gpu_memory`` (:mod:`patchkit.stitch.device`).
    nan_policy : {"raise", "propagate"}, default "raise"
        NaN or infinite predictions: refused (naming the batch), or passed through, counted and warned about.
    fill_value : scalar, optional
        Pixels no kept part of a patch reaches (``VALID`` padding, ``crop``): NaN for floats, else 0.

    Returns
    -------
    DataArray, ndarray or Path
        For a DataArray: dims ``(*leading, channel, y, x)`` on the source's grid, its coordinates, CRS and
        transform (the channel dim is the source's, or ``band``; one channel of a source without a channel dim
        has none). Per-patch vectors: the same dims on the patch grid (a pixel a patch, a stride wide). For an
        array: ``[batch, height, width, c]`` (``[batch, out_rows, out_cols, k]``). With ``out``: the path.

    Raises
    ------
    ModelError
        The model raised (the message names the batch and its patch rows), or returned NaN or infinite values
        under ``nan_policy="raise"``.
    PatchkitValueError
        A shape the model returns that is neither the patch, its centre inside ``crop``, nor a vector; bad
        arguments.
    BudgetTooSmallError
        ``max_memory`` (or ``gpu_memory``) below one batch, or below one row of predictions.

    Examples
    --------
    >>> import numpy as np, patchkit
    >>> scene = np.random.default_rng(0).random((1, 100, 120, 3), np.float32)
    >>> halve = lambda batch: batch[..., :1] * 0.5
    >>> out = patchkit.predict(scene, halve, 32, 24, blend="mean")
    >>> out.shape, bool(np.allclose(out, scene[..., :1] * 0.5))
    ((1, 100, 120, 1), True)
    """
    check_model(model)
    spec = PatchSpec(sizes, strides, rates, padding)
    path, budget = out_path(out), Budget.of(max_memory)
    device = None if gpu_memory is None else Budget.of(gpu_memory, "gpu_memory")
    finite, weights_of = Finite(nan_policy), _blend(blend, sigma_scale)
    scene = Scene.of(source, spec)
    crop = normalize_crop(crop, spec.sizes)
    chosen = backend if isinstance(backend, Backend) else get_backend(backend, scene.source)
    requested = _check_batch(batch_size)
    run_model = runnable(model)
    output = probe(run_model, _first_patch(scene, spec, chosen), spec.sizes, crop, dtype)
    from tqdm.auto import tqdm

    n, (oh, ow) = scene.source.shape[0], spec.grid_shape(scene.source.shape)
    cache = int(budget) // GDAL_CACHE_SHARE if scene.source.kind == "dask" else None  # counted in the runner's bytes
    with tqdm(total=n * oh * ow, unit="patch", desc="predict", disable=None, leave=False) as bar, bounded_cache(cache):
        runner = Runner(scene.source, spec, chosen, run_model, output, crop, 1, 1, finite, bar, cache or 0)
        out = _Out(path, None if path is None else fingerprint(
            scene, spec, model, blend=weights_of, crop=crop, dtype=output.dtype, fill_value=fill_value,
            nan_policy=nan_policy, kind=output.kind))
        if output.kind == "vector":
            written = _vectors(runner, scene, out, budget, device, requested, fill_value)
        else:
            written = _blended(runner, scene, out, budget, device, requested, weights_of, blend, fill_value)
    finite.report()
    return written


def _patches(n: int) -> str:
    return f"{n} patch" if n == 1 else f"{n} patches"


def _blend(blend: Any, sigma_scale: Any) -> Any:
    """The blend stitch takes: ``blend``, or the Gaussian of ``sigma_scale``."""
    if sigma_scale is None:
        return blend
    if not (isinstance(blend, str) and blend.lower() == "gaussian"):
        raise PatchkitValueError(
            f"sigma_scale={shown(sigma_scale)} applies to blend='gaussian' only, but blend={shown(blend)}; drop "
            "sigma_scale, or pass blend='gaussian'"
        )
    return gaussian(sigma_scale)


def _first_patch(scene: Scene, spec: PatchSpec, backend) -> Any:
    """The first patch, ``[1, kh, kw, C]``, as the backend makes it: what the model is probed with."""
    source, shape = scene.source, scene.source.shape
    ya, yb = spec.input_rows((0, 1), shape, clip=True)
    src, row0 = (source.read_rows(ya, yb)[:1], ya) if source.lazy else (source.numpy()[:1], 0)
    row = backend.band(src, row0, (1,) + tuple(shape[1:]), spec, slice(0, 1))
    return row[:, 0, :1].reshape(1, *spec.sizes, shape[3])


def _check_batch(batch_size: Any) -> int | None:
    """``batch_size`` as a positive int, or None (pick one)."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise PatchkitValueError(f"batch_size={shown(batch_size)} is not a positive integer; pass e.g. batch_size=16, "
                                 "or None to pick one under max_memory")
    return int(batch_size)


def _fit_batch(runner: Runner, requested: int | None, least: Callable[[], int], budget: Budget,
               device: Budget | None) -> None:
    """Give ``runner`` the requested batch size, or the largest up to :data:`DEFAULT_BATCH` whose batch and group
    take at most half of ``max_memory`` (and one batch ``gpu_memory``) while the least plan (``least()``: bytes with
    the runner as it is) fits (a batch of one needs only the least plan to fit); refuse a requested size that does
    not fit (before any batch runs)."""
    spec, c, dtype, output = runner.spec, runner.source.shape[3], runner.source.dtype, runner.output

    def fits(b: int, host: bool = True) -> bool:
        runner.resize(b)
        on_device = device is None or batch_bytes(spec, c, dtype, output, b) <= device
        return on_device and (not host or ((b == 1 or runner.fixed_bytes() <= budget // 2) and least() <= budget))

    if requested is None and fits(1):
        runner.resize(largest(fits, DEFAULT_BATCH))
        return
    b = requested or 1
    if not fits(b, host=False):
        need = batch_bytes(spec, c, dtype, output, b)
        raise BudgetTooSmallError(
            f"gpu_memory={device!r} is below one batch of {_patches(b)} in flight, {format_bytes(need)} ({need} bytes: "
            f"the patches as the model takes them and its predictions); raise gpu_memory, or "
            + (f"lower batch_size (at most {most} fit)" if (most := int(device) // batch_bytes(spec, c, dtype, output, 1))
               else "use smaller patches (not even one fits)")
        )
    if not fits(b):
        runner.resize(b)
        need = least() if b == 1 else max(least(), 2 * runner.fixed_bytes())
        raise BudgetTooSmallError(
            f"max_memory={budget!r} is below what predicting in batches of {_patches(b)} needs, {format_bytes(need)} "
            f"({need} bytes: a row of patches extracted and its input rows, one batch in flight (larger batches may take "
            f"half), and a row of the output's predictions, accumulators and sink); raise max_memory to at least {need}"
            + (", or lower batch_size" if b > 1 else "")
        )


@dataclass(frozen=True)
class _Out:
    """Where the prediction goes: ``path`` (None: in memory), and the fingerprint a partial image there resumes by."""

    path: Path | None
    fingerprint: str | None

    def open(self, sink: Raster, height: int) -> "_Logged | Raster":
        """``sink``, resumable (its finished rows logged) when it writes a file."""
        if self.path is None:
            return sink
        resume = Resume.start(self.path, self.fingerprint, height)
        return _Logged(sink.resumable(resume.scratch), resume)


class _Logged:
    """A file sink whose committed bands are logged (:class:`~patchkit.stitch.resume.Resume`), skipped when a run
    resumes, and whose log goes once the image is in place."""

    def __init__(self, sink: Raster, resume: Resume) -> None:
        self.sink, self.resume = sink, resume

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)

    def __enter__(self) -> "_Logged":
        self.sink.__enter__()
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.sink.__exit__(kind, value, traceback)
        if kind is None:
            self.resume.finish()

    def done(self, y0: int, y1: int) -> bool:
        return self.resume.done(y0, y1)

    def commit(self, y0: int, y1: int, block: np.ndarray) -> None:
        self.sink.commit(y0, y1, block)
        self.resume.add(y0, y1)


def _blended(runner: Runner, scene: Scene, out: _Out, budget: Budget, device: Budget | None, requested: int | None,
             weights_of, blend, fill_value) -> Any:
    """Dense predictions blended onto the source's grid, band by band, into the sink of ``out``."""
    spec, output, shape, path = runner.spec, runner.output, tuple(scene.source.shape[1:3]), out.path
    lines = lines_of(spec, shape, runner.crop)
    lines, weights = support(lines, blend_weights(weights_of, (lines[0].kept, lines[1].kept)))
    reader = Predictions(runner)
    fill = fill_for(fill_value, output.dtype, None)
    job = make_job(blend, lines, reader, weights, fill, None, sink_class(path).copies)
    shape4 = (scene.source.shape[0], *shape, output.channels)
    check_room(path, math.prod(shape4) * output.dtype.itemsize)
    _fit_batch(runner, requested, lambda: job.memory(1), budget, device)
    rows = band_height(job, budget)
    taps = ((lines[0].t0, lines[0].t1), (lines[1].t0, lines[1].t1))
    if takes(runner.backend, output, weights, job.keep) and _device_fits(runner, shape4, device):
        return _on_device(runner, scene, out, shape4, rows, fill, full_weights(weights, spec.sizes, taps), taps)
    with out.open(_sink(path, scene, shape4, rows, output, fill), shape[0]) as sink:
        p0, p1 = job._bands(sink.rows)
        reader.capacity = int(np.max(p1 - p0))
        run(job, sink, sink.rows, done=getattr(sink, "done", None))
    return _result(sink, scene, output)


def _device_fits(runner: Runner, shape4, device: Budget | None) -> bool:
    """Whether the image's accumulators and what goes with them fit ``gpu_memory`` (default: most of the device's
    free memory)."""
    bound = int(device) if device is not None else free_memory(runner.backend.xp)
    return bound is None or device_bytes(runner, shape4) <= bound


def _on_device(runner: Runner, scene: Scene, out: _Out, shape4, rows: int, fill, weights, taps) -> Any:
    """Predictions blended on the device (:mod:`.device`), the image then written band by band from there (when
    whole: a stopped run starts again)."""
    xp = runner.backend.xp
    runner.convert = functools.partial(to_device, xp=xp)
    runner.staging = None if xp is np else Staging(xp)
    accumulation = Accumulation(runner, shape4, weights, taps)
    accumulation.run()
    image = accumulation.finish(fill)
    with out.open(_sink(out.path, scene, shape4, rows, runner.output, fill), shape4[1]) as sink:
        _write(sink, shape4[1], lambda y0, y1: to_host(image[:, y0:y1]))
    return _result(sink, scene, runner.output)


def _write(sink, height: int, rows_of: Callable[[int, int], np.ndarray],
           skip: Callable[[int], None] | None = None) -> None:
    """Fill and commit the sink's bands of ``height`` rows from ``rows_of(y0, y1)``; with ``skip``, but those a run
    before finished (``skip(rows)`` counts them)."""
    done = getattr(sink, "done", None) if skip is not None else None
    for y0 in range(0, height, sink.rows):
        y1 = min(y0 + sink.rows, height)
        if done is not None and done(y0, y1):
            skip(y1 - y0)
            continue
        band = sink.band(y0, y1)
        band[...] = rows_of(y0, y1)
        sink.commit(y0, y1, band)


def _vectors(runner: Runner, scene: Scene, out: _Out, budget: Budget, device: Budget | None, requested: int | None,
             fill_value) -> Any:
    """Per-patch vectors written as a raster on the patch grid, bands of patch rows at a time."""
    output, (oh, ow), path = runner.output, runner.grid, out.path
    shape4 = (scene.source.shape[0], oh, ow, output.channels)
    check_room(path, math.prod(shape4) * output.dtype.itemsize)
    row = shape4[0] * ow * output.channels * output.dtype.itemsize
    copies = sink_class(path).copies + 1  # the sink's band and the band predicted into
    _fit_batch(runner, requested, lambda: runner.fixed_bytes() + row * copies, budget, device)
    fixed = runner.fixed_bytes()
    rows = largest(lambda h: fixed + h * row * copies <= budget, oh)
    fill = fill_for(fill_value, output.dtype, None)
    def predicted(r0: int, r1: int) -> np.ndarray:
        dest = np.empty((shape4[0], r1 - r0, ow, output.channels), output.dtype)  # contiguous: the runner fills views
        runner.predict(r0, r1, dest)
        return dest

    with out.open(_sink(path, scene, shape4, rows, output, fill, spec=runner.spec), oh) as sink:
        _write(sink, oh, predicted, runner.skip)
    return _result(sink, scene, output, spec=runner.spec)


def _sink(path, scene: Scene, shape4, rows: int, output: Output, fill, spec: PatchSpec | None = None) -> Raster:
    """The raster sink of the prediction ``[N, H, W, M]`` (``spec``: on the patch grid)."""
    nodata = fill if output.dtype.kind == "f" and np.isnan(fill) else None
    return raster_sink(path, output.dtype, rows, shape4, scene.labelled,
                       lambda chunk: _lazy(scene, shape4, output, chunk, spec),
                       lambda: dict(crs=scene.crs(), transform=scene.grid_transform(spec), nodata=nodata,
                                    leading=scene.leading()))


def _lazy(scene: Scene, shape4, output: Output, chunk: int, spec: PatchSpec | None) -> Any:
    """The prediction as lazy zeros in chunks of ``chunk`` rows: the template of a Zarr store."""
    import dask.array as da

    if not scene.labelled:
        return array_template(shape4, output.dtype, chunk, PREDICTION)
    sizes = scene.sizes(output.channels, shape4[1:3])
    return scene.template(da.zeros(sizes, dtype=output.dtype, chunks=sizes[:-2] + (chunk, shape4[2])), output.channels,
                          spec)


def _result(sink: Raster, scene: Scene, output: Output, spec: PatchSpec | None = None) -> Any:
    """What predict returns: the path written, the array, or the labelled DataArray."""
    if not isinstance(sink, ArrayRaster):
        return sink.path  # a file sink's (a logged one's too)
    if not scene.labelled:
        return sink.array
    sizes = scene.sizes(output.channels, sink.shape4[1:3])
    return scene.template(sink.array.reshape(sizes), output.channels, spec)
