"""The ipywidgets view: :class:`PatchExplorer`, over the model, the scene, the drawing, the code and the run.

Controls for every parameter; a summary that follows every change without extracting
(:class:`~patchkit.explorer.model.ExplorerModel`); a preview of the scene with the grid drawn on it and
one selected patch at full resolution (:mod:`~patchkit.explorer.render`, in a background thread);
the same job as code (:func:`~patchkit.explorer.code.job_code`); a button that runs it to a sink from
:func:`patchkit.sinks.available` (:class:`~patchkit.explorer.run.SinkRun`). ipywidgets is imported when
the view is built.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import sinks
from ..core.budget import DEFAULT_MAX_MEMORY
from ..core.spec import PatchSpec
from ..core.units import format_bytes, parse_bytes
from ..errors import PatchkitError, PatchkitValueError, shown
from ..labelled.nodata import check_fraction
from .code import job_code
from .model import ExplorerModel, Summary
from .render import fitted_grid, render_patch, render_scene
from .run import SinkRun
from .scene import PREVIEW_SIZE, Scene

__all__ = ["PatchExplorer", "summary_html", "default_path"]


def default_path(sink: str) -> str:
    """The output path a sink gets until the user types one: where ``patchkit run extract_patches`` writes it
    with ``-p output_dir outputs`` (``outputs/patches.zarr``, ``outputs/chips``, ``outputs/tfrecord/patches``)."""
    return str(sinks.get(sink).default_path("outputs"))


class _Latest:
    """Runs ``job`` in a background thread whenever asked, coalescing requests: the latest state wins.

    Drawing takes a few hundred milliseconds; the summary must not wait for it, and a slider moved
    ten times needs one drawing of where it stopped, not ten. The thread ends when idle.
    """

    def __init__(self, job: Callable[[], None]):
        self._job = job
        self._lock = threading.Lock()
        self._pending = False
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        """Ask for one more run of the job (returns at once; requests made while it runs coalesce)."""
        with self._lock:
            self._pending = True
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="patchkit-draw", daemon=True)
                self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every requested job has run; True unless ``timeout`` passed first."""
        return self._idle.wait(timeout)

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    self._idle.set()
                    return
                self._pending = False
            self._job()


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.1f} %"


def summary_html(summary: Summary, model: ExplorerModel, preview_origin: str = "") -> str:
    """The summary as an HTML table; the patch count is in ``<span class="patchkit-count">``."""
    oh, ow = summary.grid_shape
    rows = [
        ("grid", f'<span class="patchkit-grid">{oh:,} × {ow:,}</span> (patch rows × columns)'),
        ("patches", f'<span class="patchkit-count">{summary.patches:,}</span>'),
        ("output", f'<span class="patchkit-nbytes">{format_bytes(summary.nbytes)}</span> ({format_bytes(summary.patch_nbytes)} a patch)'),
    ]
    if summary.peak is not None:
        rows += [
            ("peak memory", f'<span class="patchkit-peak">{format_bytes(summary.peak)}</span> of max_memory '
                            f'{format_bytes(parse_bytes(model.max_memory))} (streamed run)'),
            ("row bands", f'<span class="patchkit-bands">{summary.bands:,}</span> of up to {summary.band_rows:,} patch rows'),
        ]
    rows.append(("scene covered", f'<span class="patchkit-coverage">{_percent(summary.coverage)}</span>'))
    if model.max_nodata_fraction is None:
        rows.append(("dropped as nodata", "– (max_nodata_fraction off)"))
    elif summary.dropped is not None:
        how = "counted" if summary.nodata_exact else f"estimate from the preview ({preview_origin or 'decimated'})"
        rows.append(("dropped as nodata", f'<span class="patchkit-dropped">{_percent(summary.dropped)}</span> '
                                          f"({summary.patches - summary.kept:,} patches; {how}); kept "
                                          f"{summary.kept:,}, {format_bytes(summary.kept_nbytes)}"))
    body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th><td>{v}</td></tr>" for k, v in rows)
    problem = "" if summary.ok else f"<p class='patchkit-problem' style='color:#c00'>{_escape(summary.problem)}</p>"
    return f"<table class='patchkit-summary-table'>{body}</table>{problem}"


def _escape(text: str | None) -> str:
    import html

    return html.escape(text or "")


