"""patchkit.labelled.geo: steps, pixel centres, affine transforms, bounds and the grid table, against rasterio."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from patchkit import PatchSpec, patch_transform
from patchkit.errors import GeoreferenceError
from patchkit.labelled.geo import (
    check_north_up,
    crs_of,
    geotransform_of,
    grid_table,
    patch_transforms,
    pixel_coords,
    regular_step,
    source_transform,
    write_grid,
)

from ..helpers import write_geotiff

#: Specs of several shapes: rate 1 and 2 (and mixed), VALID and SAME (uneven padding on the fixtures).
SPECS = [
    PatchSpec(8, 8),
    PatchSpec((7, 5), (4, 3), padding="SAME"),
    PatchSpec(16, 16, padding="SAME"),
    PatchSpec(5, 4, rates=2, padding="SAME"),
    PatchSpec((3, 4), (5, 2), rates=(2, 3)),
    PatchSpec((4, 3), (6, 7), rates=(1, 2), padding="SAME"),
]


def _rasterio():
    return pytest.importorskip("rasterio")


def _src_geometry(path):
    """``(transform, crs, (height, width))`` of a GeoTIFF as rasterio reads it."""
    rasterio = _rasterio()
    with rasterio.open(path) as src:
        return src.transform, src.crs, (src.height, src.width)


def _sampled_centres(transform, window, kh, kw):
    """World coordinates of the input pixel centres a patch samples, straight from the source transform."""
    r, c = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    cols = window.col_off + c * window.col_step + 0.5
    rows = window.row_off + r * window.row_step + 0.5
    return transform * (cols, rows)


def _check_patch_transform(got, transform, spec, window):
    """``got`` is the patch transform of ``window``: rasterio's window transform (rate 1) and the centre rule."""
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    kh, kw = spec.sizes
    if spec.rates == (1, 1):
        expected = window_transform(Window(window.col_off, window.row_off, window.width, window.height), transform)
        assert got.almost_equals(expected, precision=1e-6), (got, expected)
    r, c = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    gx, gy = got * (c + 0.5, r + 0.5)
    ex, ey = _sampled_centres(transform, window, kh, kw)
    np.testing.assert_allclose(gx, ex, rtol=0, atol=1e-6)
    np.testing.assert_allclose(gy, ey, rtol=0, atol=1e-6)


# ---- regular_step ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, expected",
    [
        ([0.5, 1.5, 2.5, 3.5], 1.0),
        (600010.0 + 20.0 * np.arange(45), 20.0),
        (np.arange(10) * 0.1 + 1e6, pytest.approx(0.1, rel=1e-6)),
        ([4200000.0, 4199970.0, 4199940.0], -30.0),
        (np.array([10, 20, 30, 40]), 10),
        (np.array([5, 3, 1], dtype=np.int16), -2),
        (np.array([7, 8], dtype=np.uint8), 1),
    ],
)
def test_regular_step_of_evenly_spaced(values, expected):
    """Evenly spaced coordinates (ascending or descending) give their step."""
    assert regular_step(values) == expected


@pytest.mark.parametrize("values, kind", [(np.array([10, 20, 30]), int), (np.array([0.0, 2.0, 4.0]), float),
                                          (np.array([9, 6, 3], dtype=np.int32), int)])
def test_regular_step_type(values, kind):
    """Integer coordinates keep an integer step; float ones a float step."""
    assert type(regular_step(values)) is kind


@pytest.mark.parametrize(
    "values",
    [
        [0.0, 1.0, 3.0],
        np.cumsum(np.random.default_rng(1).random(12) + 0.5),
        [0.0, 2.0, 1.0, 3.0],
        [0.0, 1.0, 0.0],
        [0.0, 1.0, 2.0, 1.0, 0.0],
        [1.0, 1.0, 1.0],
        [0, 1, 1, 2],
        [5.0],
        [],
        ["a", "b", "c"],
        np.array(["2020-01-01", "2020-01-02", "2020-01-03"], dtype="datetime64[D]"),
        [False, True],
        np.arange(6.0).reshape(2, 3),
    ],
    ids=["irregular", "random", "non-monotonic", "back-and-forth", "turning", "repeated", "repeated-int",
         "one", "empty", "strings", "dates", "bools", "2d"],
)
def test_regular_step_none(values):
    """Irregular, non-monotonic, repeated, too short or non-numeric coordinates have no step."""
    assert regular_step(values) is None


