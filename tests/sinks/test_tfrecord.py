"""TFRecord shards of patches, checked against tf.image.extract_patches and .patches.extract."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

import patchkit
from patchkit.errors import (ChangedSourceError, DamagedOutputError, ForeignStoreError, IncompleteStoreError, PatchkitError,
                             PatchkitTypeError, PatchkitValueError)
from patchkit.sinks.tfrecord import read_tfrecord, to_tfrecord

from ..helpers import RecordingArray, TFRECORD_SPECS, hwc, places, random_image, read_all, recorded_scene

PAST_NS = 1_000_000_000 * 10**9  # 2001-09-09: shard mtimes are set to this to see which a rerun rewrites


def tf_patches(tf, image_hwc: np.ndarray, spec: patchkit.PatchSpec) -> np.ndarray:
    """``tf.image.extract_patches`` of one ``(h, w, C)`` image, as ``(n, kh, kw, C)``."""
    out = tf.image.extract_patches(image_hwc[None], [1, *spec.sizes, 1], [1, *spec.strides, 1], [1, *spec.rates, 1],
                                   spec.padding).numpy()
    return out.reshape(-1, *spec.sizes, image_hwc.shape[-1])


def shard_files(prefix) -> list:
    """The shard files (and leftovers) of a prefix, sorted."""
    folder, name = os.path.split(str(prefix))
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(name + "-"))


def age(paths) -> None:
    """Set the mtimes of ``paths`` far into the past."""
    for path in paths:
        os.utime(path, ns=(PAST_NS, PAST_NS))


class FailingArray(RecordingArray):
    """A RecordingArray whose reads fail past row ``fail_from`` (a disk that goes away mid-run)."""

    fail_from: int | None = None

    def __getitem__(self, key):
        if self.fail_from is not None and key[1].stop > self.fail_from:
            raise OSError("the disk went away")
        return super().__getitem__(key)


# ---- TFRecord round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", TFRECORD_SPECS)
@pytest.mark.parametrize("compression", [None, "GZIP", "ZLIB"])
def test_round_trip_equals_tensorflow_and_extract(tf, geotiffs, open_raster, tmp_path, kwargs, compression):
    """Records read back are tf.image.extract_patches' patches (HWC bytes), with their places and transforms."""
    da = open_raster(geotiffs["projected"])
    spec = patchkit.PatchSpec(**kwargs)
    manifest = to_tfrecord(da, tmp_path / "scene", **kwargs, shard_size="2KiB", compression=compression, progress=False)
    back = read_all(read_tfrecord(tmp_path / "scene"))
    patches = da.patches.extract(**kwargs)
    assert back["patch"].tobytes() == tf_patches(tf, da.transpose("y", "x", "band").values, spec).tobytes()
    assert back["patch"].tobytes() == hwc(patches).tobytes()
    rows, cols = places(patches)
    np.testing.assert_array_equal(back["row"], rows)
    np.testing.assert_array_equal(back["col"], cols)
    for i in range(0, len(rows), 7):
        expected = tuple(patchkit.patch_transform(patches, rows[i], cols[i]))[:6]
        np.testing.assert_allclose(back["transform"][i], expected, rtol=0, atol=1e-6)
    record = json.loads(manifest.read_text())
    assert len(record["shards"]) > 2 and len(shard_files(tmp_path / "scene")) == len(record["shards"])
    assert record["complete"] and record["count"] == len(rows)
    assert record["crs"] == da.rio.crs.to_wkt()
    assert record["features"]["patch"]["shape"] == [*spec.sizes, 3] and record["features"]["patch"]["dtype"] == "uint16"


@pytest.mark.parametrize("dtype", ["bool", "int8", "uint32", "uint64", "float16", "bfloat16", "complex64"])
def test_every_dtype_round_trips_bit_for_bit(tf, tmp_path, dtype):
    """Each dtype reads back with its own TF dtype and the same bits (uint32/uint64 through a bitcast)."""
    da = xr.DataArray(random_image((2, 20, 19), dtype), dims=("band", "y", "x"))
    to_tfrecord(da, tmp_path / "d", 4, 3, padding="SAME", progress=False)
    back = read_all(read_tfrecord(tmp_path / "d"))
    assert back["patch"].dtype == da.dtype
    assert back["patch"].tobytes() == hwc(da.patches.extract(4, 3, padding="SAME")).tobytes()


