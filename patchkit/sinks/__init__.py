"""Where patches go: Zarr stores, GeoTIFF chips, TFRecord shards, and any sink a package installs; all resumable.

Every sink is a :class:`~patchkit.sinks.base.Sink` found by name in :data:`registry`: the built-ins
(``zarr``, ``geotiff``, ``tfrecord``) and those packages add through the ``patchkit.sinks``
entry-point group, read on first use. A sink streams row bands of patches under ``max_memory``,
records what it has finished as it goes, and marks its output complete last, so a run killed at
any point and run again with the same arguments finishes the work and no output reads as complete
before it is. Heavy packages (zarr, rasterio, TensorFlow) are imported by the sink that needs them.
"""

from __future__ import annotations

from typing import Any

from ..core.plugins import Registry
from ..errors import PatchkitValueError, UnknownSinkError
from .base import Progress, Sink

__all__ = ["Sink", "Progress", "registry", "available", "register", "get", "check_sink"]


def _instance(sink: Any) -> Sink:
    """A registered sink: a class is instantiated once; anything else must be a :class:`Sink`."""
    sink = sink() if isinstance(sink, type) else sink
    if not isinstance(sink, Sink):
        raise PatchkitValueError(f"{sink!r} is not a patchkit sink; subclass patchkit.sinks.Sink")
    return sink


#: The sinks by name: the built-ins and those packages add through the ``patchkit.sinks`` entry points.
registry = Registry("patchkit.sinks", "sink", {"zarr": "patchkit.sinks.zarr:ZarrSink",
                                               "geotiff": "patchkit.sinks.geotiff:GeoTiffSink",
                                               "tfrecord": "patchkit.sinks.tfrecord:TFRecordSink"},
                    make=_instance, error=UnknownSinkError)


def available() -> tuple[str, ...]:
    """The names of every sink, built-in or installed (none is imported to list them)."""
    return registry.available()


def register(name: str, sink: Any) -> None:
    """Make ``sink`` (a :class:`Sink` subclass or instance) available as ``name`` (``da.patches.to(name, ...)``)."""
    registry.register(name, sink)


def get(name: str) -> Sink:
    """The sink called ``name``; :class:`~patchkit.errors.UnknownSinkError` listing the sinks when there is none."""
    return registry.get(name)


def check_sink(sink: Any) -> str:
    """``sink`` if it names an available sink, else :class:`~patchkit.errors.UnknownSinkError` saying which to choose."""
    registry.get(sink)
    return sink
