"""parse_bytes and format_bytes: what max_memory accepts."""

import numpy as np
import pytest

from patchkit.errors import InvalidMemoryError
from patchkit.core.units import format_bytes, parse_bytes


@pytest.mark.parametrize(
    "value, expected",
    [
        (1024, 1024),
        ("512MiB", 512 * 2**20),
        ("2GB", 2 * 10**9),
        ("1.5 GiB", int(1.5 * 2**30)),
        ("64kib", 64 * 1024),
        ("1e6", 10**6),
        ("100", 100),
        (2.5e3, 2500),
    ],
)
def test_parse(value, expected):
    """Integers, floats and strings with decimal or binary units."""
    assert parse_bytes(value) == expected


@pytest.mark.parametrize(
    "value, match",
    [
        ("lots", r"max_memory='lots' does not parse"),
        ("12 parsecs", r"does not parse"),
        ("-5MB", r"does not parse"),
        (0, r"must be a positive number of bytes"),
        (-1, r"must be a positive"),
        (True, r"is not a number of bytes"),
        (None, r"max_memory=None \(a NoneType\)"),
        ([1], r"is not a number of bytes"),
    ],
)
def test_parse_rejects(value, match):
    """Bad budgets name the value and show the accepted forms."""
    with pytest.raises(InvalidMemoryError, match=match):
        parse_bytes(value)


def test_format():
    """Binary units with two decimals; plain bytes below 1 KiB."""
    assert format_bytes(3 * 2**20) == "3.00 MiB"
    assert format_bytes(12) == "12 B"
    assert format_bytes(5 * 2**40) == "5.00 TiB"


@pytest.mark.parametrize(
    "value, match",
    [
        ("1e999", r"max_memory='1e999' is more bytes than any machine holds \(at most 2\*\*63 - 1"),
        (float("inf"), r"max_memory=inf is not a finite number of bytes; pass the memory to use"),
        (float("nan"), r"max_memory=nan is not a finite number of bytes"),
        ("inf", r"max_memory='inf' does not parse"),
        ("nan GB", r"does not parse"),
        (1e300, r"is more bytes than any machine holds"),
        (2**63, r"is more bytes than any machine holds"),
        ("9EiB", r"is more bytes than any machine holds"),
        ("1e-999", r"must be a positive number of bytes"),
        (0.5, r"must be a positive number of bytes"),
        pytest.param(10**5000, r"max_memory=<an integer of 16610 bits> is more bytes", id="5000-digits"),
        ("x" * 500, r"max_memory='x+\.\.\.x+' does not parse"),
        (np.array([1, 2]), r"is not a number of bytes"),
        (np.bool_(True), r"is not a number of bytes"),
    ],
)
def test_parse_rejects_hostile_budgets(value, match):
    """Infinity, NaN, numbers beyond any memory, fractions of a byte and huge texts are refused by name,
    never as a raw OverflowError or ValueError (and never after building a huge number)."""
    with pytest.raises(InvalidMemoryError, match=match):
        parse_bytes(value)


@pytest.mark.parametrize(
    "value, expected",
    [("0.1GB", 10**8), ("4EiB", 4 * 2**60), ("2PB", 2 * 10**15), (2**63 - 1, 2**63 - 1), (np.float64(1e6), 10**6),
     (np.uint8(7), 7), ("1" + "0" * 18, 10**18)],
)
def test_parse_is_exact(value, expected):
    """Strings are parsed exactly (no float rounding), up to EiB; numpy scalars are numbers."""
    assert parse_bytes(value) == expected


def test_parse_names_the_argument():
    """The message names the argument it parses for."""
    with pytest.raises(InvalidMemoryError, match=r"^chunk_memory='inf'"):
        parse_bytes("inf", "chunk_memory")


def test_format_beyond_tib():
    """Sizes past TiB get PiB and EiB; numbers past a float are described by their power of two."""
    assert format_bytes(3 * 2**50) == "3.00 PiB"
    assert format_bytes(2**61) == "2.00 EiB"
    assert format_bytes(10**400) == "about 2**1328 B"