# ---- pixel_coords ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [PatchSpec(3, 2, padding="SAME"), PatchSpec(4, 3, rates=2, padding="SAME"),
                                  PatchSpec((5, 2), (1, 4), rates=(3, 1), padding="SAME")])
@pytest.mark.parametrize(
    "values, step",
    [
        (1015.0 - 30.0 * np.arange(11), -30.0),
        (0.25 + 0.5 * np.arange(11), 0.5),
        (np.arange(100, 155, 5), 5),
        (np.array([0.0, 1.0, 3.0, 4.5, 7.0, 7.5, 9.0, 12.0, 13.0, 13.5, 20.0]), None),
    ],
    ids=["descending", "ascending", "int", "irregular"],
)
def test_pixel_coords_brute_force(spec, values, step):
    """Inside positions give the input values; padded ones c0 + i*step on regular axes, NaN on irregular ones."""
    positions = spec.positions((values.size, values.size))[0]
    got = pixel_coords(values, positions)
    assert got.shape == positions.shape
    for index, p in np.ndenumerate(positions):
        if 0 <= p < values.size:
            assert got[index] == values[p]
        elif step is None:
            assert np.isnan(got[index])
        else:
            assert got[index] == pytest.approx(values[0] + p * step, rel=0, abs=1e-9)


def test_pixel_coords_inside_is_exact():
    """Positions inside the image return the stored values bit for bit, not a recomputed c0 + i*step."""
    values = np.array([0.1, 0.2, 0.30000000000000004, 0.4, 0.5])
    positions = np.array([[-1, 0, 1, 2], [2, 3, 4, 5]])
    got = pixel_coords(values, positions)
    inside = (positions >= 0) & (positions < values.size)
    np.testing.assert_array_equal(got[inside], values[[0, 1, 2, 2, 3, 4]])
    np.testing.assert_array_equal(pixel_coords(values, np.array([2, 2, 4])), values[[2, 2, 4]])


@pytest.mark.parametrize(
    "step, expected",
    [(10.0, [480.0, 490.0, 500.0, 510.0, 520.0]), (-20.0, [540.0, 520.0, 500.0, 480.0, 460.0]),
     (None, [np.nan, np.nan, 500.0, np.nan, np.nan])],
)
def test_pixel_coords_single_pixel_uses_step(step, expected):
    """An axis of one pixel extrapolates with the given step, or gives NaN in padding without one."""
    got = pixel_coords(np.array([500.0]), np.array([-2, -1, 0, 1, 2]), step)
    np.testing.assert_array_equal(got, expected)


def test_pixel_coords_step_ignored_on_regular_axis():
    """The fallback step is for one-pixel axes: a regular axis extrapolates with its own step."""
    got = pixel_coords(np.array([0.0, 10.0, 20.0]), np.array([-1, 3]), step=99.0)
    np.testing.assert_array_equal(got, [-10.0, 30.0])


# ---- source_transform -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["projected", "nonsquare", "nodata"])
def test_source_transform_matches_rasterio(geotiffs, open_raster, name):
    """The transform rebuilt from rioxarray's pixel centres is the file's transform."""
    transform, _, _ = _src_geometry(geotiffs[name])
    da = open_raster(geotiffs[name])
    got = source_transform(da.x.values, da.y.values)
    assert got.almost_equals(transform, precision=1e-6), (got, transform)


