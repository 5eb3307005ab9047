"""Exceptions raised by patchkit.

A shallow tree, in the manner of rioxarray's: every error is a :class:`PatchkitError` and also the
builtin a caller would expect (``ValueError``, ``TypeError``, ``MemoryError``), so ``except ValueError``
keeps working. Messages name the argument, the value it got, and what to do instead.
"""

from __future__ import annotations

__all__ = [
    "PatchkitError",
    "PatchkitValueError",
    "PatchkitTypeError",
    "InvalidSpecError",
    "KernelTooLargeError",
    "InvalidImageError",
    "UnsupportedDtypeError",
    "UnknownBackendError",
    "BackendUnavailableError",
    "InvalidMemoryError",
    "BudgetTooSmallError",
    "OutputTooLargeError",
    "DimensionError",
    "GeoreferenceError",
    "ForeignStoreError",
    "IncompleteStoreError",
    "SinkWriteError",
]


class PatchkitError(Exception):
    """Base class of every error patchkit raises.

    Its constructor is ``Exception``'s own, which tells TensorFlow's AutoGraph that the error can be
    re-raised with the same type when it happens while a ``tf.function`` is traced (otherwise it
    becomes a ``StagingError`` that ``except ValueError`` would not catch).
    """

    __init__ = Exception.__init__


class PatchkitValueError(PatchkitError, ValueError):
    """An argument has the right type but a value patchkit cannot use."""


class PatchkitTypeError(PatchkitError, TypeError):
    """An argument has a type patchkit cannot use."""


class InvalidSpecError(PatchkitValueError):
    """``sizes``, ``strides``, ``rates`` or ``padding`` is malformed."""


class KernelTooLargeError(PatchkitValueError):
    """The (effective) kernel does not fit in the image under ``padding='VALID'``."""


class InvalidImageError(PatchkitValueError):
    """The image has the wrong rank or is empty."""


class UnsupportedDtypeError(PatchkitTypeError):
    """The image's dtype is not one that ``tf.image.extract_patches`` accepts."""


class UnknownBackendError(PatchkitValueError):
    """``backend`` names no backend patchkit has."""


class BackendUnavailableError(PatchkitError, ImportError):
    """The backend exists but a package it needs is not installed."""


class InvalidMemoryError(PatchkitValueError):
    """``max_memory`` does not parse as a number of bytes."""


class BudgetTooSmallError(PatchkitValueError):
    """``max_memory`` is below what one row of patches needs."""


class OutputTooLargeError(PatchkitError, MemoryError):
    """The requested output would not fit in the memory available."""


class DimensionError(PatchkitValueError):
    """A DataArray's spatial dims cannot be found, or one of them is empty."""


class GeoreferenceError(PatchkitValueError):
    """The grid is not one patchkit can georeference: irregular, non-monotonic, rotated or sheared."""


class ForeignStoreError(PatchkitValueError):
    """An output exists but was written from another source, spec or options (or not by patchkit)."""


class IncompleteStoreError(PatchkitValueError):
    """An output is opened before the run that writes it has finished."""


class SinkWriteError(PatchkitError, OSError):
    """Writing an output failed (no permission, a full disk...); finished work is kept for a rerun."""
