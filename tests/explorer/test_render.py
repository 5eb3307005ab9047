"""explorer.render: grid lines stand where TensorFlow's patches start and the last one ends; drawings are PNGs."""

from __future__ import annotations

import numpy as np
import pytest

from patchkit.core.spec import PatchSpec
from patchkit.explorer.render import MAX_LINES, fitted_grid, grid_edges, render_patch, render_scene
from patchkit.explorer.scene import Scene

from ..helpers import tf_grid
from .scenes import small_scene

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("spec, hw", [(PatchSpec(16, 8), (61, 53)), (PatchSpec(7, 11, 2, "SAME"), (61, 53)),
                                      (PatchSpec((5, 9), (3, 4), (1, 2)), (40, 45)), (PatchSpec(2, 1), (300, 250))], ids=str)
def test_grid_edges_are_the_patch_starts_and_the_last_end(spec, hw):
    """Edges are every k-th patch's first tap (at most MAX_LINES + 1 of them) and one past the last patch's last tap."""
    for edges, taps in zip(grid_edges(spec, hw), tf_grid(hw, spec.sizes, spec.strides, spec.rates, spec.padding)):
        every = max(1, -(-len(taps) // MAX_LINES))
        np.testing.assert_array_equal(edges[:-1], taps[::every, 0])
        assert edges[-1] == taps[-1, -1] + 1 and len(edges) <= MAX_LINES + 1


def test_fitted_grid_is_empty_where_the_kernel_does_not_fit():
    """A VALID kernel larger than the image draws no grid (and raises nothing)."""
    assert fitted_grid(PatchSpec(90, 10), (61, 53)) == (0, 0)
    assert fitted_grid(PatchSpec(16, 8), (61, 53)) == PatchSpec(16, 8).grid_shape((61, 53))


def test_render_scene_and_patch_are_pngs():
    """The preview is drawn with a grid, a selection and dropped marks, or without a grid; a patch is drawn too."""
    pytest.importorskip("matplotlib")
    opened = Scene.open(small_scene())
    spec = PatchSpec(16, 8, 1, "SAME")
    dropped = np.zeros(spec.grid_shape((61, 53)), bool)
    dropped[0, 0] = True
    assert render_scene(opened, spec, (1, 2), dropped).startswith(PNG)
    assert render_scene(opened, PatchSpec(90, 10)).startswith(PNG)
    assert render_patch(opened, opened.read_patch(spec, 1, 2), "patch").startswith(PNG)
