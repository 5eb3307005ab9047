"""The CuPy backend: the numpy backend's strided views, copied on a CUDA device; and stitching there.

Extraction works as in :mod:`patchkit.core.backends.numpy`, on device memory. For every rectangle of
patches that :meth:`PatchSpec.regions` finds, the input is viewed (``as_strided``, no copy) as
``[batch, rows, cols, kh, kw, channels]``, with strides that step by the stride between patches and
by the rate inside a patch, and the view is copied into the matching slice of the preallocated
output: one device copy kernel per rectangle, never a Python loop per patch. Rectangles on the
padded edges first copy the few input rows or columns they need into a small zero-filled device
array. The result is the numpy backend's, bit for bit, for every dtype CuPy has (all of patchkit's
but ``bfloat16``).

Stitching on the device (:func:`accumulators`, :func:`accumulate`, :func:`finish_mean`) is the inverse:
a band of (weighted) patches is added into float64 accumulators (complex128 for complex patches)
through strided views of them. Along each axis a step takes one patch (its taps), or a group of up
to ``ceil(stride / rate)`` consecutive taps of every patch whose taps of the group all lie inside
the image; no two (patch, tap) pairs of a step share a pixel, so each step is one vectorised
``+=``. Each axis goes whichever way takes fewer steps, and a band costs the product of the two
counts: for 256-pixel patches at stride 192, 16 additions for a whole 4096² grid. :func:`finish_mean`
divides as :func:`patchkit.stitch` does (a multiply by the reciprocal weight, integers rounded),
so where patches agree (as after extraction) the image comes back bit for bit, for floats of up to
32 bits, integers of up to 32 bits and bool, with two exceptions that the device's arithmetic makes
(copies keep both, so extraction is exact): NaN payloads become the canonical quiet NaN, and float32
subnormals are flushed to zero (measured on an H200; the host path keeps them).

The array module is a parameter: ``CupyBackend(xp=numpy)`` and numpy accumulators run the same code
on the host, which is how it is tested without a GPU. CuPy is imported on first use only.
"""

from __future__ import annotations

import functools
import sys
from itertools import chain
from typing import Any, NamedTuple

import numpy as np

from ..dtypes import check_dtype
from ...errors import BackendUnavailableError, PatchkitTypeError, PatchkitValueError, UnsupportedDtypeError
from ..spec import PatchSpec
from .numpy import region_copies

__all__ = ["CupyBackend", "import_cupy", "accumulators", "accumulate", "finish_mean", "stitch_mean"]

#: What to install, by CUDA major version, for the messages below.
INSTALL_HINT = "pip install cupy-cuda12x (CUDA 12) or cupy-cuda13x (CUDA 13)"


def import_cupy():
    """Import CuPy and check that it sees a CUDA device, or raise :class:`BackendUnavailableError`."""
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend='cupy' needs CuPy, which is not installed; {INSTALL_HINT}, or use backend='numpy'"
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, or CUDA_VISIBLE_DEVICES hides every GPU
        raise BackendUnavailableError(
            f"backend='cupy': CuPy is installed but cannot reach a CUDA device ({exc}); check the driver "
            "and CUDA_VISIBLE_DEVICES, or use backend='numpy'"
        ) from exc
    if count < 1:
        raise BackendUnavailableError("backend='cupy': CuPy sees no CUDA device; use backend='numpy'")
    return cupy


def _module_of(array: Any, name: str):
    """numpy for an ndarray, cupy for a ``cupy.ndarray``; raise (naming the argument) for anything else."""
    if isinstance(array, np.ndarray):
        return np
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy
    raise PatchkitTypeError(
        f"{name} is a {type(array).__name__}, but a numpy or cupy array is needed; "
        "make the accumulators with accumulators(), and pass patches as a cupy array"
    )


# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------


