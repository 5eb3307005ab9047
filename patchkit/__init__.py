"""patchkit: TensorFlow-exact patch extraction for large, georeferenced rasters.

The same numbers as ``tf.image.extract_patches``, faster on CPU, streamed in row bands under a
memory budget. ``docs/architecture.md`` maps the rooms; the documentation site (``make docs``) the API.
"""

from . import backends, errors, sinks
from .core.budget import Plan
from .core.chunking import iter_patches
from .core.extract import extract_image_patches, extract_patches
from .core.spec import PatchSpec, Window
from .labelled import accessor  # noqa: F401  (registers DataArray.patches and Dataset.patches)
from .labelled.geo import patch_transform
from .labelled.tfdata import to_tf_dataset
from .sinks.tfrecord import read_tfrecord, to_tfrecord
from .sinks.zarr import open_patches
from .stitch import predict, stitch


def __getattr__(name: str):
    """``__version__`` from the installed metadata, read on first use (importlib.metadata costs ~0.1 s to import)."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("patchkit")
        except PackageNotFoundError:  # running from a source tree that is not installed
            return "0+unknown"
    if name == "PatchExplorer":  # the explorer imports nothing heavy until it is shown, but is not needed to import patchkit
        from .explorer import PatchExplorer

        return PatchExplorer
    if name == "load_model":  # imports Keras or TensorFlow only when it loads a file
        from .stitch.loading import load_model

        return load_model
    raise AttributeError(f"module 'patchkit' has no attribute {name!r}")


__all__ = [
    "PatchExplorer",
    "PatchSpec",
    "Plan",
    "backends",
    "sinks",
    "Window",
    "errors",
    "extract_image_patches",
    "extract_patches",
    "iter_patches",
    "load_model",
    "patch_transform",
    "predict",
    "open_patches",
    "stitch",
    "read_tfrecord",
    "to_tf_dataset",
    "to_tfrecord",
    "__version__",
]
