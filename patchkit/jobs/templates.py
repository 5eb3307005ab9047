"""Parameterized notebook templates run with papermill: list them, check parameters, run them.

The templates live in the top-level ``templates/`` folder of a checkout (found there when patchkit runs
from the checkout or an editable install); the wheel carries them as ``patchkit/templates/*.ipynb``
(:func:`template_folder`).
Each has one cell tagged ``parameters``; papermill reads its names, defaults and comments. Parameters are
checked against that cell *before* a kernel starts, and templates run on a kernel of this very Python
environment (:data:`KERNEL_NAME`, installed into ``sys.prefix`` on first use), never on whatever kernel
the machine happens to have.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from ..errors import NotebookError, ParameterFileError, PatchkitError, PatchkitValueError, SinkWriteError, shown

__all__ = ["KERNEL_NAME", "Parameter", "templates", "template_folder", "template_path", "parameters", "check_parameters",
           "read_parameters_file", "check_values", "check_prediction", "ensure_kernel", "run_template", "NotebookError"]

#: The kernel templates run on: this environment's Python, installed as a kernelspec on first use.
KERNEL_NAME = "patchkit"


@dataclass(frozen=True)
class Parameter:
    """One parameter of a template: its name, default (Python source), type and help."""

    name: str
    default: str
    type: str
    help: str

    @property
    def value(self) -> Any:
        return ast.literal_eval(self.default)


def template_folder() -> Path:
    """The folder of the template notebooks: the package's own (an installed wheel), else a checkout's ``templates/``.

    A wheel carries them as package data in ``patchkit/templates``; in a source checkout (run from it, or
    installed editable) they stay in ``templates/`` beside ``patchkit/``, their source of truth. Found by
    path, not by importing ``patchkit.templates``: setuptools' editable finder does not resolve a folder
    without ``__init__.py`` mapped under a regular package.
    """
    candidates = (resources.files("patchkit") / "templates", Path(__file__).resolve().parents[2] / "templates")
    for folder in candidates:
        if folder.is_dir() and any(p.name.endswith(".ipynb") for p in folder.iterdir()):
            return Path(str(folder))
    raise PatchkitError(f"no notebook templates found (looked in {', '.join(str(f) for f in candidates)}); "
                        "reinstall patchkit, whose wheel carries them in patchkit/templates")


def templates() -> dict[str, Path]:
    """``{name: path}`` of every template shipped with patchkit."""
    folder = template_folder()
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix == ".ipynb"}


def template_path(name: str | Path) -> Path:
    """The notebook of template ``name`` (or ``name`` itself when it is a notebook's path)."""
    known = templates()
    if name in known:
        return known[str(name)]
    if Path(name).suffix == ".ipynb" and Path(name).exists():
        return Path(name)
    raise PatchkitValueError(f"template {str(name)!r} is not one of {sorted(known)} (nor a notebook path); "
                             "`patchkit templates` lists them")


def parameters(name: str | Path) -> dict[str, Parameter]:
    """The parameters of a template, read from its ``parameters`` cell by papermill."""
    import papermill

    found = papermill.inspect_notebook(str(template_path(name)))
    out = {}
    for key, p in found.items():
        kind = p["inferred_type_name"]
        if kind == "None":  # no annotation: the default's type
            kind = _kind(ast.literal_eval(p["default"]))
        out[key] = Parameter(key, p["default"], kind, p["help"])
    return out


def _kind(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _compatible(default: Any, value: Any) -> bool:
    """Whether ``value`` may replace ``default``: same type, int for float, a list of ints for an int, anything for None."""
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float) and isinstance(value, int):
        return True
    if isinstance(default, int) and isinstance(value, (list, tuple)):
        return all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return isinstance(value, type(default))


def parse_value(text: str) -> Any:
    """A command-line value as Python: ``128`` an int, ``[256, 128]`` a list, ``None``, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def read_parameters_file(path: str | Path) -> dict[str, Any]:
    """The parameters in a YAML file (``-f params.yaml``): a mapping of names to values; empty: none.

    Raises
    ------
    ParameterFileError
        The file cannot be read, is not valid YAML (the message gives the line and column), or does
        not hold a mapping of parameter names to values.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ParameterFileError(
            f"the parameters file {str(path)!r} cannot be read ({type(err).__name__}: {err}); check the path "
            "given to -f/--parameters-file, and that it is a UTF-8 text file"
        ) from None
    try:
        found = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ParameterFileError(f"the parameters file {str(path)!r} is not valid YAML: {_yaml_problem(err)}; "
                                 "fix that line (each parameter on a line of its own, as 'sizes: 256')") from None
    if found is None:
        return {}
    if not isinstance(found, dict) or not all(isinstance(key, str) for key in found):
        raise ParameterFileError(
            f"the parameters file {str(path)!r} holds {shown(found)}, not a mapping of parameter names to "
            "values; write one 'name: value' per line, such as 'sizes: 256'"
        )
    return found


def _yaml_problem(err: Exception) -> str:
    """``line L, column C: <problem> (<context> at line L', column C')`` of a YAML error (1-based)."""
    mark, context, context_mark = (getattr(err, n, None) for n in ("problem_mark", "context", "context_mark"))
    problem = getattr(err, "problem", None) or str(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    if context and context_mark is not None and (mark is None or context_mark.line != mark.line):
        problem += f" ({context} that starts at line {context_mark.line + 1}, column {context_mark.column + 1})"
    elif context:
        problem += f" ({context})"
    return where + problem


def check_parameters(name: str | Path, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` checked against the template's parameters cell: names known, types compatible.

    Raises
    ------
    PatchkitValueError
        For an unknown name (listing the valid ones) or a value of the wrong type.
    """
    known = parameters(name)
    unknown = sorted(set(given) - set(known))
    if unknown:
        listing = ", ".join(f"{p.name} ({p.type}, default {p.default})" for p in known.values())
        raise PatchkitValueError(f"template {Path(str(name)).stem!r} has no parameter {', '.join(map(repr, unknown))}; "
                                 f"its parameters are: {listing}")
    for key, value in given.items():
        default = known[key].value
        if not _compatible(default, value):
            raise PatchkitValueError(f"parameter {key}={value!r} is of type {_kind(value)}, but template "
                                     f"{Path(str(name)).stem!r} expects the type of its default {known[key].default} "
                                     f"({_kind(default)}); pass e.g. -p {key} {known[key].default}")
    return dict(given)


_SPEC_NAMES = ("sizes", "strides", "rates", "padding")


def check_values(name: str | Path, values: Mapping[str, Any]) -> None:
    """Check the values of the parameters patchkit knows, before a kernel starts (a bad one would otherwise
    surface as a failing cell minutes later): the spec (``sizes``, ``strides``, ``rates``, ``padding``,
    with the template's defaults for those not given), ``max_memory``, ``max_nodata_fraction``, ``sink``, and
    the prediction's ``crop``, ``blend`` (with the spec's patch size) and ``batch_size``.
    Other values are the template's to check.

    Raises
    ------
    PatchkitError
        The error patchkit itself would raise for the value (``InvalidSpecError``, ``InvalidMemoryError``...).
    """
    from ..labelled.nodata import check_fraction
    from ..sinks import check_sink
    from ..core.spec import PatchSpec
    from ..core.units import parse_bytes

    known = parameters(name)
    merged = {key: p.value for key, p in known.items()} | dict(values)
    if any(key in values for key in _SPEC_NAMES) and all(key in merged for key in ("sizes", "strides")):
        PatchSpec(merged["sizes"], merged["strides"], merged.get("rates", 1), merged.get("padding", "VALID"))
    if "max_memory" in values:
        parse_bytes(values["max_memory"])
    if "max_nodata_fraction" in values:
        check_fraction(values["max_nodata_fraction"])
    if "sink" in values:
        check_sink(values["sink"])
    _check_prediction(merged, values)


def _check_prediction(merged: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """The prediction's ``crop``, ``blend`` (for the template's patch size) and ``batch_size``, when given."""
    from ..core.spec import PatchSpec

    if not any(key in values for key in ("crop", "blend", "batch_size")):
        return
    spec = None
    if all(key in merged for key in ("sizes", "strides")):
        spec = PatchSpec(merged["sizes"], merged["strides"], merged.get("rates", 1), merged.get("padding", "VALID"))
    check_prediction(spec, merged.get("crop", 0), merged.get("blend"), values.get("batch_size"),
                     fix="pass e.g. -p batch_size 16, or None to pick one under max_memory")


def check_prediction(spec: Any, crop: Any = 0, blend: Any = None, batch_size: Any = None, *,
                     fix: str = "pass e.g. batch_size=16, or None to pick one under max_memory") -> None:
    """``crop`` and ``blend`` as :func:`patchkit.predict` checks them, for the patch size of ``spec`` (a
    :class:`~patchkit.PatchSpec`, or None to skip them), and ``batch_size``: a positive integer or None. Run before
    a model is loaded or a kernel starts; ``fix`` says what to do about a bad batch size, in the caller's words.

    Raises
    ------
    PatchkitValueError
        The error :func:`patchkit.predict` would raise later.
    """
    from ..stitch.windows import blend_weights, normalize_crop

    if spec is not None:
        rows, cols = normalize_crop(crop, spec.sizes)
        if blend is not None:
            blend_weights(blend, (spec.sizes[0] - 2 * rows, spec.sizes[1] - 2 * cols))
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise PatchkitValueError(f"batch_size={shown(batch_size)} is not a positive integer; {fix}")


def _make_output_dir(output_dir: Path) -> None:
    """Create ``output_dir``, or raise :class:`SinkWriteError` naming it (a file on the way, no permission)."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        error = SinkWriteError(
            f"output_dir={str(output_dir)!r} cannot be made: {err.strerror or err}; choose another --output-dir "
            "(a folder you can write to, with no file on the way)"
        )
        error.errno = err.errno
        raise error from None


def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """Install a kernelspec for this Python (``sys.executable``) into ``sys.prefix``, once; return its name."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
        if spec.argv and Path(spec.argv[0]).resolve() == Path(sys.executable).resolve():
            return name
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=name, display_name=f"Python (patchkit, {Path(sys.prefix).name})", prefix=sys.prefix)
    return name


def run_template(name: str | Path, given: Mapping[str, Any], output_dir: str | Path, *, kernel: str | None = None,
                 log_output: bool = False, progress: bool = True) -> Path:
    """Run template ``name`` with parameters ``given`` through papermill; return the executed notebook.

    The executed notebook is written into ``output_dir`` as ``<template>.ipynb``, and a template
    parameter named ``output_dir`` is set to it unless ``given`` sets it. Relative paths in parameters
    are relative to the current directory, where the kernel runs. Parameters are checked before the
    kernel starts.

    Raises
    ------
    PatchkitValueError
        Unknown parameters, wrong types or values patchkit refuses (:func:`check_values`); no kernel is started.
    SinkWriteError
        ``output_dir`` cannot be made.
    NotebookError
        A cell raised; the executed notebook (with the traceback) is still written.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = template_path(name)
    values = check_parameters(source, given)
    check_values(source, values)
    output_dir = Path(output_dir).resolve()
    if "output_dir" in parameters(source):
        values.setdefault("output_dir", str(output_dir))
    _make_output_dir(output_dir)
    executed = output_dir / source.name
    kernel = kernel or ensure_kernel()
    try:
        papermill.execute_notebook(str(source), str(executed), parameters=values, kernel_name=kernel,
                                   log_output=log_output, progress_bar=progress)
    except PapermillExecutionError as err:
        raise NotebookError(executed, err.cell_index, err.ename, err.evalue) from err
    return executed
