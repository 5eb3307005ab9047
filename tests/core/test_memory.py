"""max_memory bounds what a streamed run holds: the resident memory a process gains while ``to_zarr`` streams a
lazily read GeoTIFF larger than the budget (bands, halos read ahead, dask's and GDAL's temporaries, GDAL's block
cache, the store's chunk buffers), measured by the kernel, not by patchkit's own arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("rioxarray")
pytest.importorskip("zarr")
pytest.importorskip("dask")

MAX_MEMORY = 64 * 2**20

#: Run in a fresh interpreter: a warm-up run (imports, thread pools, GDAL and zarr set up), then the peak RSS
#: (VmHWM, reset through /proc/self/clear_refs) of the measured run above the RSS before it.
SCRIPT = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
import rioxarray
import patchkit

path, folder, max_memory = sys.argv[1], sys.argv[2], int(sys.argv[3])


def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


def run(store, **window):
    scene = rioxarray.open_rasterio(path, chunks={"band": -1, "y": 1024, "x": 1024}).isel(**window)
    scene.patches.to_zarr(store, 256, 128, max_memory=max_memory, compression=None, progress=False)


run(folder + "/warm.zarr", y=slice(0, 640), x=slice(0, 640))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before, start = status("VmRSS"), time.perf_counter()
run(folder + "/scene.zarr")
print(json.dumps({"growth": status("VmHWM") - before, "seconds": time.perf_counter() - start}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the kernel's peak RSS (VmHWM) from /proc")
def test_to_zarr_of_a_lazy_geotiff_stays_within_max_memory(tmp_path):
    """to_zarr of a lazily read 128 MiB GeoTIFF (496 MiB of patches) under max_memory=64MiB grows the process's
    resident memory by at most 1.25 x max_memory, at its peak. Before GDAL's block cache was bounded and counted
    (it kept every block it decoded, up to 5 % of the RAM) this run grew by about 200 MiB."""
    from benchmarks.bench_xarray import write_scene  # the benchmarks' scene: tiled, 512 x 512 blocks

    scene = write_scene(tmp_path / "scene.tif", 4, 4096)
    assert scene.stat().st_size >= 128 * 2**20
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(scene), str(tmp_path), str(MAX_MEMORY)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["growth"] <= 1.25 * MAX_MEMORY, (
        f"peak RSS grew by {measured['growth'] / 2**20:.0f} MiB under max_memory={MAX_MEMORY >> 20}MiB")
