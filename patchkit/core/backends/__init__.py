"""Backends copy patches; :func:`get_backend` picks one by name or, for ``"auto"``, by measurement.

``"numpy"`` works everywhere; ``"tensorflow"`` runs TensorFlow's op (on the GPU when the tensor is
there). ``"auto"`` takes numpy for host data unless TensorFlow is already loaded and sees a GPU; for
tensors, and for host data beside a GPU, it times both backends once on a small probe on that device
(:func:`calibrate`) and keeps the faster, so the choice is measured, not guessed.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from ...errors import PatchkitValueError, UnknownBackendError, shown
from ..plugins import Registry
from ..sources import Source
from ..spec import PatchSpec
from .base import Backend
from .tensorflow import import_tensorflow

__all__ = [
    "Backend",
    "registry",
    "available",
    "register",
    "get_backend",
    "calibrate",
    "auto_choices",
    "to_tensor",
    "tensor_to_numpy",
    "aligned_empty",
    "TENSOR_ALIGNMENT",
]

def _instance(backend: Any) -> Backend:
    """A registered backend: a class is instantiated once; an object must have the :class:`Backend` members."""
    backend = backend() if isinstance(backend, type) else backend
    if not isinstance(backend, Backend):
        raise PatchkitValueError(
            f"{shown(backend)} is not a patchkit backend: it needs name, pad_copy, extract and band "
            "(see patchkit.backends.Backend)"
        )
    return backend


#: The backends by name: numpy, tensorflow and cupy (optional: it raises :class:`BackendUnavailableError` without
#: CuPy or a GPU; ``"auto"`` never picks it), and those packages add through the ``patchkit.backends`` entry points.
registry = Registry("patchkit.backends", "backend", {"numpy": "patchkit.core.backends.numpy:NumpyBackend",
                                                     "tensorflow": "patchkit.core.backends.tensorflow:TensorflowBackend",
                                                     "cupy": "patchkit.core.backends.cupy:CupyBackend"},
                    make=_instance, error=UnknownBackendError)
_CHOICES: dict[str, str] = {}


def available() -> tuple[str, ...]:
    """The names ``backend=`` takes: ``"auto"`` and every registered or installed backend."""
    return ("auto", *registry.available())


def register(name: str, backend: Any) -> None:
    """Make ``backend`` (an object or class with the :class:`Backend` members) available as ``backend=name``."""
    registry.register(name, backend)

#: The probe :func:`calibrate` times: a small scene with overlapping, padded patches.
PROBE_SHAPE = (1, 512, 512, 4)
PROBE_SPEC = PatchSpec(64, 32, padding="SAME")


def get_backend(name: str, source: Source) -> Backend:
    """The backend called ``name`` (``"auto"``, ``"numpy"``, ``"tensorflow"`` or a registered one) for ``source``.

    Raises
    ------
    UnknownBackendError
        For any other name.
    """
    names = available()
    key = (name if name in names else name.lower()) if isinstance(name, str) else None  # "NumPy" is numpy
    if key not in names:
        raise UnknownBackendError(f"backend={name!r} is not a patchkit backend; use one of {', '.join(names)}")
    return registry.get(_auto(source) if key == "auto" else key)


def _auto(source: Source) -> str:
    if source.kind == "tensorflow":
        return calibrate(source.device or "/device:CPU:0")
    if "tensorflow" not in sys.modules or source.lazy:
        return "numpy"  # host data and no TensorFlow loaded: importing it to copy would only cost
    gpus = sys.modules["tensorflow"].config.list_logical_devices("GPU")
    return calibrate(gpus[0].name, host_input=True) if gpus else "numpy"


def auto_choices() -> dict[str, str]:
    """What ``backend="auto"`` measured so far: ``{device: backend}`` (a copy)."""
    return dict(_CHOICES)


def calibrate(device: str, host_input: bool = False, repeats: int = 3) -> str:
    """Time both backends on :data:`PROBE_SHAPE` on ``device`` and remember the faster one.

    ``host_input`` times the whole trip of a numpy input (to the device and back) for TensorFlow.
    The result is cached per device; a later call returns it without measuring.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise PatchkitValueError(f"repeats={shown(repeats)} must be a positive number of timed runs; pass e.g. repeats=3")
    key = f"{device} (host input)" if host_input else device
    if key in _CHOICES:
        return _CHOICES[key]
    tf = import_tensorflow()
    _check_device(tf, device)
    probe = np.random.default_rng(0).random(PROBE_SHAPE, dtype=np.float32)
    with tf.device(device):
        tensor = tf.identity(tf.constant(probe))

    def run_numpy():
        if host_input:
            return registry.get("numpy").extract(probe, PROBE_SPEC)
        from ..tensors import numpy_patches_tensor  # the path eager tensors take (tensors imports this module)

        return numpy_patches_tensor(tensor_to_numpy(tensor), PROBE_SPEC, registry.get("numpy"))

    def run_tensorflow():
        with tf.device(device):
            out = registry.get("tensorflow").extract(probe if host_input else tensor, PROBE_SPEC)
            return out.numpy() if host_input else tf.reduce_sum(out[:1, :1, :1, :1]).numpy()

    timings = {}
    for name, run in (("numpy", run_numpy), ("tensorflow", run_tensorflow)):
        run()  # warm up: first calls build kernels and touch memory
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        timings[name] = best
    _CHOICES[key] = min(timings, key=timings.get)
    return _CHOICES[key]


