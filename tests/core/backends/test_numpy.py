"""The numpy backend: threaded strided copies equal single-threaded ones and TensorFlow's op."""

from __future__ import annotations

import numpy as np
import pytest

from patchkit import PatchSpec
from patchkit.core.backends import numpy as numpy_backend
from patchkit.core.backends._threads import get_pool, num_threads
from patchkit.testing import assert_patches_equal, reference_patches

from ...helpers import halo_in_sentinel, random_image, sentinel_filled, tf_halo, tf_reference_patches


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("shape, spec", [
    ((1, 300, 260, 4), PatchSpec(64, 32, padding="SAME")),  # few rows of big patches: split along columns
    ((3, 200, 200, 2), PatchSpec(8, 4, 2, "SAME")),  # many rows of small patches: grouped rows
    ((1, 64, 1000, 1), PatchSpec((64, 2), 1)),  # one output row
])
def test_threads_agree(threads, shape, spec, monkeypatch):
    """Any thread count gives TensorFlow's bytes, with the copy forced onto the pool, into an ``out`` that
    starts as NaN everywhere (so a task that is never run shows)."""
    monkeypatch.setattr(numpy_backend, "PARALLEL_MIN_BYTES", 0)
    images = random_image(shape, "float32", seed=3)
    out = sentinel_filled(spec.output_shape(shape), images.dtype)
    numpy_backend.extract_band(images, 0, shape, spec, slice(0, out.shape[1]), out, threads=threads)
    assert_patches_equal(out, tf_reference_patches(images, spec.sizes, spec.strides, spec.rates, spec.padding))


@pytest.mark.parametrize("spec", [
    PatchSpec(6, 4, 2, "SAME"),
    PatchSpec((3, 2), (2, 3), (3, 2), "SAME"),
    PatchSpec(4, 3, 2, "VALID"),
    PatchSpec(2, 5, 4, "VALID"),
    PatchSpec(3, 2, 5, "SAME"),
    PatchSpec((2, 3), (4, 2), (6, 2), "SAME"),
], ids=str)
def test_band_from_a_halo_only(spec):
    """A band made from just its halo by TensorFlow's rule (row0 > 0), at rates and strides above 1, equals
    those rows of TensorFlow's patches: the halo lies in a buffer followed by NaN rows and ``out`` starts as
    NaN, so reading past the halo or leaving a patch unwritten fails every time."""
    images = random_image((2, 50, 30, 2), "float32", seed=9)
    expected = tf_reference_patches(images, spec.sizes, spec.strides, spec.rates, spec.padding)
    for rows in [slice(i, min(i + n, expected.shape[1])) for n in (1, 3) for i in range(0, expected.shape[1], n)]:
        ya, yb = tf_halo(rows, 50, spec.sizes[0], spec.strides[0], spec.rates[0], spec.padding)
        out = sentinel_filled(expected[:, rows].shape, images.dtype)
        band = numpy_backend.NumpyBackend().band(halo_in_sentinel(images, ya, yb), ya, images.shape, spec, rows, out)
        assert band is out
        assert_patches_equal(band, expected[:, rows])


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
    expected = sentinel_filled(got.shape[:3] + (7, 5, 3), got.dtype)
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
