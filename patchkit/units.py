"""Byte counts: parse ``max_memory`` strings such as ``"512MiB"`` and format sizes for messages."""

from __future__ import annotations

import re

from .errors import InvalidMemoryError

__all__ = ["parse_bytes", "format_bytes"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: int | float | str, name: str = "max_memory") -> int:
    """Return ``value`` as a whole number of bytes.

    Parameters
    ----------
    value : int, float or str
        A positive number of bytes, or a string with a decimal (``kB``, ``MB``, ``GB``, ``TB``) or
        binary (``KiB``, ``MiB``, ``GiB``, ``TiB``) unit, case-insensitive: ``"512MiB"``, ``"2GB"``,
        ``"1.5 GiB"``. Fractions of a byte are rounded down.
    name : str
        The argument's name, used in the error message.

    Raises
    ------
    InvalidMemoryError
        When ``value`` is not positive, not a number, or has an unknown unit.
    """
    if isinstance(value, bool):
        raise InvalidMemoryError(
            f"{name}={value!r} is not a number of bytes; pass an integer or a string such as '512MiB'"
        )
    if isinstance(value, str):
        match = _PATTERN.match(value)
        unit = match.group(3).lower() if match else None
        if match is None or unit not in _UNITS:
            raise InvalidMemoryError(
                f"{name}={value!r} does not parse as a number of bytes; use an integer or a number "
                "with a unit such as '512MiB', '2GB' or '1.5GiB'"
            )
        number = float(match.group(1)) * 10 ** int(match.group(2) or 0)
        nbytes = int(number * _UNITS[unit])
    elif isinstance(value, (int, float)) or hasattr(value, "__index__"):
        nbytes = int(value)
    else:
        raise InvalidMemoryError(
            f"{name}={value!r} (a {type(value).__name__}) is not a number of bytes; "
            "pass an integer or a string such as '512MiB'"
        )
    if nbytes <= 0:
        raise InvalidMemoryError(f"{name}={value!r} must be a positive number of bytes, such as '512MiB'")
    return nbytes


def format_bytes(nbytes: int | float) -> str:
    """Format ``nbytes`` with a binary unit for messages: ``format_bytes(3 * 2**20) == '3.00 MiB'``."""
    nbytes = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{int(nbytes)} B" if unit == "B" else f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")
