"""Resuming a prediction written to ``out``: the image is written under a hidden name beside ``out``
(``.{name}.predict.partial{suffix}``) with a log of its finished rows (``.{name}.predict.json``). A run that stops,
killed or on a model's error, leaves both; the next run with the same fingerprint opens the partial image and
predicts only the bands not logged; a run with another fingerprint starts afresh. The image moves to ``out`` when
whole, and the log goes.

The fingerprint is what the prediction depends on: the spec and options, the model (:func:`model_fingerprint`),
and the source: its description (dims, shape, dtype, attrs, coordinates), the size and modification time of the
files it was read from; a dask graph without files by its name (dask's content token), an array in memory by a
hash of its pixels.
"""

from __future__ import annotations

import hashlib
import marshal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.spec import PatchSpec
from ..sinks._store import RowLog, digest, describe, hash_into, read_json, remove, source_files, write_json
from .scene import Scene

__all__ = ["Resume", "fingerprint", "source_fingerprint", "model_fingerprint"]

#: Bumped when what predict writes changes, so that partial images of older code are not resumed.
FORMAT = 1
#: Functions inside a model's closure are fingerprinted this many levels deep (a recursive closure stops there).
DEPTH = 3


@dataclass
class Resume:
    """The finished rows of a prediction into ``path`` (``height`` rows), logged beside it under ``fingerprint``."""

    path: Path
    fingerprint: str
    log: RowLog

    @classmethod
    def start(cls, path: Path, fingerprint: str, height: int) -> "Resume":
        """Resume a run of the same ``fingerprint`` whose partial image is there; else drop what a run left."""
        state = cls(Path(path), fingerprint, RowLog(height))
        found = read_json(state.log_path)
        if found and found.get("fingerprint") == fingerprint and state.scratch.exists():
            state.log = RowLog(height, found.get("rows", ()))
        else:
            remove(state.scratch, strict=False)
            remove(state.log_path, strict=False)
        return state

    @property
    def scratch(self) -> Path:
        return self.path.with_name(f".{self.path.name}.predict.partial{self.path.suffix}")

    @property
    def log_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.predict.json")

    def done(self, y0: int, y1: int) -> bool:
        """Whether rows ``[y0, y1)`` are all finished."""
        return bool(self.log.done[y0:y1].all())

    def add(self, y0: int, y1: int) -> None:
        """Log rows ``[y0, y1)`` finished (after they reached the file)."""
        self.log.add(slice(y0, y1))
        write_json(self.log_path, {"format": FORMAT, "fingerprint": self.fingerprint, "rows": self.log.intervals()})

    def finish(self) -> None:
        """The image is in place: the log goes."""
        remove(self.log_path, strict=False)


def source_fingerprint(scene: Scene) -> Any:
    """What identifies the source's pixels, without reading a file: see the module docstring."""
    obj, data = scene.obj, scene.source.data
    described = describe(obj) if scene.labelled else {"shape": list(scene.source.shape), "dtype": str(scene.source.dtype)}
    files = source_files(obj) if scene.labelled else []
    if files:
        return [described, files]
    if scene.source.kind == "dask":
        return [described, str(data.name)]
    h = hashlib.sha256()
    hash_into(h, np.ascontiguousarray(scene.source.numpy()))
    return [described, h.hexdigest()]


def model_fingerprint(model: Callable, depth: int = 0) -> str:
    """A hash of a model: a Keras model's weights and configuration, a PyTorch module's state, a function's code,
    constants, defaults and closure (a ``tf.function``'s Python function; functions in the closure too, a few deep);
    else its type's ``__call__``. What a function reads from globals is not in it."""
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    if callable(getattr(model, "get_weights", None)):
        for weight in model.get_weights():
            hash_into(h, np.ascontiguousarray(weight))
        config = getattr(model, "to_json", None)
        h.update(config().encode() if callable(config) else b"")
        return h.hexdigest()
    if callable(getattr(model, "state_dict", None)):
        from .model import to_host

        for name, value in model.state_dict().items():
            h.update(str(name).encode())
            hash_into(h, np.ascontiguousarray(to_host(value)))
        return h.hexdigest()
    function = getattr(model, "python_function", model)
    code = getattr(function, "__code__", None) or getattr(getattr(type(model), "__call__", None), "__code__", None)
    if code is not None:
        h.update(marshal.dumps(code))
    for value in (getattr(function, "__defaults__", None) or ()) + tuple(
            cell.cell_contents for cell in (getattr(function, "__closure__", None) or ()) if _filled(cell)):
        _hash_value(h, value, depth + 1)
    return h.hexdigest()


def _filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # an empty cell
        return False
    return True


def _hash_value(h, value: Any, depth: int = 0) -> None:
    """Arrays by their bytes, callables by their fingerprint (up to :data:`DEPTH` deep), the rest by ``repr``."""
    if isinstance(value, np.ndarray):
        hash_into(h, np.ascontiguousarray(value))
    elif callable(value) and depth <= DEPTH:
        h.update(model_fingerprint(value, depth).encode())
    else:
        h.update(repr(value).encode())


def fingerprint(scene: Scene, spec: PatchSpec, model: Callable, **options: Any) -> str:
    """The fingerprint of a prediction: format, spec, options, source and model."""
    described = {k: model_fingerprint(v) if callable(v) else repr(v) for k, v in sorted(options.items())}
    return digest({"format": FORMAT, "spec": spec.to_dict(), "options": described, "source": source_fingerprint(scene),
                   "model": model_fingerprint(model)})