def _control_int(key: str, value: Any, control: Any) -> None:
    """Refuse a value a slider cannot take as given (a fraction, text, a bool, outside its range) instead of bending it."""
    whole = isinstance(value, (int, np.integer)) or isinstance(value, (float, np.floating)) and float(value).is_integer()
    if isinstance(value, (bool, np.bool_)) or not whole:
        raise PatchkitValueError(f"{key}={shown(value)} is not a whole number of pixels; pass an integer, e.g. {key}=256")
    if not control.min <= value <= control.max:
        raise PatchkitValueError(
            f"{key}={shown(value)} is outside the control's range {control.min}..{control.max}; pass a value in it "
            "(or use the sinks directly for larger values)"
        )


class PatchExplorer:
    """Choose sizes, strides, rates, padding and a memory budget for a scene, see what they give, run it.

    Controls for every parameter; a summary that follows every change without extracting (see
    :class:`ExplorerModel`); a preview of the scene (an overview or a decimated read) with the grid
    drawn on it and one selected patch at full resolution; a button that runs the extraction to a
    sink with a progress bar, cancellable and resumable; and :meth:`to_code`, the same job as a
    Python call and a ``patchkit run`` command.

    Parameters
    ----------
    obj : xarray.DataArray
        The scene, ideally lazy: ``rioxarray.open_rasterio(path, chunks={"y": 1024, "x": 1024})``.
    sizes, strides, rates, padding
        The starting spec, as ``tf.image.extract_patches`` takes them. ``sizes`` defaults to 256 (or
        the image's shorter side), ``strides`` to half of ``sizes``. The sliders set rows and
        columns together.
    max_memory : int or str, default "512MiB"
    max_nodata_fraction : float in [0, 1], optional
    backend : {"auto", "numpy", "tensorflow"}
    sink : str, default "zarr"
        A name from :func:`patchkit.sinks.available` (the sink menu lists them all).
    path : str, optional
        Output of a run; by default the sink's :func:`default_path` (``outputs/patches.zarr``,
        ``outputs/chips``, ``outputs/tfrecord/patches``): where ``patchkit run extract_patches``
        writes it with ``-p output_dir outputs``.
    name : str
        The DataArray's variable name in :meth:`to_code`.
    preview_size : int
        Longer side of the preview in pixels.
    spatial_dims, channel_dims
        As ``.patches``.
    asynchronous : bool, default True
        Draw the preview and the selected patch in a background thread (the latest state wins), so
        the summary never waits for a drawing; False draws before each change returns.

    Examples
    --------
    >>> explorer = PatchExplorer(scene, 256, 128, max_memory="1GiB")   # doctest: +SKIP
    >>> explorer                                                       # doctest: +SKIP
    >>> print(explorer.to_code())                                      # doctest: +SKIP
    """

    def __init__(self, obj: Any, sizes=None, strides=None, rates=1, padding: str = "VALID", *,
                 max_memory: int | str = DEFAULT_MAX_MEMORY, max_nodata_fraction: float | None = None,
                 backend: str = "auto", sink: str = "zarr", path: str | Path | None = None, name: str = "da",
                 preview_size: int = PREVIEW_SIZE, spatial_dims: Sequence[str] | None = None,
                 channel_dims: Sequence[str] | None = None, asynchronous: bool = True) -> None:
        self.scene = Scene.open(obj, preview_size=preview_size, spatial_dims=spatial_dims, channel_dims=channel_dims)
        h, w = self.scene.image_shape
        if sizes is None:
            sizes = min(256, h, w)
        spec = PatchSpec(sizes, strides if strides is not None else max(1, min(PatchSpec(sizes, 1).sizes) // 2), rates, padding)
        sinks.check_sink(sink)
        self.name = name
        self.model = self.scene.model(spec, max_memory=max_memory, max_nodata_fraction=check_fraction(max_nodata_fraction),
                                      backend=backend, sink=sink)
        self.run_state: SinkRun | None = None
        self.timings: dict[str, float] = {}
        self._updating = False
        self._drawer = _Latest(lambda: self._guarded(self._draw)) if asynchronous else None
        self._build(sink, str(path) if path is not None else default_path(sink))
        self._refresh(preview=True)

    # ---- public ---------------------------------------------------------------------------------

    @property
    def spec(self) -> PatchSpec:
        """The spec the controls describe now."""
        return self.model.spec

    def summary(self) -> Summary:
        """The summary the explorer shows (:meth:`ExplorerModel.summary`)."""
        return self.model.summary()

    @property
    def sink(self) -> str:
        """The sink chosen in the menu."""
        return self.controls["sink"].value

    @property
    def path(self) -> str:
        """The output path typed in."""
        return self.controls["path"].value

    def to_code(self, name: str | None = None) -> str:
        """The equivalent Python call and ``patchkit run`` command, as one text (see :func:`job_code`)."""
        python, cli = self._code(name)
        return f"# Python\n{python}\n\n# shell\n{cli}\n"

    def _code(self, name: str | None = None) -> tuple[str, str]:
        model = self.model
        mode = "w" if self.controls["overwrite"].value else None
        return job_code(model.spec, self.sink, self.path, max_memory=model.max_memory,
                        max_nodata_fraction=model.max_nodata_fraction, source=self.scene.source_path,
                        name=name or self.name, mode=mode, chunks=self.scene.chunks, backend=model.backend)

    def set(self, **values: Any) -> None:
        """Set controls by name (``sizes``, ``strides``, ``rates``, ``padding``, ``max_memory``,
        ``max_nodata_fraction`` (None turns the filter off), ``sink``, ``path``), as a user would."""
        for key, value in values.items():  # all checked first: a refused value changes no control
            if key not in self.controls:
                raise PatchkitValueError(f"{key!r} is not a control of the explorer; use one of {sorted(self.controls)}")
            if key == "max_nodata_fraction":
                check_fraction(value)
            elif key in ("sizes", "strides", "rates"):
                _control_int(key, value, self.controls[key])
        for key, value in values.items():
            if key == "max_nodata_fraction":
                self.controls["filter_nodata"].value = value is not None
                if value is not None:
                    self.controls["max_nodata_fraction"].value = float(value)
            elif key in ("sizes", "strides", "rates"):
                self.controls[key].value = int(value)
            else:
                self.controls[key].value = value

    def run(self, *, wait: bool = False) -> SinkRun:
        """Start the extraction to the chosen sink, as the Run button does; ``wait`` blocks until it ends."""
        if self.run_state is not None and self.run_state.running:
            raise PatchkitValueError("a run is going; cancel it first (explorer.cancel())")
        model = self.model
        mode = "w" if self.controls["overwrite"].value else None
        self.controls["overwrite"].value = False  # a rerun after a cancel resumes
        self.progress.value, self.progress.bar_style = 0, ""
        self.status.value = f"running → {self.path}"
        self.run_state = SinkRun(self.scene.obj, self.sink, self.path, model.spec, max_memory=model.max_memory,
                                 max_nodata_fraction=model.max_nodata_fraction, mode=mode, backend=model.backend,
                                 on_progress=self._on_progress, on_finish=self._on_finish, layout=self.scene.layout)
        self.controls["run"].disabled, self.controls["cancel"].disabled = True, False
        self.run_state.start()
        if wait:
            self.run_state.join()
        return self.run_state

    def cancel(self) -> None:
        """Cancel the run in progress (it stops at its next chunk read and can be resumed)."""
        if self.run_state is not None:
            self.run_state.cancel()
            self.status.value = "cancelling…"

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    # ---- building -------------------------------------------------------------------------------

    def _build(self, sink: str, path: str) -> None:
        import ipywidgets as W

        self.controls = self._make_controls(W, sink, path)
        self._make_outputs(W)
        self.widget = self._lay_out(W)
        self._wire()

    def _make_controls(self, W: Any, sink: str, path: str) -> dict:
        """Every control, by the name of the parameter it sets (its description)."""
        h, w = self.scene.image_shape
        spec, model = self.model.spec, self.model
        style = {"description_width": "initial"}
        wide = W.Layout(width="340px")
        biggest = min(max(h, w), 8192)
        fraction = model.max_nodata_fraction
        c = {
            "sizes": W.IntSlider(value=spec.sizes[0], min=1, max=max(biggest, spec.sizes[0]), description="sizes",
                                 tooltip="sizes: patch height and width in pixels", style=style, layout=wide),
            "strides": W.IntSlider(value=spec.strides[0], min=1, max=max(biggest, spec.strides[0]), description="strides",
                                   tooltip="strides: pixels between patch starts", style=style, layout=wide),
            "rates": W.IntSlider(value=spec.rates[0], min=1, max=max(16, spec.rates[0]), description="rates",
                                 tooltip="rates: dilation, every rate-th pixel", style=style, layout=wide),
            "padding": W.ToggleButtons(options=["VALID", "SAME"], value=spec.padding, description="padding",
                                       style={**style, "button_width": "70px"}),
            "max_memory": W.Text(value=str(model.max_memory), description="max_memory", continuous_update=False,
                                 tooltip="max_memory: bound on what a streamed run holds, e.g. 512MiB", style=style, layout=wide),
            "filter_nodata": W.Checkbox(value=fraction is not None, description="filter by max_nodata_fraction",
                                        indent=False, style=style),
            "max_nodata_fraction": W.FloatSlider(value=fraction if fraction is not None else 0.1, min=0.0, max=1.0, step=0.01,
                                                 description="max_nodata_fraction", disabled=fraction is None, style=style,
                                                 layout=wide),
            "patch_row": W.IntSlider(value=0, min=0, max=0, description="patch_row", style=style, layout=W.Layout(width="300px")),
            "patch_col": W.IntSlider(value=0, min=0, max=0, description="patch_col", style=style, layout=W.Layout(width="300px")),
            "sink": W.Dropdown(options=list(sinks.available()), value=sink, description="sink", style=style),
            "path": W.Text(value=path, description="path", continuous_update=False, style=style, layout=W.Layout(width="320px")),
            "overwrite": W.Checkbox(value=False, description="overwrite (mode='w')", indent=False),
            "run": W.Button(description="Run", button_style="primary", icon="play", tooltip="run the extraction to the sink"),
            "cancel": W.Button(description="Cancel", button_style="warning", icon="stop", disabled=True,
                               tooltip="stop the run; running it again resumes"),
        }
        for key in ("sizes", "strides", "rates", "max_nodata_fraction", "patch_row", "patch_col"):
            c[key].add_class(f"patchkit-{key}")
        return c

    def _make_outputs(self, W: Any) -> None:
        """The summary, the two images, the code, the progress bar and the status line."""
        self.summary_box = W.HTML(layout=W.Layout(min_width="420px"))
        self.summary_box.add_class("patchkit-summary")
        self.scene_image = W.Image(format="png")
        self.patch_image = W.Image(format="png")
        self.code_box = W.HTML()
        self.code_box.add_class("patchkit-code")
        self.progress = W.IntProgress(value=0, min=0, max=max(1, self.model.summary().grid_shape[0]), description="progress",
                                      style={"description_width": "initial"})
        self.status = W.Label(value="")
        self.status.add_class("patchkit-status")

    def _lay_out(self, W: Any) -> Any:
        """The whole widget: controls and summary, a note on the preview, the pictures, the code, the run."""
        c = self.controls
        h, w = self.scene.image_shape
        note = W.HTML(f"<small>preview: {self.scene.preview.origin} of {h:,} × {w:,}; "
                      f"nodata share {'counted' if self.scene.nodata.exact else 'estimated from the preview'}</small>")
        controls = W.VBox([c["sizes"], c["strides"], c["rates"], c["padding"], c["max_memory"],
                           W.HBox([c["filter_nodata"]]), c["max_nodata_fraction"]])
        patch_box = W.VBox([self.patch_image, c["patch_row"], c["patch_col"]])
        run_box = W.HBox([c["sink"], c["path"], c["overwrite"], c["run"], c["cancel"], self.progress, self.status])
        widget = W.VBox([W.HBox([controls, self.summary_box]), note, W.HBox([self.scene_image, patch_box]),
                         self.code_box, run_box])
        widget.add_class("patchkit-explorer")
        return widget

    def _wire(self) -> None:
        """Observe the controls and the buttons."""
        c = self.controls
        for key in ("sizes", "strides", "rates", "padding", "max_memory", "max_nodata_fraction", "filter_nodata"):
            c[key].observe(self._on_control, names="value")
        for key in ("patch_row", "patch_col"):
            c[key].observe(self._on_select, names="value")
        c["sink"].observe(self._on_sink, names="value")
        for key in ("path", "overwrite"):
            c[key].observe(lambda change: self._show_code(), names="value")
        c["run"].on_click(lambda _: self._guarded(self.run))
        c["cancel"].on_click(lambda _: self.cancel())

    # ---- events ---------------------------------------------------------------------------------

    def _guarded(self, action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception as err:  # shown, never raised into the front end's console
            self.status.value = f"{type(err).__name__}: {err}"

    def _on_control(self, change: Any) -> None:
        if self._updating:
            return
        c = self.controls
        c["max_nodata_fraction"].disabled = not c["filter_nodata"].value
        fraction = c["max_nodata_fraction"].value if c["filter_nodata"].value else None
        changes = {"max_memory": c["max_memory"].value.strip(), "max_nodata_fraction": fraction}
        spec = self.model.spec
        for key in ("sizes", "strides", "rates"):
            value = c[key].value
            changes[key] = getattr(spec, key) if change.owner is not c[key] and getattr(spec, key)[0] == value else value
        changes["padding"] = c["padding"].value
        try:
            memory = changes["max_memory"]
            changes["max_memory"] = int(memory) if memory.isdigit() else memory
            self.model = self.model.update(**changes)
        except PatchkitError as err:
            self.summary_box.value = f"<p class='patchkit-problem' style='color:#c00'>{_escape(str(err))}</p>"
            return
        self._refresh(preview=change.owner is not c["max_memory"])

    def _on_select(self, change: Any) -> None:
        if not self._updating:
            self._request_draw()

    def _on_sink(self, change: Any) -> None:
        if self.controls["path"].value in {default_path(name) for name in sinks.available()}:
            self.controls["path"].value = default_path(change.new)
        self.model = self.model.update(sink=change.new)  # the plan shown is the one this sink streams
        self._refresh(preview=False)

    def _on_progress(self, done: int, total: int, unit: str) -> None:
        self.progress.max = max(1, total)
        self.progress.value = min(done, self.progress.max)
        self.progress.description = unit

    def _on_finish(self, run: SinkRun) -> None:
        self.controls["run"].disabled, self.controls["cancel"].disabled = False, True
        if run.state == "done":
            self.progress.bar_style = "success"
            self.status.value = f"done in {run.seconds:.1f} s → {run.result}"
        elif run.state == "cancelled":
            self.progress.bar_style = "warning"
            self.status.value = "cancelled; Run again resumes"
        else:
            self.progress.bar_style = "danger"
            self.status.value = f"failed: {type(run.error).__name__}: {run.error}"

    # ---- refreshing -----------------------------------------------------------------------------

    def _refresh(self, preview: bool) -> None:
        start = time.perf_counter()
        summary = self.model.summary()
        self.timings["summary"] = time.perf_counter() - start
        self.summary_box.value = summary_html(summary, self.model, self.scene.preview.origin)
        self.controls["run"].disabled = not summary.ok or (self.run_state is not None and self.run_state.running)
        oh, ow = summary.grid_shape
        self._updating = True
        try:
            for key, n in (("patch_row", oh), ("patch_col", ow)):
                slider = self.controls[key]
                keep = slider.value if slider.max > 0 and slider.value <= n - 1 else n // 2
                slider.max = max(n - 1, 0)
                slider.value = min(keep, max(n - 1, 0))
                slider.disabled = n == 0
        finally:
            self._updating = False
        self._show_code()
        if preview:
            self._request_draw()

    def _request_draw(self) -> None:
        if self._drawer is None:
            self._guarded(self._draw)
        else:
            self._drawer.request()

    def wait_drawn(self, timeout: float | None = 60.0) -> bool:
        """Block until the preview and the patch show the current state (for scripts and tests)."""
        return True if self._drawer is None else self._drawer.wait(timeout)

    def _show_code(self) -> None:
        self.code_box.value = f"<pre style='font-size:11px;margin:0'>{_escape(self.to_code())}</pre>"

    def _draw(self) -> None:
        spec = self.model.spec
        start = time.perf_counter()
        oh, ow = fitted_grid(spec, self.scene.image_shape)
        selected = (self.controls["patch_row"].value, self.controls["patch_col"].value) if oh and ow else None
        dropped = None
        fraction = self.model.max_nodata_fraction
        if fraction is not None and oh and ow and oh * ow <= 20_000:
            shares, sampled = self.scene.nodata.patch_shares(spec)
            dropped = None if sampled else shares > fraction
        self.scene_image.value = render_scene(self.scene, spec, selected, dropped)
        if selected is not None:
            patch = self.scene.read_patch(spec, *selected)
            win = spec.window(*selected, self.scene.image_shape)
            title = f"patch ({selected[0]}, {selected[1]}): rows {win.row_off}…{win.row_off + win.height - 1}, cols {win.col_off}…{win.col_off + win.width - 1}"
            self.patch_image.value = render_patch(self.scene, patch, title)
        self.timings["draw"] = time.perf_counter() - start
