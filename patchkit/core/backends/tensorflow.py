"""The TensorFlow backend: ``tf.image.extract_patches`` itself, on the GPU when the data is there.

TensorFlow is imported on first use. ``bool`` has no TensorFlow kernel, so it goes through ``uint8``
(exact: the values are 0 and 1). A band of rows (for :func:`patchkit.iter_patches`) is cut from the
clipped halo, zero-padded where the band touches the image edges, and extracted with ``VALID``:
the same numbers as the whole-image op.
"""

from __future__ import annotations

from typing import Any

from ...errors import BackendUnavailableError
from ..spec import PatchSpec

__all__ = ["TensorflowBackend", "import_tensorflow"]


def import_tensorflow():
    """Import TensorFlow, or raise :class:`BackendUnavailableError` saying how to install it."""
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise BackendUnavailableError(
            "backend='tensorflow' needs TensorFlow, which is not installed; "
            "pip install 'patchkit[tensorflow]', or use backend='numpy'"
        ) from exc
    return tf


def _tf_args(spec: PatchSpec) -> dict:
    kh, kw = spec.sizes
    (sr, sc), (rr, rc) = spec.strides, spec.rates
    return dict(sizes=[1, kh, kw, 1], strides=[1, sr, sc, 1], rates=[1, rr, rc, 1])


class TensorflowBackend:
    """Runs ``tf.image.extract_patches``; returns tensors on the input's device."""

    name = "tensorflow"
    #: A band touching an edge is padded as a whole (``tf.pad`` copies it).
    pad_copy = True

    def extract(self, images: Any, spec: PatchSpec, padding: str | None = None) -> Any:
        """All patches of ``images`` (a tensor or array) as a ``tf.Tensor``."""
        tf = import_tensorflow()
        images = tf.convert_to_tensor(images)
        is_bool = images.dtype == tf.bool
        if is_bool:
            images = tf.cast(images, tf.uint8)
        out = tf.image.extract_patches(images, padding=padding or spec.padding, **_tf_args(spec))
        return tf.cast(out, tf.bool) if is_bool else out

    def band(self, src: Any, row0: int, shape: tuple[int, int, int, int], spec: PatchSpec, rows: slice, out=None) -> Any:
        """Output rows ``rows`` as a ``tf.Tensor``; ``src`` holds image rows from ``row0`` (see numpy's).

        The clipped halo is cut from ``src``, zero-padded where it passes the image edges, and
        extracted with ``VALID``. ``out`` is ignored: TensorFlow allocates its own result.
        """
        tf = import_tensorflow()
        ya, yb = spec.input_rows(rows, shape, clip=True)
        halo = tf.convert_to_tensor(src[:, ya - row0 : yb - row0])
        pads = [[0, 0], *map(list, spec.halo_padding(rows, shape)), [0, 0]]
        if any(p for pair in pads for p in pair):
            halo = tf.pad(halo, pads)
        return self.extract(halo, spec, padding="VALID")
