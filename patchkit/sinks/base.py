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
from typing import Any, Callable, ClassVar, NamedTuple

from ..core.budget import DEFAULT_MAX_MEMORY, Budget, Plan
from ..core.units import format_bytes
from ..errors import BudgetTooSmallError

__all__ = ["Sink", "Progress", "Pipeline", "overlapped"]


class Progress(NamedTuple):
    """How far an output has got: ``done`` of ``total`` ``unit`` (``"rows"`` of patches, ``"chips"``...)."""

    done: int
    total: int
    unit: str


class Pipeline(NamedTuple):
    """How a sink runs: ``in_flight`` row bands held at once, ``writers`` threads, and the ``budget`` its bands get."""

    in_flight: int
    writers: int
    budget: Budget


def overlapped(writers: int) -> tuple[tuple[int, int], ...]:
    """The :meth:`Sink.pipelines` of a sink that writes a band while the next is made: two bands in flight on
    ``writers`` threads, else on one, else one band at a time."""
    return tuple(dict.fromkeys(((2, writers), (2, 1), (1, 1))))


class Sink(abc.ABC):
    """Where patches go. Subclass it, fill in the class attributes and the three methods, and register it.

    Attributes
    ----------
    name : str
        What users pass (``da.patches.to("zarr", ...)``, ``patchkit extract --to zarr``).
    output : tuple of str
        The output's path under a job's output folder (``("patches.zarr",)``; ``("tfrecord", "patches")``
        for a prefix): where ``patchkit run extract_patches`` writes it and the explorer suggests it.
    description : str
        One line for menus and ``patchkit templates``.
    distributed : bool
        Whether :meth:`write` takes ``scheduler=`` and runs its bands on a dask.distributed cluster
        (and, by default, on the active ``distributed.Client``).
    """

    name: ClassVar[str]
    output: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""
    distributed: ClassVar[bool] = False
    #: What the sink holds beside the bands while it writes, and how to make it smaller (for messages).
    buffers: ClassVar[str] = "the sink's buffers"
    buffers_fix: ClassVar[str] = ""

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

    def reserve(self, spec: Any, shape: tuple[int, int, int, int], dtype: Any, *, filtered: bool = False,
                writers: int = 1, **options: Any) -> int:
        """Bytes the sink holds while it writes, beside the row bands of patches, for one array cut by ``spec``.

        ``shape`` is the array as the backends read it (``[batch, height, width, channels]``);
        ``filtered`` says whether patches are kept by their nodata share; ``writers`` is how many
        threads write at once; ``options`` are :meth:`write`'s. Pure geometry: the explorer asks it
        without the data. 0 unless a sink says otherwise.
        """
        return 0

    def pipelines(self) -> tuple[tuple[int, int], ...]:
        """``(in_flight, writers)`` the sink can run with, most parallel first: :meth:`pipeline` takes the first
        whose bands fit. ``in_flight`` bands are held at once (2: one is written while the next is made),
        ``writers`` threads write. Sequential, ``((1, 1),)``, unless a sink says otherwise."""
        return ((1, 1),)

    def band_budget(self, spec: Any, arrays: Any, max_memory: int | str, *, filtered: bool = False, writers: int = 1,
                    **options: Any) -> Budget:
        """What of ``max_memory`` the row bands may hold once :meth:`reserve` of every ``(shape, dtype)`` in
        ``arrays`` is taken off; :class:`~patchkit.errors.BudgetTooSmallError` when nothing is left."""
        budget = Budget.of(max_memory)
        held = sum(self.reserve(spec, shape, dtype, filtered=filtered, writers=writers, **options) for shape, dtype in arrays)
        if held and budget <= held:
            raise BudgetTooSmallError(
                f"max_memory={budget!r} does not leave room for the patches once {self.buffers} ({format_bytes(held)}) "
                f"are counted; raise max_memory{' or ' + self.buffers_fix if self.buffers_fix else ''}"
            )
        return budget.less(held)

    def pipeline(self, spec: Any, arrays: Any, max_memory: int | str, planner: Callable[[Budget, int], Plan], *,
                 filtered: bool = False, **options: Any) -> tuple[Pipeline, Plan]:
        """The most parallel of :meth:`pipelines` whose bands fit in ``max_memory``, and its plan.

        ``planner(budget, in_flight)`` plans the bands of ``arrays`` (``(shape, dtype)`` pairs as the
        backends read them) or raises :class:`~patchkit.errors.BudgetTooSmallError`; the error of the
        least parallel pipeline is raised when none fits. Pure: the explorer asks it without the data.
        """
        error: BudgetTooSmallError | None = None
        for in_flight, writers in self.pipelines():
            try:
                budget = self.band_budget(spec, arrays, max_memory, filtered=filtered, writers=writers, **options)
                return Pipeline(in_flight, writers, budget), self._planned(planner, budget, in_flight, max_memory)
            except BudgetTooSmallError as err:
                error = err
        raise error

    def _planned(self, planner: Callable[[Budget, int], Plan], budget: Budget, in_flight: int, max_memory: Any) -> Plan:
        try:
            return planner(budget, in_flight)
        except BudgetTooSmallError as err:
            if int(budget) == int(Budget.of(max_memory)):
                raise
            raise BudgetTooSmallError(
                f"max_memory={budget!r} less {self.buffers} leaves {format_bytes(budget)} for the patches, too little: "
                f"{err}{'; or ' + self.buffers_fix if self.buffers_fix else ''}"
            ) from err

    def write_pipeline(self, prepared: Any, max_memory: int | str, backend: str = "auto",
                       **options: Any) -> tuple[Pipeline, Plan]:
        """How :meth:`write` runs and the bands it streams, decided now (before anything is written)."""
        from ..labelled.layout import stream_plan

        arrays = [(job.images.shape, job.images.dtype) for job in prepared.jobs.values()]
        return self.pipeline(prepared.spec, arrays, max_memory,
                             lambda budget, k: stream_plan(prepared, max_memory=budget, backend=backend, in_flight=k),
                             filtered=prepared.keep is not None, **options)

    def plan(self, obj: Any, spec: Any, *, max_memory: int | str = DEFAULT_MAX_MEMORY, backend: str = "auto",
             spatial_dims=None, channel_dims=None, **options: Any) -> Plan:
        """The row bands :meth:`write` streams for these arguments, without reading a pixel or touching ``path``.

        ``patchkit inspect``, the ``extract_patches`` template and the explorer report this plan.
        ``options`` are :meth:`write`'s; those that do not change the plan are ignored.
        """
        from ..labelled.layout import prepare

        prepared = prepare(obj, spec, spatial_dims=spatial_dims, channel_dims=channel_dims, max_memory=max_memory)
        return self.write_pipeline(prepared, max_memory, backend, **options)[1]

    def default_path(self, output_dir: str | Path = "outputs") -> Path:
        """The output's path under ``output_dir``: ``output_dir / *output``."""
        return Path(output_dir, *self.output)

    def __repr__(self) -> str:
        return f"<patchkit sink {self.name!r}: {self.description}>"
