"""Exceptions raised by patchkit.

A shallow tree, in the manner of rioxarray's: every error is a :class:`PatchkitError` and also the
builtin a caller would expect (``ValueError``, ``TypeError``, ``MemoryError``), so ``except ValueError``
keeps working. Messages name the argument, the value it got, and what to do instead.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "PatchkitError",
    "PatchkitValueError",
    "PatchkitTypeError",
    "InvalidSpecError",
    "KernelTooLargeError",
    "InvalidImageError",
    "UnsupportedDtypeError",
    "UnknownBackendError",
    "UnknownSinkError",
    "BackendUnavailableError",
    "MissingDependencyError",
    "NotebookError",
    "ModelError",
    "RunCancelled",
    "InvalidMemoryError",
    "BudgetTooSmallError",
    "OutputTooLargeError",
    "DimensionError",
    "GeoreferenceError",
    "ForeignStoreError",
    "ChangedSourceError",
    "DamagedOutputError",
    "IncompleteStoreError",
    "SinkWriteError",
    "SourceReadError",
    "ClusterError",
    "ParameterFileError",
    "PatchIndexError",
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


class UnknownSinkError(PatchkitValueError):
    """``sink`` names no sink patchkit has (built in or installed through the ``patchkit.sinks`` entry points)."""


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


class ChangedSourceError(ForeignStoreError):
    """An unfinished output was cut from other pixels than its source holds now (found on resume)."""


class IncompleteStoreError(PatchkitValueError):
    """An output is opened before the run that writes it has finished."""


class SinkWriteError(PatchkitError, OSError):
    """Writing an output failed (no permission, a full disk...); finished work is kept for a rerun."""


class DamagedOutputError(IncompleteStoreError):
    """An output reads as finished but a chunk, chip or record it promises is missing or not whole."""


class SourceReadError(PatchkitError, OSError):
    """Reading the source raster failed (a damaged or truncated file); the message names the file."""


class ClusterError(PatchkitError, RuntimeError):
    """A dask.distributed cluster could not run a job: its scheduler is unreachable or was lost, or the
    workers running a band kept dying; the message names the address or the band. A rerun resumes."""


class ModelError(PatchkitError, RuntimeError):
    """The model :func:`patchkit.predict` runs raised, or returned what cannot be stitched (NaN or infinite values
    under ``nan_policy="raise"``); the message names the batch and the band. With ``out=``, a rerun resumes."""


class ParameterFileError(PatchkitValueError):
    """A YAML parameter file does not parse, or does not hold a mapping of parameter names to values."""


class PatchIndexError(PatchkitValueError, IndexError, KeyError):
    """A patch ``(row, col)`` outside the grid (also the ``IndexError``/``KeyError`` that indexing raises)."""

    __str__ = Exception.__str__  # not KeyError's, which would quote the message


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message, cut in the middle to about ``limit`` characters (the end of a
    long path, often what is wrong, stays).

    Integers too long for ``repr`` (Python refuses over 4300 digits) are described by their size.
    """
    try:
        text = repr(value)
    except ValueError:
        text = f"<an integer of {value.bit_length()} bits>" if isinstance(value, int) else f"<a {type(value).__name__}>"
    keep = max(limit - 3, 2) // 2
    return text if len(text) <= limit else text[:keep] + "..." + text[-keep:]


class MissingDependencyError(PatchkitError, ImportError):
    """An optional package a feature needs (geopandas, scipy...) is not installed."""


class NotebookError(PatchkitError, RuntimeError):
    """A template's cell raised; ``cell``, ``ename`` and ``evalue`` say which and what."""

    def __init__(self, notebook, cell: int, ename: str, evalue: str):
        self.notebook, self.cell, self.ename, self.evalue = notebook, cell, ename, evalue
        super().__init__(f"cell {cell} of {notebook} raised {ename}: {evalue} (the executed notebook shows the traceback)")


class RunCancelled(PatchkitError):
    """Raised inside a sink run of the explorer when it is cancelled; the sink keeps what it finished."""
