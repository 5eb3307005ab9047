"""The numpy backend: threaded strided copies equal single-threaded ones and TensorFlow's op."""

from __future__ import annotations

import numpy as np
import pytest

from patchkit import PatchSpec
from patchkit.backends import numpy as numpy_backend
from patchkit.backends._threads import get_pool, num_threads
from patchkit.testing import assert_patches_equal, reference_patches

from .helpers import random_image


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("shape, spec", [
    ((1, 300, 260, 4), PatchSpec(64, 32, padding="SAME")),  # few rows of big patches: split along columns
    ((3, 200, 200, 2), PatchSpec(8, 4, 2, "SAME")),  # many rows of small patches: grouped rows
    ((1, 64, 1000, 1), PatchSpec((64, 2), 1)),  # one output row
])
def test_threads_agree(threads, shape, spec, monkeypatch):
    """Any thread count gives the same bytes, with the copy forced onto the pool."""
    monkeypatch.setattr(numpy_backend, "PARALLEL_MIN_BYTES", 0)
    images = random_image(shape, "float32", seed=3)
    out = np.empty(spec.output_shape(shape), images.dtype)
    numpy_backend.extract_band(images, 0, shape, spec, slice(0, out.shape[1]), out, threads=threads)
    assert_patches_equal(out, numpy_backend.NumpyBackend().extract(images, spec))


def test_band_from_a_halo_only(tf):
    """A band made from just its clipped input rows (row0 > 0) equals the same rows of the whole."""
    images = random_image((1, 50, 30, 2), "int16")
    spec = PatchSpec(6, 4, 2, "SAME")
    rows = slice(3, 8)
    ya, yb = spec.input_rows(rows, images.shape, clip=True)
    band = numpy_backend.NumpyBackend().band(images[:, ya:yb].copy(), ya, images.shape, spec, rows)
    assert_patches_equal(band, reference_patches(images, 6, 4, 2, "SAME")[:, rows])


def test_non_contiguous_input(tf):
    """Transposed and strided inputs are read through their strides."""
    base = random_image((1, 40, 60, 3), "float64")
    images = base.transpose(0, 2, 1, 3)[:, ::2]
    got = numpy_backend.NumpyBackend().extract(images, PatchSpec(5, 3, padding="SAME"))
    assert_patches_equal(got, reference_patches(np.ascontiguousarray(images), 5, 3, 1, "SAME"))


def test_thread_count_from_environment(monkeypatch):
    """PATCHKIT_NUM_THREADS overrides the core count; the pool follows the size asked."""
    monkeypatch.setenv("PATCHKIT_NUM_THREADS", "3")
    assert num_threads() == 3
    assert get_pool(3)._max_workers == 3 and get_pool(3) is get_pool(3)


@pytest.mark.parametrize("kernel", ["c", "numpy"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "layout",
    ["contiguous", "reversed rows", "broadcast channels", "column rate 2"],
)
def test_copy_kernel_and_numpy_agree(kernel, stream, layout, monkeypatch):
    """The C kernel (streaming or not) and np.copyto give the same bytes, for every input layout."""
    if kernel == "c" and numpy_backend._copy_runs is None:
        pytest.skip("the C copy kernel was not built (no compiler at install time)")
    calls = []
    if kernel == "numpy":
        monkeypatch.setattr(numpy_backend, "_copy_runs", None)
    else:
        real = numpy_backend._copy_runs
        monkeypatch.setattr(numpy_backend, "_copy_runs", lambda *args: calls.append(args) or real(*args))
    monkeypatch.setattr(numpy_backend, "STREAM_MIN_BYTES", 0 if stream else 1 << 62)
    base = random_image((2, 61, 47, 3), "complex64", seed=5)
    images, rates = {
        "contiguous": (base, 1),
        "reversed rows": (base[:, ::-1], 1),
        "broadcast channels": (np.broadcast_to(base[..., :1], base.shape), 1),
        "column rate 2": (base, (1, 2)),
    }[layout]
    spec = PatchSpec((7, 5), (3, 2), rates, "SAME")
    got = numpy_backend.NumpyBackend().extract(images, spec)
    expected = np.empty_like(got).reshape(got.shape[:3] + (7, 5, 3))
    for region in spec.regions((0, got.shape[1]), images.shape):  # the reference: plain np.copyto per region
        padded = numpy_backend._zero_padded(images, 0, 61, 47, *region.in_rows, *region.in_cols)
        dst = expected[:, region.rows, region.cols]
        np.copyto(dst, numpy_backend._patch_view(padded, spec, dst.shape))
    assert_patches_equal(got, expected.reshape(got.shape))
    assert bool(calls) == (kernel == "c" and layout != "column rate 2")  # rate 2: runs are not contiguous


def test_c_kernel_is_built():
    """`pip install` builds the C kernel where a compiler exists (as on CI); say so when it did not."""
    import sysconfig
    import shutil

    if not shutil.which(sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC") else "cc"):
        pytest.skip("no C compiler: patchkit runs on numpy alone")
    assert numpy_backend._copy_runs is not None
