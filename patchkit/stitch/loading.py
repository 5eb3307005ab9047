"""The model of ``predict``, from what a command line or a template can name: a file, a folder, a function.

:func:`load_model` takes

* a Keras file (``.keras``, or the legacy ``.h5``/``.hdf5``): :func:`keras.models.load_model` (not compiled:
  predicting needs no optimiser or loss, and a custom loss then needs no registering);
* a SavedModel folder (``tf.saved_model.save``, Keras' ``model.export``): its ``serving_default`` signature
  (its only signature, else the loaded object itself when it is callable), wrapped in a
  :class:`SavedModelFunction` that takes the batch as one tensor and gives back the one output tensor;
* ``"package.module:function"`` (``"package.module:Class.method"`` too): the attribute itself, imported
  (not called: a factory is not called to make the model).

Keras and TensorFlow are imported only when a file or folder is loaded. Every failure is a patchkit error
naming ``ref``, its value and what to do.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from pathlib import Path
from typing import Any, Callable

from ..errors import MissingDependencyError, PatchkitTypeError, PatchkitValueError, shown

__all__ = ["load_model", "SavedModelFunction", "KERAS_SUFFIXES"]

#: File suffixes :func:`keras.models.load_model` reads.
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
#: ``package.module:attribute`` (dotted names both sides), as entry points and ``uvicorn`` write them.
_REFERENCE = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")
#: The first bytes of each Keras format: a .keras file is a zip archive, a .h5 file HDF5.
_MAGIC = {".keras": (b"PK\x03\x04", ".keras file (a zip archive)"), ".h5": (b"\x89HDF\r\n\x1a\n", "HDF5 file"),
          ".hdf5": (b"\x89HDF\r\n\x1a\n", "HDF5 file")}
_KINDS = "a Keras file (.keras, .h5), a SavedModel folder (with saved_model.pb) or 'package.module:function'"


def load_model(ref: str | os.PathLike | Callable) -> Callable:
    """The model that ``ref`` names, ready for :func:`patchkit.predict`: a callable taking a batch ``[n, h, w, c]``.

    Parameters
    ----------
    ref
        A path to a Keras ``.keras`` (or ``.h5``) file, a path to a SavedModel folder, or
        ``"package.module:function"`` (an importable callable: the attribute itself, not what it returns;
        the current folder is not added to ``sys.path``). A callable (a model already loaded) is returned
        as it is. ``~`` is expanded.

    Returns
    -------
    callable
        The Keras model; a :class:`SavedModelFunction` for a SavedModel folder; the imported attribute.

    Raises
    ------
    PatchkitValueError
        ``ref`` is empty, names no file or folder, has a suffix no loader reads, is a folder with no
        ``saved_model.pb``, names a module or attribute that does not exist, or the file does not load
        (the loader's message is given).
    PatchkitTypeError
        ``ref`` is neither a string, a path nor a callable, or ``module:attribute`` names something
        that is not callable.
    MissingDependencyError
        A Keras file or SavedModel folder without Keras or TensorFlow installed.

    Examples
    --------
    >>> model = patchkit.load_model("unet.keras")                       # doctest: +SKIP
    >>> model = patchkit.load_model("exported/")                        # SavedModel: model.export("exported/")
    >>> model = patchkit.load_model("mypkg.models:ndvi")                # any function of a batch
    >>> patchkit.predict(scene, model, 256, 192, out="pred.tif")        # doctest: +SKIP
    """
    if callable(ref) and not isinstance(ref, (str, os.PathLike)):
        return ref
    if not isinstance(ref, (str, os.PathLike)):
        raise PatchkitTypeError(f"ref={shown(ref)} ({type(ref).__name__}) is neither a path nor a callable; pass a path "
                                f"(str or Path) to {_KINDS}, or a model")
    text = os.fspath(ref)
    if not str(text).strip():
        raise PatchkitValueError(f"ref={shown(text)} is empty; pass {_KINDS}")
    path = Path(text).expanduser()
    if not path.exists() and isinstance(ref, str) and (found := _REFERENCE.match(text.strip())):
        return _import_callable(text.strip(), found["module"], found["attr"])
    if path.is_dir():
        return _load_saved_model(path)
    if path.is_file():
        return _load_keras(path)
    hint = (" (a 'module:function' reference needs dotted Python names on both sides of the colon)" if ":" in text else "")
    raise PatchkitValueError(f"ref={shown(text)}: no such file or folder{hint}; check the path, or pass {_KINDS}")


def _import_callable(text: str, module_name: str, attr: str) -> Callable:
    """``module_name``'s attribute ``attr`` (dotted), which must be callable."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name) and module_name[len(err.name):len(err.name) + 1] in ("", "."):
            raise PatchkitValueError(
                f"ref={shown(text)}: no module named {err.name!r}; check the spelling, install the package that "
                "provides it, or add the folder that holds it to PYTHONPATH"
            ) from None
        raise PatchkitValueError(f"ref={shown(text)}: importing {module_name!r} failed: {err}; install the package "
                                 f"{err.name!r} that it imports") from err
    except Exception as err:  # the module's own code raised while it was imported
        raise PatchkitValueError(f"ref={shown(text)}: importing {module_name!r} raised {type(err).__name__}: {err}; "
                                 "fix the module so that it imports") from err
    value: Any = module
    for i, part in enumerate(attr.split(".")):
        if not hasattr(value, part):
            owner = ".".join([module_name, *attr.split(".")[:i]])
            raise PatchkitValueError(f"ref={shown(text)}: {owner!r} has no attribute {part!r}; check the name "
                                     f"(callables there: {_callables(value)})")
        value = getattr(value, part)
    if not callable(value):
        raise PatchkitTypeError(f"ref={shown(text)} is {shown(value, 40)} (a {type(value).__name__}), not a callable; "
                                "name a function or model that takes a batch [n, h, w, c]")
    return value


def _callables(owner: Any, limit: int = 8) -> str:
    """The public callables of a module or class, for an error message."""
    names = sorted(n for n in dir(owner) if not n.startswith("_") and callable(getattr(owner, n, None)))
    home = getattr(owner, "__name__", None) if inspect.ismodule(owner) else None
    if home is not None:  # a module's own callables, not what it imported
        names = [n for n in names if getattr(getattr(owner, n), "__module__", home) == home]
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "") if names else "none"


