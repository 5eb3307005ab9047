"""The error tree: every patchkit error is also the builtin a caller would catch."""

import pytest

from patchkit import errors


@pytest.mark.parametrize(
    "cls, builtin",
    [
        (errors.InvalidSpecError, ValueError),
        (errors.KernelTooLargeError, ValueError),
        (errors.InvalidImageError, ValueError),
        (errors.UnsupportedDtypeError, TypeError),
        (errors.UnknownBackendError, ValueError),
        (errors.BackendUnavailableError, ImportError),
        (errors.InvalidMemoryError, ValueError),
        (errors.BudgetTooSmallError, ValueError),
        (errors.OutputTooLargeError, MemoryError),
        (errors.DimensionError, ValueError),
        (errors.GeoreferenceError, ValueError),
        (errors.ForeignStoreError, ValueError),
        (errors.IncompleteStoreError, ValueError),
        (errors.SinkWriteError, OSError),
    ],
)
def test_hierarchy(cls, builtin):
    """Catchable both as PatchkitError and as the matching builtin."""
    assert issubclass(cls, errors.PatchkitError) and issubclass(cls, builtin)


def test_all_is_complete():
    """__all__ lists every exception class the module defines."""
    defined = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, Exception)}
    assert defined == set(errors.__all__)