def test_large_records_parse_one_by_one(tf, tmp_path):
    """Patches of 64 KiB and more take the unbatched parser and read back the same."""
    da = xr.DataArray(random_image((1, 200, 190), "float64"), dims=("band", "y", "x"))
    to_tfrecord(da, tmp_path / "l", 96, 47, progress=False)
    back = read_all(read_tfrecord(tmp_path / "l"))
    assert back["patch"].shape[1:] == (96, 96, 1)
    assert back["patch"].tobytes() == hwc(da.patches.extract(96, 47)).tobytes()


def test_elements_have_static_shapes(tf, geotiffs, open_raster, tmp_path):
    """read_tfrecord's element spec has the patch shape and dtype from the manifest, not None dims."""
    to_tfrecord(open_raster(geotiffs["nonsquare"]), tmp_path / "s", (6, 4), 5, progress=False)
    spec = read_tfrecord(tmp_path / "s.json").element_spec
    assert spec["patch"].shape == (6, 4, 1) and spec["patch"].dtype == tf.float32
    assert spec["transform"].shape == (6,) and spec["transform"].dtype == tf.float64
    assert spec["row"].shape == () and spec["row"].dtype == tf.int64


def test_leading_dims_fold_into_channels(tf, stacked, tmp_path):
    """A (time, band, y, x) stack gives one record per place, C = time x band with time slowest."""
    to_tfrecord(stacked, tmp_path / "t", 6, 5, padding="SAME", progress=False)
    back = read_all(read_tfrecord(tmp_path / "t"))
    image = stacked.transpose("y", "x", "time", "band").values
    image = image.reshape(*image.shape[:2], -1)
    assert back["patch"].shape[1:] == (6, 6, 6)
    assert back["patch"].tobytes() == tf_patches(tf, image, patchkit.PatchSpec(6, 5, padding="SAME")).tobytes()


def test_dataset_gives_a_feature_per_variable(tf, geotiffs, open_raster, tmp_path):
    """A Dataset of several variables writes one feature per variable, each with its own dtype and channels."""
    da = open_raster(geotiffs["projected"])
    ds = xr.Dataset({"image": da, "mask": (da.isel(band=0, drop=True) > 30000).astype("uint8")})
    to_tfrecord(ds, tmp_path / "d", 10, 10, progress=False)
    back = read_all(read_tfrecord(tmp_path / "d"))
    assert set(back) == {"image", "mask", "row", "col", "transform"}
    assert back["image"].tobytes() == hwc(da.patches.extract(10, 10)).tobytes()
    assert back["mask"].dtype == np.uint8
    assert back["mask"].tobytes() == hwc(ds["mask"].patches.extract(10, 10)).tobytes()


@pytest.mark.parametrize("fraction", [0.0, 0.3])
def test_nodata_filtering_writes_only_kept_patches(tf, geotiffs, open_raster, tmp_path, fraction):
    """With max_nodata_fraction the records are exactly the kept patches, with their places."""
    da = open_raster(geotiffs["nodata"])
    manifest = to_tfrecord(da, tmp_path / "n", 8, 4, max_nodata_fraction=fraction, shard_size="4KiB", progress=False)
    kept = da.patches.extract(8, 4, max_nodata_fraction=fraction)
    back = read_all(read_tfrecord(manifest))
    assert 0 < kept.sizes["patch"] < da.patches.extract(8, 4).sizes["patch_row"] * 12
    assert back["patch"].tobytes() == hwc(kept).tobytes()
    np.testing.assert_array_equal(back["row"], kept.patch_row.values)
    np.testing.assert_array_equal(back["col"], kept.patch_col.values)
    assert json.loads(manifest.read_text())["count"] == kept.sizes["patch"]


