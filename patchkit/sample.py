"""A deterministic synthetic scene that looks like land cover, written as a real GeoTIFF.

Four bands (blue, green, red, near infrared) of uint16 reflectance (0-10000) in UTM zone 33N
(EPSG:32633) at 10 m: a patchwork of fields (crops, bare soil, grass, forest, built-up), a road
grid with a diagonal highway, a meandering river and a lake, and a ragged nodata margin on the
left, as at the edge of a satellite swath. The same arguments always give the same bytes.

>>> from patchkit.sample import sample_path, open_sample
>>> path = sample_path()                 # written once into a cache folder, then reused
>>> scene = open_sample(chunks=True)     # rioxarray DataArray (band, y, x), lazily read
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["make_scene", "write_sample", "sample_path", "open_sample", "BANDS", "CRS", "NODATA"]

BANDS = ("blue", "green", "red", "nir")
CRS = "EPSG:32633"
NODATA = 0
ORIGIN = (500000.0, 4200000.0)
PIXEL = 10.0
#: Mean reflectance (blue, green, red, nir) of each land-cover class.
SIGNATURES = {
    "crop": (450, 800, 600, 4200),
    "ripe crop": (700, 1100, 1300, 3000),
    "bare soil": (1200, 1500, 1900, 2500),
    "grass": (500, 900, 700, 3500),
    "forest": (300, 500, 350, 3000),
    "built-up": (1400, 1450, 1500, 1800),
    "road": (1100, 1150, 1200, 1300),
    "water": (600, 550, 300, 150),
}
FIELDS = ("crop", "ripe crop", "bare soil", "grass", "forest", "built-up")


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: int) -> np.ndarray:
    """Noise varying over about ``scale`` pixels: coarse random values upsampled bilinearly, in [-1, 1]."""
    h, w = shape
    coarse = rng.uniform(-1, 1, (h // scale + 2, w // scale + 2))
    y = np.arange(h) / scale
    x = np.arange(w) / scale
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _cuts(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    """Field boundaries along an axis of ``n`` pixels: widths drawn between ``lo`` and ``hi``."""
    widths = rng.integers(lo, hi, size=n // lo + 2)
    return np.cumsum(widths)


def land_cover(shape: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The class index of every pixel (into ``list(SIGNATURES)``) and the nodata mask."""
    rng = np.random.default_rng(seed)
    h, w = shape
    names = list(SIGNATURES)
    rows = np.searchsorted(_cuts(rng, h, 40, 160), np.arange(h), side="right")
    cols = np.searchsorted(_cuts(rng, w, 40, 160), np.arange(w), side="right")
    field_class = rng.choice([names.index(f) for f in FIELDS], size=(rows.max() + 1, cols.max() + 1),
                             p=[0.3, 0.2, 0.15, 0.15, 0.12, 0.08])
    classes = field_class[rows[:, None], cols[None, :]]
    y, x = np.mgrid[0:h, 0:w]
    road = np.zeros(shape, bool)
    for cut in _cuts(rng, h, 200, 400)[:-1]:
        road |= np.abs(y - cut) < 2
    for cut in _cuts(rng, w, 250, 450)[:-1]:
        road |= np.abs(x - cut) < 2
    road |= np.abs((y - 0.35 * h) - 0.6 * (x - 0.2 * w)) < 3  # a diagonal highway
    classes[road] = names.index("road")
    river = 0.55 * h + 0.12 * h * np.sin(2 * np.pi * x / (0.7 * w)) + 0.03 * h * np.sin(2 * np.pi * x / (0.13 * w))
    water = np.abs(y - river) < 0.012 * h + 6
    water |= ((y - 0.2 * h) / (0.09 * h)) ** 2 + ((x - 0.75 * w) / (0.13 * w)) ** 2 < 1  # a lake
    classes[water] = names.index("water")
    margin = 0.03 * w + 0.02 * w * np.sin(2 * np.pi * y / (0.4 * h)) + 6 * _smooth_noise(rng, shape, 16)
    return classes, x < margin


def make_scene(shape: tuple[int, int] = (1024, 1024), seed: int = 0) -> np.ndarray:
    """The scene's pixels ``(4, height, width)`` uint16, nodata (0) in the left margin."""
    classes, nodata = land_cover(shape, seed)
    rng = np.random.default_rng(seed + 1)
    signatures = np.array(list(SIGNATURES.values()), dtype=np.float32)  # [class, band]
    texture = 0.12 * _smooth_noise(rng, shape, 24) + 0.05 * _smooth_noise(rng, shape, 5)
    scene = np.empty((len(BANDS),) + tuple(shape), np.uint16)
    for band in range(len(BANDS)):
        value = signatures[classes, band] * (1 + texture) + rng.normal(0, 25, shape)
        scene[band] = np.clip(value, 1, 10000).astype(np.uint16)
    scene[:, nodata] = NODATA
    return scene


def write_sample(path: str | Path, shape: tuple[int, int] = (1024, 1024), seed: int = 0) -> Path:
    """Write the scene as a tiled, deflate-compressed GeoTIFF (UTM 33N, 10 m, nodata 0) and return its path.

    Written under a temporary name and renamed, so a file at ``path`` is always whole.
    """
    import rasterio
    from rasterio.transform import from_origin

    path = Path(path)
    data = make_scene(shape, seed)
    profile = dict(driver="GTiff", width=shape[1], height=shape[0], count=len(BANDS), dtype="uint16", crs=CRS,
                   transform=from_origin(*ORIGIN, PIXEL, PIXEL), nodata=NODATA, compress="deflate", tiled=True,
                   blockxsize=256, blockysize=256)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.partial.tif")
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            for i, name in enumerate(BANDS, start=1):
                dst.set_band_description(i, name)
            dst.update_tags(source="patchkit.sample", seed=str(seed))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def sample_path(shape: tuple[int, int] = (1024, 1024), seed: int = 0, folder: str | Path | None = None) -> Path:
    """The sample GeoTIFF for ``shape`` and ``seed``, written on first use into ``folder``.

    ``folder`` defaults to ``$PATCHKIT_CACHE`` or a ``patchkit-samples`` folder in the system's temporary directory
    (not ``patchkit``: scripts run from that directory would import the folder as the package).
    """
    folder = Path(folder or os.environ.get("PATCHKIT_CACHE") or Path(tempfile.gettempdir()) / "patchkit-samples")
    key = hashlib.sha256(f"{shape}-{seed}-v1".encode()).hexdigest()[:10]
    path = folder / f"sample-{shape[0]}x{shape[1]}-{seed}-{key}.tif"
    return path if path.exists() else write_sample(path, shape, seed)


def open_sample(shape: tuple[int, int] = (1024, 1024), seed: int = 0, **kwargs: Any):
    """The sample scene as a rioxarray DataArray ``(band, y, x)``; keywords go to ``rioxarray.open_rasterio``."""
    import rioxarray

    return rioxarray.open_rasterio(sample_path(shape, seed), **kwargs)