@pytest.mark.parametrize("axis", ["x", "y", "both"])
def test_source_transform_single_pixel_steps(geotiffs, open_raster, axis):
    """A one-pixel axis takes its pixel size from ``steps``; the origin is unchanged."""
    transform, _, _ = _src_geometry(geotiffs["nonsquare"])
    da = open_raster(geotiffs["nonsquare"])
    da = da.isel({d: slice(0, 1) for d in (("x", "y") if axis == "both" else (axis,))})
    got = source_transform(da.x.values, da.y.values, steps=(transform.a, transform.e))
    assert got.almost_equals(transform, precision=1e-6), (got, transform)


@pytest.mark.parametrize(
    "x, y",
    [
        ([0.0, 1.0, 3.0], [10.0, 9.0, 8.0]),
        ([0.0, 1.0, 2.0], [10.0, 8.0, 9.0]),
        ([0.0, 0.0, 0.0], [10.0, 9.0, 8.0]),
        ([5.0], [10.0, 9.0, 8.0]),
    ],
    ids=["irregular-x", "non-monotonic-y", "repeated-x", "single-x-no-step"],
)
def test_source_transform_irregular(x, y):
    """Coordinates that are not a regular grid are refused with a GeoreferenceError."""
    with pytest.raises(GeoreferenceError, match="regular grid"):
        source_transform(np.array(x), np.array(y))


# ---- patch_transforms and grid_table --------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("name", ["projected", "nonsquare"])
def test_patch_transforms_every_patch(geotiffs, name, spec):
    """Every patch's transform is rasterio's window transform (rate 1) and maps pixel centres to the sampled source pixels."""
    from affine import Affine

    transform, _, shape = _src_geometry(geotiffs[name])
    coeffs = patch_transforms(transform, spec, shape)
    oh, ow = spec.grid_shape(shape)
    assert coeffs.shape == (oh, ow, 6)
    for i in range(oh):
        for j in range(ow):
            _check_patch_transform(Affine(*coeffs[i, j]), transform, spec, spec.window(i, j, shape))


@pytest.mark.parametrize("spec", [PatchSpec(2**31 - 1, 3, padding="SAME"), PatchSpec((5, 10**9), (2, 7), (3, 2), "SAME")])
def test_patch_transforms_of_kernels_far_larger_than_the_image(spec):
    """A SAME kernel of up to two billion pixels (legal in TensorFlow) gets its transforms from the patches'
    first pixels alone: as many numbers as patches, never a position per tap; each is rasterio's window
    transform of the patch's window (rate 1) and its pixel size the source's times the rate."""
    from affine import Affine

    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    transform, shape = Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4200000.0), (61, 53)
    coeffs = patch_transforms(transform, spec, shape)
    assert coeffs.shape == spec.grid_shape(shape) + (6,)
    (rr, rc), sizes = spec.rates, spec.sizes
    for i, j in [(0, 0), (-1, -1), (3, 1)]:
        got, window = Affine(*coeffs[i, j]), spec.window(i, j, shape)
        if spec.rates == (1, 1):
            expected = window_transform(Window(window.col_off, window.row_off, window.width, window.height), transform)
            assert got.almost_equals(expected, precision=1e-6)
        assert (got.a, got.e) == (transform.a * rc, transform.e * rr)
        for r, c in [(0, 0), (sizes[0] - 1, sizes[1] - 1)]:  # the first and last pixel sampled, at their centres
            centre = transform * (window.col_off + c * rc + 0.5, window.row_off + r * rr + 0.5)
            np.testing.assert_allclose(got * (c + 0.5, r + 0.5), centre, rtol=1e-12)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("name", ["projected", "nonsquare"])
def test_grid_table_every_patch(geotiffs, name, spec):
    """The grid table lists every patch row-major with its transform and rasterio's array_bounds."""
    from rasterio.transform import array_bounds

    transform, crs, shape = _src_geometry(geotiffs[name])
    table = grid_table(spec, shape, transform, crs)
    oh, ow = spec.grid_shape(shape)
    kh, kw = spec.sizes
    expected_order = [(i, j) for i in range(oh) for j in range(ow)]
    assert list(zip(table["row"], table["col"])) == expected_order
    assert table.attrs["crs"] == crs
    for (i, j), row in zip(expected_order, table.itertuples()):
        _check_patch_transform(row.transform, transform, spec, spec.window(i, j, shape))
        west, south, east, north = array_bounds(kh, kw, row.transform)
        np.testing.assert_allclose([row.left, row.bottom, row.right, row.top], [west, south, east, north],
                                   rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["projected", "nonsquare"])
