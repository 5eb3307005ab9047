"""Byte counts: parse ``max_memory`` strings such as ``"512MiB"`` and format sizes for messages."""

from __future__ import annotations

import math
import operator
import re
from decimal import Decimal, localcontext

import numpy as np

from ..errors import InvalidMemoryError, shown

__all__ = ["parse_bytes", "format_bytes", "MAX_BYTES"]

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
    "p": 10**15,
    "pb": 10**15,
    "pib": 2**50,
    "e": 10**18,
    "eb": 10**18,
    "eib": 2**60,
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?\s*([a-zA-Z]*)\s*$")


#: The largest budget accepted: 8 EiB, beyond any machine's memory (and numpy's int64 byte counts).
MAX_BYTES = 2**63 - 1
_FORMS = "an integer number of bytes or a string such as '512MiB', '2GB' or '1.5GiB'"


def parse_bytes(value: int | float | str, name: str = "max_memory") -> int:
    """Return ``value`` as a whole number of bytes.

    Parameters
    ----------
    value : int, float or str
        A positive number of bytes, or a string with a decimal (``kB``, ``MB``, ``GB``, ``TB``) or
        binary (``KiB``, ``MiB``, ``GiB``, ``TiB``; up to ``EB``/``EiB``) unit, case-insensitive: ``"512MiB"``, ``"2GB"``,
        ``"1.5 GiB"``. Fractions of a byte are rounded down. At most :data:`MAX_BYTES` (8 EiB).
    name : str
        The argument's name, used in the error message.

    Raises
    ------
    InvalidMemoryError
        When ``value`` is not positive, not a finite number, larger than :data:`MAX_BYTES`, or has
        an unknown unit.
    """
    if isinstance(value, str):
        nbytes = _parse_text(value, name)
    else:
        nbytes = _parse_number(value, name)
    if nbytes <= 0:
        raise InvalidMemoryError(f"{name}={shown(value)} must be a positive number of bytes, such as '512MiB'")
    if nbytes > MAX_BYTES:
        raise InvalidMemoryError(
            f"{name}={shown(value)} is more bytes than any machine holds (at most 2**63 - 1, just under 8 EiB); "
            f"pass the memory you mean to use, such as '512MiB' or '16GiB'"
        )
    return nbytes


def _parse_text(value: str, name: str) -> int:
    """A string such as ``"1.5 GiB"`` as bytes (rounded down), computed exactly, never through a float.

    ``"1e999"`` is a number too large to be a budget (not infinity); such numbers are never built:
    anything above :data:`MAX_BYTES` comes back as ``MAX_BYTES + 1``.
    """
    match = _PATTERN.match(value)
    unit = match.group(3).lower() if match else None
    if match is None or unit not in _UNITS:
        raise InvalidMemoryError(f"{name}={shown(value)} does not parse as a number of bytes; use {_FORMS}")
    mantissa, exponent = Decimal(match.group(1)), int(match.group(2) or 0)
    if mantissa == 0 or exponent < -(len(match.group(1)) + 30):
        return 0
    if exponent > 30:
        return MAX_BYTES + 1
    with localcontext(prec=len(match.group(1)) + 60):
        number = mantissa.scaleb(exponent) * _UNITS[unit]
    return MAX_BYTES + 1 if number > MAX_BYTES else int(number)


def _parse_number(value, name: str) -> int:
    """An int, a finite float or an integer-like object (numpy scalars) as bytes (rounded down)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) and not hasattr(value, "__index__"):
        raise InvalidMemoryError(
            f"{name}={shown(value)} (a {type(value).__name__}) is not a number of bytes; pass {_FORMS}"
        )
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise InvalidMemoryError(
                f"{name}={shown(value)} is not a finite number of bytes; pass the memory to use, such as '512MiB' "
                "(there is no unlimited budget)"
            )
        return int(value)
    try:
        return operator.index(value)
    except TypeError:  # an array of more than one value, or an object whose __index__ refuses
        raise InvalidMemoryError(f"{name}={shown(value)} is not a number of bytes; pass {_FORMS}") from None


def format_bytes(nbytes: int | float) -> str:
    """Format ``nbytes`` with a binary unit for messages: ``format_bytes(3 * 2**20) == '3.00 MiB'`` (up to EiB)."""
    if isinstance(nbytes, int) and nbytes.bit_length() > 1000:  # beyond a float: a count no machine holds
        return f"about 2**{nbytes.bit_length() - 1} B"
    nbytes = float(nbytes)
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    power = 0
    while abs(nbytes) >= 1024 and power < len(units) - 1:
        nbytes /= 1024
        power += 1
    if power == 0:
        return f"{int(nbytes)} B"
    return f"{nbytes:.2f} {units[power]}" if abs(nbytes) < 1024 else f"{nbytes:.3g} {units[power]}"
