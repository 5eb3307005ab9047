"""Sphinx configuration of patchkit's documentation (``make docs`` builds it into ``docs/_build/html``).

Pages are MyST Markdown and reStructuredText; the user guide is the notebooks of ``notebooks/``, shown
from executed copies in ``user_guide/`` (see ``_ext/patchkit_notebooks.py``: ``make docs`` executes
the stale ones, every other build only reads them); the API reference is generated from the
docstrings (autosummary + numpydoc), the command-line page from the argparse parser (sphinx-argparse).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # patchkit.keras imports Keras (TensorFlow) for its page

import patchkit  # noqa: E402

project = "patchkit"
author = "patchkit developers"
copyright = "patchkit developers"
release = patchkit.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_nb",  # MyST Markdown pages and notebooks (includes myst_parser)
    "sphinxarg.ext",
    "patchkit_notebooks",
]

root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
suppress_warnings: list[str] = []

# API reference: one page per object, generated into api/generated/ (git-ignored) from _templates/autosummary.
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types; signatures stay readable
autodoc_member_order = "bysource"
numpydoc_show_class_members = False  # the class template lists members with autodoc instead
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# patchkit.keras subclasses a Keras layer: without the tensorflow extra its page is made from a mock of Keras.
autodoc_mock_imports = [name for name in ("keras", "tensorflow") if importlib.util.find_spec(name) is None]

# Notebooks are never executed by Sphinx itself: the stored copies in user_guide/ carry their outputs.
nb_execution_mode = "off"
nb_merge_streams = True
# TensorFlow's start-up log lines and library warnings (rioxarray, zarr) on stderr are noise on a page;
# `make docs` still prints them, and tests/test_notebooks.py runs the notebooks with warnings shown.
nb_output_stderr = "remove"
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "pydata_sphinx_theme"
html_title = f"patchkit {release}"
html_static_path = ["_static"]
html_css_files = ["patchkit.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
# Pages without sub-pages: no empty "Section Navigation" column.
html_sidebars = {page: [] for page in ("index", "getting_started", "cli", "plugins", "architecture", "bad_inputs")}
html_show_sourcelink = False