def test_grid_table_bounds_of_rate_one_windows(geotiffs, name):
    """For rate 1, a patch's bounds are rasterio's bounds of its window."""
    from rasterio.windows import Window
    from rasterio.windows import bounds as window_bounds

    transform, _, shape = _src_geometry(geotiffs[name])
    spec = PatchSpec((9, 6), (5, 4), padding="SAME")
    table = grid_table(spec, shape, transform)
    for row in table.itertuples():
        w = spec.window(row.row, row.col, shape)
        expected = window_bounds(Window(w.col_off, w.row_off, w.width, w.height), transform)
        np.testing.assert_allclose([row.left, row.bottom, row.right, row.top], expected, rtol=0, atol=1e-6)


# ---- check_north_up -------------------------------------------------------------------------------


def _rotated_transforms():
    from affine import Affine

    return {
        "rotated": Affine.translation(500000, 4200000) * Affine.rotation(15) * Affine.scale(30, -30),
        "sheared-b": Affine(30, 2, 500000, 0, -30, 4200000),
        "sheared-d": Affine(30, 0, 500000, 1.5, -30, 4200000),
        "both": Affine(30, 5, 500000, 3, -30, 4200000),
    }


@pytest.mark.parametrize("kind", ["rotated", "sheared-b", "sheared-d", "both"])
@pytest.mark.parametrize("call", ["check_north_up", "patch_transforms", "grid_table"])
def test_rotated_transform_refused(kind, call):
    """A rotated or sheared transform is refused by every function that places patches."""
    pytest.importorskip("affine")
    transform = _rotated_transforms()[kind]
    spec = PatchSpec(4, 4)
    calls = {
        "check_north_up": lambda: check_north_up(transform),
        "patch_transforms": lambda: patch_transforms(transform, spec, (20, 20)),
        "grid_table": lambda: grid_table(spec, (20, 20), transform),
    }
    with pytest.raises(GeoreferenceError, match="rotated or sheared"):
        calls[call]()


@pytest.mark.parametrize("transform", ["none", "north-up", "south-up"])
def test_north_up_accepted(transform):
    """None, a north-up and a south-up (positive e) transform pass the check."""
    Affine = pytest.importorskip("affine").Affine

    value = {"none": None, "north-up": Affine(30, 0, 1, 0, -30, 2), "south-up": Affine(30, 0, 1, 0, 30, 2)}[transform]
    assert check_north_up(value) is None


def test_rotated_geotiff_through_accessor(tmp_path, open_raster):
    """A rotated GeoTIFF opened with rioxarray cannot be cut into georeferenced patches."""
    from affine import Affine

    path = write_geotiff(tmp_path / "rotated.tif", np.arange(400, dtype=np.uint8).reshape(1, 20, 20),
                         Affine(30, 5, 500000, 3, -30, 4200000))
    da = open_raster(path)
    with pytest.raises(GeoreferenceError, match="rotated or sheared"):
        da.patches.extract(4, 4)


# ---- patch_transform on extracted patches ---------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [PatchSpec((7, 5), (4, 3), padding="SAME"), PatchSpec(8, 8), PatchSpec(5, 4, rates=2, padding="SAME"),
     PatchSpec((3, 4), (5, 2), rates=(2, 1))],
)
def test_patch_transform_grid_form(geotiffs, open_raster, spec):
    """patch_transform of every patch of the grid form matches rasterio (rate 1) and the rate rule."""
    transform, _, shape = _src_geometry(geotiffs["projected"])
    out = open_raster(geotiffs["projected"]).patches.extract(spec.sizes, spec.strides, spec.rates, spec.padding)
    for i in out.patch_row.values:
        for j in out.patch_col.values:
            _check_patch_transform(patch_transform(out, int(i), int(j)), transform, spec, spec.window(i, j, shape))


