"""``extract_patches``: ``tf.image.extract_patches`` with the same numbers, faster, with clear errors."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidSpecError
from .backends import get_backend, tensor_to_numpy
from .budget import DEFAULT_MAX_MEMORY, Budget, band_memory, min_memory, require_memory
from .chunking import iter_patches, lazy_patches
from .sources import Source, as_source, is_symbolic
from .spec import PatchSpec, _normalize_pair
from .tensors import eager_patches, symbolic_patches
from .units import format_bytes

__all__ = ["extract_patches", "extract_image_patches"]


def extract_patches(images: Any, sizes, strides, rates=1, padding: str = "VALID", *, backend: str = "auto") -> Any:
    """Extract patches from images: a drop-in for ``tf.image.extract_patches``.

    Same shapes and the same values, bit for bit, for every dtype TensorFlow's op accepts
    (bfloat16, float16/32/64, int8-64, uint8-64, complex64/128) and bool, and the same edge cases:
    empty images give empty results, and so does a ``VALID`` kernel larger than the image by less
    than two strides (TensorFlow refuses larger ones, and so does this).

    Inside TensorFlow programs it is TensorFlow's op: a symbolic tensor (``tf.function``,
    ``tf.data.Dataset.map``, a Keras layer, a ``tf.compat.v1`` graph, ``jit_compile=True``) goes to
    ``tf.image.extract_patches`` after patchkit's checks have run at trace time. An eager tensor gives
    a tensor TensorFlow's kernels can use (64-byte aligned, or TensorFlow's own), differentiable
    under ``tf.GradientTape`` with TensorFlow's gradient (see :mod:`patchkit.core.tensors`).

    Parameters
    ----------
    images : array-like, tf.Tensor or dask array
        ``[batch, height, width, channels]``.
    sizes : int, (int, int) or [1, int, int, 1]
        Patch size (rows, cols).
    strides : int, (int, int) or [1, int, int, 1]
        Distance between the starts of neighbouring patches.
    rates : int, (int, int) or [1, int, int, 1], default 1
        Dilation: sample every ``rate``-th pixel inside a patch.
    padding : {"VALID", "SAME"}, any case
        ``VALID``: only windows inside the image. ``SAME``: ``ceil(n / stride)`` patches per axis,
        zero-padded, ``total // 2`` zeros before and the rest after.
    backend : {"auto", "numpy", "tensorflow"}
        ``auto`` measures which is faster for the input's device (numpy on CPU). Symbolic tensors
        always use TensorFlow's op: there are no values to copy yet.

    Returns
    -------
    ndarray, tf.Tensor or dask array
        ``[batch, out_rows, out_cols, kh * kw * channels]``, the last axis ordered (kernel row,
        kernel col, channel); the same kind of array as ``images`` (a dask input gives a lazy result
        whose chunks are row bands; a zarr or h5py array gives an ndarray, read band by band).
        Sizes may be integral floats (``[1, 2.0, 2.0, 1]``), as TensorFlow accepts.

    Raises
    ------
    InvalidSpecError, KernelTooLargeError, InvalidImageError, UnsupportedDtypeError, UnknownBackendError
        Bad arguments, before anything is allocated.
    OutputTooLargeError
        The output would not fit in the memory available; stream with :func:`patchkit.iter_patches`.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    >>> extract_patches(image, sizes=2, strides=2)[0, 0, 0]
    array([0., 1., 4., 5.], dtype=float32)
    """
    spec = PatchSpec(sizes, strides, rates, padding)
    if is_symbolic(images):
        return symbolic_patches(images, spec)
    source = as_source(images, allow_empty=True)
    out_shape = spec.tf_output_shape(source.shape)
    if 0 in out_shape:
        return _empty(source, spec, out_shape)
    chosen = get_backend(backend, source)
    if source.kind == "dask":
        return lazy_patches(source, spec, chosen)
    _check_fits(spec, source, chosen)
    if source.kind == "lazy":
        return _gather(source, spec, chosen)
    if source.kind == "tensorflow":
        return eager_patches(source, spec, chosen)
    if chosen.name == "numpy":
        return chosen.extract(source.numpy(), spec)
    return tensor_to_numpy(chosen.extract(source.data, spec))


def _empty(source: Source, spec: PatchSpec, shape: tuple[int, int, int, int]) -> Any:
    """An empty result of ``shape``, of the kind ``source`` is (a tensor's is the op's, gradient and all)."""
    if source.kind == "tensorflow":
        return symbolic_patches(source.data, spec)
    if source.kind == "dask":
        import dask.array as da

        return da.zeros(shape, dtype=source.dtype, chunks=tuple(max(d, 1) for d in shape))  # one (empty) chunk
    return np.zeros(shape, source.dtype)


def _check_fits(spec: PatchSpec, source: Source, backend) -> None:
    """Raise :class:`OutputTooLargeError` when the output and its temporaries exceed available memory."""
    if "GPU" in source.device.upper() and backend.name == "tensorflow":
        return  # the result stays in GPU memory, which TensorFlow itself manages
    memory = dict(lazy=source.lazy, chunks=source.chunks, pad_copy=backend.pad_copy)
    need = band_memory(spec, (0, spec.grid_shape(source.shape)[0]), source.shape, source.dtype, **memory)
    output = spec.nbytes(source.shape, source.dtype)

    def fix(available: int) -> str:
        row = min_memory(spec, source.shape, source.dtype, **memory)
        if row > available:
            return (f"even one row of patches takes {format_bytes(row)} (with its padded or read copies), so no "
                    "streaming helps: use smaller sizes or rates, or a larger stride")
        return "stream it in row bands with patchkit.iter_patches(images, sizes, strides, ..., max_memory='512MiB')"

    require_memory(need, "extract_patches", fix, verb="would need",
                   detail=f"of which the output {spec.output_shape(source.shape)} is {format_bytes(output)}")


def _gather(source: Source, spec: PatchSpec, backend) -> np.ndarray:
    """Extract a lazily read (zarr, h5py) source band by band into one ndarray."""
    out = np.empty(spec.output_shape(source.shape), dtype=source.dtype)
    minimum = min_memory(spec, source.shape, source.dtype, lazy=True, chunks=source.chunks, pad_copy=backend.pad_copy)
    budget = max(Budget.of(DEFAULT_MAX_MEMORY), minimum)
    for rows, block in iter_patches(source.data, spec.sizes, spec.strides, spec.rates, spec.padding,
                                    max_memory=budget, backend=backend.name):
        out[:, rows] = block
    return out


def extract_image_patches(images: Any, ksizes=None, strides=None, rates=None, padding=None, name=None, sizes=None) -> Any:
    """TensorFlow 1's ``tf.extract_image_patches``: the same function under its old name and keywords.

    ``tf.extract_image_patches`` is gone from TensorFlow 2 (only ``tf.compat.v1`` keeps it); code from
    the tutorials runs again by importing this instead. ``sizes`` is accepted as an alias of
    ``ksizes`` (as ``tf.compat.v1`` does), and errors name whichever was given; ``name`` is ignored.

    Examples
    --------
    >>> import numpy as np
    >>> from patchkit import extract_image_patches
    >>> image = np.zeros((1, 8, 8, 3), np.float32)
    >>> extract_image_patches(image, ksizes=[1, 4, 4, 1], strides=[1, 4, 4, 1],
    ...                       rates=[1, 1, 1, 1], padding="VALID").shape
    (1, 2, 2, 48)
    """
    if ksizes is None:
        ksizes, name = sizes, "sizes"
    elif sizes is not None:
        raise InvalidSpecError(f"pass ksizes or sizes, not both (got ksizes={ksizes!r}, sizes={sizes!r})")
    else:
        name = "ksizes"
    kernel = _normalize_pair(name, ksizes)  # errors name the argument as the caller spelled it
    return extract_patches(images, kernel, strides, 1 if rates is None else rates, "VALID" if padding is None else padding)
