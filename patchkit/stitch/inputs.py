"""stitch's arguments: what the patches are, the spec and image shape (given, or recorded by extraction),
and the value of pixels no patch reaches."""

from __future__ import annotations

import operator
import warnings
from typing import Any, Mapping

import numpy as np

from ..core.spec import PatchSpec
from ..errors import PatchkitTypeError, PatchkitValueError, shown
from ..labelled.labels import recorded_spec

__all__ = ["is_labelled", "resolve_geometry", "fill_for", "sum_fill"]


def is_labelled(patches: Any) -> bool:
    """Whether ``patches`` is a DataArray; a Dataset is refused."""
    if not (type(patches).__module__ or "").startswith("xarray"):
        return False
    if not hasattr(patches, "variable"):
        raise PatchkitTypeError(
            f"patches is a {type(patches).__name__}; stitch takes one DataArray: pass ds[name] for each "
            "variable, e.g. {name: stitch(ds[name]) for name in ds.data_vars}"
        )
    return True


def resolve_geometry(patches, spec, image_shape, labelled):
    """The spec, ``(h, w)`` and the optional ``(batch, channels)``: explicit arguments first, then the record."""
    recorded = None
    if labelled and (spec is None or image_shape is None):
        try:
            recorded = recorded_spec(patches)
        except PatchkitValueError as err:
            raise PatchkitValueError(
                f"{err}; e.g. stitch(patches, spec=PatchSpec(256, 128), image_shape=(height, width))"
            ) from None
    if recorded is None and (spec is None or image_shape is None):
        missing = " and ".join(n for n, v in (("spec", spec), ("image_shape", image_shape)) if v is None)
        raise PatchkitValueError(
            f"{missing} is required for patches that are not a patchkit DataArray (got a {type(patches).__name__}); "
            "pass e.g. spec=PatchSpec(256, 128, padding='SAME'), image_shape=(height, width)"
        )
    spec = _as_spec(spec) if spec is not None else recorded[0]
    shape, batch_channels = _image_shape(image_shape) if image_shape is not None else (recorded[1], None)
    return spec, tuple(shape), batch_channels


def _as_spec(spec: Any) -> PatchSpec:
    if isinstance(spec, PatchSpec):
        return spec
    if isinstance(spec, Mapping):
        return PatchSpec.from_dict(spec)  # names a missing key, and what to add
    raise PatchkitTypeError(
        f"spec={shown(spec)} (a {type(spec).__name__}) is not a PatchSpec; pass PatchSpec(sizes, strides, rates, padding) "
        "or a dict with those keys"
    )


def _image_shape(image_shape: Any) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """``(h, w)`` and, for a 4-D shape, ``(batch, channels)``: positive integers (integral floats too)."""
    try:
        dims = tuple(_dimension(d) for d in image_shape)
    except (TypeError, ValueError, OverflowError):
        dims = ()
    if len(dims) not in (2, 4) or min(dims) < 1:
        raise PatchkitValueError(
            f"image_shape={shown(image_shape)} must be (height, width) or (batch, height, width, channels) of "
            "positive integers, e.g. image_shape=da.shape[-2:] of the image the patches were cut from"
        )
    return (dims[-3:-1] if len(dims) == 4 else dims), ((dims[0], dims[3]) if len(dims) == 4 else None)


def _dimension(value: Any) -> int:
    """An image dimension as an int; bools, fractions, NaN and infinity raise :class:`PatchkitValueError` (a ValueError)."""
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (str, bytes)):
        raise PatchkitValueError(value)
    if isinstance(value, (float, np.floating)):
        if not float(value).is_integer():  # NaN and infinity are not integers either
            raise PatchkitValueError(value)
        return int(value)
    return operator.index(value)


def fill_for(fill_value: Any, dtype: np.dtype, source: Any) -> Any:
    """The value uncovered pixels get, in ``dtype``: given, else the source's nodata, else NaN or 0."""
    given = fill_value is not None
    if not given:
        from ..labelled.nodata import nodata_values

        found = nodata_values(source) if hasattr(source, "attrs") else ()
        fill_value = found[0] if found else (np.nan if dtype.kind in "fc" else 0)
    cast = _cast_scalar(fill_value, dtype)
    if cast is None:
        raise PatchkitValueError(
            f"fill_value={shown(fill_value)}{'' if given else ' (the source nodata)'} does not fit the patches' dtype "
            f"{dtype}; pass a single number that {dtype} holds exactly, e.g. fill_value=0"
        )
    return cast[()]


def _cast_scalar(value: Any, dtype: np.dtype) -> np.ndarray | None:
    """``value`` as a 0-d array of ``dtype`` when it is a number that ``dtype`` holds exactly (NaN as NaN), else None."""
    try:
        given = np.asarray(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if given.ndim != 0 or given.dtype.kind not in "biufc":
        return None
    with np.errstate(invalid="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        try:
            cast = given.astype(dtype)
        except (TypeError, ValueError, OverflowError):
            return None
        same = bool(cast == given) or bool(cast != cast and given != given)
    return cast if same else None


def sum_fill(fill_value: Any, dtype: np.dtype) -> Any:
    """0 in ``dtype``, the value ``"sum"`` gives pixels no patch samples; a ``fill_value`` other than 0 is refused."""
    zero = None if fill_value is None else _cast_scalar(fill_value, np.dtype(np.complex128))
    if fill_value is not None and (zero is None or zero != 0):
        raise PatchkitValueError(
            f"fill_value={shown(fill_value)} does not apply to blend='sum': pixels that no patch samples get 0, the "
            "gradient of extraction there; drop fill_value, or use blend='mean' to fill them"
        )
    return np.zeros((), dtype)[()]

