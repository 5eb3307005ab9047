"""The :class:`Sink` interface every sink implements, built-in or installed through the ``patchkit.sinks`` entry points.

A sink writes the patches of a DataArray (or Dataset) to ``path`` under ``max_memory``, resumably: a
rerun with the same arguments finishes the work, and the output reads as complete only once it is
(the shared machinery: :func:`patchkit.labelled.layout.prepare` and ``bands`` for the row bands,
:mod:`patchkit.sinks._store` for fingerprints, modes, row logs and completion). It can say how far
an existing output has got, and open what it wrote. The accessor's ``.patches.to(name, path, ...)``,
the CLI's ``extract --to``, the explorer's sink menu and the templates' ``sink`` parameter all find
sinks by name in :data:`patchkit.sinks.registry`.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

__all__ = ["Sink", "Progress"]


class Progress(NamedTuple):
    """How far an output has got: ``done`` of ``total`` ``unit`` (``"rows"`` of patches, ``"chips"``...)."""

    done: int
    total: int
    unit: str


class Sink(abc.ABC):
    """Where patches go. Subclass it, fill in the class attributes and the three methods, and register it.

    Class attributes
    ----------------
    name : str
        What users pass (``da.patches.to("zarr", ...)``, ``patchkit extract --to zarr``).
    output : tuple of str
        The output's path under a job's output folder (``("patches.zarr",)``; ``("tfrecord", "patches")``
        for a prefix): where ``patchkit run extract_patches`` writes it and the explorer suggests it.
    description : str
        One line for menus and ``patchkit templates``.
    """

    name: ClassVar[str]
    output: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def write(self, obj: Any, path: str | Path, spec: Any, *, max_memory: int | str, mode: str | None = None,
              max_nodata_fraction: float | None = None, backend: str = "auto", progress: bool = True,
              **options: Any) -> Path:
        """Write the patches of ``obj`` cut by ``spec`` to ``path`` and return where they are.

        ``mode=None`` creates, resumes or returns at once when the output is complete; ``"w"``
        overwrites. ``options`` are the sink's own (a codec, a shard size...).
        """

    @abc.abstractmethod
    def progress(self, path: str | Path, rows: int) -> Progress:
        """How far the output at ``path`` has got, read from disk now (``done=0`` before it starts).

        ``rows`` is the number of patch rows of the grid, for sinks that count rows.
        """

    @abc.abstractmethod
    def open(self, path: str | Path, **kwargs: Any) -> Any:
        """What was written at ``path``, verified as the sink verifies it (refused when incomplete)."""

    def default_path(self, output_dir: str | Path = "outputs") -> Path:
        """The output's path under ``output_dir``: ``output_dir / *output``."""
        return Path(output_dir, *self.output)

    def __repr__(self) -> str:
        return f"<patchkit sink {self.name!r}: {self.description}>"
