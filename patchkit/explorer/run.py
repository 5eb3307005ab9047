"""Running a sink from the explorer: a background thread, progress from what the sink has written, a cancel
that stops it at the next chunk read.

With a ``distributed.Client`` active (or ``scheduler=`` given), a sink that can runs its bands on the
cluster; the cancel is then a cluster-wide ``distributed.Event`` that the workers' chunk reads check.

The sink is the real one, found by name in :mod:`patchkit.sinks` and called as
``obj.patches.to(sink, path, sizes, strides, rates, padding, progress=False, ...)``; its progress is
its own :meth:`~patchkit.sinks.Sink.progress`. Sinks are resumable, so a cancelled run finishes when
run again (or with the plain call :func:`~patchkit.explorer.code.job_code` gives).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import sinks
from ..core.budget import DEFAULT_MAX_MEMORY
from ..core.spec import PatchSpec
from ..core.units import parse_bytes
from ..errors import PatchkitValueError, RunCancelled
from ..labelled.cluster import check_scheduler, client_for
from ..labelled.dims import Layout, find_layout
from ..sinks import Progress
from .model import check_spec

__all__ = ["SinkRun", "cancellable", "sink_progress", "CANCEL_CHUNK"]

#: A numpy-backed scene is wrapped in dask chunks of about this size for a cancellable run.
CANCEL_CHUNK = "32MiB"


class _Gate:
    """A dask block function that passes blocks through and raises :class:`RunCancelled` once ``event`` is set.

    ``event`` is a ``threading.Event``, or a ``distributed.Event`` when the blocks are read on a cluster.
    """

    def __init__(self, event: Any):
        self.event = event
        self.token = uuid.uuid4().hex

    def __call__(self, block: np.ndarray) -> np.ndarray:
        if self.event.is_set():
            raise RunCancelled("the run was cancelled; run it again with the same arguments to finish it")
        return block

    def __dask_tokenize__(self) -> str:
        return self.token


def cancellable(obj: Any, event: Any, layout: Layout | None = None):
    """``obj`` with dask data that raises :class:`RunCancelled` on any chunk read once ``event`` is set.

    Dims, coordinates, attrs, name and encoding are kept, so a sink's fingerprint is that of
    ``obj`` and a cancelled run resumes with the plain call. A numpy-backed (or lazily read)
    DataArray is first cut into chunks of whole rows of about :data:`CANCEL_CHUNK`.
    """
    if obj.chunks is None:
        layout = layout or find_layout(obj)
        row_bytes = obj.dtype.itemsize * math.prod(n for d, n in obj.sizes.items() if d != layout.y)
        obj = obj.chunk({layout.y: max(1, parse_bytes(CANCEL_CHUNK) // max(row_bytes, 1))})
    gate = _Gate(event)
    data = obj.data.map_blocks(gate, dtype=obj.dtype, meta=np.empty((0,) * obj.ndim, obj.dtype), name=f"patchkit-gate-{gate.token}")
    return obj.copy(data=data)


def sink_progress(sink: str, path: str | Path, rows: int) -> Progress:
    """``(done, total, unit)`` of a sink's output as it is on disk now (``done=0`` before it starts): the
    sink's own :meth:`~patchkit.sinks.Sink.progress`; :class:`~patchkit.errors.UnknownSinkError` for an unknown name."""
    return sinks.get(sink).progress(path, rows)