@pytest.mark.parametrize("spec", [PatchSpec((7, 5), (4, 3), padding="SAME"), PatchSpec(5, 4, rates=2, padding="SAME")])
@pytest.mark.parametrize("fraction", [0.0, 0.2])
def test_patch_transform_filtered_form(geotiffs, open_raster, spec, fraction):
    """patch_transform finds kept patches by their labels along the ``patch`` dim."""
    transform, _, shape = _src_geometry(geotiffs["projected"])
    out = open_raster(geotiffs["projected"]).patches.extract(spec.sizes, spec.strides, spec.rates, spec.padding,
                                                             max_nodata_fraction=fraction)
    assert "patch" in out.dims and 0 < out.sizes["patch"] < np.prod(spec.grid_shape(shape))
    for i, j in zip(out.patch_row.values, out.patch_col.values):
        _check_patch_transform(patch_transform(out, int(i), int(j)), transform, spec, spec.window(i, j, shape))


@pytest.mark.parametrize("spec", [PatchSpec((7, 5), (4, 3), padding="SAME"), PatchSpec(5, 4, rates=2, padding="SAME")])
@pytest.mark.parametrize("row, col", [(0, 0), (3, 2), (-1, -1)])
def test_patch_transform_single_patch(geotiffs, open_raster, spec, row, col):
    """A patch already selected from the grid has the transform of its place."""
    transform, _, shape = _src_geometry(geotiffs["projected"])
    out = open_raster(geotiffs["projected"]).patches.extract(spec.sizes, spec.strides, spec.rates, spec.padding)
    oh, ow = spec.grid_shape(shape)
    row, col = row % oh, col % ow
    one = out.sel(patch_row=row, patch_col=col)
    _check_patch_transform(patch_transform(one, row, col), transform, spec, spec.window(row, col, shape))


@pytest.mark.parametrize("form, row, col", [("grid", 100, 0), ("grid", 0, -1), ("filtered", 0, 0), ("filtered", 50, 50)])
def test_patch_transform_missing_label(geotiffs, open_raster, form, row, col):
    """Labels of no patch (off the grid, or dropped by the nodata filter) raise KeyError."""
    fraction = 0.0 if form == "filtered" else None
    out = open_raster(geotiffs["projected"]).patches.extract((7, 5), (4, 3), padding="SAME",
                                                             max_nodata_fraction=fraction)
    with pytest.raises(KeyError, match="no patch"):
        patch_transform(out, row, col)


def test_patch_transform_irregular_coords(geotiffs, open_raster):
    """Patches of a source with irregular x coordinates have no affine transform."""
    da = open_raster(geotiffs["projected"])
    rng = np.random.default_rng(3)
    da = da.assign_coords(x=np.cumsum(rng.random(da.sizes["x"]) + 0.5))
    out = da.patches.extract(4, 4)
    with pytest.raises(GeoreferenceError, match="regular grid"):
        patch_transform(out, 1, 1)


# ---- crs_of / geotransform_of ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["projected", "nonsquare", "nodata"])
def test_crs_and_geotransform_of_rioxarray(geotiffs, open_raster, name):
    """The CRS and transform read from rioxarray's spatial_ref are the file's."""
    transform, crs, _ = _src_geometry(geotiffs[name])
    da = open_raster(geotiffs[name])
    assert crs_of(da) == crs and crs_of(da).to_epsg() == 32633
    assert geotransform_of(da).almost_equals(transform, precision=1e-9)


