"""Fuzzing the entry points with arbitrary arguments: every call equals the reference or raises a PatchkitError.

Arguments are drawn from everything a caller might pass, not only valid specs: integers of any size
(0, negative, beyond int32 and int64), floats (NaN, infinity, fractions, integral ones), strings,
bytes, None, bools, containers of any length, paddings of any text. The reference is TensorFlow's
``tf.image.extract_patches`` where it is installed, else the brute-force numpy extraction below,
whose geometry is TensorFlow's documented rule written out here (not :mod:`patchkit.core.spec`). Stitching
is checked against a brute-force accumulation over the same geometry.

The memory patchkit believes available is held at :data:`AVAILABLE` for the whole module, so that
huge (but legal) requests, such as a ``SAME`` kernel of two billion pixels, must be refused at once
by their size (``OutputTooLargeError``/``BudgetTooSmallError``) and every example stays fast.
"""

from __future__ import annotations

import math
import operator
import time
from typing import Any, NamedTuple

import numpy as np
import pytest
import xarray as xr
from hypothesis import event, given
from hypothesis import strategies as st

import patchkit
from patchkit.errors import BudgetTooSmallError, KernelTooLargeError, OutputTooLargeError, PatchkitError

#: What patchkit sees as available memory in this module: requests beyond it must be refused.
AVAILABLE = 16 * 2**20
#: Results below this size (whose padded image is below it too) must be computed, never refused.
SMALL_OUTPUT = 2**20
#: No example may take longer than this (seconds), whatever its arguments.
BOUND = 10.0
#: Budgets under which any small request fits.
AMPLE = ("512MiB", "4EiB")
#: Errors that only a request too large for memory (or for its budget) may raise.
SIZE_ERRORS = (OutputTooLargeError, BudgetTooSmallError)


@pytest.fixture(autouse=True, scope="module")
def _little_memory():
    """patchkit believes :data:`AVAILABLE` bytes are available (huge legal requests must be refused)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(patchkit.core.budget, "available_memory", lambda: AVAILABLE)
        yield


@pytest.fixture(scope="module")
def reference(request):
    """``reference(image, spec)``: TensorFlow's patches (or None when TF refuses), else the numpy brute force."""
    try:
        tf = request.getfixturevalue("tf")
    except pytest.skip.Exception:
        return brute_force

    def with_tensorflow(image: np.ndarray, spec: "Spec") -> np.ndarray | None:
        (kh, kw), (sh, sw), (rh, rw) = spec.sizes, spec.strides, spec.rates
        if kh * kw * image.shape[3] >= 2**31:  # TensorFlow's depth overflows int32 (46341x46341 gives 9266)
            return brute_force(image, spec)
        try:
            out = tf.image.extract_patches(image, [1, kh, kw, 1], [1, sh, sw, 1], [1, rh, rw, 1], spec.padding)
        except tf.errors.InvalidArgumentError:  # "Computed output size would be negative"
            return None
        return out.numpy()

    return with_tensorflow


# --------------------------------------------------------------------------------------------------
# The reference: arguments and geometry as TensorFlow documents them, written out independently
# --------------------------------------------------------------------------------------------------


class Spec(NamedTuple):
    sizes: tuple[int, int]
    strides: tuple[int, int]
    rates: tuple[int, int]
    padding: str


def reference_int(item: Any) -> int | None:
    """An integer TensorFlow takes (integral floats included, bools not), or None."""
    if isinstance(item, (bool, np.bool_)):
        return None
    if isinstance(item, (float, np.floating)):
        return int(item) if math.isfinite(item) and float(item).is_integer() else None
    try:
        return operator.index(item)
    except TypeError:
        return None


