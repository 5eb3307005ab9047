"""PatchExplorer in a real browser: JupyterLab from this environment, headless Debian Chromium, Playwright.

The test writes a small GeoTIFF and a notebook into a temporary folder, starts ``jupyter lab`` there
on a free localhost port (token, isolated config/runtime/settings dirs, a kernelspec for this
Python), opens the notebook in Chromium, runs it, moves the stride slider with the keyboard and
checks that the patch count the page shows is PatchSpec's for the new stride. A screenshot is saved
to ``outputs/widgets/explorer.png`` under the project root.

Skipped only where Chromium (``/usr/bin/chromium``) or Playwright is missing: no browser build can
be downloaded on these machines.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from patchkit.core.spec import PatchSpec

from ..helpers import write_geotiff

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[1] / "outputs" / "widgets" / "explorer.png"
KERNEL = "patchkit-test"
SHAPE = (300, 400)  # (height, width) of the scene
SIZES, STRIDES, PRESSES = 64, 32, 3

CELL = """\
import rioxarray
import patchkit
from patchkit.explorer import PatchExplorer

scene = rioxarray.open_rasterio("scene.tif", chunks={"y": 128, "x": 128})
explorer = PatchExplorer(scene, sizes=%d, strides=%d, max_nodata_fraction=0.2)
explorer
""" % (SIZES, STRIDES)

pytestmark = pytest.mark.slow

#: True once the element that ``selector`` finds now (widgets replace their HTML) shows ``want``, commas aside.
TEXT_IS = """([selector, want]) => {
    const el = document.querySelector(selector);
    return el !== null && el.textContent.replace(/,/g, '').trim() === want;
}"""


def _notebook() -> dict:
    return {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "explorer", "metadata": {}, "outputs": [],
                   "source": CELL.splitlines(keepends=True)}],
        "metadata": {"kernelspec": {"name": KERNEL, "display_name": "patchkit (test)", "language": "python"},
                     "language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"jupyter lab did not answer {url} within {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server we started (and the kernel it started, in the same new session)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)  # jupyter shuts its kernels down on SIGINT/SIGTERM
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
def sync_api():
    """Playwright's sync API, with Debian's Chromium present; the only reasons this test skips."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium (apt-get install chromium); "
                    "the browser test needs it, and no browser build can be downloaded here")
    return pytest.importorskip("playwright.sync_api", reason="Playwright (Python) is not installed: pip install playwright")


@pytest.fixture
def lab(sync_api, tmp_path):
    """A JupyterLab server on localhost serving ``tmp_path / "root"``: yields ``(base_url, token, root)``."""
    for module in ("jupyterlab", "ipywidgets", "ipykernel", "matplotlib"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"{module} is not installed; the widgets' browser test needs it: pip install -e '.[dev]'")
    root = tmp_path / "root"
    root.mkdir()
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        JUPYTER_PATH=str(tmp_path / "kernels" / "share" / "jupyter"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
        IPYTHONDIR=str(tmp_path / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
    )
    news = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false"}))  # no "official Jupyter news?" toast over the screenshot
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(tmp_path / "kernels"), "--name", KERNEL,
                    "--display-name", "patchkit (test)"], check=True, env=env, capture_output=True)
    port, token = _free_port(), secrets.token_hex(16)
    log = tmp_path / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
             "--LabApp.expose_app_in_browser=True", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_server(f"{base}/api/status?token={token}", proc, log)
        yield base, token, root
    finally:
        _stop(proc)


def _count(page) -> int:
    return int(page.locator(".patchkit-count").inner_text().replace(",", ""))


def test_stride_slider_updates_the_patch_count_in_chromium(sync_api, lab):
    """In JupyterLab in headless Chromium, ArrowRight on the stride slider changes the shown count to PatchSpec's."""
    base, token, root = lab
    y, x = np.mgrid[: SHAPE[0], : SHAPE[1]]
    waves = [np.sin(y / 23.0 + k) * np.cos(x / (31.0 + 9 * k)) for k in range(3)]
    noise = np.random.default_rng(3).normal(0, 0.1, (3, *SHAPE))
    data = (2000 + 1500 * (np.stack(waves) + noise)).clip(1, 4000).astype(np.uint16)
    data[:, :, :60] = 0  # a nodata margin
    from rasterio.transform import from_origin

    write_geotiff(root / "scene.tif", data, from_origin(500000.0, 4200000.0, 10.0, 10.0), nodata=0)
    (root / "explorer.ipynb").write_text(json.dumps(_notebook()))

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage",
                  "--no-first-run", "--disable-extensions"],
        )
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            page.set_default_timeout(90_000)
            page.goto(f"{base}/lab/tree/explorer.ipynb?token={token}&reset", wait_until="domcontentloaded")
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                                   "&& window.jupyterapp.shell.currentWidget.content "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext")
            page.wait_for_selector(".jp-Notebook .jp-Cell", state="attached")
            page.evaluate("""async () => {
                const panel = window.jupyterapp.shell.currentWidget;
                await panel.sessionContext.ready;
                await window.jupyterapp.commands.execute('notebook:run-all-cells');
            }""")
            page.wait_for_selector(".patchkit-count", state="visible")
            first = SHAPE
            assert _count(page) == np.prod(PatchSpec(SIZES, STRIDES).grid_shape(first))

            handle = page.locator(".patchkit-strides .noUi-handle")
            handle.click()
            for _ in range(PRESSES):
                page.keyboard.press("ArrowRight")
            stride = STRIDES + PRESSES
            page.wait_for_function(TEXT_IS, arg=[".patchkit-strides .widget-readout", str(stride)])
            want = int(np.prod(PatchSpec(SIZES, stride).grid_shape(SHAPE)))
            page.wait_for_function(TEXT_IS, arg=[".patchkit-count", str(want)])  # the summary's HTML is replaced on change
            assert _count(page) == want != np.prod(PatchSpec(SIZES, STRIDES).grid_shape(SHAPE))

            # let the background drawing of the new grid land, then keep a picture of it
            page.wait_for_function("() => [...document.querySelectorAll('.patchkit-explorer img')]"
                                   ".every(img => img.complete && img.naturalWidth > 0)")
            time.sleep(1.5)
            page.locator(".patchkit-explorer").scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
