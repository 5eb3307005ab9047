"""Drawing for the explorer: the preview with the patch grid on it, and one patch, as PNG bytes.

matplotlib's Agg canvas (no pyplot), imported inside the functions that draw. Every line, box and
mark is placed by the spec (:meth:`PatchSpec.starts`, :meth:`PatchSpec.window`,
:meth:`PatchSpec.padding_amounts`), in full-resolution pixel coordinates.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ..core.spec import PatchSpec
from ..errors import PatchkitError
from .scene import Scene

__all__ = ["render_scene", "render_patch", "grid_edges", "fitted_grid", "MAX_LINES"]

#: Grid lines drawn on the preview along each axis, at most (every k-th patch edge beyond that).
MAX_LINES = 96


def grid_edges(spec: PatchSpec, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Patch start edges along rows and columns (every k-th beyond :data:`MAX_LINES`), each followed by the last patch's end.

    The grid must exist (``spec.check(shape)`` passed and no axis is empty).
    """
    last = spec.window(-1, -1, shape)
    ends = (last.row_off + last.height, last.col_off + last.width)
    edges = []
    for starts, end in zip(spec.starts(shape), ends):
        every = max(1, -(-len(starts) // MAX_LINES))
        edges.append(np.append(starts[::every], end))
    return edges[0], edges[1]


def fitted_grid(spec: PatchSpec, shape: tuple[int, int]) -> tuple[int, int]:
    """The grid's ``(rows, cols)``, or ``(0, 0)`` where the spec does not fit the image."""
    try:
        spec.check(shape)
        return spec.grid_shape(shape)
    except PatchkitError:
        return 0, 0


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _draw_grid(ax: Any, spec: PatchSpec, shape: tuple[int, int], selected: tuple[int, int] | None,
               dropped: np.ndarray | None) -> None:
    """Grid lines, the padded extent, crosses on dropped patches and the selected patch, on ``ax``."""
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Rectangle

    h, w = shape
    (top, bottom), (left, right) = spec.padding_amounts(shape)
    ys, xs = grid_edges(spec, shape)
    y_lo, y_hi, x_lo, x_hi = ys[0], ys[-1], xs[0], xs[-1]
    lines = [((x_lo, y), (x_hi, y)) for y in ys] + [((x, y_lo), (x, y_hi)) for x in xs]
    ax.add_collection(LineCollection(lines, colors="#ff3b30", linewidths=0.5, alpha=0.8))
    if top or bottom or left or right:
        ax.add_patch(Rectangle((-left, -top), w + left + right, h + top + bottom, fill=False, ls="--", lw=0.8, ec="#007aff"))
    if dropped is not None and dropped.any():
        rows, cols = np.nonzero(dropped)
        row_starts, col_starts = spec.starts(shape)
        keh, kew = spec.effective_sizes
        ax.scatter(col_starts[cols] + kew / 2, row_starts[rows] + keh / 2, marker="x", s=14, c="#222", linewidths=0.8)
        ax.set_title("× dropped as nodata", fontsize=8, loc="right")
    if selected is not None:
        win = spec.window(*selected, shape)
        ax.add_patch(Rectangle((win.col_off, win.row_off), win.width, win.height, fc="#ffcc00", alpha=0.45, ec="#ffcc00", lw=1.5))
    pad_y, pad_x = max(top, bottom, 0), max(left, right, 0)
    ax.set_xlim(min(0, x_lo) - pad_x * 0.05, max(w, x_hi) + pad_x * 0.05)
    ax.set_ylim(max(h, y_hi) + pad_y * 0.05, min(0, y_lo) - pad_y * 0.05)


def render_scene(scene: Scene, spec: PatchSpec, selected: tuple[int, int] | None = None,
                 dropped: np.ndarray | None = None, width: float = 5.0) -> bytes:
    """PNG of the preview with the patch grid drawn on it, in full-resolution pixel coordinates.

    Lines mark patch starts (every k-th when there are many) and the end of the last patch; the
    dashed box is the padded extent; the selected patch is filled; ``dropped`` (boolean
    ``[out_rows, out_cols]``) puts a cross on the centre of every patch dropped as nodata.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h, w = scene.image_shape
    fig = Figure(figsize=(width, width * min(max(h / w, 0.3), 3.0)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.08, 0.06, 0.9, 0.9))
    ax.imshow(scene.preview_rgba, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_facecolor("#ddd")
    oh, ow = fitted_grid(spec, (h, w))
    if oh and ow:
        _draw_grid(ax, spec, (h, w), selected, dropped)
    ax.tick_params(labelsize=7)
    return _png(fig)


def render_patch(scene: Scene, patch: np.ndarray, title: str = "", width: float = 3.2) -> bytes:
    """PNG of one patch at full resolution (every pixel up to 1024 a side, decimated beyond)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rgba = scene.patch_rgba(patch)
    step = max(1, -(-max(rgba.shape[:2]) // 1024))
    fig = Figure(figsize=(width, width), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.12, 0.08, 0.85, 0.82))
    ax.imshow(rgba[::step, ::step], extent=(0, rgba.shape[1], rgba.shape[0], 0), interpolation="nearest")
    ax.set_facecolor("#ddd")
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)
    return _png(fig)
