"""Writing patches to Zarr (``.patches.to_zarr`` against xarray writing the eager result) and stitching them back.

Run ``python benchmarks/bench_sinks.py [--quick] [--json PATH]``. The scene is a tiled 4-band uint16
GeoTIFF (as in ``bench_xarray.py``), opened lazily with rioxarray (dask chunks of 1024 x 1024), larger
than the ``max_memory`` given to patchkit. Each contender runs in a fresh process, best of
``--repeats`` calls, each call into a new store:

* ``to_zarr`` with zarr's default compression (zstd) and without compression, under ``max_memory``;
* ``xarray``: open, ``.load()``, ``.patches.extract(...)``, ``.to_zarr(...)`` (the eager result written
  by xarray in one call), with and without compression.

Then ``stitch`` puts the stored patches back: streamed from the store into a GeoTIFF under the same
``max_memory`` (``stitch -> tif``), and in memory from the loaded patches (``stitch in memory``).

Reported: seconds, GB/s (of patches written; for stitching, of patches read), the ratio to xarray with
the same compression, and the peak RSS above the start of the call.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import GB, PeakRSS, format_size, isolated, timed  # noqa: E402
from bench_xarray import parse_scene_args, write_scene  # noqa: E402

FULL = dict(bands=4, size=4096, patch=256, stride=128, chunks=1024, max_memory="64MiB", repeats=2)
QUICK = dict(bands=4, size=1024, patch=128, stride=64, chunks=256, max_memory="8MiB", repeats=1)
CONTENDERS = ("to_zarr zstd", "to_zarr raw", "xarray zstd", "xarray raw")
STITCHERS = ("stitch -> tif", "stitch in memory")


def run(path: str, folder: str, name: str, params: dict) -> dict:
    """Write the scene's patches one way, ``repeats`` times into fresh stores; the best call counts."""
    warnings.simplefilter("ignore")
    import rioxarray

    import patchkit

    k, s, chunks = params["patch"], params["stride"], params["chunks"]
    compression = "default" if name.endswith("zstd") else None
    row: dict = {"contender": name, "seconds": float("inf"), "growth": 0}
    for attempt in range(params["repeats"]):
        store = Path(folder) / f"{name.replace(' ', '-')}-{attempt}.zarr"

        def call():
            if name.startswith("stitch"):
                patches = patchkit.open_patches(Path(folder) / "stored.zarr")["pixels"]
                if name == "stitch -> tif":
                    return patchkit.stitch(patches, out=store.with_suffix(".tif"), max_memory=params["max_memory"])
                return patchkit.stitch(patches.load())
            if name.startswith("to_zarr"):
                da = rioxarray.open_rasterio(path, chunks={"band": -1, "y": chunks, "x": chunks})
                return da.patches.to_zarr(store, k, s, max_memory=params["max_memory"], compression=compression, progress=False)
            patches = rioxarray.open_rasterio(path).load().patches.extract(k, s)
            encoding = {} if compression == "default" else {"pixels": {"compressors": ()}}
            return patches.to_dataset(name="pixels").to_zarr(store, mode="w", zarr_format=3, encoding=encoding)

        with PeakRSS() as rss:
            elapsed, _ = timed(call)
        row["seconds"] = min(row["seconds"], elapsed)
        row["growth"] = max(row["growth"], rss.growth)
        shutil.rmtree(store, ignore_errors=True)
        store.with_suffix(".tif").unlink(missing_ok=True)
    return row


def _worker(path: str, folder: str, name: str, params: dict) -> list[dict]:
    return [run(path, folder, name, params)]


def _store(path: str, folder: str, params: dict) -> list[dict]:
    """The store the stitchers read (written once, not timed)."""
    warnings.simplefilter("ignore")
    import rioxarray

    import patchkit  # noqa: F401

    da = rioxarray.open_rasterio(path, chunks={"band": -1, "y": params["chunks"], "x": params["chunks"]})
    da.patches.to_zarr(Path(folder) / "stored.zarr", params["patch"], params["stride"], max_memory=params["max_memory"], progress=False)
    return []


def main(argv: list[str] | None = None) -> list[dict]:
    args, params = parse_scene_args(argv, __doc__.splitlines()[0], FULL, QUICK)
    patches_bytes = 2 * params["bands"] * params["patch"] ** 2 * ((params["size"] - params["patch"]) // params["stride"] + 1) ** 2
    with tempfile.TemporaryDirectory() as folder:
        path = str(write_scene(Path(folder) / "scene.tif", params["bands"], params["size"]))
        scene = 2 * params["bands"] * params["size"] ** 2
        print(f"scene: {params['bands']} bands x {params['size']}x{params['size']} uint16 ({format_size(scene)}), lazy "
              f"({params['chunks']}x{params['chunks']} chunks); patches {params['patch']} stride {params['stride']} "
              f"({format_size(patches_bytes)}); patchkit max_memory {params['max_memory']}")
        rows = [isolated(_worker, path, folder, name, params)[0] for name in CONTENDERS]
        isolated(_store, path, folder, params)
        rows += [isolated(_worker, path, folder, name, params)[0] for name in STITCHERS]
    by_name = {row["contender"]: row for row in rows}
    print(f"{'contender':<16}{'seconds':>9}{'GB/s':>8}{'vs xarray':>11}{'RSS growth':>13}")
    for row in rows:
        row["gbps"] = patches_bytes / row["seconds"] / GB
        peer = by_name.get("xarray " + row["contender"].split()[-1])
        ratio = f"{peer['seconds'] / row['seconds']:>10.2f}x" if peer else f"{'-':>11}"
        print(f"{row['contender']:<16}{row['seconds']:>9.2f}{row['gbps']:>8.2f}{ratio}{format_size(row['growth']):>13}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
