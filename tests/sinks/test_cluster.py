"""The Zarr sink on a real dask.distributed ``LocalCluster`` with worker processes.

Stores written by the cluster's workers equal, file for file and byte for byte, those a local run
writes; a worker killed part way is retried by the cluster, or, when the cluster gives up, leaves a
store that is not complete and that a rerun finishes identically.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import patchkit
from patchkit.errors import ClusterError, IncompleteStoreError, PatchkitTypeError, SourceReadError

distributed = pytest.importorskip("distributed")
pytest.importorskip("zarr")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # zarr: consolidated metadata is not in the v3 spec

SPEC = dict(sizes=(8, 6), strides=(5, 4), padding="SAME")


def _files(path: Path) -> dict:
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def _same_files(a: Path, b: Path) -> None:
    fa, fb = _files(a), _files(b)
    assert fa.keys() == fb.keys()
    assert [name for name in fa if fa[name] != fb[name]] == []


def _cluster(**config):
    import dask

    with dask.config.set(config):
        return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                        silence_logs=50)


@pytest.fixture(scope="module")
def cluster():
    with _cluster() as cluster:
        yield cluster


@pytest.fixture
def client(cluster):
    with distributed.Client(cluster) as client:
        yield client


def _local(obj, path: Path, **kwargs) -> Path:
    return obj.patches.to_zarr(path, **SPEC, progress=False, scheduler="threads", **kwargs)


@pytest.mark.parametrize("sink", ["zarr", "geotiff"])
@pytest.mark.parametrize("options", [dict(max_memory="96KiB"), dict(max_memory="96KiB", max_nodata_fraction=0.2, chunk_patches=3)],
                         ids=["grid", "kept patches sharing chunks"])
def test_cluster_output_equals_the_local_output(client, geotiffs, open_raster, tmp_path, options, sink):
    """Bands made and written by the workers give the local run's output, every file the same bytes."""
    if sink == "geotiff":
        options = {k: v for k, v in options.items() if k != "chunk_patches"}
    lazy = open_raster(geotiffs["nodata"], chunks={"x": 16, "y": 16})
    local = lazy.patches.to(sink, tmp_path / "local", **SPEC, progress=False, scheduler="threads", **options)
    with distributed.get_task_stream(client) as stream:
        lazy.patches.to(sink, tmp_path / "cluster", **SPEC, progress=False, **options)  # the active client
    _same_files(local, tmp_path / "cluster")
    workers = {task["worker"] for task in stream.data if str(task["key"]).startswith(("_write_on_worker", "on_worker"))}
    assert workers <= set(client.scheduler_info()["workers"]) and workers  # written by the workers


def test_in_memory_dataset_on_the_cluster(client, stacked, tmp_path):
    """A Dataset held in memory (its rows put on the cluster) with a variable without spatial dims."""
    ds = xr.Dataset({"image": stacked.load(), "mask": (stacked.isel(band=0, drop=True) > 0).astype("uint8"),
                     "dates": ("time", np.arange(stacked.sizes["time"]))})
    local = _local(ds, tmp_path / "local.zarr", max_memory="64KiB")
    ds.patches.to("zarr", tmp_path / "cluster.zarr", **SPEC, max_memory="64KiB", progress=False, scheduler=client)
    _same_files(local, tmp_path / "cluster.zarr")


def test_scheduler_address_and_threads(cluster, geotiffs, open_raster, tmp_path, monkeypatch):
    """An address connects to that scheduler for the run; "threads" runs here while a client is active."""
    import patchkit.sinks.zarr as zarr_sink

    da = open_raster(geotiffs["projected"], chunks={"x": 16, "y": 16})
    ran = []
    monkeypatch.setattr(zarr_sink, "_cluster_bands", lambda *a, real=zarr_sink._cluster_bands: ran.append("cluster") or real(*a))
    da.patches.to_zarr(tmp_path / "a.zarr", **SPEC, progress=False, scheduler=cluster.scheduler_address)
    assert ran == ["cluster"]
    with distributed.Client(cluster):
        _local(da, tmp_path / "b.zarr")
    assert ran == ["cluster"]
    _same_files(tmp_path / "a.zarr", tmp_path / "b.zarr")


