"""explorer.scene: the preview is a small read (an overview or every k-th pixel); a patch read is its window."""

from __future__ import annotations

import numpy as np
import pytest

from patchkit.core.extract import extract_patches
from patchkit.core.spec import PatchSpec
from patchkit.errors import DimensionError
from patchkit.explorer.scene import Scene
from patchkit.labelled.dims import arrange

from .scenes import small_scene

@pytest.mark.parametrize("chunks", [None, 200])
def test_preview_is_a_decimated_read(chunks):
    """The preview of a large scene is every k-th pixel, about preview_size on its longer side."""
    da = small_scene(900, 1300, 2, chunks=chunks)
    scene = Scene.open(da, preview_size=128)
    step = 11
    assert scene.preview.origin == f"every {step}th pixel"
    np.testing.assert_array_equal(scene.preview.data.values, da.values[:, ::step, ::step])
    assert max(scene.preview.images.shape[1:3]) <= 128
    assert scene.preview.scale == pytest.approx((900 / 82, 1300 / 119))
    assert (da.chunks is not None) == bool(chunks)  # the scene itself stays lazy


def test_preview_uses_a_geotiff_overview(tmp_path, open_raster):
    """A GeoTIFF with overviews is previewed from the overview, not from the full-resolution bands."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin

    from ..helpers import write_geotiff

    path = write_geotiff(tmp_path / "ov.tif", np.random.default_rng(0).integers(0, 255, (3, 1024, 800), dtype=np.uint8),
                         from_origin(500000.0, 4200000.0, 10.0, 10.0))
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4, 8], Resampling.nearest)
    scene = Scene.open(open_raster(path, chunks={"y": 256, "x": 256}), preview_size=200)
    assert scene.preview.origin == "overview 1/4"
    assert scene.preview.images.shape == (3, 256, 200, 1)


@pytest.mark.parametrize("spec", [PatchSpec(16, 8), PatchSpec(16, 8, 1, "SAME"), PatchSpec(5, 7, 3, "SAME")], ids=str)
@pytest.mark.parametrize("dims", [("band", "y", "x"), ("y", "x", "band")])
def test_read_patch_is_the_extracted_patch(spec, dims):
    """read_patch(i, j) reads one window and equals extract_patches at (i, j), padding included."""
    da = small_scene(chunks=16).transpose(*dims)
    scene = Scene.open(da)
    images = np.asarray(arrange(da, scene.layout))
    full = extract_patches(images, spec.sizes, spec.strides, spec.rates, spec.padding)
    oh, ow = spec.grid_shape(images.shape)
    for i, j in [(0, 0), (oh - 1, ow - 1), (oh // 2, 1)]:
        patch = scene.read_patch(spec, i, j)
        b, _, _, c = images.shape
        np.testing.assert_array_equal(patch.reshape(b, -1), full[:, i, j].reshape(b, -1))


def test_explorer_refuses_a_dataset():
    """A Dataset is refused with the way out (pick a variable)."""
    with pytest.raises(DimensionError, match="pick a variable"):
        Scene.open(small_scene().to_dataset(name="v"))