class CupyBackend:
    """Copies strided views in device memory with CuPy; returns device arrays.

    Parameters
    ----------
    xp : module, optional
        The array module: ``cupy`` by default (imported here, on the current device). ``numpy`` runs
        the same code on the host (for tests).

    Raises
    ------
    BackendUnavailableError
        CuPy is not installed, or sees no CUDA device.

    Examples
    --------
    >>> backend = CupyBackend()  # doctest: +SKIP
    >>> patches = backend.extract(images, PatchSpec(256, 192, padding="SAME"))  # doctest: +SKIP
    """

    name = "cupy"
    #: Edge padding needs copies of the edge regions only, not of the whole band.
    pad_copy = False

    def __init__(self, xp: Any = None) -> None:
        self.xp = import_cupy() if xp is None else xp

    def to_device(self, array: Any) -> Any:
        """``array`` as an array of :attr:`xp`, its dtype checked.

        Host data is copied to the device; device arrays of other libraries (``__cuda_array_interface__``:
        PyTorch, Numba) are used in place.

        Raises
        ------
        UnsupportedDtypeError
            A dtype ``tf.image.extract_patches`` does not take, or ``bfloat16`` (CuPy has no such type).
        """
        xp = self.xp
        if isinstance(array, xp.ndarray):
            check_dtype(array.dtype)
            return array
        if xp is not np and hasattr(array, "__cuda_array_interface__"):  # a torch.Tensor, numba array... on the GPU
            array = xp.asarray(array)  # shares its memory
            check_dtype(array.dtype)
            return array
        array = np.asarray(array)
        dtype = check_dtype(array.dtype)
        if xp is np:
            return array
        if dtype.name == "bfloat16":
            raise UnsupportedDtypeError(
                "images has dtype bfloat16, which CuPy has no type for; extraction only moves bits, so pass "
                "images.view(np.uint16) and view the patches back (or use backend='numpy' or 'tensorflow')"
            )
        if not dtype.isnative:
            array = array.astype(dtype.newbyteorder("="))
        return xp.asarray(array)

    def extract(self, images: Any, spec: PatchSpec, out: Any = None) -> Any:
        """All patches of ``images`` (a 4-D host or device array) in a new device array, or in ``out``.

        Parameters
        ----------
        images : array
            ``[batch, height, width, channels]``; host arrays are copied to the device first.
        spec : PatchSpec
        out : device array, optional
            C-contiguous, of shape ``spec.output_shape(images.shape)`` and the images' dtype.

        Returns
        -------
        device array
            ``[batch, out_rows, out_cols, kh * kw * channels]``, as ``tf.image.extract_patches``.
        """
        images = self.to_device(images)
        shape = tuple(int(d) for d in images.shape)
        spec.check(shape)
        out = self._output(out, spec.output_shape(shape), images.dtype)
        return self._extract_band(images, 0, shape, spec, slice(0, out.shape[1]), out)

    def band(self, src: Any, row0: int, shape, spec: PatchSpec, rows: slice, out: Any = None) -> Any:
        """Output rows ``rows`` into ``out`` (a new device array if ``None``).

        ``src`` holds image rows ``[row0, row0 + src.shape[1])`` of an image of ``shape``: the whole
        image or at least the clipped halo of ``rows`` (:meth:`PatchSpec.input_rows`). A host ``src``
        has only that halo copied to the device.
        """
        shape = tuple(int(d) for d in shape)
        if not isinstance(src, self.xp.ndarray):
            ya, yb = spec.input_rows(rows, shape, clip=True)
            src, row0 = np.asarray(src)[:, ya - row0 : max(yb, ya) - row0], ya
        src = self.to_device(src)
        b, _, ow, depth = spec.output_shape(shape)
        out = self._output(out, (b, rows.stop - rows.start, ow, depth), src.dtype)
        return self._extract_band(src, row0, shape, spec, rows, out)

    def _output(self, out: Any, shape: tuple[int, ...], dtype) -> Any:
        if out is None:
            return self.xp.empty(shape, dtype=dtype)
        ok = (
            isinstance(out, self.xp.ndarray)
            and tuple(out.shape) == tuple(shape)
            and out.dtype == dtype
            and out.flags.c_contiguous
        )
        if not ok:
            got = f"{type(out).__name__} of shape {getattr(out, 'shape', '?')} and dtype {getattr(out, 'dtype', '?')}"
            raise PatchkitValueError(
                f"out is a {got}, but these patches need a C-contiguous {self.xp.__name__}.ndarray of shape "
                f"{tuple(shape)} and dtype {np.dtype(dtype)}; pass out=None to allocate one"
            )
        return out

    def _extract_band(self, src: Any, row0: int, shape: tuple[int, int, int, int], spec: PatchSpec, rows: slice,
                      out: Any) -> Any:
        """Output rows ``rows`` into ``out``: one device copy per region (see the module docstring)."""
        for dst, view in region_copies(src, row0, shape, spec, rows, out, self.xp):
            dst[...] = view
        return out