def reference_pair(value: Any) -> tuple[int, int] | None:
    """``k``, ``(rows, cols)`` or ``[1, rows, cols, 1]`` as ``(rows, cols)`` of values in 1 .. 2**31 - 1, or None."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (tuple, list)):
        items = [reference_int(v) for v in value]
        if None in items or len(items) not in (2, 4) or (len(items) == 4 and (items[0], items[3]) != (1, 1)):
            return None
        pair = tuple(items[-3:-1]) if len(items) == 4 else tuple(items)
    else:
        one = reference_int(value) if not isinstance(value, (str, bytes, dict, set)) else None
        pair = None if one is None else (one, one)
    return pair if pair is not None and all(1 <= v <= 2**31 - 1 for v in pair) else None


def reference_spec(sizes, strides, rates, padding) -> Spec | None:
    """The spec TensorFlow would run, or None for arguments it refuses."""
    if isinstance(padding, bytes):
        padding = padding.decode("utf-8", "replace")
    pairs = [reference_pair(v) for v in (sizes, strides, rates)]
    if None in pairs or not isinstance(padding, str) or padding.upper() not in ("VALID", "SAME"):
        return None
    return Spec(*pairs, padding.upper())


def axis_geometry(n: int, k: int, s: int, r: int, padding: str) -> tuple[int, int] | None:
    """``(out, pad_before)`` along an axis, as TensorFlow's kernel computes them; None where it refuses."""
    ke = (k - 1) * r + 1
    if padding == "SAME":
        out = -(-n // s)
        return out, max((out - 1) * s + ke - n, 0) // 2
    if n - ke + s <= -s:  # "Computed output size would be negative"
        return None
    return max(n - ke + s, 0) // s, 0


def geometry(shape: tuple[int, ...], spec: Spec):
    """``((oh, top), (ow, left))`` for an image ``[b, h, w, c]``, or None where TensorFlow refuses."""
    axes = [axis_geometry(n, k, s, r, spec.padding) for n, k, s, r in zip(shape[1:3], spec.sizes, spec.strides, spec.rates)]
    return None if None in axes else tuple(axes)


def brute_force(image: np.ndarray, spec: Spec) -> np.ndarray | None:
    """Patch ``(i, j)`` tap ``(a, b)`` reads pixel ``(i s - top + a r, j s - left + b r)``; outside it is 0."""
    found = geometry(image.shape, spec)
    if found is None:
        return None
    (oh, top), (ow, left) = found
    b, h, w, c = image.shape
    (kh, kw), (sh, sw), (rh, rw) = spec.sizes, spec.strides, spec.rates
    ys = np.arange(oh)[:, None] * sh - top + np.arange(kh)[None, :] * rh  # [oh, kh]
    xs = np.arange(ow)[:, None] * sw - left + np.arange(kw)[None, :] * rw  # [ow, kw]
    padded = np.zeros((b, h + 1, w + 1, c), image.dtype)  # row h and column w stand for every padded cell
    padded[:, :h, :w] = image
    yi, xi = np.where((ys >= 0) & (ys < h), ys, h), np.where((xs >= 0) & (xs < w), xs, w)
    out = padded[:, yi[:, None, :, None], xi[None, :, None, :]]  # [b, oh, ow, kh, kw, c]
    return out.reshape(b, oh, ow, kh * kw * c)


def output_bytes(shape: tuple[int, ...], spec: Spec, itemsize: int) -> int | None:
    found = geometry(shape, spec)
    if found is None:
        return None
    (oh, _), (ow, _) = found
    return shape[0] * oh * ow * spec.sizes[0] * spec.sizes[1] * shape[3] * itemsize


def is_small(shape: tuple[int, ...], spec: Spec, itemsize: int) -> bool:
    """Whether patchkit must compute the result (never refuse it by its size): a small output whose image,
    padded out to the kernel's reach, is small too (patchkit pads edge regions in copies, and counts them)."""
    b, h, w, c = shape
    reach = [(k - 1) * r + 1 + n for k, r, n in zip(spec.sizes, spec.rates, (h, w))]
    nbytes = output_bytes(shape, spec, itemsize)
    return nbytes is not None and nbytes <= SMALL_OUTPUT and b * c * itemsize * reach[0] * reach[1] <= SMALL_OUTPUT


# --------------------------------------------------------------------------------------------------
# Strategies: anything at all, with enough valid values mixed in to reach the extraction
# --------------------------------------------------------------------------------------------------

huge_ints = st.one_of(
    st.integers(-3, 40),
    st.integers(-(2**80), 2**80),
    st.sampled_from([0, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 10**12, 2 * 10**8, 46341, 10**4000]),
)
odd_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([2.0, 3.0, 1.5, -1.0, 1e300]))
odd_scalars = st.one_of(
    huge_ints, odd_floats, st.text(max_size=5), st.binary(max_size=3), st.none(), st.booleans(),
    st.sampled_from([np.int64(3), np.float32(2.0), np.uint8(0), np.bool_(True), np.float64("nan"), 1 + 2j]),
)
odd_values = st.one_of(
    odd_scalars,
    st.lists(odd_scalars, max_size=5).map(tuple),
    st.lists(odd_scalars, max_size=5),
    st.just(()),
    st.sampled_from([{1: 2}, {3}, np.array([[2, 2]]), np.array([2, 3])]),
)
small = st.integers(1, 6)
valid_pairs = st.one_of(
    small, st.tuples(small, small), st.tuples(small, small).map(lambda p: [1, p[0], p[1], 1]),
    st.tuples(small, small).map(lambda p: (float(p[0]), float(p[1]))),
    st.tuples(small, small).map(np.array),
)
#: Legal but large: kernels of up to 2**31 - 1 pixels, which SAME padding accepts on any image.
large_pairs = st.one_of(st.integers(1, 2**31 - 1), st.tuples(st.integers(1, 10**6), small), st.sampled_from([46341, 2**31 - 1]))
good_pairs = st.one_of(valid_pairs, valid_pairs, valid_pairs, large_pairs)
good_paddings = st.sampled_from(["VALID", "SAME", "same", "Valid", b"SAME"])
odd_paddings = st.one_of(st.text(max_size=6), st.binary(max_size=4), st.none(), huge_ints, st.sampled_from(["SAMEE", "VALID ", ""]))
good_memories = st.one_of(st.sampled_from(AMPLE), st.sampled_from(AMPLE), st.sampled_from(["64KiB", "1.5 MiB"]),
                          st.integers(1, 2**63 - 1))