def test_unreachable_scheduler_names_the_address(geotiffs, open_raster, tmp_path, monkeypatch):
    """Nothing is created when the scheduler cannot be reached; the error names the address and the fix."""
    monkeypatch.setattr("patchkit.labelled.cluster.CONNECT_TIMEOUT", 2)
    da = open_raster(geotiffs["projected"])
    with pytest.raises(ClusterError, match=r"scheduler='tcp://127\.0\.0\.1:9'.*check the address"):
        da.patches.to_zarr(tmp_path / "p.zarr", **SPEC, progress=False, scheduler="tcp://127.0.0.1:9")
    assert not (tmp_path / "p.zarr").exists()
    with pytest.raises(PatchkitTypeError, match=r"scheduler=42 is not understood"):
        da.patches.to_zarr(tmp_path / "p.zarr", **SPEC, progress=False, scheduler=42)


def kill_once(block: np.ndarray, flag: str, block_info=None) -> np.ndarray:
    """The block as it is, but the first worker to read the block at row 16 is killed (SIGKILL) there."""
    if block_info[0]["array-location"][1][0] == 16 and not os.path.exists(flag):
        Path(flag).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return block


def fail_reading(block: np.ndarray, block_info=None) -> np.ndarray:
    """A read that fails as a damaged file's does, at the block at row 16."""
    if block_info[0]["array-location"][1][0] == 16:
        raise OSError("Read failed: TIFFReadEncodedTile() failed")
    return block


def _wrapped(da, fn, **kwargs):
    return da.copy(data=da.data.map_blocks(fn, dtype=da.dtype, **kwargs))


def test_a_killed_worker_is_retried_by_the_cluster(client, geotiffs, open_raster, tmp_path):
    """The band of a killed worker runs again on another; the store equals the local one."""
    da = open_raster(geotiffs["nodata"], chunks={"x": 16, "y": 16})
    local = _local(da, tmp_path / "local.zarr", max_memory="96KiB")
    flag = tmp_path / "killed"
    _wrapped(da, kill_once, flag=str(flag)).patches.to_zarr(tmp_path / "c.zarr", **SPEC, max_memory="96KiB", progress=False)
    assert flag.exists()
    _same_files(local, tmp_path / "c.zarr")


def test_a_worker_lost_for_good_leaves_a_store_a_rerun_finishes(geotiffs, open_raster, tmp_path):
    """With no retries allowed the run stops with the band named; the store is incomplete; a rerun finishes it."""
    da = open_raster(geotiffs["nodata"], chunks={"x": 16, "y": 16})
    local = _local(da, tmp_path / "local.zarr", max_memory="96KiB")
    flag, path = tmp_path / "killed", tmp_path / "c.zarr"
    with _cluster(**{"distributed.scheduler.allowed-failures": 0}) as cluster, distributed.Client(cluster):
        with pytest.raises(ClusterError, match=r"patch rows \d+-\d+ were not written.*rerun the same call"):
            _wrapped(da, kill_once, flag=str(flag)).patches.to_zarr(path, **SPEC, max_memory="96KiB", progress=False)
        with pytest.raises(IncompleteStoreError):
            patchkit.open_patches(path)
        _wrapped(da, kill_once, flag=str(flag)).patches.to_zarr(path, **SPEC, max_memory="96KiB", progress=False)
    _same_files(local, path)


def test_a_read_error_on_a_worker_names_the_file(client, geotiffs, open_raster, tmp_path):
    """A worker's failed read is the local run's SourceReadError, naming the file; nothing reads as complete."""
    da = open_raster(geotiffs["nodata"], chunks={"x": 16, "y": 16})
    with pytest.raises(SourceReadError, match="nodata"):
        _wrapped(da, fail_reading).patches.to_zarr(tmp_path / "c.zarr", **SPEC, max_memory="96KiB", progress=False)
    with pytest.raises(IncompleteStoreError):
        patchkit.open_patches(tmp_path / "c.zarr")


