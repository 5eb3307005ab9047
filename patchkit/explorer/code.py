"""The job the explorer describes, as text: a Python call and a ``patchkit run extract_patches`` command.

Sinks are found by name in :mod:`patchkit.sinks` (built-in or installed); where the template writes a
sink's output under its ``output_dir`` is the sink's own :attr:`~patchkit.sinks.Sink.output`. Pure:
nothing is read or run.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from .. import sinks
from ..core.budget import DEFAULT_MAX_MEMORY
from ..core.spec import PatchSpec
from .model import check_spec

__all__ = ["job_code", "CLI_TEMPLATE"]

#: The notebook template ``patchkit run`` runs for an extraction (see ``patchkit.jobs.cli``).
CLI_TEMPLATE = "extract_patches"


def _pair(value: tuple[int, int]) -> int | tuple[int, int]:
    return value[0] if value[0] == value[1] else tuple(value)


def _output_dir(sink: sinks.Sink, path: Path) -> tuple[Path, bool]:
    """The template's ``output_dir`` for an output ``path``, and whether the template writes exactly ``path``."""
    tail = sink.output
    if path.parts[-len(tail):] == tail:
        return Path(*path.parts[: -len(tail)]) if len(path.parts) > len(tail) else Path("."), True
    return path.parent, False


def _cli_value(value: Any) -> str:
    """A parameter value as ``patchkit run -p`` parses it back (Python literals; other text stays a string)."""
    if isinstance(value, tuple):
        return f"[{value[0]}, {value[1]}]"
    return str(value)


def _spec_args(spec: PatchSpec) -> dict:
    """The spec as keywords, a pair written once where rows and columns agree."""
    return {"sizes": _pair(spec.sizes), "strides": _pair(spec.strides), "rates": _pair(spec.rates), "padding": spec.padding}


def _python(spec: PatchSpec, sink: str, path: Path, *, max_memory: int | str, max_nodata_fraction: float | None,
            source: str | None, name: str, mode: str | None, chunks: dict | None, backend: str) -> str:
    """The Python lines: import, open ``source`` (when known), and one ``.patches.to(sink, ...)`` call."""
    keywords = {**_spec_args(spec), "max_memory": max_memory}
    for key, value, default in (("max_nodata_fraction", max_nodata_fraction, None), ("mode", mode, None), ("backend", backend, "auto")):
        if value != default:
            keywords[key] = value
    call = f"{name}.patches.to({sink!r}, {str(path)!r}, " + ", ".join(f"{k}={v!r}" for k, v in keywords.items()) + ")"
    lines = ["import patchkit  # registers the .patches accessor"]
    if source is not None:
        opening = f"{source!r}" if chunks is None else f"{source!r}, chunks={chunks!r}"
        lines += ["import rioxarray", f"{name} = rioxarray.open_rasterio({opening})"]
    return "\n".join(lines + [call])


def _command(spec: PatchSpec, sink: sinks.Sink, path: Path, *, max_memory: int | str, max_nodata_fraction: float | None,
             source: str | None, mode: str | None, backend: str) -> str:
    """The ``patchkit run`` line, then comment lines where the template cannot do exactly the same."""
    output_dir, exact = _output_dir(sink, path)
    memory = f"{max_memory}B" if isinstance(max_memory, int) else max_memory  # the template takes a string
    parameters = {"input_path": source if source is not None else "SCENE.tif", **_spec_args(spec), "max_memory": memory,
                  "max_nodata_fraction": max_nodata_fraction, "sink": sink.name, "output_dir": str(output_dir)}
    if backend != "auto":
        parameters["backend"] = backend
    words = ["patchkit", "run", CLI_TEMPLATE]
    for key, value in parameters.items():
        words += ["-p", key, shlex.quote(_cli_value(value))]
    written = sink.default_path(output_dir)
    notes = []
    if source is None:
        notes.append("# SCENE.tif: the raster file the DataArray was read from")
    if not exact:
        notes.append(f"# the template writes {written}, not {path}")
    if mode == "w":
        notes.append(f"# the template resumes a run; to overwrite as mode='w' does, delete {written} first")
    return "\n".join([" ".join(words), *notes])


def job_code(spec: PatchSpec, sink: str, path: str | Path, *, max_memory: int | str = DEFAULT_MAX_MEMORY,
             max_nodata_fraction: float | None = None, source: str | None = None, name: str = "da",
             mode: str | None = None, chunks: dict | None = None, backend: str = "auto") -> tuple[str, str]:
    """The Python call and the ``patchkit run extract_patches`` command that run the same extraction.

    Parameters
    ----------
    spec : PatchSpec
    sink : str
        A name from :func:`patchkit.sinks.available` (``"zarr"``, ``"geotiff"``, ``"tfrecord"``...).
    path : path
        The store, chip folder or TFRecord prefix.
    max_memory, max_nodata_fraction, mode, backend
        As the sinks take them.
    source : str, optional
        The scene's file; the Python code then opens it with rioxarray, and the command passes it
        as ``input_path`` (else ``SCENE.tif`` stands for it).
    name : str
        The variable holding the DataArray in the Python code.
    chunks : dict, optional
        Dask chunks to open ``source`` with (``{"y": 1024, "x": 1024}``); None opens it unchunked.

    Returns
    -------
    (str, str)
        Python source (one ``.patches.to(sink, ...)`` call, after an ``open_rasterio`` line when
        ``source`` is known) and a shell command line for the ``extract_patches`` template, which
        writes the sink's output (``patches.zarr``, ``chips``, ``tfrecord/patches``: ``Sink.output``)
        under its ``output_dir``; comment lines follow the command where the template cannot do
        exactly the same (another output name, ``mode="w"``).

    Raises
    ------
    UnknownSinkError
        ``sink`` names no available sink.
    PatchkitTypeError
        ``spec`` is not a :class:`PatchSpec`.
    """
    found = sinks.get(sink)
    check_spec(spec)
    path = Path(path)
    python = _python(spec, sink, path, max_memory=max_memory, max_nodata_fraction=max_nodata_fraction, source=source,
                     name=name, mode=mode, chunks=chunks, backend=backend)
    command = _command(spec, found, path, max_memory=max_memory, max_nodata_fraction=max_nodata_fraction,
                       source=source, mode=mode, backend=backend)
    return python, command
