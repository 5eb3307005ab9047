"""``.patches.to_zarr`` from a Cloud-Optimized GeoTIFF over HTTP against the same file read locally.

Run ``python benchmarks/bench_remote.py [--quick] [--repeats N] [--json PATH]``.

The scene is the tiled 4-band uint16 GeoTIFF of ``bench_xarray.py`` (4096 x 4096), converted into a COG
(GDAL's COG driver: deflate, 512 x 512 tiles, overviews left out: patchkit reads full resolution) and
served from a folder by the loopback HTTP server of ``tests/http_server.py`` (byte ranges, keep-alive; a
process of its own). Each call opens the scene with rioxarray (dask chunks 1024 x 1024) from the URL or
from the local path, in a freshly spawned process (so GDAL's caches are cold every time), and writes its
256-pixel patches at stride 128 with ``.patches.to_zarr`` under ``max_memory`` 64 MiB into a new store;
the two sources take turns for ``--repeats`` rounds and each keeps its best call. ``--quick`` shrinks
everything (1024 x 1024, 128-pixel patches, stride 64, one round; 10-20 s): its figures mean nothing.

Reported per source: seconds, GB/s (bytes of patches per second, 1 GB = 10**9 B), the local file's
seconds over the row's, and for the URL what the server saw in that call: requests (all of them:
GDAL's look for sidecar files, ``.aux.xml``, ``.msk``..., counts), of which byte-range GETs, body bytes
sent, and those bytes over the file's size (1.00: every byte fetched once); then the peak RSS above
the start of the call. The loopback has no latency worth the name: on a real network each request
costs a round trip, which is why the request count matters. patchkit's GDAL defaults for remote
sources (``patchkit.core.remote.DEFAULTS``) apply to the URL's calls.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(ROOT))
from bench_extract import GB, PeakRSS, format_size, isolated, timed  # noqa: E402
from bench_xarray import parse_scene_args, write_scene  # noqa: E402
from tests.http_server import LoopbackServer  # noqa: E402

FULL = dict(bands=4, size=4096, patch=256, stride=128, chunks=1024, max_memory="64MiB", repeats=2)
QUICK = dict(bands=4, size=1024, patch=128, stride=64, chunks=256, max_memory="8MiB", repeats=1)
SOURCES = ("local file", "http")


def write_cog(folder: Path, params: dict) -> Path:
    """The benchmark scene as a COG (deflate, 512 x 512 tiles, no overviews) in ``folder``; the plain GeoTIFF is removed."""
    import rasterio.shutil

    plain = write_scene(folder / "plain.tif", params["bands"], params["size"])
    cog = folder / "scene.tif"
    rasterio.shutil.copy(plain, cog, driver="COG", blocksize=512, compress="deflate", overviews="none")
    plain.unlink()
    return cog


def run(source: str, store: str, params: dict) -> dict:
    """One timed ``to_zarr`` of ``source`` (a path or URL) into ``store``, in this (fresh) process."""
    warnings.simplefilter("ignore")
    import rioxarray

    import patchkit

    chunks = {"band": -1, "y": params["chunks"], "x": params["chunks"]}

    def call():
        da = rioxarray.open_rasterio(source, chunks=chunks)
        return da.patches.to_zarr(store, params["patch"], params["stride"], max_memory=params["max_memory"], progress=False)

    with PeakRSS() as rss:
        seconds, _ = timed(call)
    patchkit.open_patches(store)  # complete (untimed)
    return {"seconds": seconds, "growth": rss.growth}


def _worker(source: str, store: str, params: dict) -> list[dict]:
    return [run(source, store, params)]


def measure(server: LoopbackServer, cog: Path, folder: Path, params: dict) -> list[dict]:
    """Each source's best call over ``repeats`` rounds (taking turns), with the server's counts of the URL's best call."""
    rows = {name: {"source": name, "seconds": float("inf"), "growth": 0} for name in SOURCES}
    for attempt in range(params["repeats"]):
        for name in SOURCES:
            store = folder / f"{name.replace(' ', '-')}-{attempt}.zarr"
            server.reset_counts()
            result = isolated(_worker, server.url(cog.name) if name == "http" else str(cog), str(store), params)[0]
            shutil.rmtree(store, ignore_errors=True)
            row = rows[name]
            row["growth"] = max(row["growth"], result["growth"])
            if result["seconds"] < row["seconds"]:
                row["seconds"] = result["seconds"]
                if name == "http":
                    log = server.log
                    row.update(requests=len(log), range_gets=sum(1 for r in log if r.method == "GET" and r.range),
                               fetched=sum(r.sent for r in log))
    return list(rows.values())


def report(rows: list[dict], file_size: int, patch_bytes: int) -> None:
    local = rows[0]
    print(f"{'source':<12}{'seconds':>9}{'GB/s':>8}{'vs local':>10}{'requests':>10}{'range GETs':>12}{'fetched':>11}"
          f"{'/ file':>8}{'RSS growth':>13}")
    for row in rows:
        row["gbps"] = patch_bytes / row["seconds"] / GB
        remote = "requests" in row
        counts = (f"{row['requests']:>10}{row['range_gets']:>12}{row['fetched'] / 1e6:>8.1f} MB{row['fetched'] / file_size:>7.2f}x"
                  if remote else f"{'-':>10}{'-':>12}{'-':>11}{'-':>8}")
        print(f"{row['source']:<12}{row['seconds']:>9.2f}{row['gbps']:>8.2f}{local['seconds'] / row['seconds']:>9.2f}x"
              f"{counts}{format_size(row['growth']):>13}")


def main(argv: list[str] | None = None) -> list[dict]:
    args, params = parse_scene_args(argv, __doc__.splitlines()[0], FULL, QUICK)
    side = (params["size"] - params["patch"]) // params["stride"] + 1
    patch_bytes = 2 * params["bands"] * params["patch"] ** 2 * side ** 2
    with tempfile.TemporaryDirectory() as folder:
        served = Path(folder) / "served"
        served.mkdir()
        cog = write_cog(served, params)
        size = cog.stat().st_size
        print(f"scene: {params['bands']} bands x {params['size']}x{params['size']} uint16 COG (deflate, 512x512 tiles; "
              f"{size / 1e6:.1f} MB file, {format_size(2 * params['bands'] * params['size'] ** 2)} of pixels), dask chunks "
              f"{params['chunks']}x{params['chunks']}; patches {params['patch']} stride {params['stride']} "
              f"({format_size(patch_bytes)}); max_memory {params['max_memory']}; served by a loopback HTTP server")
        with LoopbackServer(served) as server:
            rows = measure(server, cog, Path(folder), params)
    report(rows, size, patch_bytes)
    if args.json:
        args.json.write_text(json.dumps({"file_bytes": size, "patch_bytes": patch_bytes, "params": params, "rows": rows},
                                        indent=2))
    return rows


if __name__ == "__main__":
    main()