odd_memories = st.one_of(
    st.sampled_from(["1e999", "inf", "nan", "-1", "0", "1e300", "lots", "1e-9", "9EiB", "2**30"]),
    st.integers(-(2**70), 0), st.integers(2**63, 2**70), odd_floats, st.none(), st.text(max_size=4), st.booleans(),
)
dtypes = st.sampled_from(["float32", "float64", "int32", "uint8", "int64", "float16"])


@st.composite
def arguments(draw, good: dict, odd: dict) -> dict:
    """One value per name: from ``good``, but from ``odd`` for a drawn set of names (often none or one)."""
    names = st.sampled_from(list(good))
    hostile = draw(st.one_of(st.just(set()), st.sets(names, max_size=1), st.sets(names, max_size=len(good))))
    return {name: draw(odd[name] if name in hostile else good[name]) for name in good}


SPEC_NAMES = ("sizes", "strides", "rates", "padding")
spec_arguments = arguments(
    dict(sizes=good_pairs, strides=good_pairs, rates=st.one_of(valid_pairs, valid_pairs, large_pairs), padding=good_paddings),
    dict(sizes=odd_values, strides=odd_values, rates=odd_values, padding=odd_paddings),
).map(lambda args: tuple(args[name] for name in SPEC_NAMES))
memories = st.one_of(good_memories, good_memories, odd_memories)


dtypes = st.sampled_from(["float32", "float64", "int32", "uint8", "int64", "float16"])


