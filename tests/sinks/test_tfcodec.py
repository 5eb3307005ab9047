"""patchkit.sinks.tfcodec: records to tf.train.Example and back, the manifest's contents, record files, transforms."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import xarray as xr

import patchkit
from patchkit.labelled.layout import bands, prepare
from patchkit.labelled.tfdata import band_arrays, scene_features
from patchkit.sinks import tfcodec
from patchkit.sinks.tfcodec import (FORMAT, PatchTransforms, RecordFile, count_records, difference, examples, feature_record,
                                    file_sha256, new_manifest, parse, record_bytes)

from ..helpers import TFRECORD_SPECS, random_image, read_all


def transforms_of_bands(da, spec, fraction=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rows``, ``cols`` and the :class:`PatchTransforms` of every patch ``spec`` cuts (kept ones with ``fraction``)."""
    prepared = prepare(da, spec, max_nodata_fraction=fraction)
    features, _ = scene_features(da, spec)
    found = [band_arrays(band, features)[:2] for _, band in bands(prepared, max_memory="16KiB")]
    rows, cols = (np.concatenate(x) for x in zip(*found))
    return rows, cols, PatchTransforms(prepared)(rows, cols)


# ---- transforms -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", TFRECORD_SPECS)
@pytest.mark.parametrize("fraction", [None, 0.3])
def test_transforms_are_the_grid_tables(geotiffs, open_raster, kwargs, fraction):
    """Every patch's coefficients are .patches.grid's (the GeoTIFF chips'), bit for bit, and patch_transform's."""
    da = open_raster(geotiffs["nodata"])
    rows, cols, found = transforms_of_bands(da, patchkit.PatchSpec(**kwargs), fraction)
    table = da.patches.grid(**kwargs).set_index(["row", "col"])
    expected = np.array([tuple(table.loc[(r, c), "transform"])[:6] for r, c in zip(rows, cols)])
    assert found.tobytes() == expected.tobytes()
    patches = da.patches.extract(**kwargs)
    for i in range(0, len(rows), 5):
        np.testing.assert_allclose(found[i], tuple(patchkit.patch_transform(patches, rows[i], cols[i]))[:6], rtol=0, atol=1e-6)


def test_an_irregular_axis_gives_nan_along_it_only():
    """Pixel centres that are not evenly spaced leave that axis' coefficients NaN; the other axis keeps its numbers."""
    x = np.cumsum(np.arange(1, 21, dtype=float))  # widening steps
    da = xr.DataArray(random_image((1, 16, 20), "float32"), dims=("band", "y", "x"),
                      coords={"x": x, "y": 100.0 - 2.0 * np.arange(16)})
    _, _, found = transforms_of_bands(da, patchkit.PatchSpec(4, 4))
    assert np.isnan(found[:, [0, 2]]).all() and not np.isnan(found[:, [4, 5]]).any()
    assert (found[:, 4] == -2.0).all() and (found[:, [1, 3]] == 0).all()


# ---- records ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "size"), [("uint16", 8), ("uint32", 4), ("uint64", 3), ("float64", 96)])
def test_examples_parse_back_to_the_same_patches(tf, dtype, size):
    """Serialized examples parse back (batched when small, one by one from 64 KiB) to the same bits, places and transforms."""
    da = xr.DataArray(random_image((2, 100, 100), dtype), dims=("band", "y", "x"))
    spec = patchkit.PatchSpec(size, size)
    features, _ = scene_features(da, spec)
    band = da.patches.extract(size, size)
    rows, cols, arrays = band_arrays(band, features)
    transforms = np.arange(rows.size * 6, dtype=float).reshape(-1, 6) / 7
    records = list(examples(tf, features, rows, cols, arrays, transforms, range(rows.size)))
    manifest_features = {f.key: feature_record(da, f) for f in features}
    back = read_all(parse(tf, tf.data.Dataset.from_tensor_slices(records), manifest_features))
    assert back["patch"].dtype == np.dtype(dtype) and back["patch"].tobytes() == arrays["patch"].tobytes()
    np.testing.assert_array_equal(np.stack([back["row"], back["col"]]), np.stack([rows, cols]))
    assert back["transform"].tobytes() == transforms.tobytes()


