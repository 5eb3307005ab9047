"""The model in :func:`patchkit.predict`'s loop: what it returns (:func:`probe`), calling it on a batch and checking
what comes back (:func:`call`), predictions brought to the host whatever framework made them (:func:`to_host`), and
non-finite predictions counted under a ``nan_policy`` (:class:`Finite`).

A model is any callable taking a batch ``[n, kh, kw, c]`` (channels last): a Keras model, a ``tf.function``, a
function wrapping a PyTorch or JAX model. What it returns may be a NumPy array, a TensorFlow tensor, or any array
that speaks DLPack (a PyTorch or JAX array, a CuPy array, on the host or on a GPU): it is brought to the host with
``np.from_dlpack`` (or through CuPy from a CUDA device), never by guessing the framework.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..core.dtypes import check_dtype
from ..errors import ModelError, PatchkitTypeError, PatchkitValueError, UnsupportedDtypeError, shown

__all__ = ["Output", "probe", "call", "runnable", "to_host", "to_device", "Finite", "NAN_POLICIES", "check_model"]

#: What :func:`patchkit.predict` does with NaN or infinite predictions.
NAN_POLICIES = ("raise", "propagate")
#: DLPack device types whose memory the host reads directly: CPU, CUDA host (pinned) memory, ROCm host memory.
_HOST_DEVICES = (1, 3, 11)


@dataclass(frozen=True)
class Output:
    """What the model returns for a patch: ``kind`` ``"dense"`` (an image of ``shape`` pixels, the whole patch or
    its centre inside ``crop``) or ``"vector"`` (``channels`` numbers per patch), in ``dtype``."""

    kind: str
    shape: tuple[int, int]
    channels: int
    dtype: np.dtype

    def batch_shape(self, n: int) -> tuple[int, ...]:
        """The shape a batch of ``n`` patches must come back in (a single-channel image may drop its channel axis)."""
        return (n, self.channels) if self.kind == "vector" else (n, *self.shape, self.channels)

    @property
    def patch_bytes(self) -> int:
        """Bytes of one patch's prediction."""
        return int(np.prod(self.batch_shape(1))) * self.dtype.itemsize


def check_model(model: Any) -> None:
    """Refuse a ``model`` that is not callable (a path: load it with :func:`patchkit.load_model`)."""
    if not callable(model):
        raise PatchkitTypeError(
            f"model={shown(model)} (a {type(model).__name__}) is not callable; pass a Keras model, a tf.function or a "
            "function taking a batch [n, height, width, channels], or load a saved one with patchkit.load_model(path)"
        )


def runnable(model: Callable) -> Callable:
    """What predict calls: a Keras model's ``predict_on_batch`` (its compiled inference function, which runs a batch
    faster than calling the model eagerly and returns NumPy), else ``model`` itself."""
    module = type(model).__module__ or ""
    if module.startswith(("keras", "tf_keras", "tensorflow")) and callable(getattr(model, "predict_on_batch", None)):
        return model.predict_on_batch
    return model


def to_host(value: Any) -> np.ndarray:
    """``value`` (a model's output) as a NumPy array on the host.

    NumPy arrays pass; TensorFlow tensors give ``.numpy()``; anything else that speaks DLPack is read in place
    when on the host (``np.from_dlpack``; a PyTorch tensor that requires grad is detached first) and copied
    from a CUDA device through CuPy; the rest goes through ``np.asarray``.
    """
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.startswith("tensorflow") and hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    if hasattr(value, "detach") and getattr(value, "requires_grad", False):
        value = value.detach()
    device = getattr(value, "__dlpack_device__", None)
    if device is not None:
        if int(device()[0]) in _HOST_DEVICES:
            return np.from_dlpack(value)
        from ..core.backends.cupy import import_cupy

        cupy = import_cupy()
        return cupy.asnumpy(cupy.from_dlpack(value))
    return np.asarray(value)


def to_device(value: Any, xp: Any) -> Any:
    """``value`` (a model's output) as an array of ``xp`` (CuPy: a DLPack array on the GPU is taken in place;
    NumPy: :func:`to_host`)."""
    if xp is np:
        return to_host(value)
    if isinstance(value, xp.ndarray):
        return value
    if hasattr(value, "detach") and getattr(value, "requires_grad", False):
        value = value.detach()
    if hasattr(value, "__dlpack__") and not type(value).__module__.startswith("tensorflow"):
        return xp.from_dlpack(value)
    return xp.asarray(to_host(value))


def call(model: Callable, batch: Any, where: str, convert: Callable[[Any], Any] = to_host) -> Any:
    """``convert(model(batch))`` (on the host by default), or :class:`ModelError` naming ``where`` (the batch and
    band) when it raises."""
    try:
        return convert(model(batch))
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as err:
        raise ModelError(
            f"the model raised {type(err).__name__}: {err} on {where}; fix the model (or its device: a model on a GPU "
            "that is not there raises here), then run predict again: with out=, finished bands are kept"
        ) from err


