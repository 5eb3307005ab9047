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
        (errors.ChangedSourceError, ValueError),
        (errors.DamagedOutputError, ValueError),
        (errors.SourceReadError, OSError),
        (errors.ClusterError, RuntimeError),
        (errors.MissingDependencyError, ImportError),
        (errors.NotebookError, RuntimeError),
    ],
)
def test_hierarchy(cls, builtin):
    """Catchable both as PatchkitError and as the matching builtin."""
    assert issubclass(cls, errors.PatchkitError) and issubclass(cls, builtin)


def test_all_is_complete():
    """__all__ lists every exception class the module defines."""
    defined = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, Exception)}
    assert defined == set(errors.__all__)


def test_every_error_lives_in_errors():
    """No module of patchkit defines an exception class of its own: they are all in patchkit.errors."""
    import ast
    from pathlib import Path

    root = Path(errors.__file__).parent
    elsewhere = []
    for path in root.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any("Error" in ast.unparse(b) or "Exception" in ast.unparse(b)
                                                      or "Cancelled" in ast.unparse(b) for b in node.bases):
                elsewhere.append(f"{path.relative_to(root)}: {node.name}")
    assert not elsewhere
