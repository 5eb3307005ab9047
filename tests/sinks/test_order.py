"""The completion marker of every sink is written last: fast checks of the order of writes.

A sink's output says it is finished (the Zarr store's ``patchkit_complete``, the chip folder's and the
TFRecord manifest's ``complete``) only after everything it promises is on disk: every band, then the
consolidated metadata (Zarr) or the chip index (GeoTIFF) or the last shard (TFRecord). Were the
marker written first, a run that dies half way would leave an output that reads as finished.

The SIGKILL tests of the sinks check this slowly, from a killed process. These check it in-process:
the stream of bands each sink writes (``patchkit.labelled.layout.bands``, as the sink module holds it) is
wrapped so that it looks at the output's marker each time the sink asks for a band, and can stop the
run after ``k`` bands, or once all bands are handed over; the finishing steps (``zarr.consolidate_metadata``,
``patchkit.labelled.geo.write_grid``) are wrapped likewise. A marker written before its time fails here at once.
"""

from __future__ import annotations

import json

import pytest

from patchkit.errors import IncompleteStoreError, SinkWriteError

pytest.importorskip("rioxarray")
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata")

SPEC = dict(sizes=8, strides=8)  # 7 x 6 patches of the 61 x 53 'projected' GeoTIFF (2304 bytes a patch row)
MAX_MEMORY = "4KiB"  # one patch row a band: 7 bands
ZARR_MEMORY = "8KiB"  # the same, once the store's chunk buffers (4608 bytes) are counted


class Interrupted(Exception):
    """Raised from the band stream: the run dies there."""


class BandSpy:
    """Wraps a sink module's ``bands`` so that every band handed to the sink first records the output's
    state (``probe()``), and the run can be stopped after ``stop_after`` bands (``"end"``: once the last
    band has been taken, before the sink's finishing steps)."""

    def __init__(self, monkeypatch, module, probe, stop_after=None):
        self.events: list[tuple[str, object]] = []
        self.probe, self.stop_after = probe, stop_after
        self.handed = 0
        real = module.bands

        def bands(*args, **kwargs):
            stream = real(*args, **kwargs)  # the real function's checks run at the call, as before
            return self._watch(stream)

        monkeypatch.setattr(module, "bands", bands)

    def _watch(self, stream):
        for item in stream:
            if self.stop_after == self.handed:
                raise Interrupted(f"stopped after {self.handed} bands")
            self.events.append(("band", self.probe()))
            self.handed += 1
            yield item
        self.events.append(("all bands handed", self.probe()))
        if self.stop_after == "end":
            raise Interrupted("stopped once every band was handed over")

    def note(self, what: str) -> None:
        self.events.append((what, self.probe()))


def spy_manifests(monkeypatch, module, check) -> list:
    """Wraps ``module.write_json`` (every manifest a sink writes goes through it): each manifest that says
    ``complete`` is checked, at the moment it is written, with ``check(manifest)``; returns the list of
    ``complete`` flags written, in order."""
    flags = []
    real = module.write_json

    def write_json(path, data):
        flags.append(bool(data.get("complete")))
        if data.get("complete"):
            check(data)
        return real(path, data)

    monkeypatch.setattr(module, "write_json", write_json)
    return flags


def assert_marker_last(events, final) -> None:
    """No event saw the marker; the finished output has it."""
    early = [(what, state) for what, state in events if state]
    assert not early, f"the completion marker was there before the run finished: {early}"
    assert final, "the finished output has no completion marker"


@pytest.fixture(scope="module")
def scene(geotiffs):
    import rioxarray

    return rioxarray.open_rasterio(geotiffs["projected"]).load()


STOPS = [0, 1, 3, "end"]


# ---- Zarr ----------------------------------------------------------------------------------------


def _zarr_complete(path) -> bool:
    """The store's ``patchkit_complete``, read as open_patches reads it (False while there is no store)."""
    from patchkit.sinks import zarr as zarr_sink

    group = zarr_sink._open_group(path) if path.exists() else None
    return bool(group is not None and group.attrs.get(zarr_sink.COMPLETE))


def _zarr_rows_done(path) -> int:
    import zarr

    from patchkit.sinks.zarr import ROWS_DONE

    return sum(b - a for a, b in zarr.open_group(str(path), mode="r").attrs.get(ROWS_DONE, []))


