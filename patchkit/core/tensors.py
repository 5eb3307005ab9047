"""Tensors in, tensors out: :func:`patchkit.extract_patches` inside TensorFlow programs.

Three kinds of ``tf.Tensor`` reach patchkit, and each gets what TensorFlow's own op would give:

* **Symbolic** tensors (``tf.function``, ``tf.data.Dataset.map``, Keras layers, TF1 graphs through
  ``tf.compat.v1``, ``jit_compile=True``) have no values yet: they go to ``tf.image.extract_patches``
  itself, after patchkit's checks have run at trace time on what the graph knows (rank, dtype, the
  spec, the static height and width). The result *is* the op's result, so XLA compiles it and
  TensorFlow differentiates it.
* **Eager** tensors on the device of a faster TensorFlow backend (a GPU) go to the op too.
* Other **eager** tensors are copied by the numpy backend into a 64-byte aligned buffer
  (:func:`patchkit.core.backends.aligned_empty`) that the returned tensor shares: TensorFlow's kernels
  need that alignment, numpy promises 16. Floating and complex inputs are wrapped in a
  ``tf.custom_gradient`` whose backward pass is the adjoint of extraction, patchkit's
  ``stitch(dy, blend="sum")`` (TensorFlow's ``fold`` with reduction sum), so ``tf.GradientTape``
  sees the same gradient as TensorFlow's, to any order (the adjoint of the fold is extraction again).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .backends import aligned_empty, to_tensor
from .backends.tensorflow import TensorflowBackend, import_tensorflow
from .dtypes import check_dtype
from ..errors import InvalidImageError
from .sources import Source
from .spec import PatchSpec, tf_output_size

__all__ = ["symbolic_patches", "eager_patches", "numpy_patches_tensor", "fold"]

_TF_OP = TensorflowBackend()


def symbolic_patches(images: Any, spec: PatchSpec) -> Any:
    """``tf.image.extract_patches`` of a symbolic (or empty) tensor, checked first on its static shape.

    Raises
    ------
    InvalidImageError, UnsupportedDtypeError, KernelTooLargeError
        At trace time: a known rank other than 4, a dtype the op refuses, or a ``VALID`` kernel that
        a known height or width cannot take.
    """
    check_dtype(images.dtype)
    _check_static_shape(images, spec)
    return _TF_OP.extract(images, spec)


def _check_static_shape(images: Any, spec: PatchSpec) -> None:
    """Validate the dims a graph knows; unknown ones (``None``) are left to TensorFlow at run time."""
    shape = images.shape
    if shape.rank is None:
        return
    dims = tuple(shape.as_list())
    if len(dims) != 4:
        raise InvalidImageError(
            f"images has shape {tuple(dims)} (rank {len(dims)}), but a 4-D [batch, height, width, channels] "
            "tensor is required; add a batch axis with images[tf.newaxis] or a channel axis with images[..., tf.newaxis]"
        )
    for axis, n, k, s, r in zip(("height", "width"), dims[1:3], spec.sizes, spec.strides, spec.rates):
        if n is not None:
            tf_output_size(n, k, s, r, spec.padding, axis)


def numpy_patches_tensor(images: np.ndarray, spec: PatchSpec, backend) -> Any:
    """The patches of host ``images`` made by ``backend`` into an aligned buffer that a tensor shares."""
    out = aligned_empty(spec.output_shape(images.shape), images.dtype)
    backend.extract(images, spec, out=out)
    return to_tensor(out)


def eager_patches(source: Source, spec: PatchSpec, backend) -> Any:
    """The patches of an eager tensor (or variable) ``source`` as a tensor, differentiable where it can be."""
    if backend.name == "tensorflow":
        return backend.extract(source.data, spec)
    tf = import_tensorflow()
    images = tf.convert_to_tensor(source.data)  # a variable's value, read where the tape sees it
    forward = lambda: numpy_patches_tensor(np.asarray(images), spec, backend)  # noqa: E731
    if not (images.dtype.is_floating or images.dtype.is_complex):
        return forward()
    return _differentiable(tf, images, spec, forward)


def _differentiable(tf, images: Any, spec: PatchSpec, forward: Callable[[], Any]) -> Any:
    """``forward()`` recorded on any active tape with :func:`fold` as its gradient."""
    shape = tuple(images.shape)

    @tf.custom_gradient
    def extract(x):
        return forward(), lambda dy: fold(dy, spec, shape)

    return extract(images)


def fold(patches: Any, spec: PatchSpec, image_shape: tuple[int, int, int, int]) -> Any:
    """The adjoint of extraction: every patch value added into the pixel it sampled, as a tensor.

    This is the gradient of ``extract_patches`` with respect to its image. Eager tensors are folded by
    :func:`patchkit.stitch` with ``blend="sum"``; symbolic ones (a gradient taken inside a graph,
    ``tape.jacobian``'s vectorised loop) by TensorFlow's own gradient of its op. Differentiable itself:
    its gradient is extraction.
    """
    tf = import_tensorflow()

    @tf.custom_gradient
    def folded(dy):
        if tf.is_symbolic_tensor(dy) or not tf.executing_eagerly():
            result = _tf_fold(tf, dy, spec, image_shape)
        else:
            from ..stitch import stitch

            summed = stitch(np.asarray(dy), blend="sum", spec=spec, image_shape=image_shape[1:3])
            result = to_tensor(np.ascontiguousarray(summed).astype(dy.dtype.as_numpy_dtype, copy=False))

        def grad(ddx):
            from .extract import extract_patches

            return extract_patches(ddx, spec.sizes, spec.strides, spec.rates, spec.padding)

        return result, grad

    return folded(patches)


def _tf_fold(tf, dy: Any, spec: PatchSpec, image_shape: tuple[int, int, int, int]) -> Any:
    """TensorFlow's gradient of its op for upstream ``dy`` (works in graphs and under ``pfor``)."""
    zeros = tf.zeros(image_shape, dy.dtype)
    with tf.GradientTape() as tape:
        tape.watch(zeros)
        patches = _TF_OP.extract(zeros, spec)
    return tape.gradient(patches, zeros, output_gradients=dy)
