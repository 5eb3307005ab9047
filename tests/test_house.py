"""The house's rules (docs/architecture.md, the design's rooms and conventions), checked on the source.

- A module of ``patchkit/`` has at most 500 lines (every line of the file).
- A function or method has at most 60 lines: from its ``def`` line to its last line, decorators not
  counted, less its docstring's lines and less every function defined inside it (with its decorators),
  which is counted on its own; a class defined inside a function leaves its methods to be counted on
  their own too. Blank and comment lines inside the body count.
- ``import patchkit`` takes under a second in a fresh interpreter (best of three) and imports none of the
  heavy packages, which are imported inside the room that needs them.
- Arrows point down: ``patchkit/core`` imports, at module level, nothing of patchkit but ``patchkit.core``
  and ``patchkit.errors`` (imports inside a function are allowed: the custom gradient in
  ``core/tensors.py`` imports ``stitch`` when it runs); nothing imports ``patchkit.explorer`` or
  ``patchkit.jobs`` at module level but those two packages themselves and ``patchkit/__main__.py``.
  Module level means statements that run on import: the module's body, with the bodies of its ``if``,
  ``try``, ``with``, loops and classes, but not functions, nor ``if TYPE_CHECKING:`` blocks.
- Every ``raise`` raises a class of ``patchkit/errors.py`` or re-raises: the exception named, or the
  class a factory's return annotation (or a parameter's annotation) names. argparse's
  ``ArgumentTypeError`` is the one foreign class allowed, in a ``type=`` converter, where argparse turns
  it into a usage error with its message; a module's ``__getattr__`` raises ``AttributeError`` (PEP 562); ``patchkit/testing.py`` raises ``AssertionError`` (its
  assertions' contract, as numpy.testing's). No ``assert`` in ``patchkit/``, testing.py included:
  arguments are checked with patchkit's errors, and ``python -O`` would drop an assert.
- Exception (and warning) classes are defined in ``patchkit/errors.py`` only. ``tests/test_errors.py``
  catches classes whose bases read ``...Error``, ``...Exception`` or ``...Cancelled``; here, the rest:
  builtin bases under other names (``Warning``, ``KeyboardInterrupt``, ``StopIteration``...), patchkit
  errors imported under another name, subclasses of such local classes, and ``type(name, bases, ...)``.
"""

from __future__ import annotations

import ast
import builtins
import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "patchkit"
MODULES = sorted(PACKAGE.rglob("*.py"))

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
MAX_IMPORT_SECONDS = 1.0
HEAVY = ("tensorflow", "keras", "cupy", "zarr", "rasterio", "dask", "matplotlib", "ipywidgets", "papermill")
#: What patchkit/core may import of patchkit at module level.
CORE_MAY_IMPORT = ("patchkit.core", "patchkit.errors")
TOP_ROOMS = ("patchkit.explorer", "patchkit.jobs")
#: Foreign exception classes a raise may name, and why.
FOREIGN_ALLOWED = {"argparse.ArgumentTypeError": "argparse makes it a usage error (exit 2) with its message"}
#: patchkit.testing's assertions raise AssertionError, as numpy.testing's do: that is their contract with pytest.
ASSERTION_MODULE = "patchkit/testing.py"

BUILTIN_EXCEPTIONS = {name for name, value in vars(builtins).items()
                      if isinstance(value, type) and issubclass(value, BaseException)}
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def where(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def error_classes() -> frozenset[str]:
    """The names of the classes defined in patchkit/errors.py."""
    return frozenset(n.name for n in parsed(PACKAGE / "errors.py").body if isinstance(n, ast.ClassDef))


def walk_defs(node: ast.AST, qualname: str = ""):
    """``(qualified name, def node)`` of every function and method under ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, FUNCTIONS):
            name = f"{qualname}{child.name}"
            yield name, child
            yield from walk_defs(child, f"{name}.<locals>.")
        elif isinstance(child, ast.ClassDef):
            yield from walk_defs(child, f"{qualname}{child.name}.")
        else:
            yield from walk_defs(child, qualname)


def nearest_defs(node: ast.AST):
    """The functions defined inside ``node``'s body, not inside another function (through classes)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, FUNCTIONS):
            yield child
        else:
            yield from nearest_defs(child)


def span(node: ast.AST, with_decorators: bool = False) -> int:
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))]) if with_decorators else node.lineno
    return node.end_lineno - first + 1