def test_zarr_marker_comes_after_every_band_and_the_consolidated_metadata(scene, tmp_path, monkeypatch):
    """While bands are written, and when the metadata is consolidated (after the last band), the store has
    no ``patchkit_complete``; the finished store has it."""
    pytest.importorskip("zarr")
    import zarr

    from patchkit.sinks import zarr as zarr_sink

    path = tmp_path / "p.zarr"
    spy = BandSpy(monkeypatch, zarr_sink, lambda: _zarr_complete(path))
    rows_at_consolidation = []
    real = zarr.consolidate_metadata

    def consolidate(store, *args, **kwargs):
        if str(store) == str(path):
            spy.note("consolidate")
            rows_at_consolidation.append(_zarr_rows_done(path))
        return real(store, *args, **kwargs)

    monkeypatch.setattr(zarr, "consolidate_metadata", consolidate)
    scene.patches.to_zarr(path, **SPEC, max_memory=ZARR_MEMORY, progress=False)
    assert spy.handed == 7 and [what for what, _ in spy.events][-2:] == ["all bands handed", "consolidate"]
    assert rows_at_consolidation == [7]  # every patch row was written before
    assert_marker_last(spy.events, _zarr_complete(path))


@pytest.mark.parametrize("stop", STOPS)
def test_zarr_run_stopped_early_is_incomplete(scene, tmp_path, monkeypatch, stop):
    """A run that dies after 0, 1 or 3 bands, or once all are handed over, leaves a store that is not
    complete and that open_patches refuses."""
    pytest.importorskip("zarr")
    from patchkit import open_patches
    from patchkit.sinks import zarr as zarr_sink

    path = tmp_path / "p.zarr"
    BandSpy(monkeypatch, zarr_sink, lambda: None, stop_after=stop)
    with pytest.raises(Interrupted):
        scene.patches.to_zarr(path, **SPEC, max_memory=ZARR_MEMORY, progress=False)
    assert not _zarr_complete(path)
    with pytest.raises(IncompleteStoreError):
        open_patches(path)


def test_zarr_failed_consolidation_leaves_the_store_incomplete(scene, tmp_path, monkeypatch):
    """When consolidating the metadata fails, the store is not marked complete."""
    pytest.importorskip("zarr")
    import zarr

    from patchkit import open_patches

    path = tmp_path / "p.zarr"
    real = zarr.consolidate_metadata

    def consolidate(store, *args, **kwargs):
        if str(store) == str(path):
            raise Interrupted("consolidation failed")
        return real(store, *args, **kwargs)

    monkeypatch.setattr(zarr, "consolidate_metadata", consolidate)
    with pytest.raises(Interrupted):
        scene.patches.to_zarr(path, **SPEC, max_memory=ZARR_MEMORY, progress=False)
    assert not _zarr_complete(path)
    with pytest.raises(IncompleteStoreError):
        open_patches(path)


# ---- GeoTIFF chips -------------------------------------------------------------------------------


def _chips_complete(folder) -> bool:
    from patchkit.sinks._store import read_json
    from patchkit.sinks.geotiff import MANIFEST

    return bool((read_json(folder / MANIFEST) or {}).get("complete"))


def test_chip_manifest_complete_comes_after_every_chip_and_the_index(scene, tmp_path, monkeypatch):
    """While chips are written, and when the index is written (after every chip), the manifest says
    ``complete: false``; it says true once, last, when the index and every chip are on disk."""
    pytest.importorskip("rasterio")
    pytest.importorskip("geopandas")
    import patchkit.labelled.geo
    from patchkit.sinks import geotiff as geotiff_sink

    folder = tmp_path / "chips"
    spy = BandSpy(monkeypatch, geotiff_sink, lambda: _chips_complete(folder))
    chips_at_index = []
    real = patchkit.labelled.geo.write_grid

    def write_grid(table, path, *args, **kwargs):
        spy.note("index")
        chips_at_index.append(len(list(folder.glob("r*_c*.tif"))))
        return real(table, path, *args, **kwargs)

    monkeypatch.setattr(patchkit.labelled.geo, "write_grid", write_grid)

    def finished(manifest):
        assert (folder / geotiff_sink.INDEX).is_file() and len(list(folder.glob("r*_c*.tif"))) == 42

    flags = spy_manifests(monkeypatch, geotiff_sink, finished)
    scene.patches.to_geotiffs(folder, **SPEC, max_memory=MAX_MEMORY, progress=False)
    assert flags[-1] and not any(flags[:-1])
    assert spy.handed == 7 and [what for what, _ in spy.events][-2:] == ["all bands handed", "index"]
    assert chips_at_index == [42]
    assert_marker_last(spy.events, _chips_complete(folder))