@pytest.mark.parametrize(
    "da",
    [
        xr.DataArray(np.zeros((3, 4)), dims=("y", "x")),
        xr.DataArray(np.zeros((3, 4)), dims=("y", "x"), coords={"y": [3.0, 2.0, 1.0], "x": [0.0, 1.0, 2.0, 3.0]}),
        xr.DataArray(np.zeros((3, 4)), dims=("y", "x"), coords={"spatial_ref": 0}),
    ],
    ids=["bare", "coords", "spatial_ref-without-attrs"],
)
def test_crs_and_geotransform_of_plain(da):
    """A DataArray without georeferencing has no CRS and no transform."""
    assert crs_of(da) is None and geotransform_of(da) is None


# ---- write_grid -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg"])
@pytest.mark.parametrize("spec", [PatchSpec((7, 5), (4, 3), padding="SAME"), PatchSpec(5, 4, rates=2)])
def test_write_grid_round_trip(geotiffs, tmp_path, suffix, spec):
    """Written polygons read back with geopandas: one per patch, the table's bounds, the raster's CRS."""
    gpd = pytest.importorskip("geopandas")
    transform, crs, shape = _src_geometry(geotiffs["nonsquare"])
    table = grid_table(spec, shape, transform, crs)
    path = write_grid(table, tmp_path / f"grid{suffix}")
    back = gpd.read_file(path)
    assert len(back) == len(table)
    assert back.crs is not None and back.crs.to_epsg() == 32633
    np.testing.assert_array_equal(back["row"], table["row"])
    np.testing.assert_array_equal(back["col"], table["col"])
    np.testing.assert_allclose(back.geometry.bounds[["minx", "miny", "maxx", "maxy"]].to_numpy(),
                               table[["left", "bottom", "right", "top"]].to_numpy(), rtol=0, atol=1e-6)


def test_patch_transform_refuses_what_is_not_a_patch_array():
    """A numpy array is not a patch array: PatchkitTypeError saying what to pass (not numpy's AttributeError)."""
    from patchkit.errors import PatchkitTypeError

    with pytest.raises(PatchkitTypeError, match=r"patches is a ndarray, not a patch array; pass a DataArray made by"):
        patch_transform(np.zeros((2, 2, 4, 4)), 0, 0)


def test_patch_transform_off_the_grid_gives_its_ranges(geotiffs, open_raster):
    """Labels off the grid (or of the wrong type) give the grid's ranges; the error is a KeyError and an IndexError."""
    from patchkit.errors import PatchIndexError

    out = open_raster(geotiffs["projected"]).patches.extract(16, 16)
    for row, col in [(99, 99), ("a", 0)]:
        with pytest.raises(PatchIndexError, match=r"no patch .* in this grid of patch_row 0\.\.2 and patch_col 0\.\.2; pass"):
            patch_transform(out, row, col)
    assert issubclass(PatchIndexError, KeyError) and issubclass(PatchIndexError, IndexError)


def test_patch_transform_without_coordinates_says_what_to_do(geotiffs, open_raster):
    """Patches that lost their y and x coordinates: the message says where they come from."""
    out = open_raster(geotiffs["projected"]).patches.extract(16, 16).drop_vars(["y", "x"])
    with pytest.raises(GeoreferenceError, match=r"pass patches made by \.patches\.extract \(they keep their y and x"):
        patch_transform(out, 0, 0)


def test_write_grid_refuses_unknown_suffixes_and_unwritable_paths(geotiffs, open_raster, tmp_path):
    """An unknown suffix lists the known ones; a path under a regular file is a SinkWriteError naming it."""
    pytest.importorskip("geopandas")
    from patchkit.errors import PatchkitValueError, SinkWriteError

    da = open_raster(geotiffs["projected"])
    with pytest.raises(PatchkitValueError, match=r"path='.*grid\.xyz' has a suffix .*\.geojson, \.json, \.gpkg, \.shp"):
        da.patches.grid(16, 16, path=tmp_path / "grid.xyz")
    (tmp_path / "a-file.txt").write_text("x")
    with pytest.raises(SinkWriteError, match=r"writing the patch grid to path='.*a-file\.txt/grid\.gpkg' failed.*choose another"):
        da.patches.grid(16, 16, path=tmp_path / "a-file.txt" / "grid.gpkg")
