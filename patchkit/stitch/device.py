""":func:`patchkit.predict` on a device: with the CuPy backend, patches are extracted on the GPU, the model gets
device batches (CuPy arrays: ``torch.from_dlpack`` or ``jax.dlpack`` take them without a copy), and its
predictions stay there, added into accumulators of the whole image on the device
(:func:`patchkit.core.backends.cupy.accumulate`), when those fit ``gpu_memory``: the planner decides
(MONAI's ``sw_device``/``device`` split). The finished image comes back to the host band by band. Otherwise, or
for what the device path does not take (``blend="none"``, windows with zeros inside, float64 and 64-bit
integer predictions, which the host path keeps exact), predictions come to the host after each batch and are
blended there.

The array module is a parameter (the backend's ``xp``): ``CupyBackend(xp=numpy)`` runs this path on the host,
which is how it is tested without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .inference import Runner, batch_bytes

__all__ = ["Accumulation", "Staging", "device_bytes", "takes", "free_memory", "full_weights"]

#: Of the device memory free when predict starts, the share the planner uses when ``gpu_memory`` is not given.
FREE_SHARE = 0.8
#: Predictions of these dtypes are blended on the host, where their means are exact (deviations from a value).
_HOST_ONLY = frozenset({"float64", "int64", "uint64", "complex64", "complex128"})


def takes(backend: Any, output, weights: np.ndarray | None, keep: np.ndarray | None) -> bool:
    """Whether the device path can blend these predictions: a backend with its own array module (CuPy), an image
    per patch, a weighted blend without zeros inside the window, a dtype whose mean it keeps exact."""
    return (getattr(backend, "xp", None) is not None and output.kind == "dense" and weights is not None
            and keep is None and output.dtype.name not in _HOST_ONLY)


def device_bytes(runner: Runner, shape4: tuple[int, int, int, int]) -> int:
    """Device bytes of the device path: the accumulators (float64 sums and weights), finishing's two temporaries
    of the sums' size, a group of predictions and of extracted patches, and one batch in flight."""
    n, h, w, m = shape4
    (kh, kw), (_, ow) = runner.spec.sizes, runner.grid
    sums = n * h * w * m * 8
    group = n * runner.group * ow * kh * kw * (m * runner.output.dtype.itemsize + runner.source.shape[3]
                                                * runner.source.dtype.itemsize)
    batch = batch_bytes(runner.spec, runner.source.shape[3], runner.source.dtype, runner.output, runner.batch_size)
    return 3 * sums + h * w * 8 + group + batch


def free_memory(xp: Any) -> int | None:
    """Free bytes on the current CUDA device (None on the host: no bound)."""
    if xp is np:
        return None
    free, _ = xp.cuda.runtime.memGetInfo()
    return int(free * FREE_SHARE)


@dataclass
class Accumulation:
    """Accumulators of the whole image ``[N, H, W, M]`` on the device, filled a group of patch rows at a time.

    ``weights`` are the blend's ``[kh, kw]``, zero outside the kept ``taps`` (``((t0, t1), (t0, t1))``, what crop and
    a window's zero ends leave); predictions there (which a centre-only model does not make) are zeroed first, so
    they add nothing.
    """

    runner: Runner
    shape4: tuple[int, int, int, int]
    weights: Any
    taps: tuple[tuple[int, int], tuple[int, int]]

    def __post_init__(self) -> None:
        from ..core.backends.cupy import accumulators

        xp = self.runner.backend.xp
        self.xp = xp
        self.sums, self.weight = accumulators(self.shape4, self.runner.output.dtype, xp=xp)
        self.weights = xp.asarray(self.weights)

    def run(self) -> None:
        """Predict every group of patch rows into a device buffer and add it in."""
        from ..core.backends.cupy import accumulate

        runner, xp = self.runner, self.xp
        (kh, kw), (oh, ow) = runner.spec.sizes, runner.grid
        n, m = self.shape4[0], self.shape4[3]
        buffer = xp.zeros((n, runner.group, ow, kh, kw, m), runner.output.dtype)
        for r0 in range(0, oh, runner.group):
            r1 = min(r0 + runner.group, oh)
            preds = buffer[:, : r1 - r0]
            runner.predict(r0, r1, preds)
            _zero_outside(preds, self.taps)
            accumulate(self.sums, self.weight, preds.reshape(n, r1 - r0, ow, kh * kw * m), runner.spec,
                       slice(r0, r1), weights=self.weights)

    def finish(self, fill: Any) -> Any:
        """The blended image ``[N, H, W, M]`` on the device (``fill`` where no kept tap reached)."""
        from ..core.backends.cupy import finish_mean

        image = finish_mean(self.sums, self.weight, self.runner.output.dtype, fill_value=fill)
        self.sums = self.weight = None
        return image


def _zero_outside(preds: Any, taps: tuple[tuple[int, int], tuple[int, int]]) -> None:
    """Zero ``preds[..., kh, kw, M]`` outside the kept ``taps`` of each axis."""
    (r0, r1), (c0, c1) = taps
    preds[..., :r0, :, :] = 0
    preds[..., r1:, :, :] = 0
    preds[..., :, :c0, :] = 0
    preds[..., :, c1:, :] = 0


def full_weights(weights: np.ndarray | None, sizes: tuple[int, int],
                 taps: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    """The blend's weights of the kept ``taps`` (all 1 for None: a mean) in a ``sizes`` window, zeros elsewhere."""
    full = np.zeros(sizes)
    (r0, r1), (c0, c1) = taps
    full[r0:r1, c0:c1] = 1.0 if weights is None else weights
    return full


class Staging:
    """Input rows to the device ahead of their use: copied into one of two pinned host buffers, then to the device on
    a second CUDA stream; :meth:`wait` makes the current stream wait for the copy. So the copy of the next group's
    rows overlaps the model on this group's patches (pinned memory is what lets a copy run beside kernels)."""

    def __init__(self, xp: Any) -> None:
        self.xp = xp
        self.stream = xp.cuda.Stream(non_blocking=True)
        self._pinned: list = [None, None]
        self._turn = 0

    def send(self, rows: np.ndarray) -> tuple[Any, Any]:
        """Start copying ``rows`` to the device; returns the device array and the event its copy records."""
        xp, k = self.xp, self._turn
        self._turn = 1 - k
        held = self._pinned[k]
        if held is None or held[1].nbytes < rows.nbytes:
            memory = xp.cuda.alloc_pinned_memory(rows.nbytes)
            held = self._pinned[k] = (memory, np.frombuffer(memory, np.uint8, rows.nbytes))
        staged = held[1][: rows.nbytes].view(rows.dtype).reshape(rows.shape)
        np.copyto(staged, rows)
        with self.stream:
            on_device = xp.empty(rows.shape, rows.dtype)
            on_device.set(staged, stream=self.stream)
            event = self.stream.record()
        return on_device, event

    def wait(self, event: Any) -> None:
        """Make the current stream wait for a copy :meth:`send` started."""
        self.xp.cuda.get_current_stream().wait_event(event)
