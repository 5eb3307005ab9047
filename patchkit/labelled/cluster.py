"""Row bands as tasks on a dask.distributed cluster: the bands a local run streams, made by the workers.

A sink that runs on a cluster asks :func:`client_for` for its client: the one ``scheduler=`` names
(an address, or a ``distributed.Client``), or else the active one, by dask's convention
(``distributed.get_client()``). :func:`band_tasks` turns each band of a plan into a task that reads
only its halo (the source's own dask chunks, so workers read the raster themselves; an in-memory
array is put on the cluster once) and makes the band's patches there, labelled as far as writing and
digesting need (:func:`make_band`); the sink wraps it in its own write. :func:`run_tasks` computes
them on the cluster and hands each result to the driver as it finishes, where the sink logs the band.
Errors of the cluster itself become :class:`~patchkit.errors.ClusterError`, naming the scheduler's
address or the band; the task's own errors (a read, a write) arrive as they were raised.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from ..core.backends import get_backend
from ..core.budget import Plan
from ..core.chunking import _band_from_halo
from ..core.gdal import bounded_cache
from ..errors import ClusterError, PatchkitError, PatchkitTypeError, shown
from .dims import Layout, unarrange
from .layout import todo_bands

__all__ = ["client_for", "check_scheduler", "band_tasks", "make_band", "run_tasks", "LOCAL", "CONNECT_TIMEOUT"]

#: ``scheduler`` values that run on local threads even while a ``distributed.Client`` is active.
LOCAL = ("threads", "local")
#: Seconds to wait for a scheduler named by its address.
CONNECT_TIMEOUT = 10


def _is_client(obj: Any) -> bool:
    return type(obj).__name__ == "Client" and (type(obj).__module__ or "").startswith("distributed")


def check_scheduler(scheduler: Any) -> None:
    """Refuse a ``scheduler`` that is not None, ``"threads"``/``"local"``, an address or a ``distributed.Client``."""
    if scheduler is None or _is_client(scheduler) or (isinstance(scheduler, str) and scheduler.strip()):
        return
    raise PatchkitTypeError(
        f"scheduler={shown(scheduler)} is not understood; pass a dask scheduler's address (e.g. 'tcp://10.0.0.5:8786'), "
        "a distributed.Client, 'threads' to run on local threads, or None (the active Client, if any, else local threads)"
    )


@contextmanager
def client_for(scheduler: Any = None) -> Iterator[Any]:
    """The ``distributed.Client`` that bands run on, or None to run them on local threads.

    ``None``: the active client (``distributed.get_client()``) when one exists, else local threads;
    ``"threads"``/``"local"``: local threads; a ``Client``: that client; an address: a client
    connected to it for the duration (closed after), or :class:`~patchkit.errors.ClusterError`.
    """
    check_scheduler(scheduler)
    if scheduler is None:
        yield _active_client()
    elif _is_client(scheduler) or scheduler in LOCAL:
        yield scheduler if _is_client(scheduler) else None
    else:
        client = _connect(scheduler)
        try:
            yield client
        finally:
            client.close()


def _active_client():
    if "distributed" not in sys.modules:  # no client can exist before distributed is imported
        return None
    from distributed import get_client

    try:
        return get_client()
    except ValueError:  # "No global client found"
        return None


def _connect(address: str):
    try:
        from distributed import Client
    except ImportError as err:
        from ..errors import MissingDependencyError

        raise MissingDependencyError(
            f"scheduler={address!r} needs dask.distributed; install it (pip install 'patchkit[dask]'), or pass scheduler=None"
        ) from err
    try:
        return Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise ClusterError(
            f"cannot reach the dask scheduler at scheduler={address!r} within {CONNECT_TIMEOUT} s ({type(err).__name__}: {err}); "
            "check the address (e.g. 'tcp://host:8786'), that the scheduler runs and that this machine can reach its port, "
            "or pass scheduler='threads' to run here"
        ) from err


# --------------------------------------------------------------------------------------------------
# Band tasks
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    """What a worker needs to make one array's band besides its halo (no source object travels)."""

    name: str
    layout: Layout
    sizes: dict
    shape: tuple[int, int, int, int]
    origin: str | None


class _Halo:
    """A band's input rows of a dask-backed source, as a lazy array dask sends to the task unread.

    (A plain class: dask would compute a dask array, or one inside a list or a dataclass, before the
    task, on any worker; this one is read by the task itself, from the source.)
    """

    __slots__ = ("data",)

    def __init__(self, data: Any):
        self.data = data


def _halo(client: Any, source, start: int, stop: int) -> Any:
    """Rows ``[start, stop)`` of ``source`` as a task reads them: a :class:`_Halo` of the source's own chunks
    (the graph cut down to them), or the rows of an in-memory array put on the cluster."""
    import dask

    if source.kind == "dask":  # rows cut before they are arranged, so each chunk's read reads only them
        rows = source.data[:, start:stop] if source.rows is None else source.rows(start, stop)
        return _Halo(dask.optimize(rows)[0])
    return client.scatter(source.read_rows(start, stop), hash=False)