def probe(model: Callable, sample: np.ndarray, sizes: tuple[int, int], crop: tuple[int, int], dtype: Any) -> Output:
    """Call ``model`` on ``sample`` (a batch of one patch) and say what it returns.

    Raises
    ------
    ModelError
        When the model raises on it.
    PatchkitValueError
        A shape that is neither the patch, its centre inside ``crop``, nor one vector per patch; a batch of
        another size.
    UnsupportedDtypeError
        Predictions of a dtype patchkit cannot blend (strings, objects...).
    """
    got = call(model, sample, "a probe batch of one patch (the first patch)")
    n = sample.shape[0]
    if got.ndim == 0 or got.shape[0] != n:
        raise PatchkitValueError(
            f"model returned shape {got.shape} for a batch of shape {tuple(sample.shape)} ({n} patch); it must return "
            f"one prediction per patch, [{n}, height, width, channels] or [{n}, k]: keep the batch axis (no squeeze, "
            "no reduction over the batch), e.g. return model_output.reshape(len(batch), ...)"
        )
    out_dtype = check_dtype(got.dtype, "the model's predictions") if dtype is None else _dtype_argument(dtype)
    if got.ndim == 2:
        return Output("vector", (1, 1), int(got.shape[1]), out_dtype)
    if got.ndim not in (3, 4):
        raise PatchkitValueError(
            f"model returned shape {got.shape} for a batch {sample.shape}; predict takes [n, height, width, channels], "
            "[n, height, width] or [n, k] (one vector per patch)"
        )
    shape = tuple(int(d) for d in got.shape[1:3])
    centre = (sizes[0] - 2 * crop[0], sizes[1] - 2 * crop[1])
    if shape not in (tuple(sizes), centre):
        hint = ""
        margin = [(k - s) for k, s in zip(sizes, shape)]
        if all(m > 0 and m % 2 == 0 for m in margin):
            hint = f"; a model that returns the patch's centre needs crop=({margin[0] // 2}, {margin[1] // 2})"
        allowed = f"the whole patch {tuple(sizes)}" + (f" or its centre {centre} inside crop" if any(crop) else "")
        raise PatchkitValueError(
            f"model returned {shape[0]}x{shape[1]} pixels for {sizes[0]}x{sizes[1]} patches (crop={crop}); it must "
            f"return {allowed}{hint}"
        )
    return Output("dense", shape, int(got.shape[3]) if got.ndim == 4 else 1, out_dtype)


def _dtype_argument(dtype: Any) -> np.dtype:
    """predict's ``dtype=`` as a numpy dtype patchkit can blend, or :class:`UnsupportedDtypeError` naming it."""
    try:
        return check_dtype(dtype, "dtype")
    except UnsupportedDtypeError as err:
        raise UnsupportedDtypeError(f"dtype={shown(dtype)} is not a dtype predictions can be written in; pass e.g. "
                                    "dtype='float32', or None to keep the model's") from err


def checked(got: np.ndarray, output: Output, n: int, where: str) -> np.ndarray:
    """A batch of predictions of ``n`` patches in the probed shape (single-channel images may drop the channel axis)."""
    want = output.batch_shape(n)
    if got.shape == want:
        return got
    if output.kind == "dense" and output.channels == 1 and got.shape == want[:-1]:
        return got[..., None]
    raise PatchkitValueError(
        f"model returned shape {got.shape} on {where}, but {want} for this batch of {n} patches (the probe gave "
        f"{output.batch_shape(1)} for one); it must return one prediction per patch, of one shape"
    )


@dataclass
class Finite:
    """Counts non-finite predictions under ``policy``: ``"raise"`` refuses the first batch that has any,
    ``"propagate"`` passes them through and :meth:`report` warns with the count."""

    policy: str
    count: int = 0

    def __post_init__(self) -> None:
        if self.policy not in NAN_POLICIES:
            raise PatchkitValueError(f"nan_policy={shown(self.policy)} is not one of {NAN_POLICIES}; pass 'raise' "
                                     "(refuse NaN or infinite predictions) or 'propagate' (keep them, counted)")

    def check(self, batch: np.ndarray, where: str) -> None:
        """Count the NaN and infinite values of ``batch`` (floats only); refuse them under ``"raise"``."""
        if batch.dtype.kind not in "fc":
            return
        bad = batch.size - int(np.count_nonzero(np.isfinite(batch)))
        if not bad:
            return
        self.count += bad
        if self.policy == "raise":
            raise ModelError(
                f"the model returned {bad} NaN or infinite values on {where}; check the model and its inputs (nodata "
                "pixels?), or pass nan_policy='propagate' to keep them (stitched pixels they reach become NaN)"
            )

    def report(self) -> None:
        """Warn with the count of non-finite predictions passed through (none: silent)."""
        if self.count:
            warnings.warn(f"the model returned {self.count} NaN or infinite values (nan_policy='propagate'); the "
                          "pixels they reach are NaN or infinite", RuntimeWarning, stacklevel=3)
