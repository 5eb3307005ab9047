"""GDAL's block cache while patchkit streams a lazily read raster: bounded to the plan's share, then restored.

GDAL keeps the blocks it decodes in one process-wide cache, ``GDAL_CACHEMAX`` bytes at most (by default
5 % of the RAM), which a lazily read GeoTIFF fills as its bands are read: uncounted, it grew a run under
``max_memory="128MiB"`` by ~280 MiB. :func:`bounded_cache` sets that maximum for as long as a stream runs
(rasterio's ``set_gdal_config("GDAL_CACHEMAX", nbytes)``, which takes an integer as bytes and calls
``GDALSetCacheMax64``: GDAL frees the blocks beyond it at once), and puts the maximum found back when the
last stream ends. :func:`patchkit.core.budget.plan_for` decides the bytes and counts them.

rasterio is imported here only when it is loaded already: a scene GDAL reads was opened through it, and
otherwise GDAL holds no blocks of patchkit's. Readers of GDAL outside rasterio (``osgeo.gdal``) are not
bounded. The cache is shared by the whole process: other threads reading through GDAL meanwhile see the
bound too, and GDAL itself may hold one block beyond it while it copies it out.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["bounded_cache", "cache_max"]

_lock = threading.Lock()
#: The bounds of the streams running now (the smallest applies), and GDAL's maximum before the first began.
_bounds: list[int] = []
_before: list[int] = []


def cache_max() -> int | None:
    """GDAL's block cache maximum now, in bytes (None when rasterio is not loaded)."""
    if "rasterio" not in sys.modules:
        return None
    from rasterio.env import get_gdal_config

    return int(get_gdal_config("GDAL_CACHEMAX"))


def _set(nbytes: int) -> None:
    from rasterio.env import set_gdal_config

    set_gdal_config("GDAL_CACHEMAX", int(nbytes))  # an int is bytes (a string under 100000 would be MB)


@contextmanager
def bounded_cache(nbytes: int | None) -> Iterator[None]:
    """Bound GDAL's block cache to ``nbytes`` (never raising it) while the block runs; None leaves it as it is.

    Streams that overlap (two arrays of a Dataset, two runs on threads) keep the smallest of their
    bounds; the maximum GDAL had before the first is set again when the last ends.
    """
    if nbytes is None or "rasterio" not in sys.modules:
        yield
        return
    with _lock:
        if not _bounds:
            _before[:] = [cache_max()]
        _bounds.append(int(nbytes))
        _set(min(min(_bounds), _before[0]))
    try:
        yield
    finally:
        with _lock:
            _bounds.remove(int(nbytes))
            _set(min(min(_bounds), _before[0]) if _bounds else _before[0])