def _keras(ref: Path):
    try:
        import keras
    except ImportError as err:
        raise MissingDependencyError(f"ref={shown(str(ref))} is a Keras file, and Keras is not installed ({err}); "
                                     "install patchkit[tensorflow]") from None
    try:
        import patchkit.keras  # noqa: F401  (registers ExtractPatches, which saved models may hold)
    except ImportError:  # Keras on another backend: models without patchkit's layer still load
        pass
    return keras


def _load_keras(path: Path):
    """A Keras model from a ``.keras``/``.h5`` file, not compiled."""
    suffix = path.suffix.lower()
    if suffix not in KERAS_SUFFIXES:
        what = f"the suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise PatchkitValueError(f"ref={shown(str(path))} has {what}, which no model loader reads; pass {_KINDS}")
    with open(path, "rb") as file:
        head = file.read(8)
    if head[:len(_MAGIC[suffix][0])] != _MAGIC[suffix][0]:
        raise PatchkitValueError(f"ref={shown(str(path))} is not a {_MAGIC[suffix][1]} (its first bytes are {head!r}); "
                                 "check that it was written by model.save() and copied whole")
    keras = _keras(path)
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as err:  # a damaged file, an unknown custom layer, a Lambda refused in safe mode...
        raise PatchkitValueError(
            f"ref={shown(str(path))} does not load as a Keras model ({type(err).__name__}: {_first_line(err)}); check "
            "that it was written by model.save(), or load it yourself (keras.models.load_model with custom_objects "
            "or safe_mode=False, for a file you trust) and pass the model"
        ) from err