class SinkRun:
    """One extraction to a sink in a background thread: progress polled from its output, cancellable.

    The sink is the real one (``obj.patches.to(sink, ...)``, called with ``progress=False``) on a view
    of ``obj`` whose every chunk read checks a cancel event (:func:`cancellable`), so a cancel stops it
    before its next read, between writes of finished work. A cancelled run keeps what it finished: starting the same run again (or the plain call
    that :func:`~patchkit.explorer.code.job_code` gives) resumes it.

    Parameters
    ----------
    obj : DataArray
    sink : str
        The sink's name (one of :func:`patchkit.sinks.available`).
    path : path
        Where it writes.
    spec : PatchSpec
    max_memory, max_nodata_fraction, mode, backend
        As the sinks take them.
    on_progress : callable ``(done, total, unit)``, optional
        Called from a monitor thread every ``poll`` seconds while running, and once at the end.
    on_finish : callable ``(run)``, optional
        Called once the run has ended (done, cancelled or failed).
    poll : float
        Seconds between progress polls.
    layout : Layout, optional
        The dims of ``obj`` (found when not given).
    scheduler : None, str or distributed.Client
        Where a sink that can (``Sink.distributed``) runs its bands: None, on the active client if
        any (else here); an address or a client, on that cluster; ``"threads"``, here.
    """

    def __init__(self, obj: Any, sink: str, path: str | Path, spec: PatchSpec, *,
                 max_memory: int | str = DEFAULT_MAX_MEMORY, max_nodata_fraction: float | None = None,
                 mode: str | None = None, backend: str = "auto",
                 on_progress: Callable[[int, int, str], None] | None = None,
                 on_finish: Callable[["SinkRun"], None] | None = None, poll: float = 0.2, layout: Layout | None = None,
                 scheduler: Any = None):
        self._sink = sinks.get(sink)
        check_spec(spec)
        check_scheduler(scheduler)
        self.scheduler = scheduler
        self.obj, self.sink, self.path, self.spec = obj, sink, Path(path), spec
        self.options = dict(max_memory=max_memory, max_nodata_fraction=max_nodata_fraction, mode=mode, backend=backend)
        self.on_progress, self.on_finish, self.poll = on_progress, on_finish, poll
        self.layout = layout
        self.state = "pending"
        self.error: BaseException | None = None
        self.result: Path | None = None
        self.seconds: float | None = None
        self._cancel = threading.Event()
        self._cluster_cancel: Any = None
        self._done = threading.Event()
        layout = layout or find_layout(obj)
        self._rows = spec.grid_shape((obj.sizes[layout.y], obj.sizes[layout.x]))[0]
        self._threads: list[threading.Thread] = []

    def start(self) -> "SinkRun":
        """Start the run (and its progress monitor) in daemon threads; returns at once."""
        if self.state != "pending":
            raise PatchkitValueError(f"this run is {self.state}; make a new SinkRun to run again")
        self.state = "running"
        self._threads = [threading.Thread(target=self._work, name="patchkit-sink", daemon=True),
                         threading.Thread(target=self._monitor, name="patchkit-progress", daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def cancel(self) -> None:
        """Ask the run to stop at its next chunk read (returns at once; :meth:`join` waits)."""
        self._cancel.set()
        if self._cluster_cancel is not None:
            self._cluster_cancel.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the run (and the last progress report) to end; True when it has."""
        end = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the run has ended."""
        return self.state == "running"

    def progress(self) -> Progress:
        """``(done, total, unit)`` as the output stands now (the sink's :meth:`~patchkit.sinks.Sink.progress`)."""
        return self._sink.progress(self.path, self._rows)

    def _work(self) -> None:
        start = time.perf_counter()
        try:
            with client_for(self.scheduler if self._sink.distributed else "threads") as client:
                self.result = self._run(client)
            self.state = "done"
        except RunCancelled:
            self.state = "cancelled"
        except BaseException as err:  # reported through state/error; the thread must not die silently
            self.error, self.state = err, "failed"
        finally:
            self.seconds = time.perf_counter() - start
            self._done.set()

    def _run(self, client: Any) -> Path:
        """The sink's own call on the gated scene, on ``client``'s cluster or (None) here."""
        event = self._cancel
        if client is not None:
            from distributed import Event

            event = self._cluster_cancel = Event(f"patchkit-cancel-{uuid.uuid4().hex}", client=client)
            if self._cancel.is_set():
                event.set()
        gated = cancellable(self.obj, event, self.layout)
        spec, options = self.spec, dict(self.options, **({} if client is None else {"scheduler": client}))
        return gated.patches.to(self.sink, self.path, spec.sizes, spec.strides, spec.rates, spec.padding,
                                progress=False, **options)

    def _monitor(self) -> None:
        while not self._done.wait(self.poll):
            self._report()
        self._report()
        if self.on_finish is not None:
            self.on_finish(self)

    def _report(self) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(*self.progress())
        except Exception:  # a progress display must never break the run
            pass
