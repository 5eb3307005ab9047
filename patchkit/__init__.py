"""patchkit: TensorFlow-exact patch extraction for large, georeferenced rasters.

The same numbers as ``tf.image.extract_patches``, faster on CPU, streamed in row bands under a
memory budget. See ``DESIGN.md`` for the geometry and the public API.
"""

from importlib.metadata import PackageNotFoundError, version

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
from .stitch import stitch

try:
    __version__ = version("patchkit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "PatchSpec",
    "Plan",
    "Window",
    "errors",
    "extract_image_patches",
    "extract_patches",
    "iter_patches",
    "patch_transform",
    "open_patches",
    "stitch",
    "read_tfrecord",
    "to_tf_dataset",
    "to_tfrecord",
    "__version__",
]