def function_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of ``node`` from ``def`` to its end, less its docstring and the functions defined inside it."""
    lines = span(node)
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= span(first)
    return lines - sum(span(inner, with_decorators=True) for inner in nearest_defs(node))


def test_function_lines_counting():
    """The counting itself: docstring and nested functions (with decorators) left out, class methods apart."""
    source = '''
def outer(a):
    """Doc
    string."""
    x = 1

    @decorated
    def inner():
        return 2

    class Local:
        def method(self):
            return 3
    return x
'''
    counted = {name: function_lines(node) for name, node in walk_defs(ast.parse(source))}
    assert counted == {"outer": 6, "outer.<locals>.inner": 2, "outer.<locals>.Local.method": 2}


def test_modules_are_short():
    """No module of patchkit/ is over 500 lines: a longer one is several rooms' work in one file."""
    long = {where(p): n for p in MODULES if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_functions_are_short():
    """No function or method is over 60 lines (docstring and nested functions not counted)."""
    long = [f"{where(p)}:{node.lineno}-{node.end_lineno} {name} ({n} lines)"
            for p in MODULES for name, node in walk_defs(parsed(p))
            if (n := function_lines(node)) > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


# --------------------------------------------------------------------------------------------------
# import patchkit: quick and light
# --------------------------------------------------------------------------------------------------

_IMPORT = f"""
import json, sys, time
start = time.perf_counter()
import patchkit
seconds = time.perf_counter() - start
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print(json.dumps({{"seconds": seconds, "heavy": heavy}}))
"""


@pytest.fixture(scope="module")
def fresh_imports() -> list[dict]:
    """Three ``import patchkit`` in fresh interpreters (from the checkout): seconds and heavy modules loaded."""
    runs = []
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", _IMPORT], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


def test_import_is_quick(fresh_imports):
    """``import patchkit`` takes under a second, the best of three fresh interpreters."""
    best = min(run["seconds"] for run in fresh_imports)
    print(f"import patchkit: best {best:.3f} s of {[round(r['seconds'], 3) for r in fresh_imports]}")
    assert best < MAX_IMPORT_SECONDS, (f"import patchkit takes {best:.2f} s (best of 3); see what costs most with "
                                       "python -X importtime -c 'import patchkit'")


def test_import_is_light(fresh_imports):
    """``import patchkit`` imports none of the heavy packages (TensorFlow, zarr, rasterio, dask...)."""
    heavy = sorted({m.split(".")[0] for run in fresh_imports for m in run["heavy"]})
    assert not heavy, f"import patchkit imports {heavy}; import them inside the function that needs them"


# --------------------------------------------------------------------------------------------------
# Arrows point down
# --------------------------------------------------------------------------------------------------

def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _run_on_import(statements):
    """The statements of ``statements`` that run when the module is imported (not inside functions)."""
    for node in statements:
        if isinstance(node, FUNCTIONS):
            continue
        yield node
        if isinstance(node, ast.If):
            yield from _run_on_import(([] if _is_type_checking(node.test) else node.body) + node.orelse)
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            yield from _run_on_import(node.body + [s for h in node.handlers for s in h.body] + node.orelse + node.finalbody)
        elif isinstance(node, (ast.With, ast.AsyncWith, ast.ClassDef, ast.For, ast.AsyncFor, ast.While)):
            yield from _run_on_import(node.body + getattr(node, "orelse", []))


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every patchkit module (or name in one) that ``path`` imports at module level."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in _run_on_import(parsed(path).body):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            targets = [f"{module}.{alias.name}" for alias in node.names if alias.name != "*"]
            found += [(node.lineno, t) for t in ([module] if node.module else []) + targets]
    return [(line, m) for line, m in found if m.startswith("patchkit.")]


def _within(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_core_imports_only_core():
    """patchkit/core imports nothing above it at module level (labelled, sinks, stitch, explorer, jobs...)."""
    upward = [f"{where(p)}:{line} imports {m}" for p in MODULES if _within(module_name(p), ("patchkit.core",))
              for line, m in imported_modules(p) if not _within(m, CORE_MAY_IMPORT)]
    assert not upward, "core imports above itself at module level:\n" + "\n".join(upward)


def test_nothing_imports_explorer_or_jobs():
    """Only explorer/, jobs/ and __main__.py import patchkit.explorer or patchkit.jobs at module level."""
    exempt = (*TOP_ROOMS, "patchkit.__main__")
    upward = [f"{where(p)}:{line} imports {m}" for p in MODULES if not _within(module_name(p), exempt)
              for line, m in imported_modules(p) if _within(m, TOP_ROOMS)]
    assert not upward, "modules import explorer or jobs at module level:\n" + "\n".join(upward)


# --------------------------------------------------------------------------------------------------
# Errors: patchkit's own, raised and defined in one place
# --------------------------------------------------------------------------------------------------

class _Module:
    """What a raise in one module can name: its imports, functions and classes."""

    def __init__(self, path: Path):
        self.path, self.tree = path, parsed(path)
        self.imports: dict[str, str] = {}
        package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                self.imports.update({(a.asname or a.name).split(".")[0]: a.asname and a.name or a.name.split(".")[0]
                                     for a in node.names})
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                self.imports.update({a.asname or a.name: f"{module}.{a.name}" for a in node.names})
        self.functions = {n.name: n for n in self.tree.body if isinstance(n, FUNCTIONS)}
        self.classes = {n.name: n for n in ast.walk(self.tree) if isinstance(n, ast.ClassDef)}


@cache
def _module(path: Path) -> _Module:
    return _Module(path)


def _module_path(module: str) -> Path | None:
    relative = Path(*module.split("."))
    for candidate in (ROOT / relative.with_suffix(".py"), ROOT / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _origin_verdicts(origin: str, seen: frozenset) -> set[str]:
    """What the name imported as ``origin`` (``package.module.name``) raises."""
    module, _, name = origin.rpartition(".")
    if module == "patchkit.errors" and name in error_classes():
        return {"ok"}
    if not origin.startswith("patchkit."):
        return {"ok"} if origin in FOREIGN_ALLOWED else {f"foreign {origin}"}
    path = _module_path(module)
    if path is not None and name in _module(path).functions:
        return _returns(_module(path), _module(path).functions[name], seen)
    if path is not None and name in _module(path).imports:
        return _origin_verdicts(_module(path).imports[name], seen)
    return {f"unknown {origin}"}


def _returns(mod: _Module, function: ast.AST, seen: frozenset) -> set[str]:
    """What a factory raises when its result is raised: the class its return annotation names."""
    if function.returns is None:
        return {f"unknown {function.name}() (no return annotation)"}
    return _annotation(mod, function.returns, seen)


def _annotation(mod: _Module, node: ast.expr, seen: frozenset) -> set[str]:
    """The exception classes an annotation names: ``X``, ``type[X]``, ``Callable[..., X]``, ``X | None``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return _annotation(mod, ast.parse(node.value, mode="eval").body, seen)
    if isinstance(node, ast.Constant) and node.value is None:
        return set()
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _annotation(mod, node.left, seen) | _annotation(mod, node.right, seen)
    if isinstance(node, ast.Subscript):
        head = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", "")
        inner = node.slice.elts[-1] if isinstance(node.slice, ast.Tuple) and head == "Callable" else node.slice
        if head in ("type", "Type", "Callable", "Optional"):
            return _annotation(mod, inner, seen)
    return _name(mod, node, None, None, seen)


def _name(mod: _Module, node: ast.expr, function, cls, seen: frozenset) -> set[str]:
    """What raising (or calling, then raising) the name or attribute ``node`` raises."""
    text = ast.unparse(node)
    if isinstance(node, ast.Attribute):
        if node.attr in error_classes():
            return {"ok"}
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls") and cls is not None:
            return _attribute(mod, cls, node.attr, seen)
        root, _, rest = text.partition(".")
        if root in mod.imports and all(part.isidentifier() for part in rest.split(".")):  # module.attr.Class
            return _origin_verdicts(f"{mod.imports[root]}.{rest}", seen)
        return {f"unknown {text}"}
    if not isinstance(node, ast.Name):
        return {f"unknown {text}"}
    if node.id in mod.imports:
        return _origin_verdicts(mod.imports[node.id], seen)
    if node.id in mod.functions:
        return _returns(mod, mod.functions[node.id], seen)
    if node.id in error_classes() and mod.path.name == "errors.py":
        return {"ok"}
    if node.id in BUILTIN_EXCEPTIONS:
        return {f"builtin {node.id}"}
    return {f"unknown {text}"}


def _attribute(mod: _Module, cls: ast.ClassDef, attr: str, seen: frozenset) -> set[str]:
    """What ``self.<attr>`` holds: the values its class assigns it (class body or ``self.attr = ...``)."""
    found = set()
    for item in cls.body:
        if isinstance(item, ast.AnnAssign) and getattr(item.target, "id", None) == attr:
            found |= _annotation(mod, item.annotation, seen)
    for method in (m for m in cls.body if isinstance(m, FUNCTIONS)):
        for node in ast.walk(method):
            if isinstance(node, ast.Assign):
                for target, value in _pairs(node):
                    if isinstance(target, ast.Attribute) and target.attr == attr and getattr(target.value, "id", "") == "self":
                        found |= _expr(mod, value, method, None, seen)
    return found or {f"unknown self.{attr}"}


def _pairs(node: ast.Assign):
    """``(target, value)`` of an assignment, tuples unpacked pairwise (``a, b = x, y``)."""
    for target in node.targets:
        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple) and len(target.elts) == len(node.value.elts):
            yield from zip(target.elts, node.value.elts)
        else:
            yield target, node.value


def _local(mod: _Module, function, name: str, cls, seen: frozenset) -> set[str] | None:
    """What the local name ``name`` of ``function`` raises: a caught exception (a re-raise), a parameter
    (its annotation), or the values assigned to it; None when it is not local."""
    if any(isinstance(n, ast.ExceptHandler) and n.name == name for n in ast.walk(function)):
        return {"ok"}
    args = function.args
    for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
        if arg.arg == name:
            return _annotation(mod, arg.annotation, seen) if arg.annotation is not None else {f"unknown parameter {name}"}
    values = [value for node in ast.walk(function) if isinstance(node, ast.Assign)
              for target, value in _pairs(node) if getattr(target, "id", None) == name]
    return set().union(*(_expr(mod, v, function, cls, seen) for v in values)) if values else None


def _expr(mod: _Module, node: ast.expr, function, cls, seen: frozenset) -> set[str]:
    """What ``raise <node>`` raises, as verdicts: ``ok``, or ``builtin X`` / ``foreign X`` / ``unknown X``."""
    key = (mod.path, ast.unparse(node), getattr(function, "lineno", 0))
    if key in seen:
        return set()
    seen = seen | {key}
    if isinstance(node, ast.Call):
        head = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if head == "partial" and node.args:
            return _expr(mod, node.args[0], function, cls, seen)
        return _expr(mod, node.func, function, cls, seen)
    if isinstance(node, ast.IfExp):
        return _expr(mod, node.body, function, cls, seen) | _expr(mod, node.orelse, function, cls, seen)
    if isinstance(node, ast.BoolOp):
        return set().union(*(_expr(mod, v, function, cls, seen) for v in node.values))
    if isinstance(node, ast.Name) and function is not None:
        local = _local(mod, function, node.id, cls, seen)
        if local is not None:
            return local
    return _name(mod, node, function, cls, seen)


def _raises(tree: ast.AST, function=None, cls=None):
    """``(raise node, enclosing function, enclosing class)`` of every raise under ``tree``."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.Raise):
            yield child, function, cls
        yield from _raises(child, child if isinstance(child, FUNCTIONS) else function,
                           child if isinstance(child, ast.ClassDef) else cls)


def test_raises_name_patchkit_errors():
    """Every raise names a class of patchkit/errors.py (directly, or through an annotated factory or
    parameter), or re-raises: never a bare builtin (ValueError, NotImplementedError...) or a foreign class."""
    bad = []
    for path in MODULES:
        mod = _module(path)
        for node, function, cls in _raises(mod.tree):
            if node.exc is None:
                continue
            verdicts = _expr(mod, node.exc, function, cls, frozenset()) - {"ok"}
            if where(path) == ASSERTION_MODULE:
                verdicts.discard("builtin AssertionError")
            if function is not None and function.name == "__getattr__" and function in mod.tree.body:
                verdicts.discard("builtin AttributeError")  # a module's __getattr__ (PEP 562) must raise it
            if verdicts:
                bad.append(f"{where(path)}:{node.lineno} raise {ast.unparse(node.exc)[:60]}: {', '.join(sorted(verdicts))}")
    assert not bad, ("raises that name no class of patchkit/errors.py (annotate a factory's return or a parameter "
                     "with the errors class it gives; abstract methods: abc.abstractmethod):\n" + "\n".join(bad))


def test_no_assert():
    """No assert in patchkit/: checks raise patchkit's errors (and python -O drops asserts)."""
    found = [f"{where(p)}:{n.lineno} {ast.unparse(n)[:70]}" for p in MODULES for n in ast.walk(parsed(p))
             if isinstance(n, ast.Assert)]
    assert not found, "assert statements in patchkit/:\n" + "\n".join(found)


def _caught_by_test_errors(bases) -> bool:
    """What tests/test_errors.py already reports: a base whose text reads Error, Exception or Cancelled."""
    return any(word in ast.unparse(b) for b in bases for word in ("Error", "Exception", "Cancelled"))


def _exception_base(mod: _Module, base: ast.expr, local: set[str]) -> bool:
    if isinstance(base, ast.Name):
        origin = mod.imports.get(base.id, "")
        return (base.id in BUILTIN_EXCEPTIONS or base.id in local
                or (origin.rpartition(".")[0] == "patchkit.errors" and origin.rpartition(".")[2] in error_classes()))
    if isinstance(base, ast.Attribute):
        return base.attr in error_classes() or base.attr in BUILTIN_EXCEPTIONS or base.attr.endswith("Warning")
    return False


def test_exception_classes_only_in_errors_module():
    """No module but patchkit/errors.py defines an exception or warning class, under any name of its base
    (what tests/test_errors.py does not already catch), nor makes one with type(name, bases, namespace)."""
    found = []
    for path in (p for p in MODULES if p != PACKAGE / "errors.py"):
        mod, local = _module(path), set()
        for _ in range(len(_module(path).classes) + 1):  # local classes of local exception classes, to a fixed point
            local |= {name for name, c in mod.classes.items() if any(_exception_base(mod, b, local) for b in c.bases)}
        found += [f"{where(path)}:{c.lineno} class {c.name}" for name, c in mod.classes.items()
                  if name in local and not _caught_by_test_errors(c.bases)]
        found += [f"{where(path)}:{n.lineno} {ast.unparse(n)[:70]}" for n in ast.walk(mod.tree)
                  if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "type" and len(n.args) == 3
                  and isinstance(n.args[1], ast.Tuple) and any(_exception_base(mod, b, local) for b in n.args[1].elts)]
    assert not found, "exception classes outside patchkit/errors.py:\n" + "\n".join(found)


def test_raise_checker_itself(tmp_path, monkeypatch):
    """The raise check tells patchkit's errors (direct, aliased, through annotated factories, parameters and
    attributes, re-raised) from builtins, foreign classes and what it cannot tell."""
    package = tmp_path / "patchkit"
    package.mkdir()
    (package / "errors.py").write_text("class PatchkitError(Exception): ...\nclass BadError(PatchkitError, ValueError): ...\n")
    (package / "helpers.py").write_text("from .errors import BadError\n\ndef make(x) -> BadError:\n    return BadError(x)\n")
    (package / "mod.py").write_text('''
import argparse
import zarr
from . import errors
from .errors import BadError as Bad
from .helpers import make

class Holder:
    def __init__(self, error: type[Bad] = Bad, other=None):
        self.error, self.other = error, other

    def ok(self):
        raise self.error("x")

    def unknown(self):
        raise self.other("x")

def plain() -> ValueError:
    return ValueError()

def f(kind: type[Bad], anything):
    raise Bad("ok")
    raise errors.BadError("ok")
    raise make("ok")
    raise kind("ok")
    raise (Bad if anything else errors.BadError)("ok")
    error = Bad("ok")
    raise error
    try:
        pass
    except OSError as err:
        raise err
    raise argparse.ArgumentTypeError("ok")
    raise ValueError("builtin")
    raise plain()
    raise zarr.errors.Foreign("foreign")
    raise anything("unknown")
''')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    error_classes.cache_clear()
    try:
        mod = _Module(package / "mod.py")
        found = {node.lineno: _expr(mod, node.exc, function, cls, frozenset()) for node, function, cls in _raises(mod.tree)}
    finally:
        error_classes.cache_clear()
    lines = (package / "mod.py").read_text().splitlines()
    by_text = {lines[n - 1].strip(): verdicts for n, verdicts in found.items()}
    assert {text for text, verdicts in by_text.items() if verdicts == {"ok"}} == {
        'raise self.error("x")', 'raise Bad("ok")', 'raise errors.BadError("ok")', 'raise make("ok")', 'raise kind("ok")',
        'raise (Bad if anything else errors.BadError)("ok")', "raise error", "raise err", 'raise argparse.ArgumentTypeError("ok")'}
    assert by_text['raise ValueError("builtin")'] == by_text["raise plain()"] == {"builtin ValueError"}
    assert by_text['raise zarr.errors.Foreign("foreign")'] == {"foreign zarr.errors.Foreign"}
    assert by_text['raise self.other("x")'] == {"unknown parameter other"}
    assert by_text['raise anything("unknown")'] == {"unknown parameter anything"}