def band_tasks(client: Any, prepared: Any, plan: Plan, done: np.ndarray, names: dict, backend: str) -> list:
    """``[(rows, task), ...]``: a ``dask.delayed`` per band of ``plan`` left to make (:func:`~.layout.todo_bands`:
    not all ``done``) that makes the band's patches (:func:`make_band`) on a worker.

    ``names`` maps each job of ``prepared`` to the name of its variable in the output. Each task reads
    only the input rows of its band (its halo), with GDAL's block cache bounded to the plan's share
    (:attr:`~patchkit.core.budget.Plan.gdal_cache`), and extracts with ``backend`` as the local run does.
    """
    import dask

    spec, keep, gdal_cache = prepared.spec, prepared.keep, plan.gdal_cache
    backend = get_backend(backend, next(iter(prepared.jobs.values())).source).name
    parts = tuple(_Part(names[key], job.layout, dict(job.obj.sizes), tuple(job.images.shape), job.source.origin)
                  for key, job in prepared.jobs.items())
    tasks = []
    for rows in todo_bands(prepared, plan.bands, done):
        halos = []
        for job in prepared.jobs.values():
            ya, yb = spec.input_rows(rows, job.images.shape, clip=True)
            halos.append((ya, _halo(client, job.source, ya, yb)))
        band_keep = None if keep is None else keep[rows]
        tasks.append((rows, dask.delayed(make_band, pure=False)(spec, rows, parts, backend, band_keep, halos, gdal_cache)))
    return tasks


def make_band(spec, rows: slice, parts: tuple, backend: str, keep: np.ndarray | None, halos: list,
              gdal_cache: int | None = None):
    """The band of output rows ``rows`` made from its halos ``[(first input row, rows), ...]`` (runs on a worker).

    A Dataset of one variable per part with the output's dims and each patch's ``patch_row`` and
    ``patch_col``: what a sink writes and :func:`~patchkit.sinks._store.row_digests` reads.
    A lazy halo is read here, on this thread, its errors named as the local run names them, with GDAL's
    block cache bounded to ``gdal_cache``.
    """
    import dask
    import xarray as xr

    from ..core.sources import as_source

    grid = ("patch_row", "patch_col") if keep is None else ("patch",)
    variables = {}
    for part, (row0, halo) in zip(parts, halos):
        if isinstance(halo, _Halo):  # on this worker's thread, not on the cluster
            with bounded_cache(gdal_cache), dask.config.set(scheduler="synchronous"):
                halo = as_source(halo.data, origin=part.origin).read_rows(0, halo.data.shape[1])
        block = _band_from_halo(halo, row0, part.shape, spec, rows, backend, keep)
        data = unarrange(block, part, part.layout, tuple(block.shape[1:-1]), spec.sizes)
        variables[part.name] = (part.layout.dims(grid), data)
    if keep is None:
        coords = {"patch_row": np.arange(rows.start, rows.stop), "patch_col": np.arange(spec.grid_shape(parts[0].shape)[1])}
    else:
        r, c = np.nonzero(keep)
        coords = {"patch_row": ("patch", r + rows.start), "patch_col": ("patch", c)}
    return xr.Dataset(variables, coords=coords)


def run_tasks(client: Any, tasks: list, land: Callable[[slice, Any], None]) -> None:
    """Compute ``tasks`` (``[(rows, delayed), ...]``) on ``client``; ``land(rows, result)`` on the driver as each finishes.

    On an error every task left is cancelled (the bands not landed stay unlogged, for a rerun); a
    worker lost too often on one band and a lost scheduler are :class:`~patchkit.errors.ClusterError`.
    """
    from distributed import as_completed

    futures = client.compute([task for _, task in tasks])
    rows_of = {future.key: rows for future, (rows, _) in zip(futures, tasks)}
    try:
        for future in as_completed(futures, loop=client.loop):
            rows = rows_of[future.key]
            land(rows, _result(client, future, rows))
            future.release()
    finally:
        client.cancel([f for f in futures if not f.done()])


def _result(client: Any, future: Any, rows: slice) -> Any:
    """A finished task's result, with the cluster's own failures named."""
    from concurrent.futures import CancelledError

    from distributed.scheduler import KilledWorker

    try:
        return future.result()
    except PatchkitError:
        raise
    except KilledWorker as err:
        raise ClusterError(
            f"patch rows {rows.start}-{rows.stop - 1} were not written: the dask workers running them died too often "
            f"({err}); see the workers' logs (out of memory? lower max_memory, or give workers more), then rerun the "
            "same call: it resumes with the bands not written"
        ) from err
    except (OSError, TimeoutError, CancelledError) as err:
        if client.status == "running" and not isinstance(err, CancelledError):
            raise
        raise ClusterError(
            f"lost the dask scheduler at {client.scheduler.address!r} while patch rows {rows.start}-{rows.stop - 1} "
            f"were being written ({type(err).__name__}: {err}); restart the cluster and rerun the same call: it resumes "
            "with the bands not written"
        ) from err
