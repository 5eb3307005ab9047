"""explorer/__init__: the public names are where they were, re-exported from the rooms, and import nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import patchkit.explorer as explorer
from patchkit.core.spec import coverage as spec_coverage


def test_public_names_are_re_exported():
    """Every name of __all__ is there, and coverage is the spec's own (the explorer derives no geometry)."""
    for name in explorer.__all__:
        assert getattr(explorer, name) is not None
    assert explorer.coverage is spec_coverage.coverage
    assert explorer.PatchExplorer.__module__ == "patchkit.explorer.view"


def test_importing_the_explorer_loads_no_widgets_or_matplotlib():
    """ipywidgets and matplotlib are imported by the view and the drawing when used, not on import."""
    code = "import sys, patchkit.explorer; print(sorted(m for m in ('matplotlib', 'ipywidgets') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