def _check_device(tf, device: Any) -> None:
    """Raise :class:`PatchkitValueError` unless ``device`` names one of TensorFlow's logical devices."""
    names = [d.name for d in tf.config.list_logical_devices()]
    try:
        spec = tf.DeviceSpec.from_string(device)
        known = any(spec.device_type in (None, tf.DeviceSpec.from_string(n).device_type)
                    and spec.device_index in (None, tf.DeviceSpec.from_string(n).device_index) for n in names)
    except (TypeError, ValueError, AttributeError):
        known = False
    if not known:
        raise PatchkitValueError(f"device={shown(device)} is not a device TensorFlow has; pass one of {names}")


def tensor_to_numpy(tensor: Any) -> np.ndarray:
    """A host ndarray of ``tensor``'s values, sharing memory with a CPU tensor (``.numpy()`` copies); a CuPy array is
    copied from the device (its ``get``)."""
    if type(tensor).__module__.startswith("cupy"):
        return tensor.get()
    return np.asarray(tensor)


#: Alignment TensorFlow's CPU kernels require of a tensor's buffer (Eigen's ``EIGEN_MAX_ALIGN_BYTES``).
TENSOR_ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype, alignment: int = TENSOR_ALIGNMENT) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ``alignment``-byte boundary.

    numpy only promises 16 bytes; a tensor that shares a less aligned buffer aborts the interpreter
    in TensorFlow's first real kernel (``Check failed: IsAligned()``).
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def is_aligned(array: np.ndarray, alignment: int = TENSOR_ALIGNMENT) -> bool:
    """Whether ``array``'s data starts on an ``alignment``-byte boundary."""
    return array.ctypes.data % alignment == 0


def to_tensor(array: np.ndarray, copy: bool = False) -> Any:
    """A ``tf.Tensor`` of ``array`` that TensorFlow's kernels can use safely.

    It shares ``array``'s memory through DLPack when that is safe: C-contiguous, native byte order,
    not bfloat16 (DLPack has no such type here), and 64-byte aligned (:func:`aligned_empty`), unless
    ``copy``. Otherwise ``tf.constant`` takes it, which copies any buffer that is not aligned.
    """
    tf = import_tensorflow()
    if copy:
        array = np.array(array, order="C")
    shareable = array.flags.c_contiguous and array.dtype.name != "bfloat16" and array.dtype.isnative
    if shareable and array.size and is_aligned(array):
        try:
            return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
        except (BufferError, TypeError, ValueError, AttributeError):
            pass
    return tf.constant(array)
