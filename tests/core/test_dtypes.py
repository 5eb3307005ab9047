"""check_dtype: exactly TensorFlow's dtypes, and bool."""

import numpy as np
import pytest

from patchkit.core.dtypes import SUPPORTED_DTYPES, check_dtype
from patchkit.errors import UnsupportedDtypeError

from ..helpers import dtype_of


@pytest.mark.parametrize("name", SUPPORTED_DTYPES)
def test_accepts_tensorflow_dtypes(name):
    """Every dtype tf.image.extract_patches declares."""
    assert check_dtype(dtype_of(name)).name == name


@pytest.mark.parametrize("dtype", [object, "U3", "S2", "datetime64[s]", "timedelta64[ms]", np.longdouble, "V8"])
def test_rejects_others(dtype):
    """Objects, strings, datetimes, long double and raw bytes are refused with the list of dtypes."""
    with pytest.raises(UnsupportedDtypeError, match=r"images has dtype .* convert it first.*float32"):
        check_dtype(dtype)


def test_tensorflow_dtype_objects(tf):
    """A tf.DType is understood through its numpy equivalent."""
    assert check_dtype(tf.bfloat16).name == "bfloat16"
