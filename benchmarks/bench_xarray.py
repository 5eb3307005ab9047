"""The ``.patches`` accessor on a georeferenced GeoTIFF: the lazy (dask) path against the eager one.

Run ``python benchmarks/bench_xarray.py [--quick] [--json PATH]``. It writes a tiled, multi-band
GeoTIFF in a projected CRS, opens it with rioxarray twice (eagerly, and lazily with dask chunks) and
cuts the same patches both ways, each in a freshly spawned process, taking turns for ``--repeats``
rounds (best call counts). Reported per path: seconds and GB/s of output (file read included), peak
RSS above the start, and for the lazy path the graph size (tasks) and the number of chunks. A third
row, ``lazy, in memory``, runs the lazy path on the already loaded scene wrapped in dask, which
isolates the cost of the graph from the cost of reading the file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import GB, PeakRSS, format_size, isolated, timed  # noqa: E402

FULL = dict(bands=4, size=4096, patch=256, stride=128, chunks=1024, repeats=3)
QUICK = dict(bands=4, size=1024, patch=128, stride=64, chunks=256, repeats=2)


def write_scene(path: Path, bands: int, size: int) -> Path:
    """A tiled uint16 GeoTIFF (UTM 33N, 10 m pixels) with a smooth, deterministic pattern."""
    import rasterio
    from rasterio.transform import from_origin

    profile = dict(driver="GTiff", width=size, height=size, count=bands, dtype="uint16", crs="EPSG:32633",
                   transform=from_origin(500000.0, 4200000.0, 10.0, 10.0), tiled=True, blockxsize=512, blockysize=512)
    y = np.arange(size, dtype=np.uint32)[:, None]
    with rasterio.open(path, "w", **profile) as dst:
        for band in range(bands):
            dst.write(((31 * y + 17 * np.arange(size, dtype=np.uint32) + 7 * band) % 65536).astype(np.uint16), band + 1)
    return path


def run(path: str, mode: str, params: dict) -> dict:
    """Cut the scene's patches one way (in a fresh process); the best of ``repeats`` calls."""
    import dask
    import rioxarray

    import patchkit  # noqa: F401  (registers .patches)

    k, s, chunks = params["patch"], params["stride"], params["chunks"]
    row: dict = {"mode": mode}
    dask.config.set(scheduler="threads")

    def call():
        if mode == "eager":
            return rioxarray.open_rasterio(path).load().patches.extract(k, s)
        if mode == "lazy":
            lazy = rioxarray.open_rasterio(path, chunks={"band": -1, "y": chunks, "x": chunks}).patches.extract(k, s)
        else:
            lazy = rioxarray.open_rasterio(path).load().chunk({"band": -1, "y": chunks, "x": chunks}).patches.extract(k, s)
        row.setdefault("tasks", len(lazy.data.__dask_graph__()))
        row.setdefault("chunks", lazy.data.npartitions)
        return lazy.compute()

    seconds = []
    for _ in range(params["repeats"]):
        with PeakRSS() as rss:
            elapsed, result = timed(call)
        seconds.append(elapsed)
        row["output_bytes"] = result.nbytes
        row["growth"] = max(row.get("growth", 0), rss.growth)
        del result
    row["seconds"] = min(seconds)
    row["gbps"] = row["output_bytes"] / row["seconds"] / GB
    return row


def _worker(path: str, mode: str, params: dict) -> list[dict]:
    return [run(path, mode, params)]


def parse_scene_args(argv: list[str] | None, description: str, full: dict, quick: dict) -> tuple[argparse.Namespace, dict]:
    """``--quick``, ``--repeats`` and ``--json`` of the GeoTIFF benchmarks, and the scene's parameters."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a 1024x1024 scene: checks that the script runs")
    parser.add_argument("--repeats", type=int, help="timed calls per contender (best counts)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    params = dict(quick if args.quick else full)
    if args.repeats:
        params["repeats"] = args.repeats
    return args, params


def main(argv: list[str] | None = None) -> list[dict]:
    args, params = parse_scene_args(argv, __doc__.splitlines()[0], FULL, QUICK)
    with tempfile.TemporaryDirectory() as folder:
        path = str(write_scene(Path(folder) / "scene.tif", params["bands"], params["size"]))
        print(f"scene: {params['bands']} bands x {params['size']}x{params['size']} uint16 GeoTIFF (512x512 tiles); "
              f"patches {params['patch']} stride {params['stride']}; dask chunks {params['chunks']}x{params['chunks']}")
        rows = [isolated(_worker, path, mode, params)[0] for mode in ("eager", "lazy", "lazy, in memory")]
    eager = rows[0]
    print(f"{'path':<18}{'seconds':>9}{'GB/s':>8}{'vs eager':>10}{'RSS growth':>13}{'tasks':>8}{'chunks':>8}")
    for row in rows:
        print(f"{row['mode']:<18}{row['seconds']:>9.2f}{row['gbps']:>8.2f}{eager['seconds'] / row['seconds']:>9.2f}x"
              f"{format_size(row['growth']):>13}{row.get('tasks', '-'):>8}{row.get('chunks', '-'):>8}")
    print(f"output: {format_size(eager['output_bytes'])}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