def _patchkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "patchkit.jobs.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_extract_and_template_on_the_cluster(client, cluster, geotiffs, open_raster, tmp_path):
    """``patchkit extract --scheduler`` and ``patchkit run extract_patches -p scheduler_address`` run the bands
    on the cluster's workers; the store equals a local run's; a sink that writes only here (TFRecord)
    refuses --scheduler."""
    pytest.importorskip("papermill")
    scene, address = geotiffs["projected"], cluster.scheduler_address
    with distributed.get_task_stream(client) as stream:
        done = _patchkit("extract", str(scene), "--sizes", "8", "--strides", "6", "--to", "zarr", "--output",
                         str(tmp_path / "cli.zarr"), "--scheduler", address)
        assert done.returncode == 0, done.stderr
        ran = _patchkit("run", "extract_patches", "-p", "scheduler_address", address, "-p", "sizes", "64", "-p", "strides", "64",
                        "--output-dir", str(tmp_path / "job"))
        assert ran.returncode == 0, ran.stderr[-3000:]
    local = open_raster(scene).patches.to_zarr(tmp_path / "local.zarr", 8, 6, progress=False, scheduler="threads")
    _same_files(local, tmp_path / "cli.zarr")
    assert sum(str(task["key"]).startswith("_write_on_worker") for task in stream.data) >= 2
    refused = _patchkit("extract", str(scene), "--sizes", "8", "--strides", "6", "--to", "tfrecord", "--output",
                        str(tmp_path / "records" / "p"), "--scheduler", address)
    assert refused.returncode != 0 and "sinks that write on a cluster (geotiff, zarr); the 'tfrecord' sink" in refused.stderr
    assert not (tmp_path / "records").exists()


def test_explorer_run_on_the_cluster_and_its_cancel(client, tmp_path):
    """The explorer's Run writes on the active cluster; its cancel (a cluster-wide event) stops the workers'
    reads, the store stays incomplete, and the plain call finishes it."""
    from patchkit.core.spec import PatchSpec
    from patchkit.explorer.run import SinkRun

    da = xr.DataArray(np.arange(2 * 64 * 40, dtype="float32").reshape(2, 64, 40), dims=("band", "y", "x")).chunk({"y": 8})
    with distributed.get_task_stream(client) as stream:
        run = SinkRun(da, "zarr", tmp_path / "all.zarr", PatchSpec(8, 8), max_memory="16KiB").start()
        assert run.join(120) and run.state == "done", run.error
    assert any(str(task["key"]).startswith("_write_on_worker") for task in stream.data)
    np.testing.assert_array_equal(patchkit.open_patches(tmp_path / "all.zarr")["pixels"].values, da.patches.extract(8, 8).values)

    run = SinkRun(da, "zarr", tmp_path / "cut.zarr", PatchSpec(8, 8), max_memory="16KiB")
    run.cancel()  # before it starts: the workers' first read stops it
    run.start()
    assert run.join(120) and run.state == "cancelled", run.error
    with pytest.raises(IncompleteStoreError):
        patchkit.open_patches(tmp_path / "cut.zarr")
    da.patches.to_zarr(tmp_path / "cut.zarr", 8, 8, max_memory="16KiB", progress=False)
    _same_files(tmp_path / "all.zarr", tmp_path / "cut.zarr")


def _slow(block: np.ndarray) -> np.ndarray:
    time.sleep(0.1)
    return block


def test_a_scheduler_lost_mid_run_names_it_and_a_rerun_resumes(tmp_path):
    """A scheduler process killed (SIGKILL) part way: ClusterError naming its address; the store is not
    complete; the same call on another scheduler (here: local threads) finishes it identically."""
    file = tmp_path / "scheduler.json"
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", str(file)], **quiet)
    worker = None
    try:
        for _ in range(300):
            if file.exists() and file.stat().st_size:
                break
            time.sleep(0.1)
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(file),
                                   "--nthreads", "1", "--no-dashboard"], **quiet)
        address = json.loads(file.read_text())["address"]
        da = xr.DataArray(np.arange(2 * 256 * 64, dtype="float32").reshape(2, 256, 64), dims=("band", "y", "x")).chunk({"y": 8})
        slow = da.copy(data=da.data.map_blocks(_slow, dtype=da.dtype))
        threading.Timer(3, scheduler.kill).start()
        with pytest.raises(ClusterError, match=rf"lost the dask scheduler at '{address}' while patch rows \d+-\d+(?s:.)*rerun"):
            slow.patches.to_zarr(tmp_path / "p.zarr", 8, 8, max_memory="256KiB", progress=False, scheduler=address)
    finally:
        scheduler.kill()
        if worker is not None:
            worker.kill()
    with pytest.raises(IncompleteStoreError):
        patchkit.open_patches(tmp_path / "p.zarr")
    slow.patches.to_zarr(tmp_path / "p.zarr", 8, 8, max_memory="256KiB", progress=False)
    local = da.patches.to_zarr(tmp_path / "local.zarr", 8, 8, max_memory="256KiB", progress=False, scheduler="threads")
    _same_files(local, tmp_path / "p.zarr")
