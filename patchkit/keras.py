"""``ExtractPatches``: a Keras layer that cuts patches inside a model, as TensorFlow's op does.

Inside ``model.fit``/``predict`` (graphs) the layer runs ``tf.image.extract_patches`` itself, checked by
patchkit when the model is built; called eagerly it runs patchkit's faster copy, with TensorFlow's
gradient either way. It needs Keras on the TensorFlow backend. Importing this module imports Keras
(``import patchkit`` does not).
"""

from __future__ import annotations

from typing import Any

import keras

from .errors import BackendUnavailableError
from .core.extract import extract_patches
from .core.spec import PatchSpec, tf_output_size

__all__ = ["ExtractPatches"]


@keras.saving.register_keras_serializable(package="patchkit")
class ExtractPatches(keras.layers.Layer):
    """Patches of ``[batch, height, width, channels]`` images: ``[batch, rows, cols, kh * kw * channels]``.

    Parameters
    ----------
    sizes, strides, rates, padding
        As :func:`patchkit.extract_patches` (and ``tf.image.extract_patches``), validated here.
    **kwargs
        Keras layer options (``name``, ``dtype``...).

    Examples
    --------
    >>> import keras
    >>> from patchkit.keras import ExtractPatches
    >>> inputs = keras.Input((64, 64, 3))
    >>> ExtractPatches(16, 8, padding="SAME")(inputs).shape
    (None, 8, 8, 768)
    """

    def __init__(self, sizes, strides, rates=1, padding: str = "VALID", **kwargs: Any) -> None:
        if keras.backend.backend() != "tensorflow":
            raise BackendUnavailableError(
                f"patchkit.keras.ExtractPatches runs TensorFlow's op, but Keras runs on {keras.backend.backend()!r}; "
                "set KERAS_BACKEND=tensorflow before importing keras"
            )
        super().__init__(**kwargs)
        self.spec = PatchSpec(sizes, strides, rates, padding)

    def call(self, images):
        spec = self.spec
        return extract_patches(images, spec.sizes, spec.strides, spec.rates, spec.padding)

    def compute_output_shape(self, input_shape):
        spec = self.spec
        batch, height, width, channels = input_shape
        rows, cols = (
            None if n is None else tf_output_size(n, k, s, r, spec.padding)
            for n, k, s, r in zip((height, width), spec.sizes, spec.strides, spec.rates)
        )
        depth = None if channels is None else spec.sizes[0] * spec.sizes[1] * channels
        return (batch, rows, cols, depth)

    def get_config(self) -> dict:
        return {**super().get_config(), **self.spec.to_dict()}
