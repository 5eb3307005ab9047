"""Every patch's nodata share, estimated from a preview of the scene (counted when the preview is the scene).

A :class:`NodataMap` is made once from the preview's pixels; :meth:`NodataMap.patch_shares` then gives
the share for any spec without reading again. The geometry (where each patch starts, how many of its
taps are padding) is the spec's (:meth:`PatchSpec.starts`, :func:`patchkit.core.spec.coverage.taps_inside`);
this room only maps windows onto preview cells. No widgets, no drawing.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..core.spec import PatchSpec
from ..core.spec.coverage import taps_inside
from ..labelled.nodata import nodata_counts

__all__ = ["NodataMap", "MAX_SAMPLED"]

#: Nodata shares are estimated on at most this many patch rows (and as many columns), evenly spread.
MAX_SAMPLED = 256


def _spread(n: int, most: int) -> np.ndarray:
    """``0 .. n - 1``, or ``most`` indices evenly spread over it when ``n`` is larger."""
    if n <= most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, most).round().astype(np.int64))


def _cells(start: np.ndarray, extent: int, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Preview cells ``[p0, p1)`` (of ``size`` along an axis of ``n`` pixels) under windows ``[start, start + extent)``.

    At least one cell each; a window wholly in the padding maps to the nearest edge cell.
    """
    scale = n / size
    lo, hi = np.clip(start, 0, n), np.clip(start + extent, 0, n)
    p0 = np.clip(np.floor(lo / scale).astype(np.int64), 0, size - 1)
    p1 = np.clip(np.ceil(hi / scale).astype(np.int64), 1, size)
    return p0, np.maximum(p1, p0 + 1)


@dataclass(frozen=True, eq=False)
class NodataMap:
    """The share of nodata at every pixel of a preview, and every patch's share derived from it.

    Attributes
    ----------
    shares : ndarray ``[hp, wp]``
        Share of nodata values (nodata markers, ``_FillValue``, NaN; over the batch and channels) at
        each preview pixel.
    image_shape : (int, int)
        The full-resolution ``(height, width)``.
    markers : tuple
        The nodata values counted (NaN always is, for floating-point data).
    images : ndarray, optional
        The full-resolution ``[batch, h, w, channels]`` when the preview is the scene itself: then
        :meth:`patch_shares` counts exactly, as ``max_nodata_fraction`` does.
    """

    shares: np.ndarray
    image_shape: tuple[int, int]
    markers: tuple = ()
    images: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, repr=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False)  # the view draws from another thread

    @classmethod
    def from_images(cls, images: np.ndarray, image_shape: Sequence[int], markers: Sequence = (),
                    exact: bool = False) -> "NodataMap":
        """The map of a preview ``[batch, hp, wp, channels]`` (``exact``: it is the full-resolution scene)."""
        counts, total = nodata_counts(images, PatchSpec(1, 1), tuple(markers))
        return cls(counts / total, tuple(int(n) for n in image_shape), tuple(markers), images if exact else None)

    @functools.cached_property
    def _table(self) -> np.ndarray:
        """Summed-area table of :attr:`shares`, ``[hp + 1, wp + 1]``, made once."""
        sat = np.zeros((self.shares.shape[0] + 1, self.shares.shape[1] + 1))
        sat[1:, 1:] = self.shares.cumsum(0).cumsum(1)
        return sat

    @property
    def exact(self) -> bool:
        """Whether :meth:`patch_shares` counts exactly (the preview is the scene at full resolution)."""
        return self.images is not None

    def patch_shares(self, spec: PatchSpec) -> tuple[np.ndarray, bool]:
        """Every patch's nodata share ``[rows, cols]``, and whether rows/cols are a sample of the grid.

        Exact maps count with :func:`patchkit.labelled.nodata.nodata_counts`. Otherwise a patch's share is
        its padded taps (exact) plus, for its taps inside the image, the mean share of the preview
        pixels under its window (a summed-area table, so each patch costs four lookups). Grids with
        more than :data:`MAX_SAMPLED` rows or columns are sampled evenly. Cached per spec.
        """
        with self._lock:
            if spec in self._cache:
                return self._cache[spec]
        if self.exact:
            counts, total = nodata_counts(self.images, spec, self.markers)
            result = (counts / total, False)
        else:
            result = self._estimate(spec)
        with self._lock:
            if len(self._cache) >= 16:
                self._cache.pop(next(iter(self._cache)))
            self._cache[spec] = result
        return result

    def _estimate(self, spec: PatchSpec) -> tuple[np.ndarray, bool]:
        """Shares of an evenly sampled sub-grid from the preview; see :meth:`patch_shares`."""
        shape = self.image_shape
        starts, inside = spec.starts(shape), taps_inside(spec, shape)
        picked = [_spread(len(s), MAX_SAMPLED) for s in starts]
        (r0, r1), (c0, c1) = (_cells(starts[a][picked[a]], spec.effective_sizes[a], shape[a], self.shares.shape[a])
                              for a in (0, 1))
        band = self._table[r1] - self._table[r0]  # [rows, wp + 1]: column sums over each patch's preview rows
        mean = (band[:, c1] - band[:, c0]) / ((r1 - r0)[:, None] * (c1 - c0)[None, :])
        share_in = [inside[a][picked[a]] / spec.sizes[a] for a in (0, 1)]
        estimate = 1.0 - share_in[0][:, None] * share_in[1][None, :] * (1.0 - mean)
        sampled = picked[0].size < starts[0].size or picked[1].size < starts[1].size
        return np.clip(estimate, 0.0, 1.0), sampled