# ---- resuming and refusing -------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_rerun_rewrites_only_damaged_shards(tf, geotiffs, open_raster, tmp_path, damage):
    """A rerun rewrites a deleted or truncated shard, ignores a stale .partial, and leaves the others untouched."""
    da = open_raster(geotiffs["projected"])
    args = dict(obj=da, prefix=tmp_path / "r", sizes=6, strides=4, shard_size="6KiB", compression="GZIP",
                progress=False)
    to_tfrecord(**args)
    expected = read_all(read_tfrecord(tmp_path / "r"))
    shards = shard_files(tmp_path / "r")
    assert len(shards) > 3
    age(shards)
    to_tfrecord(**args)  # complete: nothing is rewritten
    assert all(os.stat(p).st_mtime_ns == PAST_NS for p in shards)
    victim = shards[2]
    if damage == "delete":
        os.remove(victim)
    else:
        with open(victim, "r+b") as f:
            f.truncate(os.path.getsize(victim) // 2)
    with open(shards[1] + ".partial", "wb") as f:
        f.write(b"left by a killed run")
    (tmp_path / ".r.json.0123abcd.partial").write_text("{")  # a manifest being replaced when the run was killed
    to_tfrecord(**args)
    assert shard_files(tmp_path / "r") == shards  # the .partial is gone
    assert not list(tmp_path.glob(".r.json.*"))
    assert [os.stat(p).st_mtime_ns == PAST_NS for p in shards] == [p != victim for p in shards]
    back = read_all(read_tfrecord(tmp_path / "r"))
    assert all(np.array_equal(back[k], expected[k]) for k in expected)


def test_interrupted_run_is_incomplete_then_resumes(tf, tmp_path):
    """A run that dies mid-way leaves finished shards and an incomplete manifest; a rerun finishes only the rest."""
    da, reader, data = recorded_scene(FailingArray)
    args = dict(obj=da, prefix=tmp_path / "i", sizes=8, strides=4, shard_size="10KiB", max_memory="32KiB",
                progress=False)
    reader.fail_from = 40
    with pytest.raises(OSError, match="disk went away"):
        to_tfrecord(**args)
    record = json.loads((tmp_path / "i.json").read_text())
    done = [s["path"] for s in record["shards"] if s["done"]]
    assert not record["complete"] and 0 < len(done) < len(record["shards"])
    assert not [p for p in shard_files(tmp_path / "i") if p.endswith(".partial")]
    with pytest.raises(IncompleteStoreError, match="run to_tfrecord again with the same arguments"):
        read_tfrecord(tmp_path / "i")
    age(tmp_path / name for name in done)
    reader.fail_from = None
    to_tfrecord(**args)
    assert all(os.stat(tmp_path / name).st_mtime_ns == PAST_NS for name in done)
    back = read_all(read_tfrecord(tmp_path / "i"))
    expected = xr.DataArray(data, dims=("band", "y", "x")).patches.extract(8, 4)
    assert back["patch"].tobytes() == hwc(expected).tobytes()


@pytest.mark.parametrize(
    "change",
    [dict(obj="nonsquare"), dict(sizes=7), dict(shard_size="2KiB"), dict(compression="GZIP"),
     dict(max_nodata_fraction=0.5)],
)
def test_foreign_prefix_refused_unless_mode_w(tf, geotiffs, open_raster, tmp_path, change):
    """Another source or other arguments on a written prefix are refused; mode='w' replaces the whole set."""
    args = dict(obj=open_raster(geotiffs["projected"]), prefix=tmp_path / "f", sizes=6, strides=6, shard_size="4KiB",
                progress=False)
    to_tfrecord(**args)
    other = {**args, **change}
    if "obj" in change:
        other["obj"] = open_raster(geotiffs[change["obj"]])
    with pytest.raises(ForeignStoreError, match="mode='w'"):
        to_tfrecord(**other)
    to_tfrecord(**other, mode="w")
    record = json.loads((tmp_path / "f.json").read_text())
    assert record["complete"] and shard_files(tmp_path / "f") == [str(tmp_path / s["path"]) for s in record["shards"]]
    kept = other["obj"].patches.extract(other["sizes"], 6, max_nodata_fraction=other.get("max_nodata_fraction"))
    assert read_all(read_tfrecord(tmp_path / "f"))["patch"].tobytes() == hwc(kept).tobytes()


def test_shards_without_manifest_refused(tf, geotiffs, open_raster, tmp_path):
    """Shard files of unknown origin (no manifest) are not resumed or overwritten without mode='w'."""
    da = open_raster(geotiffs["projected"])
    to_tfrecord(da, tmp_path / "m", 6, 6, progress=False)
    (tmp_path / "m.json").unlink()
    with pytest.raises(ForeignStoreError, match="no manifest"):
        to_tfrecord(da, tmp_path / "m", 6, 6, progress=False)


@pytest.mark.parametrize("breakage", ["flag", "missing shard", "no manifest"])
def test_read_tfrecord_refuses_incomplete_sets(tf, geotiffs, open_raster, tmp_path, breakage):
    """read_tfrecord refuses a set marked incomplete or missing a shard, and names the fix."""
    manifest = to_tfrecord(open_raster(geotiffs["projected"]), tmp_path / "x", 6, 6, shard_size="4KiB", progress=False)
    record = json.loads(manifest.read_text())
    if breakage == "flag":
        manifest.write_text(json.dumps({**record, "complete": False}))
    elif breakage == "missing shard":
        (tmp_path / record["shards"][1]["path"]).unlink()
    else:
        manifest.unlink()
    error, match = (PatchkitValueError, "no TFRecord manifest") if breakage == "no manifest" else (
        IncompleteStoreError, "incomplete.*run to_tfrecord again with the same arguments")
    with pytest.raises(error, match=match):
        read_tfrecord(tmp_path / "x")


def record_ends(path) -> list[int]:
    """The byte offset after each record of an uncompressed TFRecord file (length, CRC, data, CRC)."""
    data, ends, at = open(path, "rb").read(), [], 0
    while at < len(data):
        at += 8 + 4 + int.from_bytes(data[at: at + 8], "little") + 4
        ends.append(at)
    return ends


@pytest.mark.parametrize("cut", ["at a record boundary", "mid-record"])
def test_a_shard_cut_short_is_found(tf, geotiffs, open_raster, tmp_path, cut):
    """A shard cut short (even between two records, which TensorFlow reads without complaint) is refused, naming it."""
    manifest = to_tfrecord(open_raster(geotiffs["projected"]), tmp_path / "c", 6, 6, shard_size="8KiB", progress=False)
    shard = tmp_path / json.loads(manifest.read_text())["shards"][0]["path"]
    ends = record_ends(shard)
    with open(shard, "r+b") as f:
        f.truncate(ends[len(ends) // 2 - 1] if cut == "at a record boundary" else ends[len(ends) // 2] - 5)
    with pytest.raises(DamagedOutputError, match=f"shard {shard.name!r} has .* bytes.*mode='w'"):
        read_tfrecord(tmp_path / "c")
    with pytest.raises(DamagedOutputError):
        read_tfrecord(tmp_path / "c", verify="full")


def test_full_verification_reads_every_record(tf, geotiffs, open_raster, tmp_path):
    """A byte changed inside a record passes the size check, not verify='full' (CRCs and SHA-256)."""
    manifest = to_tfrecord(open_raster(geotiffs["projected"]), tmp_path / "v", 6, 6, shard_size="8KiB", progress=False)
    read_tfrecord(tmp_path / "v", verify="full")
    shard = tmp_path / json.loads(manifest.read_text())["shards"][1]["path"]
    data = bytearray(shard.read_bytes())
    data[40] ^= 0xFF
    shard.write_bytes(bytes(data))
    read_tfrecord(tmp_path / "v")
    with pytest.raises(DamagedOutputError, match="does not read back as its .* whole records"):
        read_tfrecord(tmp_path / "v", verify="full")
    with pytest.raises(PatchkitValueError, match="verify='all'"):
        read_tfrecord(tmp_path / "v", verify="all")


def test_changed_pixels_are_refused(tf, geotiffs, open_raster, tmp_path):
    """A source with the same grid and other pixels is never taken for the finished set."""
    da = open_raster(geotiffs["projected"]).load()
    to_tfrecord(da, tmp_path / "p", 6, 4, shard_size="8KiB", progress=False)
    other = da.copy(data=da.values + 1)
    with pytest.raises(ChangedSourceError, match="other pixels.*mode='w'"):
        to_tfrecord(other, tmp_path / "p", 6, 4, shard_size="8KiB", progress=False)
    to_tfrecord(other, tmp_path / "p", 6, 4, shard_size="8KiB", mode="w", progress=False)
    assert read_all(read_tfrecord(tmp_path / "p"))["patch"].tobytes() == hwc(other.patches.extract(6, 4)).tobytes()


@pytest.mark.parametrize("form", ["trailing slash", "existing folder"])
def test_a_prefix_naming_a_folder_writes_into_it(tf, geotiffs, open_raster, tmp_path, form):
    """``"out/"`` (or a folder that exists) holds ``patches-*.tfrecord`` and ``patches.json``, not files beside it."""
    folder = tmp_path / "out"
    if form == "existing folder":
        folder.mkdir()
    prefix = str(folder) + "/" if form == "trailing slash" else folder
    manifest = to_tfrecord(open_raster(geotiffs["projected"]), prefix, 6, 6, progress=False)
    assert manifest == folder / "patches.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert len(read_all(read_tfrecord(prefix))["row"]) == json.loads(manifest.read_text())["count"]


# ---- errors and imports ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda da, p: to_tfrecord(da, p / "out", 4, 4, compression="LZ4"), PatchkitValueError,
         "compression='LZ4'.*'GZIP'"),
        (lambda da, p: to_tfrecord(da, p / "out", 4, 4, mode="a"), PatchkitValueError, "mode='a'.*'w'"),
        (lambda da, p: to_tfrecord(da, p / "out", 4, 4, shard_size="lots"), PatchkitValueError, "shard_size='lots'"),
        (lambda da, p: to_tfrecord(da, p / "out", 4, 4, max_nodata_fraction=2), PatchkitValueError,
         "max_nodata_fraction=2"),
        (lambda da, p: to_tfrecord(da.values, p / "out", 4, 4), PatchkitTypeError, "xr.DataArray"),
    ],
)
def test_bad_arguments(tf, geotiffs, open_raster, tmp_path, call, error, match):
    """Bad arguments raise patchkit errors naming the argument, the value and the fix; nothing is written."""
    with pytest.raises(error, match=match):
        call(open_raster(geotiffs["projected"]), tmp_path)
    assert not list(tmp_path.iterdir())