# --------------------------------------------------------------------------------------------------
# Stitching on the device
# --------------------------------------------------------------------------------------------------


class _Step(NamedTuple):
    """Patches ``[p0, p1)`` × taps ``[t0, t1)`` of one axis; patch ``p0``'s tap ``t0`` samples pixel ``start``.

    Every pair samples a pixel inside the image, and no two pairs the same one.
    """

    p0: int
    p1: int
    t0: int
    t1: int
    start: int


@functools.lru_cache(maxsize=128)
def _axis_steps(spec: PatchSpec, hw: tuple[int, int], axis: int, p0: int, p1: int) -> tuple[_Step, ...]:
    """The fewest steps that add every in-image tap of patches ``[p0, p1)`` along ``axis``.

    Either one step per patch (its taps inside the image), or one per group of ``g = ceil(s / r)``
    consecutive taps for the patches whose group lies wholly inside, plus one per edge patch: with
    ``(g - 1) r < s``, pixels ``p s + t r`` (``t < g``) are distinct. Pixels come from
    :meth:`PatchSpec.positions`.
    """
    pos = spec.positions(hw)[axis][p0:p1]
    n, s, r, k = hw[axis], spec.strides[axis], spec.rates[axis], spec.sizes[axis]
    inside = (pos >= 0) & (pos < n)

    def one_patch(i: int, a: int, b: int) -> list[_Step]:
        taps = np.flatnonzero(inside[i, a:b])  # contiguous: positions grow with the tap
        if not taps.size:
            return []
        t0, t1 = a + int(taps[0]), a + int(taps[-1]) + 1
        return [_Step(p0 + i, p0 + i + 1, t0, t1, int(pos[i, t0]))]

    per_patch = [step for i in range(len(pos)) for step in one_patch(i, 0, k)]
    g = min(k, -(-s // r))
    grouped: list[_Step] = []
    for a in range(0, k, g):
        b = min(a + g, k)
        whole = np.flatnonzero(inside[:, a] & inside[:, b - 1])  # contiguous: positions grow with the patch
        q0, q1 = (int(whole[0]), int(whole[-1]) + 1) if whole.size else (0, 0)
        if q1 > q0:
            grouped.append(_Step(p0 + q0, p0 + q1, a, b, int(pos[q0, a])))
        for i in chain(range(q0), range(q1, len(pos))):
            grouped.extend(one_patch(i, a, b))
    return tuple(min(grouped, per_patch, key=len))


def accumulators(image_shape, dtype, *, xp: Any = None, acc_dtype=None) -> tuple[Any, Any]:
    """Zeroed accumulators for stitching patches of ``dtype`` into an image of ``image_shape``.

    Parameters
    ----------
    image_shape : (batch, height, width, channels)
        The stitched image (``channels`` are the patches', e.g. a model's outputs).
    dtype : dtype
        The patches' dtype.
    xp : module, optional
        ``cupy`` (default) or ``numpy``.
    acc_dtype : dtype, optional
        Of the sums: float64 by default (complex128 for complex patches), which makes
        :func:`finish_mean` exact where patches agree; float32 halves the traffic and is not exact.

    Returns
    -------
    sums, weights_sum
        ``sums[batch, height, width, channels]`` and ``weights_sum[height, width]`` (float64).
    """
    xp = import_cupy() if xp is None else xp
    b, h, w, c = (int(d) for d in image_shape)
    if acc_dtype is None:
        acc_dtype = np.complex128 if np.dtype(dtype).kind == "c" else np.float64
    return xp.zeros((b, h, w, c), dtype=acc_dtype), xp.zeros((h, w), dtype=np.float64)


def accumulate(sums: Any, weights_sum: Any, patches: Any, spec: PatchSpec, rows: slice, *,
               cols: slice | None = None, weights: Any = None) -> None:
    """Add a rectangle of patches, weighted, into ``sums`` and their weights into ``weights_sum``.

    Parameters
    ----------
    sums, weights_sum : arrays
        From :func:`accumulators`: ``[batch, h, w, channels]`` and ``[h, w]``, on one device.
    patches : array
        ``[batch, len(rows), len(cols), kh * kw * channels]`` in TensorFlow's layout: grid rows
        ``rows`` and columns ``cols`` of the patches of an ``(h, w)`` image under ``spec`` (a host
        array is copied to the device of ``sums``).
    spec : PatchSpec
    rows : slice
        Grid rows the patches are.
    cols : slice, optional
        Grid columns; all by default.
    weights : array, optional
        ``[kh, kw]`` weight of every tap (e.g. :func:`patchkit.stitch.blend_weights`); all 1 (a mean)
        by default. Taps that sample padding are dropped.

    Raises
    ------
    PatchkitValueError
        ``patches`` or ``weights`` of the wrong shape.
    """
    xp = _module_of(sums, "sums")
    b, h, w, c = sums.shape
    kh, kw = spec.sizes
    oh, ow = spec.grid_shape((h, w))
    r0, r1 = _span(rows, oh, "rows")
    c0, c1 = _span(cols if cols is not None else slice(0, ow), ow, "cols")
    patches = xp.asarray(patches)
    expected = (b, r1 - r0, c1 - c0, kh * kw * c)
    if tuple(patches.shape) != expected:
        raise PatchkitValueError(
            f"patches have shape {tuple(patches.shape)}, but grid rows [{r0}, {r1}) and columns [{c0}, {c1}) "
            f"of {spec} into sums of shape {tuple(sums.shape)} need {expected}"
        )
    if weights is not None:
        weights = xp.asarray(weights, dtype=weights_sum.dtype)
        if tuple(weights.shape) != (kh, kw):
            raise PatchkitValueError(f"weights have shape {tuple(weights.shape)}; patches of {spec.sizes} need {(kh, kw)}")
    p6 = patches.reshape(b, r1 - r0, c1 - c0, kh, kw, c)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and inf patches (numpy only; CuPy never warns)
        for rs in _axis_steps(spec, (h, w), 0, r0, r1):
            for cs in _axis_steps(spec, (h, w), 1, c0, c1):
                _add_step(xp, sums, weights_sum, p6, weights, spec, rs, cs, r0, c0)


def _add_step(xp, sums, weights_sum, p6, weights, spec: PatchSpec, rs: _Step, cs: _Step, r0: int, c0: int) -> None:
    """One vectorised addition: row step ``rs`` × column step ``cs`` of the patches ``p6`` (grid from ``r0, c0``)."""
    b, c = sums.shape[0], sums.shape[3]
    (sr, sc), (rr, rc) = spec.strides, spec.rates
    ss, ws = sums.strides, weights_sum.strides
    as_strided = xp.lib.stride_tricks.as_strided
    values = p6[:, rs.p0 - r0 : rs.p1 - r0, cs.p0 - c0 : cs.p1 - c0, rs.t0 : rs.t1, cs.t0 : cs.t1]
    values = values.transpose(0, 1, 3, 2, 4, 5)  # [b, row patches, row taps, col patches, col taps, c]
    grid = (rs.p1 - rs.p0, rs.t1 - rs.t0, cs.p1 - cs.p0, cs.t1 - cs.t0)
    target = as_strided(sums[:, rs.start :, cs.start :], shape=(b,) + grid + (c,),
                        strides=(ss[0], sr * ss[1], rr * ss[1], sc * ss[2], rc * ss[2], ss[3]))
    wsum = as_strided(weights_sum[rs.start :, cs.start :], shape=grid,
                      strides=(sr * ws[0], rr * ws[0], sc * ws[1], rc * ws[1]))
    if weights is None:
        target += values
        wsum += 1.0
    else:
        tap = weights[rs.t0 : rs.t1, cs.t0 : cs.t1][None, :, None, :]
        target += values * tap[None, ..., None]
        wsum += tap


def _span(rows: slice, n: int, name: str) -> tuple[int, int]:
    start, stop, step = rows.indices(n)
    if step != 1 or stop <= start:
        raise PatchkitValueError(f"{name}={rows!r} must be a non-empty contiguous slice of the grid's {n} {name}")
    return start, stop


def finish_mean(sums: Any, weights_sum: Any, dtype, *, fill_value: Any = None, out: Any = None) -> Any:
    """``sums / weights_sum`` in ``dtype`` (integers rounded), ``fill_value`` where no patch wrote.

    As :func:`patchkit.stitch` does: multiplied by the reciprocal weight in the accumulators' type,
    then rounded to ``dtype``. Temporaries: two arrays of the sums' size.

    Parameters
    ----------
    sums, weights_sum : arrays
        Filled by :func:`accumulate`.
    dtype : dtype
        Of the result (the patches').
    fill_value : scalar, optional
        Default NaN for floats and complex, 0 for integers and bool.
    out : array, optional
        ``sums``-shaped, of ``dtype``.

    Returns
    -------
    array
        ``[batch, h, w, channels]``.
    """
    xp = _module_of(sums, "sums")
    dtype = np.dtype(dtype)
    covered = weights_sum > 0
    scale = 1.0 / xp.where(covered, weights_sum, 1.0)
    if out is None:
        out = xp.empty(sums.shape, dtype=dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        mean = sums * scale[None, :, :, None]
        if dtype.kind in "iub":
            mean = xp.rint(mean)
        xp.copyto(out, mean, casting="unsafe")
    if fill_value is None:
        fill_value = np.nan if dtype.kind in "fc" else 0
    fill = xp.asarray(np.asarray(fill_value).astype(dtype))
    out[...] = xp.where(covered[None, :, :, None], out, fill)
    return out


def stitch_mean(patches: Any, spec: PatchSpec, image_shape, *, weights: Any = None, fill_value: Any = None,
                xp: Any = None) -> Any:
    """The image ``patches`` (``[batch, out_rows, out_cols, kh * kw * channels]``) were cut from, on the device.

    :func:`accumulators`, :func:`accumulate` of the whole grid and :func:`finish_mean` in one call:
    the device counterpart of ``patchkit.stitch(patches, "mean", spec=spec, image_shape=image_shape)``
    (with ``weights``, of a weighted blend). ``image_shape`` is ``(batch, h, w, channels)``.
    """
    if xp is None:
        xp = import_cupy() if isinstance(patches, np.ndarray) else _module_of(patches, "patches")
    sums, weights_sum = accumulators(image_shape, patches.dtype, xp=xp)
    accumulate(sums, weights_sum, patches, spec, slice(0, spec.grid_shape(image_shape)[0]), weights=weights)
    return finish_mean(sums, weights_sum, patches.dtype, fill_value=fill_value)