@st.composite
def images(draw, min_side: int = 0) -> np.ndarray:
    b, h, w, c = draw(st.integers(1, 2)), draw(st.integers(min_side, 24)), draw(st.integers(min_side, 24)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return (rng.random((b, h, w, c)) * 200).astype(draw(dtypes))


def timed(call) -> tuple[Any, BaseException | None]:
    """``call()``'s result (or the exception it raised), checked to come back within :data:`BOUND` seconds."""
    start = time.perf_counter()
    try:
        result, error = call(), None
    except Exception as err:  # the test decides which errors are allowed
        result, error = None, err
    assert time.perf_counter() - start < BOUND, "an example took longer than the bound"
    return result, error


def check_outcome(result, error, valid: bool, must_compute: bool, expected) -> None:
    """The rules every example follows.

    Arguments TensorFlow (or patchkit's documented contract) refuses must raise a PatchkitError. Valid
    ones return ``expected()`` exactly, or (unless ``must_compute``: the request is small) raise an
    error about size only (``OutputTooLargeError``, ``BudgetTooSmallError``). Nothing else is raised.
    """
    if error is not None and not isinstance(error, PatchkitError):
        raise AssertionError(f"raised {type(error).__name__}, not a PatchkitError: {error}") from error
    event(f"{'valid' if valid else 'invalid'}: {'result' if error is None else type(error).__name__}")
    if not valid:
        assert error is not None, "arguments the reference refuses returned a result"
        return
    if error is not None:
        if must_compute or not isinstance(error, SIZE_ERRORS):
            raise AssertionError(f"refused a valid request with {type(error).__name__}: {error}") from error
        return
    np.testing.assert_array_equal(np.asarray(result), expected(), strict=True)


def reference_memory(value: Any) -> bool:
    """Whether ``value`` is a budget patchkit documents: a number of at least 1 and at most 2**63 - 1 bytes
    (floats rounded down), or one of the valid strings drawn."""
    if isinstance(value, str):
        return value in ("512MiB", "64KiB", "1.5 MiB", "4EiB")
    if isinstance(value, float):
        return math.isfinite(value) and 1 <= int(value) <= 2**63 - 1
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 2**63 - 1


# --------------------------------------------------------------------------------------------------
# extract_patches, extract_image_patches, iter_patches
# --------------------------------------------------------------------------------------------------


@given(images(), spec_arguments, st.booleans())
def test_extract_patches_equals_the_reference_or_raises(reference, image, args, tf1):
    """extract_patches (and TF1's extract_image_patches) on any arguments: TensorFlow's result or a PatchkitError."""
    sizes, strides, rates, padding = args
    if tf1:
        result, error = timed(lambda: patchkit.extract_image_patches(image, ksizes=sizes, strides=strides, rates=rates,
                                                                     padding=padding))
        rates, padding = 1 if rates is None else rates, "VALID" if padding is None else padding
    else:
        result, error = timed(lambda: patchkit.extract_patches(image, sizes, strides, rates, padding))
    spec = reference_spec(sizes, strides, rates, padding)
    valid = spec is not None and geometry(image.shape, spec) is not None
    must = valid and is_small(image.shape, spec, image.itemsize)
    check_outcome(result, error, valid, must, lambda: reference(image, spec))


@given(st.one_of(images(min_side=1), images()), spec_arguments, memories)
def test_iter_patches_equals_the_reference_or_raises(reference, image, args, max_memory):
    """iter_patches on any arguments and budgets: its bands make up TensorFlow's result, or it raises a PatchkitError."""
    sizes, strides, rates, padding = args
    def run():
        bands = [(rows, np.array(block)) for rows, block in patchkit.iter_patches(image, sizes, strides, rates, padding,
                                                                                  max_memory=max_memory)]
        assert [r.start for r, _ in bands] == [0] + [r.stop for r, _ in bands[:-1]], "bands do not follow each other"
        return np.concatenate([block for _, block in bands], axis=1)

    result, error = timed(run)
    spec = reference_spec(sizes, strides, rates, padding)
    nbytes = None if spec is None else output_bytes(image.shape, spec, image.itemsize)
    valid = bool(nbytes) and reference_memory(max_memory)  # no empty images, no kernel that leaves no patch
    must = valid and max_memory in AMPLE and is_small(image.shape, spec, image.itemsize)
    check_outcome(result, error, valid, must, lambda: reference(image, spec))


# --------------------------------------------------------------------------------------------------
# The accessor
# --------------------------------------------------------------------------------------------------


def as_dataarray(image: np.ndarray) -> xr.DataArray:
    """The first image of ``image`` as ``(band, y, x)`` with regular coordinates, as rioxarray opens rasters."""
    _, h, w, c = image.shape
    return xr.DataArray(image[0].transpose(2, 0, 1), dims=("band", "y", "x"),
                        coords={"band": np.arange(1, c + 1), "y": 100.0 - 10.0 * np.arange(h), "x": 10.0 * np.arange(w)})


def as_tf_layout(patches: xr.DataArray) -> np.ndarray:
    """A labelled grid of patches as TensorFlow's ``[1, rows, cols, kh * kw * c]``."""
    ordered = patches.transpose("patch_row", "patch_col", "y", "x", "band").values
    return ordered.reshape((1,) + ordered.shape[:2] + (-1,))


fractions = st.one_of(st.none(), st.none(), st.none(), st.floats(0, 1), odd_scalars)


def reference_fraction(value: Any) -> bool:
    """Whether ``value`` is a share of nodata: a real number in [0, 1] (not a bool), or None."""
    if value is None:
        return True
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        return 0.0 <= float(value) <= 1.0
    except (TypeError, ValueError, OverflowError):
        return False


@given(images(min_side=1), spec_arguments, memories, fractions, st.booleans(), st.booleans())
def test_accessor_equals_the_reference_or_raises(reference, image, args, max_memory, fraction, iterate, chunked):
    """DataArray.patches.extract and .iter (eager or dask-backed, filtered or not) on any arguments: the
    patches of TensorFlow's result, each at its place, or a PatchkitError."""
    sizes, strides, rates, padding = args
    image = image[:1]
    da = as_dataarray(image)
    da = da.chunk({"y": 5}) if chunked else da

    def run():
        if iterate:
            bands = [band.copy(deep=True)  # a band may be a view of a buffer the next one reuses
                     for band in da.patches.iter(sizes, strides, rates, padding, max_memory=max_memory,
                                                 max_nodata_fraction=fraction)]
            return xr.concat(bands, dim="patch" if fraction is not None else "patch_row") if bands else "no band"
        lazy = da.patches.extract(sizes, strides, rates, padding, max_nodata_fraction=fraction)
        return lazy.compute() if lazy.nbytes <= AVAILABLE else lazy  # a large lazy result is only built

    result, error = timed(run)
    if error is None and not isinstance(result, str) and not isinstance(result.data, np.ndarray):
        assert chunked and not iterate, "only a dask-backed extract may return a lazy result"
        found = geometry(image.shape, reference_spec(sizes, strides, rates, padding))
        assert found is not None and "patch" in result.dims or result.shape[:2] == (found[0][0], found[1][0])
        return  # a large lazy result is only built here; small ones are computed and compared
    spec = reference_spec(sizes, strides, rates, padding)
    nbytes = None if spec is None else output_bytes(image.shape, spec, image.itemsize)
    valid = bool(nbytes) and options_ok(fraction, max_memory, iterate)
    must = valid and (not iterate or max_memory in AMPLE) and is_small(image.shape, spec, image.itemsize)
    if isinstance(result, str):  # no band: a filter that kept no patch
        assert iterate and fraction is not None and valid
        return
    check_outcome(as_tf_layout_or_kept(result), error, valid, must, lambda: reference_or_kept(reference(image, spec), result))


def options_ok(fraction: Any, max_memory: Any, iterate: bool) -> bool:
    return reference_fraction(fraction) and (not iterate or reference_memory(max_memory))


def as_tf_layout_or_kept(result) -> np.ndarray | None:
    """A grid result in TensorFlow's layout; a filtered one as ``[kept, kh * kw * c]`` in its order."""
    if result is None:
        return None
    if "patch" in result.dims:
        depth = result.sizes["y"] * result.sizes["x"] * result.sizes["band"]
        return result.transpose("patch", "y", "x", "band").values.reshape(result.sizes["patch"], depth)
    return as_tf_layout(result)


def reference_or_kept(expected: np.ndarray, result) -> np.ndarray:
    """TensorFlow's result, or its patches at the (row, col) of every patch a filtered result kept."""
    if "patch" not in result.dims:
        return expected
    return expected[0, result["patch_row"].values, result["patch_col"].values]


# --------------------------------------------------------------------------------------------------
# stitch
# --------------------------------------------------------------------------------------------------


def reference_crop(crop: Any, sizes: tuple[int, int]) -> tuple[int, int] | None:
    pair = (crop, crop) if not isinstance(crop, (tuple, list)) else tuple(crop)
    if len(pair) != 2 or not all(isinstance(c, (int, np.integer)) and not isinstance(c, (bool, np.bool_)) for c in pair):
        return None
    return tuple(int(c) for c in pair) if all(0 <= c and 2 * c < k for c, k in zip(pair, sizes)) else None


def stitch_reference(patches: np.ndarray, spec: Spec, shape: tuple[int, int], blend: str, crop: tuple[int, int],
                     fill: float) -> np.ndarray | None:
    """Every kept tap added into (or, for "none", written onto) the pixel it sampled, row-major; then divided."""
    b, h, w, c = (patches.shape[0], *shape, None)
    found = geometry((b, h, w, 1), spec)
    (kh, kw), (sh, sw), (rh, rw) = spec.sizes, spec.strides, spec.rates
    if found is None or patches.shape[1:3] != (found[0][0], found[1][0]) or patches.shape[3] % (kh * kw):
        return None
    (oh, top), (ow, left) = found
    c = patches.shape[3] // (kh * kw)
    taps = patches.reshape(b, oh, ow, kh, kw, c)
    total, count, last = np.zeros((b, h, w, c)), np.zeros((h, w)), np.full((b, h, w, c), np.nan)
    for i in range(oh):
        for j in range(ow):
            for a in range(crop[0], kh - crop[0]):
                y = i * sh - top + a * rh
                for t in range(crop[1], kw - crop[1]):
                    x = j * sw - left + t * rw
                    if 0 <= y < h and 0 <= x < w:
                        total[:, y, x] += taps[:, i, j, a, t]
                        count[y, x] += 1
                        last[:, y, x] = taps[:, i, j, a, t]
    if blend == "sum":
        return total.astype(patches.dtype)
    value = last if blend == "none" else total / np.maximum(count, 1)[None, :, :, None]
    return np.where(count[None, :, :, None] > 0, value, fill).astype(patches.dtype)


good_blends = st.sampled_from(["mean", "sum", "none", "MEAN", "mean", "none"])
odd_blends = st.one_of(st.sampled_from(["cosine", "hann", ("tukey", 0.5), ("tukey",), (), ("x", 1), "boxcar", "sum "]),
                       odd_scalars, st.just(lambda kh, kw: "weights"), st.just(lambda kh, kw: -np.ones((kh, kw))))
good_crops = st.one_of(st.just(0), st.just(0), st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)))
good_fills = st.one_of(st.none(), st.none(), st.sampled_from([0, -1]))
odd_fills = st.one_of(st.sampled_from([float("nan"), 0.1, 2**70, "0", 1.5, 1 + 0j]), odd_values, st.lists(st.lists(small, max_size=3), max_size=3))
stitch_options = arguments(
    dict(blend=good_blends, crop=good_crops, fill=good_fills, max_memory=st.sampled_from(AMPLE)),
    dict(blend=odd_blends, crop=st.one_of(odd_values, st.integers(3, 2**70)), fill=odd_fills, max_memory=st.one_of(odd_memories, good_memories)),
)
geometry_overrides = arguments(
    dict(sizes=st.none(), strides=st.none(), padding=st.none(), image_shape=st.none()),
    dict(sizes=st.one_of(good_pairs, odd_values), strides=st.one_of(good_pairs, odd_values),
         padding=st.one_of(good_paddings, odd_paddings), image_shape=st.one_of(odd_values, st.tuples(small, small))),
)


