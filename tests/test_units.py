"""parse_bytes and format_bytes: what max_memory accepts."""

import pytest

from patchkit.errors import InvalidMemoryError
from patchkit.units import format_bytes, parse_bytes


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
