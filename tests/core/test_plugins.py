"""Tests of patchkit.core.plugins.Registry: built-ins imported on first use, registered members, entry points
read lazily (and again after refresh), unknown names refused with what is available."""

from __future__ import annotations

import sys

import pytest

from patchkit.core.plugins import Registry
from patchkit.errors import PatchkitValueError, UnknownSinkError


def _registry(**kwargs) -> Registry:
    return Registry("patchkit.test-nothing", "thing", {"json": "json:dumps", "path": "os.path:join"}, **kwargs)


def test_builtins_are_imported_on_first_use(monkeypatch):
    """Listing names imports nothing; get() imports the named attribute once and keeps it."""
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    registry = Registry("patchkit.test-nothing", "thing", {"hls": "colorsys:rgb_to_hls"})
    assert registry.available() == ("hls",) and "colorsys" not in sys.modules
    first = registry.get("hls")
    assert first is sys.modules["colorsys"].rgb_to_hls and registry.get("hls") is first


def test_register_adds_and_replaces():
    """register() adds a member (an object or a "module:attribute" string); a later one replaces it."""
    registry = _registry(make=lambda obj: ("made", obj))
    registry.register("mine", len)
    assert registry.get("mine") == ("made", len) and "mine" in registry
    registry.register("mine", "json:loads")
    assert registry.get("mine")[1].__name__ == "loads"
    with pytest.raises(PatchkitValueError, match=r"name='my thing' must be an identifier"):
        registry.register("my thing", len)


@pytest.mark.parametrize("name", ["csv", None, 3, ["json"]])
def test_unknown_names_list_what_is_available(name):
    """Anything that names no member raises the registry's error class, listing the members and the group."""
    registry = _registry(error=UnknownSinkError)
    with pytest.raises(UnknownSinkError, match=r"thing=.* is not a patchkit thing; use one of json, path \(packages add "
                                               r"more through the 'patchkit.test-nothing' entry-point group\)"):
        registry.get(name)


def test_entry_points_are_read_once_and_again_after_refresh(monkeypatch):
    """The entry-point group is read on the first lookup that needs it, once; refresh() reads it again."""
    import importlib.metadata as metadata

    calls = []

    class Point:
        name, value = "plugged", "json:dumps"

    def entry_points(group):
        calls.append(group)
        return [Point()]

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    registry = _registry()
    assert registry.get("json") and not calls  # a built-in needs no metadata
    assert "plugged" in registry.available() and registry.get("plugged").__name__ == "dumps"
    registry.available()
    assert calls == ["patchkit.test-nothing"]
    registry.refresh()
    registry.available()
    assert len(calls) == 2


def test_builtins_win_over_an_entry_point_of_the_same_name(monkeypatch):
    """A package cannot replace a built-in by naming its entry point the same; register() can."""
    import importlib.metadata as metadata

    class Point:
        name, value = "json", "os.path:join"

    monkeypatch.setattr(metadata, "entry_points", lambda group: [Point()])
    registry = _registry()
    assert registry.get("json").__name__ == "dumps"