def stitch_options_ok(blend: Any, crop2, fill: Any, max_memory: Any) -> bool:
    """Whether the options are ones the brute force covers: a simple blend, a crop that leaves a tap, a
    fill of 0 or -1 (0 for "sum") or none, and an ample budget."""
    if not (isinstance(blend, str) and blend.lower() in ("mean", "sum", "none")) or crop2 is None:
        return False
    fills = (0,) if blend.lower() == "sum" else (0, -1)
    plain = fill is None or (type(fill) is int and fill in fills)
    return plain and isinstance(max_memory, str) and max_memory in AMPLE


def reference_shape(value: Any) -> tuple[int, int] | None:
    """``(h, w)`` of an image_shape of 2 or 4 positive integers (integral floats too), or None."""
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 4):
        return None
    dims = [reference_int(d) for d in value]
    if None in dims or min(dims) < 1:
        return None
    return tuple(dims[-3:-1]) if len(dims) == 4 else tuple(dims)


@given(images(min_side=1).map(lambda im: im.astype(np.float32)), valid_pairs, valid_pairs, valid_pairs,
       st.sampled_from(["VALID", "SAME"]), geometry_overrides, stitch_options)
def test_stitch_equals_the_reference_or_raises(image, sizes, strides, rates, padding, overrides, options):
    """stitch of extracted patches with any spec, image_shape, blend, crop, fill_value and max_memory:
    the brute-force accumulation over the geometry it is given, or a PatchkitError."""
    spec_sizes, spec_strides, spec_padding, image_shape = (overrides[n] for n in ("sizes", "strides", "padding", "image_shape"))
    blend, crop, fill, max_memory = (options[n] for n in ("blend", "crop", "fill", "max_memory"))
    true = reference_spec(sizes, strides, rates, padding)
    if not output_bytes(image.shape, true, 1):
        return  # no patches to stitch (extraction itself is fuzzed above)
    patches = patchkit.extract_patches(image, sizes, strides, rates, padding)
    given_spec = {"sizes": sizes if spec_sizes is None else spec_sizes, "strides": strides if spec_strides is None else spec_strides,
                  "rates": rates, "padding": padding if spec_padding is None else spec_padding}
    shape = image.shape[1:3] if image_shape is None else image_shape
    result, error = timed(lambda: patchkit.stitch(patches, blend, spec=given_spec, image_shape=shape, crop=crop,
                                                  fill_value=fill, max_memory=max_memory))
    spec = reference_spec(given_spec["sizes"], given_spec["strides"], rates, given_spec["padding"])
    hw = reference_shape(shape)
    crop2 = None if spec is None else reference_crop(crop, spec.sizes)
    expected = None
    if spec is not None and hw is not None and stitch_options_ok(blend, crop2, fill, max_memory):
        expected = stitch_reference(patches, spec, hw, blend.lower(), crop2, np.nan if fill is None else fill)
        if expected is None or (len(shape) == 4 and tuple(reference_int(d) for d in (shape[0], shape[3]))
                                != (patches.shape[0], image.shape[3])):
            assert error is not None, "patches that do not match the spec or image_shape were stitched"
    event(f"{'compared' if expected is not None else 'unchecked options'}: {'result' if error is None else type(error).__name__}")
    if error is not None:
        assert isinstance(error, PatchkitError), f"raised {type(error).__name__}, not a PatchkitError: {error}"
        assert expected is None, f"refused a valid request: {type(error).__name__}: {error}"
        return
    assert hw is not None and result.shape[1:3] == hw
    if expected is not None:
        np.testing.assert_allclose(result, expected, rtol=1e-6, equal_nan=True, strict=True)


