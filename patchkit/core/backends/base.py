"""What a backend is: the :class:`Backend` protocol that built-in and third-party backends satisfy.

A backend copies patches. The planner asks it two things (``name``, ``pad_copy``), the extractors
two more (``extract`` for a whole image, ``band`` for one row band from a halo). Register one with
``patchkit.backends.register(name, backend)`` or, from a package, in the ``patchkit.backends``
entry-point group (``my_backend = "my_package.module:MyBackend"``; a class is instantiated once).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """The interface of a patch-copying backend.

    Attributes
    ----------
    name : str
        Its name, as users pass it (``backend="numpy"``).
    pad_copy : bool
        Whether it pads a band's whole halo into a copy (True: the planner counts that copy against
        ``max_memory``) rather than only the edge regions (False).
    """

    name: str
    pad_copy: bool

    def extract(self, images: Any, spec: Any, out: Any = None) -> Any:
        """All patches of the 4-D ``images`` under ``spec`` (``spec.output_shape(images.shape)``), in ``out`` if given."""

    def band(self, src: Any, row0: int, shape: tuple[int, int, int, int], spec: Any, rows: slice, out: Any = None) -> Any:
        """Output rows ``rows`` of the image of ``shape``, from ``src``: its input rows from ``row0`` on (a halo).

        The result equals ``extract(image, spec)[:, rows]``; ``out``, when given, is filled and returned.
        """
