"""PatchExplorer: choose a patch grid for a scene interactively, see what it gives, and run it.

Rooms, so that the numbers can be tested without a browser (each imports only those above it):

* :mod:`~patchkit.explorer.nodata` -- :class:`NodataMap`: every patch's nodata share, estimated from
  the preview (counted when the preview is the scene).
* :mod:`~patchkit.explorer.model` -- :class:`ExplorerModel` and its :class:`Summary`: pure and
  widget-free; grid, counts, bytes, the streamed run's plan (:func:`patchkit.core.budget.plan_for`),
  coverage (:func:`patchkit.core.spec.coverage.coverage`) and the nodata share; no pixel is read.
* :mod:`~patchkit.explorer.scene` -- :class:`Scene` and :class:`Preview`: what is read, once (an
  overview or a decimated read, never the full-resolution scene), and one selected patch's window.
* :mod:`~patchkit.explorer.render` -- matplotlib drawing of the preview with the grid, and of a patch.
* :mod:`~patchkit.explorer.code` -- :func:`job_code`: the same job as a Python call and a
  ``patchkit run`` command.
* :mod:`~patchkit.explorer.run` -- :class:`SinkRun`: one extraction to a sink from
  :func:`patchkit.sinks.available`, in a background thread, with the sink's own progress and a
  cancel that stops it at the next chunk read; the sinks are resumable.
* :mod:`~patchkit.explorer.view` -- :class:`PatchExplorer`, the ipywidgets view over them.

ipywidgets and matplotlib are imported by the view and the drawing when they are used, so the model
and the run can be used (and tested) without them. Nothing else in patchkit imports this package
(``.patches.explore`` imports it inside the method).
"""

from __future__ import annotations

from ..core.spec.coverage import coverage
from ..errors import RunCancelled
from .code import job_code
from .model import ExplorerModel, Summary
from .nodata import NodataMap
from .run import SinkRun, sink_progress
from .scene import Preview, Scene
from .view import PatchExplorer

__all__ = [
    "ExplorerModel",
    "Summary",
    "Scene",
    "Preview",
    "NodataMap",
    "SinkRun",
    "RunCancelled",
    "PatchExplorer",
    "coverage",
    "job_code",
    "sink_progress",
]
