"""The user guide's notebooks: executed copies of ``notebooks/*.ipynb``, kept with their outputs.

The walkthroughs in ``notebooks/`` are stored without outputs and are executed by the test suite
(``tests/test_notebooks.py``). The user guide shows them *with* outputs, from executed copies kept in
``docs/user_guide/`` (committed), so that building the docs never has to run them:

* ``make docs`` builds with ``-D patchkit_execute_notebooks=1``: a copy whose source notebook changed
  since it was executed (its cells, compared by digest) is executed again with papermill, on this
  environment's kernel, in a temporary folder, and replaces the stored copy;
* any other build (``tests/test_docs.py``, a plain ``sphinx-build``) uses the stored copies as they
  are (myst-nb's ``nb_execution_mode = "off"``) and names the stale ones in its log.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from sphinx.util import logging

DOCS = Path(__file__).resolve().parents[1]
SOURCES = DOCS.parent / "notebooks"
GUIDE = DOCS / "user_guide"
#: Where the stored copy records the digest of the cells it was executed from.
STAMP = "patchkit_docs"

logger = logging.getLogger(__name__)


def source_digest(path: Path) -> str:
    """SHA-256 of a notebook's cells (type and source): outputs and metadata do not count."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    text = json.dumps([(c["cell_type"], "".join(c["source"])) for c in cells])
    return hashlib.sha256(text.encode()).hexdigest()


def stored_digest(path: Path) -> str | None:
    """The digest recorded in an executed copy, or None when there is no copy."""
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["metadata"].get(STAMP, {}).get("source_sha256")


def stale() -> list[Path]:
    """The source notebooks whose stored copy is missing or was executed from other cells."""
    return [src for src in sorted(SOURCES.glob("*.ipynb")) if stored_digest(GUIDE / src.name) != source_digest(src)]


def execute(src: Path) -> Path:
    """Execute ``src`` with papermill (its own parameters, in a temporary folder) into the user guide."""
    import papermill

    from patchkit.jobs.templates import ensure_kernel

    dst = GUIDE / src.name
    with tempfile.TemporaryDirectory(prefix="patchkit-docs-") as tmp:
        out = Path(tmp, src.name)
        papermill.execute_notebook(str(src), str(out), kernel_name=ensure_kernel(), cwd=tmp, progress_bar=False)
        notebook = json.loads(out.read_text(encoding="utf-8"))
    notebook["metadata"].pop("papermill", None)  # timings and paths of this run: noise in the stored copy
    for cell in notebook["cells"]:
        cell["metadata"].pop("papermill", None)
        cell["metadata"].pop("execution", None)
    notebook["metadata"][STAMP] = {"source": f"notebooks/{src.name}", "source_sha256": source_digest(src)}
    dst.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return dst


def refresh(app: Any) -> None:
    """Execute the stale notebooks when the build asks for it; otherwise name them in the log."""
    for src in stale():
        if app.config.patchkit_execute_notebooks:
            logger.info("executing %s for the user guide", src.name)
            execute(src)
        else:
            logger.info("docs/user_guide/%s is older than notebooks/%s: `make docs` executes it again",
                        src.name, src.name)


def setup(app: Any) -> dict[str, Any]:
    app.add_config_value("patchkit_execute_notebooks", False, "env", types=(bool,))
    app.connect("builder-inited", refresh)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
