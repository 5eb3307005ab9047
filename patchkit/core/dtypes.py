"""The element types patchkit accepts: exactly those of ``tf.image.extract_patches``, and bool."""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedDtypeError

__all__ = ["SUPPORTED_DTYPES", "check_dtype"]

#: dtype names ``tf.image.extract_patches`` declares (TensorFlow has no CPU kernel for bool).
SUPPORTED_DTYPES = (
    "bfloat16",
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "complex64",
    "complex128",
    "bool",
)


def check_dtype(dtype, name: str = "images") -> np.dtype:
    """Return ``dtype`` as a numpy dtype, or raise when TensorFlow's op would not accept it.

    ``bfloat16`` is the ``ml_dtypes`` type that TensorFlow's ``.numpy()`` returns. Byte order is
    normalised away only by the caller; a non-native dtype is accepted here (numpy copies it bit for bit).

    Raises
    ------
    UnsupportedDtypeError
        For object, string, datetime, structured, ``longdouble`` and other dtypes.
    """
    try:
        dt = np.dtype(getattr(dtype, "as_numpy_dtype", dtype))
    except TypeError as exc:
        raise UnsupportedDtypeError(
            f"{name} has dtype {dtype!r}, which is not a numpy dtype; "
            f"convert it to one of {', '.join(SUPPORTED_DTYPES)}"
        ) from exc
    if dt.name not in SUPPORTED_DTYPES:
        shown = getattr(dtype, "name", None) if hasattr(dtype, "as_numpy_dtype") else None  # TensorFlow's name
        raise UnsupportedDtypeError(
            f"{name} has dtype {shown or dt} ({dt.kind!r} kind), which tf.image.extract_patches does not accept; "
            f"convert it first, e.g. images.astype('float32'). Supported: {', '.join(SUPPORTED_DTYPES)}"
        )
    return dt