def test_errors_belong_to_the_patchkit_tree():
    """The sink's own errors belong to the patchkit tree, so `except PatchkitError` catches them."""
    assert issubclass(ForeignStoreError, PatchkitError) and issubclass(IncompleteStoreError, ValueError)


def test_import_does_not_load_tensorflow():
    """Importing the sink, its codec (and patchkit) leaves TensorFlow unimported."""
    code = "import sys, patchkit.sinks.tfrecord, patchkit.sinks.tfcodec; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_pipelined_shards_equal_sequential_ones(tf, geotiffs, open_raster, tmp_path):
    """Records written on a thread while the next band is made (two bands in flight) give the same files, byte for
    byte, as one band at a time; the budget decides which runs."""
    from patchkit.labelled.layout import prepare
    from patchkit.sinks.tfrecord import _SINK

    da = open_raster(geotiffs["projected"], chunks={"y": 16, "x": 16})
    spec = patchkit.PatchSpec(8, 5, padding="SAME")
    pipes = {budget: _SINK.write_pipeline(prepare(da, spec, max_memory=budget), budget, "auto")[0].in_flight
             for budget in ("12KiB", "4MiB")}
    assert pipes == {"12KiB": 1, "4MiB": 2}
    files = {}
    for budget in pipes:
        to_tfrecord(da, tmp_path / budget / "p", 8, 5, padding="SAME", shard_size="12KiB", max_memory=budget, progress=False)
        files[budget] = {p.name: p.read_bytes() for p in sorted((tmp_path / budget).iterdir())}
    assert len(files["4MiB"]) > 2 and files["12KiB"] == files["4MiB"]
