"""Where patches go: Zarr stores, GeoTIFF chips, TFRecord shards and ``tf.data``, all resumable.

Every sink streams row bands of patches (``.patches.iter``) under ``max_memory``, records what it has
finished as it goes, and marks its output complete last, so a run killed at any point and run again
with the same arguments finishes the work and no output reads as complete before it is. Heavy
packages (zarr, rasterio, TensorFlow) are imported by the sink that needs them.
"""

from typing import Any

from ..errors import PatchkitValueError, shown

#: The sinks by name, with the ``.patches`` method that writes each.
METHODS = {"zarr": "to_zarr", "geotiff": "to_geotiffs", "tfrecord": "to_tfrecord"}


def check_sink(sink: Any) -> str:
    """``sink`` if it names one of :data:`METHODS`, else a :class:`PatchkitValueError` saying which to choose."""
    if isinstance(sink, str) and sink in METHODS:
        return sink
    raise PatchkitValueError(f"sink={shown(sink)} is not one of {sorted(METHODS)}; choose one of those")
