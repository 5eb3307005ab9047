"""Families that built-ins and third parties fill the same way: sinks, backends (papermill's engines, xarray's backends).

A :class:`Registry` maps names to members. Built-ins are named by ``"module:attribute"`` and imported
on first use; third-party packages add members through an entry-point group (``patchkit.sinks``,
``patchkit.backends``) in their metadata, read once, lazily, on the first lookup, so that ``import
patchkit`` reads no metadata and imports no member. An unknown name is refused with the names
available.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from ..errors import PatchkitError, PatchkitValueError, shown

__all__ = ["Registry"]


def _load(target: str) -> Any:
    """The object ``"package.module:attribute"`` names."""
    module, _, attribute = target.partition(":")
    obj = importlib.import_module(module)
    for part in attribute.split(".") if attribute else ():
        obj = getattr(obj, part)
    return obj


class Registry:
    """Named members of one family, from built-ins, :meth:`register` calls and an entry-point group.

    Parameters
    ----------
    group : str
        The entry-point group third parties register in (``"patchkit.sinks"``).
    kind : str
        What a member is, for messages (``"sink"``).
    builtins : dict
        ``{name: "module:attribute"}`` of the members patchkit ships.
    make : callable, optional
        Turns a loaded object into the member (for example, instantiates a class).
    error : type
        The :class:`~patchkit.errors.PatchkitError` raised for an unknown name.
    """

    def __init__(self, group: str, kind: str, builtins: dict[str, str], make: Callable[[Any], Any] | None = None,
                 error: type[PatchkitError] = PatchkitValueError) -> None:
        self.group, self.kind, self.error = group, kind, error
        self._builtins: dict[str, Any] = dict(builtins)
        self._registered: dict[str, Any] = {}
        self._installed: dict[str, str] | None = None  # from the entry points, read on first lookup
        self._loaded: dict[str, Any] = {}
        self._make = make or (lambda obj: obj)

    def register(self, name: str, member: Any) -> None:
        """Add (or replace) ``member`` under ``name``; ``member`` may also be a ``"module:attribute"`` string."""
        if not isinstance(name, str) or not name.isidentifier():
            raise PatchkitValueError(f"name={shown(name)} must be an identifier such as 'my_{self.kind}'; pass one")
        self._registered[name] = member
        self._loaded.pop(name, None)

    def available(self) -> tuple[str, ...]:
        """The names of every member: built-in, registered and installed through entry points (none imported)."""
        return tuple(sorted(self._targets()))

    def get(self, name: Any) -> Any:
        """The member called ``name``, imported on first use; ``error`` listing the names when there is none."""
        targets = self._targets(read=not (isinstance(name, str) and (name in self._builtins or name in self._registered)))
        if not isinstance(name, str) or name not in targets:
            raise self.error(
                f"{self.kind}={shown(name)} is not a patchkit {self.kind}; use one of {', '.join(self.available())} "
                f"(packages add more through the {self.group!r} entry-point group)"
            )
        if name not in self._loaded:
            target = targets[name]
            self._loaded[name] = self._make(_load(target) if isinstance(target, str) else target)
        return self._loaded[name]

    def refresh(self) -> None:
        """Read the entry points again on the next lookup (after a package was installed or removed in a running
        kernel); members loaded from them are loaded again."""
        for name in self._installed or ():
            self._loaded.pop(name, None)
        self._installed = None

    def __contains__(self, name: Any) -> bool:
        return isinstance(name, str) and name in self.available()

    def _targets(self, read: bool = True) -> dict[str, Any]:
        """Every member's target: installed ones (entry points, read once), then built-ins, then registered ones."""
        if read and self._installed is None:
            from importlib.metadata import entry_points

            self._installed = {point.name: point.value for point in entry_points(group=self.group)}
        return {**(self._installed or {}), **self._builtins, **self._registered}