@pytest.mark.parametrize("stop", STOPS)
def test_chip_run_stopped_early_is_incomplete(scene, tmp_path, monkeypatch, stop):
    """A run that dies after 0, 1 or 3 bands of chips, or once all are handed over, leaves a folder whose
    manifest is not complete and that read_index refuses."""
    pytest.importorskip("rasterio")
    pytest.importorskip("geopandas")
    from patchkit.sinks import geotiff as geotiff_sink

    folder = tmp_path / "chips"
    BandSpy(monkeypatch, geotiff_sink, lambda: None, stop_after=stop)
    with pytest.raises(Interrupted):
        scene.patches.to_geotiffs(folder, **SPEC, max_memory=MAX_MEMORY, progress=False)
    assert not _chips_complete(folder)
    with pytest.raises(IncompleteStoreError):
        geotiff_sink.read_index(folder)


def test_chip_failed_index_leaves_the_folder_incomplete(scene, tmp_path, monkeypatch):
    """When writing the index fails, the manifest is not marked complete."""
    pytest.importorskip("rasterio")
    pytest.importorskip("geopandas")
    import patchkit.labelled.geo
    from patchkit.sinks import geotiff as geotiff_sink

    folder = tmp_path / "chips"

    def write_grid(*args, **kwargs):
        raise Interrupted("the index failed")

    monkeypatch.setattr(patchkit.labelled.geo, "write_grid", write_grid)
    with pytest.raises((Interrupted, SinkWriteError)):  # the sink may report it as a write error
        scene.patches.to_geotiffs(folder, **SPEC, max_memory=MAX_MEMORY, progress=False)
    assert not _chips_complete(folder)
    with pytest.raises(IncompleteStoreError):
        geotiff_sink.read_index(folder)


# ---- TFRecord ------------------------------------------------------------------------------------

SHARD_SIZE = "3KiB"  # one patch row (2304 bytes) a shard: 7 shards


def _tfrecord_manifest(prefix) -> dict:
    path = prefix.with_name(prefix.name + ".json")
    return json.loads(path.read_text()) if path.exists() else {}


def test_tfrecord_manifest_complete_comes_after_every_shard(tf, scene, tmp_path, monkeypatch):
    """While bands are written the manifest says ``complete: false``, and it says true once, last, when
    every shard file is in place (none left ``.partial``)."""
    from patchkit.sinks import tfrecord as tfrecord_sink

    prefix = tmp_path / "out" / "scene"
    spy = BandSpy(monkeypatch, tfrecord_sink, lambda: _tfrecord_manifest(prefix).get("complete"))

    def finished(manifest):
        assert all(shard["done"] and (prefix.parent / shard["path"]).is_file() for shard in manifest["shards"])
        assert not list(prefix.parent.glob("*.partial"))

    from patchkit.sinks import tfcodec

    flags = spy_manifests(monkeypatch, tfcodec, finished)  # the set's manifest is kept by tfcodec.Target
    tfrecord_sink.to_tfrecord(scene, prefix, **SPEC, max_memory=MAX_MEMORY, shard_size=SHARD_SIZE, progress=False)
    assert flags[-1] and not any(flags[:-1]) and len(flags) > 7  # a manifest after every shard, 'complete' last
    manifest = _tfrecord_manifest(prefix)
    assert spy.handed == 7 and len(manifest["shards"]) == 7
    assert all(shard["done"] for shard in manifest["shards"])
    assert_marker_last(spy.events, manifest["complete"])


@pytest.mark.parametrize("stop", STOPS)
def test_tfrecord_run_stopped_early_is_incomplete(tf, scene, tmp_path, monkeypatch, stop):
    """A run that dies after 0, 1 or 3 bands, or once all bands are handed over (the last shard not yet
    closed), leaves a manifest that is not complete, and read_tfrecord refuses the set."""
    from patchkit.sinks import tfrecord as tfrecord_sink

    prefix = tmp_path / "out" / "scene"
    BandSpy(monkeypatch, tfrecord_sink, lambda: None, stop_after=stop)
    with pytest.raises(Interrupted):
        tfrecord_sink.to_tfrecord(scene, prefix, **SPEC, max_memory=MAX_MEMORY, shard_size=SHARD_SIZE, progress=False)
    manifest = _tfrecord_manifest(prefix)
    assert manifest and not manifest["complete"]
    assert not all(shard["done"] for shard in manifest["shards"])
    with pytest.raises(IncompleteStoreError):
        tfrecord_sink.read_tfrecord(prefix)