def test_feature_records_describe_channels_and_keys(stacked):
    """The manifest's feature entry names the folded dims, their sizes and coordinates, and the record's keys."""
    (feature,), _ = scene_features(stacked, patchkit.PatchSpec(6, 5))
    record = feature_record(stacked, feature)
    assert record["shape"] == [6, 6, 6] and record["dtype"] == "int16" and record["variable"] is None
    assert record["channels"]["dims"] == ["time", "band"] and record["channels"]["sizes"] == [3, 2]
    assert record["channels"]["coords"]["band"] == [1, 2] and len(record["channels"]["coords"]["time"]) == 3
    assert record["keys"] == {"pixels": "patch", "shape": "shape", "dtype": "dtype"}
    assert record_bytes({"a": record, "b": {**record, "dtype": "bfloat16"}}) == 6 * 6 * 6 * 2 * 2


# ---- the manifest -----------------------------------------------------------------------------------


def test_a_new_manifest_cuts_whole_patch_rows_into_shards(geotiffs, open_raster):
    """Shards hold whole patch rows, as many as fit in shard_size (at least one); nothing is done yet."""
    da = open_raster(geotiffs["projected"])
    spec = patchkit.PatchSpec(8, 8)
    features, image = scene_features(da, spec)
    manifest = new_manifest(da, features, spec, image, None, "GZIP", 2 * 6 * 8 * 8 * 3 * 2, lambda k, n: f"s-{k}-of-{n}")
    assert manifest["format"] == FORMAT and manifest["grid_shape"] == [7, 6] and manifest["rows_per_shard"] == 2
    assert [s["rows"] for s in manifest["shards"]] == [[0, 2], [2, 4], [4, 6], [6, 7]]
    assert manifest["shards"][-1]["path"] == "s-3-of-4" and not manifest["complete"]
    other = new_manifest(da, features, spec, image, None, None, 1, lambda k, n: f"s-{k}")
    assert other["rows_per_shard"] == 1
    assert difference(manifest, other) == ("it was written with other arguments: rows_per_shard 2, now 1; "
                                           "compression 'GZIP', now None")
    moved = new_manifest(da.assign_attrs(scene="another"), features, spec, image, None, "GZIP", 1, lambda k, n: "")
    assert difference(manifest, moved).startswith("it was written from another source")


# ---- files of records -------------------------------------------------------------------------------


def test_a_record_file_is_at_its_path_only_when_whole(tf, tmp_path):
    """Records go beside the path; placed, the file holds them all and has the SHA-256 returned; aborted, nothing stays."""
    path = tmp_path / "s.tfrecord"
    file = RecordFile(tf, path, "GZIP")
    file.write([b"one", b"two", b"three"])
    assert not path.exists() and file.partial.parent == tmp_path and file.partial.name.startswith(".s.tfrecord.")
    assert file.close() is None
    sha = file.place()
    assert sha == file_sha256(path) and count_records(tf, path, "GZIP") == 3 and list(tmp_path.iterdir()) == [path]
    dropped = RecordFile(tf, tmp_path / "t.tfrecord", None)
    dropped.write([b"x"])
    dropped.abort()
    assert list(tmp_path.iterdir()) == [path]


def test_a_short_record_file_names_the_cause(tf, tmp_path, monkeypatch):
    """A file that reads back with fewer records is an OSError (EIO here) saying so, and is not placed."""
    file = RecordFile(tf, tmp_path / "s.tfrecord", None)
    file.write([b"a", b"b"])
    monkeypatch.setattr(tfcodec, "count_records", lambda *args: 1)
    short = file.close()
    assert isinstance(short, OSError) and short.errno == errno.EIO and "1 of its 2 records" in str(short)
    assert not (tmp_path / "s.tfrecord").exists()


def test_a_damaged_file_counts_no_records(tf, tmp_path):
    """count_records is -1 for a file cut mid-record (its CRCs do not match)."""
    path = tmp_path / "s.tfrecord"
    file = RecordFile(tf, path, None)
    file.write([b"0123456789" * 10])
    file.close()
    file.place()
    path.write_bytes(path.read_bytes()[:-7])
    assert count_records(tf, path, "") == -1
