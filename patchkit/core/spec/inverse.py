"""The inverse map of extraction, one spatial axis at a time: which patches and which of their taps land on a
range of output pixels, as few vectorised steps.

Along an axis (:class:`~patchkit.core.spec.axis.Axis`: length ``n``, kernel ``k``, stride ``s``, rate ``r``,
``out`` patches, ``before`` pixels of padding) tap ``a`` of patch ``i`` samples pixel ``i * s - before +
a * r`` (:meth:`PatchSpec.positions`). A :class:`Line` is such an axis with the taps ``[t0, t1)`` that are
kept (a crop, or a blend window's zero ends dropped); :func:`axis_ops` cuts the kept (patch, tap) pairs
that land in a band of pixels into :class:`Op` steps, each a strided view in which no two pairs share a
pixel. Pixels outside ``[0, n)`` are padding: no step writes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple, Sequence

import numpy as np

from .axis import Axis

__all__ = ["Line", "Op", "lines_of", "support", "axis_ops"]


class Op(NamedTuple):
    """One vectorised step along an axis: patches × taps onto pixels ``start + p * stride + t * rate``.

    ``p`` and ``t`` count from the first patch and tap; ``start`` is relative to the band. No two
    (patch, tap) pairs of a step share a pixel, so one strided view of the accumulator takes it.
    """

    patches: slice
    taps: slice
    start: int


@dataclass(frozen=True, slots=True)
class Line(Axis):
    """An :class:`Axis` of which taps ``[t0, t1)`` are kept: patch ``i`` tap ``a`` samples pixel ``i * s - before + a * r``."""

    t0: int
    t1: int

    @property
    def kept(self) -> int:
        """The number of kept taps of a patch, ``t1 - t0``."""
        return self.t1 - self.t0

    @property
    def first(self) -> int:
        """The pixel patch 0's first kept tap samples (a patch ``i`` adds ``i * s``)."""
        return self.t0 * self.r - self.before

    @property
    def last(self) -> int:
        """The pixel patch 0's last kept tap samples (a patch ``i`` adds ``i * s``)."""
        return (self.t1 - 1) * self.r - self.before

    def needed(self, lo, hi):
        """Patches ``[p0, p1)`` whose kept taps may land in pixels ``[lo, hi)`` (scalars or arrays), within the grid.

        Those whose span of kept taps (first to last) meets the band: ``p0`` is the first patch whose last kept
        tap, ``p0 * s + last``, reaches ``lo``; ``p1`` follows the last whose first kept tap lies below ``hi``.
        """
        p0 = -((self.last - lo) // self.s)  # ceil((lo - last) / s)
        p1 = (hi - 1 - self.first) // self.s + 1
        return np.clip(p0, 0, self.out), np.clip(p1, 0, self.out)


def lines_of(spec, shape: Sequence[int], crop: tuple[int, int]) -> tuple[Line, Line]:
    """The rows' and columns' :class:`Line` of ``spec`` on an image of ``shape`` (``(h, w)``), ``crop`` taps dropped
    from each side of a patch (``crop`` from :func:`patchkit.stitch.normalize_crop`: each leaves a tap)."""
    grid = spec.grid_shape(shape)
    pads = spec.padding_amounts(shape)
    return tuple(  # type: ignore[return-value]
        Line(n, k, s, r, o, before, c, k - c)
        for n, o, s, r, (before, _), k, c in zip(shape, grid, spec.strides, spec.rates, pads, spec.sizes, crop)
    )


def support(lines: tuple[Line, Line], weights: np.ndarray | None) -> tuple[tuple[Line, Line], np.ndarray | None]:
    """The lines narrowed to the rectangle of taps with positive weight, and its weights, when no zero lies
    inside it (zero ends, as scipy windows have): zero-weight taps are then a crop and cost nothing.
    Otherwise (zeros inside) the lines and weights as they are: the zeros are masked out step by step.
    """
    if weights is None or weights.all():
        return lines, weights
    rows, cols = np.flatnonzero(weights.any(axis=1)), np.flatnonzero(weights.any(axis=0))
    inner = weights[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    if not inner.all():
        return lines, weights
    narrowed = tuple(replace(line, t0=line.t0 + int(kept[0]), t1=line.t0 + int(kept[-1]) + 1)
                     for line, kept in zip(lines, (rows, cols)))
    return narrowed, inner  # type: ignore[return-value]


def axis_ops(line: Line, patches: range, lo: int, hi: int) -> list[Op]:
    """The steps that put the kept taps of ``patches`` onto pixels ``[lo, hi)`` (``start`` relative to ``lo``).

    The fewest of: one step per patch (its taps); one per tap (every patch's); or one per group of
    ``stride // rate`` consecutive taps for the patches wholly inside ``[lo, hi)`` (with rate 1 a
    group covers a contiguous run of pixels), plus one per patch at the edges. Steps come in writing
    order: for any pixel, the patches that sample it come in increasing order, so the last write
    is that of the last patch.
    """
    s, t0, t1 = line.s, line.t0, line.t1
    inner = range(max(patches.start, -((line.first - lo) // s)), min(patches.stop, (hi - 1 - line.last) // s + 1))
    group = max(1, min(line.kept, s // line.r))
    groups = -(-line.kept // group)
    blocks = groups + len(patches) - len(inner) if len(inner) > 0 else math.inf
    if len(patches) <= min(line.kept, blocks):
        return _patch_ops(line, patches, lo, hi)
    if line.kept <= blocks:
        return _tap_ops(line, patches, lo, hi)
    ops = _patch_ops(line, range(patches.start, inner.start), lo, hi)
    for a in range(t0 + (groups - 1) * group, t0 - 1, -group):
        start = inner.start * s - line.before + a * line.r - lo
        ops.append(Op(slice(inner.start, inner.stop), slice(a, min(a + group, t1)), start))
    return ops + _patch_ops(line, range(inner.stop, patches.stop), lo, hi)


def _tap_ops(line: Line, patches: range, lo: int, hi: int) -> list[Op]:
    """One step per kept tap, last tap first: every patch of ``patches`` whose tap lands in ``[lo, hi)``."""
    ops = []
    for a in range(line.t1 - 1, line.t0 - 1, -1):
        off = a * line.r - line.before
        i0, i1 = max(patches.start, -((off - lo) // line.s)), min(patches.stop, (hi - 1 - off) // line.s + 1)
        if i0 < i1:
            ops.append(Op(slice(i0, i1), slice(a, a + 1), i0 * line.s + off - lo))
    return ops


def _patch_ops(line: Line, patches: range, lo: int, hi: int) -> list[Op]:
    """One step per patch: its kept taps that land in ``[lo, hi)``."""
    ops = []
    for i in patches:
        base = i * line.s - line.before
        a0, a1 = max(line.t0, -((base - lo) // line.r)), min(line.t1, (hi - 1 - base) // line.r + 1)
        if a0 < a1:
            ops.append(Op(slice(i, i + 1), slice(a0, a1), base + a0 * line.r - lo))
    return ops