@given(images(min_side=1).map(lambda im: im[:1].astype(np.float64)), valid_pairs, valid_pairs, valid_pairs,
       st.sampled_from(["VALID", "SAME"]), stitch_options)
def test_stitch_of_labelled_patches_gives_back_the_image_or_raises(image, sizes, strides, rates, padding, options):
    """stitch of .patches.extract output with any blend, crop, fill_value and max_memory: with a simple
    blend, every pixel a kept tap samples comes back (times its count for "sum"), the rest is the
    fill; otherwise a DataArray of the source's shape or a PatchkitError."""
    use, crop, fill, max_memory = (options[n] for n in ("blend", "crop", "fill", "max_memory"))
    spec = reference_spec(sizes, strides, rates, padding)
    if not output_bytes(image.shape, spec, 1):
        return
    da = as_dataarray(image)
    patches = da.patches.extract(sizes, strides, rates, padding)
    result, error = timed(lambda: patchkit.stitch(patches, use, crop=crop, fill_value=fill, max_memory=max_memory))
    crop2 = reference_crop(crop, spec.sizes)
    simple = stitch_options_ok(use, crop2, fill, max_memory)
    event(f"{'compared' if simple else 'unchecked options'}: {'result' if error is None else type(error).__name__}")
    if error is not None:
        assert isinstance(error, PatchkitError), f"raised {type(error).__name__}, not a PatchkitError: {error}"
        assert not simple, f"refused a valid request: {type(error).__name__}: {error}"
        return
    assert result.dims == da.dims and result.shape == da.shape
    if simple:
        expected = stitch_reference(brute_force(image, spec), spec, image.shape[1:3], use.lower(), crop2,
                                    np.nan if fill is None else fill)
        np.testing.assert_allclose(result.transpose("y", "x", "band").values[None], expected, rtol=1e-12, equal_nan=True)