def _load_saved_model(path: Path) -> "SavedModelFunction | Callable":
    """The serving function of the SavedModel in ``path``."""
    if not any((path / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt")):
        raise PatchkitValueError(f"ref={shown(str(path))} is a folder without saved_model.pb, so not a SavedModel; "
                                 f"pass {_KINDS} (write one with model.export(folder) or tf.saved_model.save)")
    try:
        import tensorflow as tf
    except ImportError as err:
        raise MissingDependencyError(f"ref={shown(str(path))} is a SavedModel, and TensorFlow is not installed ({err}); "
                                     "install patchkit[tensorflow]") from None
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as err:  # a damaged graph, missing variables, an op this TensorFlow lacks
        raise PatchkitValueError(f"ref={shown(str(path))} does not load as a SavedModel ({type(err).__name__}: "
                                 f"{_first_line(err)}); check the folder is whole, or export the model again") from err
    signatures = dict(loaded.signatures)
    if "serving_default" in signatures or len(signatures) == 1:
        return SavedModelFunction(signatures.get("serving_default") or next(iter(signatures.values())), path, loaded)
    if not signatures and callable(loaded):
        return loaded
    raise PatchkitValueError(f"ref={shown(str(path))} has the signatures {sorted(signatures)} and none is "
                             "'serving_default'; export the model with one serving signature (model.export(folder))")


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


class SavedModelFunction:
    """A SavedModel's serving signature as a function of one batch: ``f(batch) -> tensor``.

    The batch goes in as the signature's one input, cast to its dtype; the one output comes back (a
    ``tf.Tensor``). The loaded object is kept, since the signature's variables live in it.

    Parameters
    ----------
    signature
        A concrete function of the SavedModel (``loaded.signatures[name]``).
    path
        The folder it came from (for messages).
    owner
        The loaded SavedModel, kept alive with the function.
    """

    def __init__(self, signature: Any, path: Path, owner: Any = None):
        inputs = signature.structured_input_signature[1]
        outputs = signature.structured_outputs
        if len(inputs) != 1 or signature.structured_input_signature[0]:
            raise PatchkitValueError(f"ref={shown(str(path))}: the serving signature takes the inputs {sorted(inputs)}, "
                                     "and predict gives a model one batch; export a model with one input")
        if not isinstance(outputs, dict) or len(outputs) != 1:
            names = sorted(outputs) if isinstance(outputs, dict) else shown(outputs)
            raise PatchkitValueError(f"ref={shown(str(path))}: the serving signature returns {names}, and predict "
                                     "takes one output; export a model with one output")
        (self.input_name, self.input_spec), = inputs.items()
        (self.output_name, self.output_spec), = outputs.items()
        self.signature, self.path, self._owner = signature, path, owner

    def __call__(self, batch: Any):
        import tensorflow as tf

        shape = tuple(batch.shape)
        expected = self.input_spec.shape
        if expected.rank is not None and not expected.is_compatible_with(shape):
            sizes = "x".join(str(d) for d in expected.as_list()[1:3] if d is not None)
            raise PatchkitValueError(
                f"the SavedModel ref={shown(str(self.path))} takes batches of shape {tuple(expected.as_list())} and was "
                f"given {shape}; " + (f"pass patches of {sizes} pixels (sizes=...) and the scene's channel count" if sizes
                                      else "pass patches of the shape it was exported for")
            )
        return self.signature(**{self.input_name: tf.cast(batch, self.input_spec.dtype)})[self.output_name]

    def __repr__(self) -> str:
        return (f"SavedModelFunction({str(self.path)!r}, {self.input_name}: {self.input_spec.shape} "
                f"{self.input_spec.dtype.name} -> {self.output_name}: {self.output_spec.shape})")
