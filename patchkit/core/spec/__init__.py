"""The patch grid as pure geometry: :class:`PatchSpec` and the functions it is made of.

TensorFlow's semantics (``tf.image.extract_patches``), for one spatial axis of length ``n`` with kernel
``k``, stride ``s`` and rate ``r``:

* effective kernel ``ke = k + (k - 1)(r - 1)``;
* ``VALID``: ``out = ceil((n - ke + 1) / s)``, and no padding;
* ``SAME``: ``out = ceil(n / s)``; total padding ``max((out - 1) s + ke - n, 0)`` split as
  ``before = total // 2`` and the remainder after; padded cells are zeros;
* patch ``i`` reads input positions ``i s - before + a r`` for ``a`` in ``0 .. k - 1``.

Everything else (windows, the halo a band of output rows needs, padding, regions, bytes) is derived here
and nowhere else; :mod:`patchkit.core.budget` plans row bands under a memory budget from these counts. Nothing in this module does I/O or allocates image data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..dtypes import check_dtype
from ...errors import InvalidSpecError, KernelTooLargeError, OutputTooLargeError, shown
from .axis import Axis as _Axis
from .axis import effective_size, output_size, padding_amounts, tf_output_size
from .normalize import MAX_DEPTH, _bounds, _four_d, _normalize_pair, _patch_index, _spatial, normalize_padding

__all__ = [
    "PatchSpec",
    "Window",
    "Region",
    "effective_size",
    "output_size",
    "tf_output_size",
    "padding_amounts",
    "normalize_padding",
]


@dataclass(frozen=True, slots=True)
class Window:
    """The input window one patch reads, in pixel offsets of the unpadded image.

    ``row_off``/``col_off`` may be negative and the window may reach past the image: those cells are
    padding (zeros). ``height``/``width`` are the *effective* extent; with a rate above 1 only every
    ``row_step``-th row and ``col_step``-th column inside it is sampled.
    """

    row_off: int
    col_off: int
    height: int
    width: int
    row_step: int = 1
    col_step: int = 1

    def toslices(self) -> tuple[slice, slice]:
        """Row and column slices of the sampled pixels, valid on an image padded to cover the window."""
        return (
            slice(self.row_off, self.row_off + self.height, self.row_step),
            slice(self.col_off, self.col_off + self.width, self.col_step),
        )


@dataclass(frozen=True, slots=True)
class Region:
    """A rectangle of output patches whose input is either wholly inside the image or not.

    ``rows``/``cols`` are output patch indices; ``in_rows``/``in_cols`` the unclipped input span
    ``(start, stop)`` they read. ``inside`` is true when no padding is involved.
    """

    rows: slice
    cols: slice
    in_rows: tuple[int, int]
    in_cols: tuple[int, int]
    inside: bool


@dataclass(frozen=True, slots=True, init=False)
class PatchSpec:
    """Sizes, strides, rates and padding of a patch grid, as ``tf.image.extract_patches`` takes them.

    Parameters
    ----------
    sizes, strides : int, (int, int) or [1, int, int, 1]
        Kernel size and stride (rows, cols); a scalar means the same for both.
    rates : int, (int, int) or [1, int, int, 1], default 1
        Dilation: the kernel samples every ``rate``-th pixel.
    padding : {"VALID", "SAME"}, any case
        ``VALID`` keeps only windows inside the image; ``SAME`` pads with zeros so that there are
        ``ceil(n / stride)`` patches along each axis.

    Examples
    --------
    >>> spec = PatchSpec(16, 8, padding="same")
    >>> spec.output_shape((1, 256, 256, 3))
    (1, 32, 32, 768)
    """

    sizes: tuple[int, int]
    strides: tuple[int, int]
    rates: tuple[int, int]
    padding: str

    def __init__(self, sizes, strides, rates=1, padding="VALID") -> None:
        object.__setattr__(self, "sizes", _normalize_pair("sizes", sizes))
        object.__setattr__(self, "strides", _normalize_pair("strides", strides))
        object.__setattr__(self, "rates", _normalize_pair("rates", rates))
        object.__setattr__(self, "padding", normalize_padding(padding))

    def to_dict(self) -> dict:
        """``{"sizes": [kh, kw], "strides": [...], "rates": [...], "padding": "VALID"}``: JSON-ready."""
        return {"sizes": list(self.sizes), "strides": list(self.strides), "rates": list(self.rates), "padding": self.padding}

    @classmethod
    def from_dict(cls, fields: dict) -> "PatchSpec":
        """The spec :meth:`to_dict` described (validated like any other).

        Raises
        ------
        InvalidSpecError
            ``fields`` is not a mapping, or lacks ``"sizes"`` or ``"strides"``.
        """
        missing = [key for key in ("sizes", "strides") if not isinstance(fields, Mapping) or key not in fields]
        if missing:
            raise InvalidSpecError(
                f"spec={shown(fields)} has no {' or '.join(map(repr, missing))}; a spec dict needs 'sizes' and 'strides' "
                "(and optionally 'rates' and 'padding'): add them, e.g. {'sizes': 4, 'strides': 4}, or pass "
                "PatchSpec(sizes, strides)"
            )
        return cls(fields["sizes"], fields["strides"], fields.get("rates", 1), fields.get("padding", "VALID"))

    # ---- geometry -------------------------------------------------------------------------------

    @property
    def effective_sizes(self) -> tuple[int, int]:
        """Kernel extent with dilation: ``k + (k - 1)(rate - 1)`` for rows and cols."""
        return tuple(effective_size(k, r) for k, r in zip(self.sizes, self.rates))  # type: ignore[return-value]

    def _axes(self, shape: Sequence[int]) -> tuple[_Axis, _Axis]:
        hw = _spatial(shape)
        return tuple(  # type: ignore[return-value]
            _Axis(n, k, s, r, output_size(n, k, s, r, self.padding), padding_amounts(n, k, s, r, self.padding)[0])
            for n, k, s, r in zip(hw, self.sizes, self.strides, self.rates)
        )

    def check(self, shape: Sequence[int]) -> None:
        """Raise when ``shape`` is not a usable image shape for this spec.

        Raises
        ------
        InvalidImageError
            Wrong rank or an empty axis.
        KernelTooLargeError
            Under ``VALID``, an effective kernel larger than the image. (TensorFlow returns an empty
            result when it is larger by one and errors beyond; patchkit always says so.)
        """
        hw = _spatial(shape)
        if self.padding != "VALID":
            return
        for axis, n, k, r in zip(("height", "width"), hw, self.sizes, self.rates):
            ke = effective_size(k, r)
            if ke > n:
                extent = f"{k}" if r == 1 else f"{k} at rate {r}"
                raise KernelTooLargeError(
                    f"kernel {extent} (effective {ke}) is larger than the image {axis} {n} with "
                    f"padding='VALID'; use padding='SAME' or a smaller kernel or rate"
                )

    def grid_shape(self, shape: Sequence[int]) -> tuple[int, int]:
        """``(out_rows, out_cols)`` of the patch grid for a ``(h, w)`` or ``(b, h, w, c)`` shape."""
        rows, cols = self._axes(shape)
        return rows.out, cols.out

    def output_shape(self, shape: Sequence[int]) -> tuple[int, int, int, int]:
        """TensorFlow's output shape ``[batch, out_rows, out_cols, kh * kw * channels]``."""
        b, _, _, c = _four_d(shape)
        oh, ow = self.grid_shape(shape)
        return (b, oh, ow, self._depth(c))

    def tf_output_shape(self, shape: Sequence[int]) -> tuple[int, int, int, int]:
        """TensorFlow's output shape for any 4-D ``shape``, empty results included.

        Empty images (an axis of length 0) and ``VALID`` kernels larger than the image by less than
        two strides give an output with a zero axis, as ``tf.image.extract_patches`` does; larger
        kernels raise :class:`KernelTooLargeError` (see :func:`tf_output_size`). Elsewhere this is
        :meth:`output_shape`.
        """
        b, h, w, c = _four_d(shape, allow_empty=True)
        rows, cols = (
            tf_output_size(n, k, s, r, self.padding, axis)
            for axis, n, k, s, r in zip(("height", "width"), (h, w), self.sizes, self.strides, self.rates)
        )
        return (b, rows, cols, self._depth(c))

    def _depth(self, channels: int) -> int:
        """``kh * kw * channels``, the last axis of the output; refused beyond :data:`MAX_DEPTH`."""
        depth = self.sizes[0] * self.sizes[1] * channels
        if depth > MAX_DEPTH:
            raise OutputTooLargeError(
                f"patches of {self.sizes[0]}x{self.sizes[1]} pixels with {channels} channels hold {depth} values each, "
                "more than an array axis of any dtype can (2**59 values of up to 16 bytes); use smaller sizes"
            )
        return depth

    def padding_amounts(self, shape: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """Zeros added ``((top, bottom), (left, right))``; all 0 under ``VALID``."""
        hw = _spatial(shape)
        return tuple(  # type: ignore[return-value]
            padding_amounts(n, k, s, r, self.padding)
            for n, k, s, r in zip(hw, self.sizes, self.strides, self.rates)
        )

    def window(self, i: int, j: int, shape: Sequence[int]) -> Window:
        """The input :class:`Window` patch ``(i, j)`` reads (offsets may be negative: padding).

        Negative ``i``/``j`` count from the end, like indexing; out-of-range or non-integer indices raise
        :class:`PatchIndexError` (an ``IndexError`` too).
        """
        rows, cols = self._axes(shape)
        offsets = []
        for name, index, axis in (("i", i, rows), ("j", j, cols)):
            offsets.append(axis.span(*_patch_index(name, index, axis.out))[0])
        return Window(offsets[0], offsets[1], rows.ke, cols.ke, self.rates[0], self.rates[1])

    def positions(self, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Input pixel indices every patch samples: ``(rows[out_rows, kh], cols[out_cols, kw])``.

        ``rows[i, a] = i * stride - pad_top + a * rate`` (columns likewise). Indices below 0 or past
        the image are padded cells. They take :meth:`positions_nbytes`: callers with a kernel from
        an untrusted source check that first (a ``SAME`` kernel may be far larger than the image).
        """
        out = []
        for axis, starts in zip(self._axes(shape), self.starts(shape)):
            out.append(starts[:, None] + np.arange(axis.k, dtype=np.int64) * axis.r)
        return out[0], out[1]

    def starts(self, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The first input row of every patch row and the first column of every patch column.

        ``positions(shape)[0][:, 0]`` and ``positions(shape)[1][:, 0]``, without the taps: ``i * stride -
        pad_top``. Their size is the grid's, whatever the kernel.
        """
        return tuple(np.arange(axis.out, dtype=np.int64) * axis.s - axis.before for axis in self._axes(shape))  # type: ignore[return-value]

    def positions_nbytes(self, shape: Sequence[int]) -> int:
        """Bytes of :meth:`positions`: ``8 (out_rows kh + out_cols kw)`` (the same again for coordinates)."""
        rows, cols = self.grid_shape(shape)
        return 8 * (rows * self.sizes[0] + cols * self.sizes[1])

    def input_rows(self, rows: slice | tuple[int, int], shape: Sequence[int], *, clip: bool = False) -> tuple[int, int]:
        """Input rows ``[start, stop)`` that output rows ``rows`` read: the halo of a band.

        ``(i0 s - pad_top, (i1 - 1) s - pad_top + ke)``; with ``clip=True`` limited to the image, which
        is what a reader fetches (the rest is padding).
        """
        i0, i1 = _bounds(rows)
        axis = self._axes(shape)[0]
        start, stop = axis.span(i0, i1)
        return (max(start, 0), min(stop, axis.n)) if clip else (start, stop)

    def halo_padding(self, rows: slice | tuple[int, int], shape: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """Zero rows and columns to add around a band's clipped halo (:meth:`input_rows` with ``clip=True``, all
        columns) so that a ``VALID`` extraction of it gives the band: ``((top, bottom), (left, right))``."""
        start, stop = self.input_rows(rows, shape)
        height = _four_d(shape)[1]
        return (max(-start, 0), max(stop - height, 0)), self.padding_amounts(shape)[1]

    def regions(self, rows: slice | tuple[int, int], shape: Sequence[int]) -> tuple[Region, ...]:
        """Split output rows ``rows`` (all columns) into rectangles that are wholly inside or not.

        At most five: the top and bottom edge strips (full width), and the interior rows cut into the
        left edge, the interior and the right edge. Copying the interior needs no padding; the edges
        are small. Empty rectangles are left out.
        """
        i0, i1 = _bounds(rows)
        ra, ca = self._axes(shape)
        r_lo, r_hi = ra.interior()
        c_lo, c_hi = ca.interior()
        row_parts = [((i0, min(i1, r_lo)), False), ((max(i0, r_lo), min(i1, r_hi)), True), ((max(i0, r_hi), i1), False)]
        out = []
        for (a, b), interior_rows in row_parts:
            if a >= b:
                continue
            col_parts = [(0, c_lo), (c_lo, c_hi), (c_hi, ca.out)] if interior_rows else [(0, ca.out)]
            for c0, c1 in col_parts:
                if c0 >= c1:
                    continue
                yr, xr = ra.span(a, b), ca.span(c0, c1)
                inside = yr[0] >= 0 and yr[1] <= ra.n and xr[0] >= 0 and xr[1] <= ca.n
                out.append(Region(slice(a, b), slice(c0, c1), yr, xr, inside))
        return tuple(out)

    # ---- bytes ----------------------------------------------------------------------------------

    def nbytes(self, shape: Sequence[int], dtype) -> int:
        """Bytes of the whole output for an image of ``shape`` (4-D) and ``dtype``."""
        return math.prod(self.output_shape(shape)) * check_dtype(dtype).itemsize

    def patch_nbytes(self, shape: Sequence[int], dtype) -> int:
        """Bytes of one patch (of every image in the batch)."""
        b, _, _, depth = self.output_shape(shape)
        return b * depth * check_dtype(dtype).itemsize

    def row_nbytes(self, shape: Sequence[int], dtype) -> int:
        """Bytes of one output row of patches (all images in the batch)."""
        b, _, ow, depth = self.output_shape(shape)
        return b * ow * depth * check_dtype(dtype).itemsize

    def band_memory(self, rows: slice | tuple[int, int], shape: Sequence[int], dtype, **kwargs) -> int:
        """Bytes held at once while one band of output rows is made: :func:`patchkit.core.budget.band_memory`."""
        from ..budget import band_memory

        return band_memory(self, rows, shape, dtype, **kwargs)

    def min_memory(self, shape: Sequence[int], dtype, lazy: bool = False, **kwargs) -> int:
        """The smallest ``max_memory`` that works: :func:`patchkit.core.budget.min_memory`."""
        from ..budget import min_memory

        return min_memory(self, shape, dtype, lazy=lazy, **kwargs)

    def plan(self, shape: Sequence[int], dtype, max_memory: int | str, lazy: bool = False, **kwargs):
        """The row bands that each fit in ``max_memory``: a :class:`~patchkit.core.budget.Plan` made by
        :func:`patchkit.core.budget.plan`, the one planner."""
        from ..budget import plan

        return plan(self, shape, dtype, max_memory, lazy=lazy, **kwargs)

    def row_axis(self, shape: Sequence[int]) -> _Axis:
        """The geometry of the row axis for an image of ``shape`` (what the planner asks of bands)."""
        return self._axes(shape)[0]

    @staticmethod
    def row_bounds(rows: slice | tuple[int, int]) -> tuple[int, int]:
        """``(i0, i1)`` of a contiguous band of output rows given as a slice or a pair."""
        return _bounds(rows)
