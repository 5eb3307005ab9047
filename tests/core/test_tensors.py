"""patchkit inside TensorFlow programs, compared with TensorFlow's op in the same test.

TensorFlow's own tests of the op (``extract_image_patches_op_test.py``, its XLA variant, and
``extract_image_patches_grad_test.py``) are ported to call patchkit; ``tf.function``, ``tf.data.map``,
TF1 graphs, XLA and ``GradientTape`` uses each compare patchkit with ``tf.image.extract_patches``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import patchkit
from patchkit import extract_image_patches, extract_patches
from patchkit.errors import InvalidImageError, KernelTooLargeError, PatchkitError, UnsupportedDtypeError
from patchkit.testing import assert_patches_equal

from ..helpers import random_image, spec_cases


def tf_patches(tf, images, sizes, strides, rates, padding):
    """``tf.image.extract_patches`` with patchkit's short argument forms, on the real op."""
    four = lambda v: [1, *((v, v) if np.isscalar(v) else v), 1]  # noqa: E731
    return tf.image.extract_patches(images, four(sizes), four(strides), four(rates), padding)


# ---- TensorFlow's op test (extract_image_patches_op_test.py), eager and XLA ----------------------

OP_TEST_DTYPES = ["float16", "float32", "float64", "bfloat16"]


def _op_cases():
    """(name, image, ksizes, strides, rates, padding, expected patches) from TensorFlow's op test."""
    ramp = np.reshape(range(120), [2, 3, 4, 5])
    strided = np.reshape(range(120), [2, 4, 5, 3])
    square = [[[[1], [2]], [[3], [4]]]]
    cases = [(f"Ksize1x1Stride1x1Rate1x1 {p}", ramp, [1, 1], [1, 1], [1, 1], p, ramp) for p in ("VALID", "SAME")]
    cases += [(f"Ksize1x1Stride2x3Rate1x1 {p}", strided, [1, 1], [2, 3], [1, 1], p, strided[:, ::2, ::3, :])
              for p in ("VALID", "SAME")]
    cases += [
        ("Ksize2x2Stride1x1Rate1x1Valid", square, [2, 2], [1, 1], [1, 1], "VALID", [[[[1, 2, 3, 4]]]]),
        ("Ksize2x2Stride1x1Rate1x1Same", square, [2, 2], [1, 1], [1, 1], "SAME",
         [[[[1, 2, 3, 4], [2, 0, 4, 0]], [[3, 4, 0, 0], [4, 0, 0, 0]]]]),
        ("Ksize2x2Stride1x1Rate2x2Valid", np.arange(16).reshape(1, 4, 4, 1), [2, 2], [1, 1], [2, 2], "VALID",
         [[[[0, 2, 8, 10], [1, 3, 9, 11]], [[4, 6, 12, 14], [5, 7, 13, 15]]]]),
    ]
    return cases


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("dtype", OP_TEST_DTYPES)
@pytest.mark.parametrize("case", _op_cases(), ids=lambda c: c[0])
def test_tensorflow_op_test_values(tf, case, dtype, jit):
    """TensorFlow's op test: expected values, every float dtype, eager and under jit_compile."""
    _, image, ksizes, strides, rates, padding, expected = case
    images = tf.constant(np.asarray(image), dtype=dtype)
    run = lambda x: extract_image_patches(x, [1, *ksizes, 1], [1, *strides, 1], [1, *rates, 1], padding)  # noqa: E731
    got = tf.function(run, jit_compile=True)(images) if jit else run(images)
    reference = tf_patches(tf, images, ksizes, strides, rates, padding)
    np.testing.assert_array_equal(got.numpy(), np.asarray(expected, dtype=got.dtype.as_numpy_dtype))
    assert_patches_equal(got.numpy(), reference.numpy())


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_tensorflow_op_test_complex(tf, dtype, padding, graph):
    """TensorFlow's complex test: a 1x1 kernel gives the image back (XLA's CPU backend has no complex kernel)."""
    image = (np.reshape(range(120), [2, 3, 4, 5]) + 1j * np.reshape(range(120, 240), [2, 3, 4, 5])).astype(dtype)
    run = lambda x: extract_patches(x, 1, 1, 1, padding)  # noqa: E731
    got = tf.function(run)(tf.constant(image)) if graph else run(tf.constant(image))
    np.testing.assert_array_equal(got.numpy(), image)
    assert_patches_equal(got.numpy(), tf_patches(tf, image, 1, 1, 1, padding).numpy())


def test_tensorflow_op_test_invalid_attributes(tf):
    """TensorFlow's 'weird things into ksizes' test: a quantised 2x2 tensor is refused, by patchkit's error."""
    ksizes = tf.cast(tf.constant([[1, 4], [5, 2]], dtype=tf.int16), tf.qint16)
    with pytest.raises(TypeError, match="Expected list"):
        tf.image.extract_patches(tf.constant([0.0]), ksizes, [1, 1, 1, 1], [1, 1, 1, 1], "SAME")
    with pytest.raises(PatchkitError, match="sizes="):
        extract_patches(tf.constant([0.0]), ksizes, [1, 1, 1, 1], padding="SAME")


# ---- the op's edge semantics ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, sizes, strides, rates, padding",
    [
        ((1, 2, 2, 1), 3, 2, 1, "VALID"),  # kernel larger than the image, within one stride
        ((1, 1, 1, 1), 3, 3, 1, "VALID"),
        ((1, 2, 2, 1), 5, 2, 1, "VALID"),  # larger by less than two strides
        ((1, 1, 1, 1), 2, 1, 1, "VALID"),
        ((1, 3, 3, 1), 2, 1, 3, "VALID"),  # dilated past the image
        ((0, 4, 4, 1), 2, 1, 1, "VALID"),  # no images
        ((1, 0, 4, 1), 1, 1, 1, "VALID"),  # no rows
        ((1, 0, 4, 1), 2, 1, 1, "SAME"),
        ((1, 4, 4, 0), 2, 1, 1, "VALID"),  # no channels
        ((1, 0, 0, 1), 1, 1, 1, "SAME"),
    ],
)
@pytest.mark.parametrize("kind", ["numpy", "eager", "graph"])
def test_empty_results_like_tensorflow(tf, shape, sizes, strides, rates, padding, kind):
    """Where TensorFlow gives an empty result, patchkit gives the same shape, of the input's kind."""
    expected = tf_patches(tf, tf.zeros(shape), sizes, strides, rates, padding)
    run = lambda x: extract_patches(x, sizes, strides, rates, padding)  # noqa: E731
    if kind == "numpy":
        got = run(np.zeros(shape, np.float32))
        assert isinstance(got, np.ndarray)
    else:
        got = run(tf.zeros(shape)) if kind == "eager" else tf.function(run)(tf.zeros(shape))
        assert isinstance(got, tf.Tensor)
    assert tuple(got.shape) == tuple(expected.shape) and 0 in tuple(got.shape)


@pytest.mark.parametrize("shape, sizes, strides", [((1, 1, 1, 1), 3, 1), ((1, 0, 4, 1), 2, 1), ((1, 8, 8, 1), 17, 4)])
def test_refused_where_tensorflow_refuses(tf, shape, sizes, strides):
    """A VALID kernel larger by two strides or more: TensorFlow errors, and patchkit says why."""
    with pytest.raises(tf.errors.InvalidArgumentError, match="output size would be negative"):
        tf_patches(tf, tf.zeros(shape), sizes, strides, 1, "VALID")
    with pytest.raises(KernelTooLargeError, match="by two strides .* or more"):
        extract_patches(np.zeros(shape), sizes, strides)


def test_streaming_paths_refuse_empty_grids():
    """iter_patches and the accessor have nothing to stream from an empty grid: a clear error."""
    with pytest.raises(KernelTooLargeError, match="larger than the image height 2"):
        patchkit.iter_patches(np.zeros((1, 2, 2, 1)), 3, 2)
    with pytest.raises(InvalidImageError, match="which is empty"):
        patchkit.iter_patches(np.zeros((0, 4, 4, 1)), 2, 1)


def test_integral_float_sizes(tf):
    """TensorFlow accepts [1, 2.0, 2.0, 1]; so does patchkit, with the same result."""
    image = random_image((1, 6, 7, 2), "float32")
    expected = tf.image.extract_patches(image, [1, 2.0, 2.0, 1], [1, 2, 1, 1], [1, 1, 1, 1], "VALID")
    assert_patches_equal(extract_patches(image, [1, 2.0, 2.0, 1], [1, 2.0, 1.0, 1]), expected.numpy())


def test_tf1_messages_name_ksizes(tf):
    """Errors of a call made with TF1's ksizes= name ksizes=, as the caller wrote it."""
    with pytest.raises(PatchkitError, match=r"^ksizes=\[1, 0, 2, 1\] must be positive"):
        extract_image_patches(np.zeros((1, 4, 4, 1)), ksizes=[1, 0, 2, 1], strides=[1, 1, 1, 1], rates=[1, 1, 1, 1], padding="VALID")
    with pytest.raises(PatchkitError, match=r"^sizes=\[1, 0, 2, 1\]"):
        extract_image_patches(np.zeros((1, 4, 4, 1)), sizes=[1, 0, 2, 1], strides=[1, 1, 1, 1], rates=[1, 1, 1, 1], padding="VALID")


# ---- inside TensorFlow programs -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "uint8", "int64", "bool", "bfloat16", "complex64"])
def test_tf_function(tf, dtype):
    """Inside tf.function the result is the op's, bit for bit (random bits: NaN payloads, -0.0)."""
    image = tf.constant(random_image((2, 11, 9, 3), dtype))
    got = tf.function(lambda x: extract_patches(x, (3, 2), (2, 3), (2, 1), "SAME"))(image)
    assert isinstance(got, tf.Tensor)
    if dtype == "bool":  # TensorFlow has no bool kernel: compare through uint8
        expected = tf_patches(tf, tf.cast(image, tf.uint8), (3, 2), (2, 3), (2, 1), "SAME").numpy().astype(bool)
    else:
        expected = tf_patches(tf, image, (3, 2), (2, 3), (2, 1), "SAME").numpy()
    assert_patches_equal(got.numpy(), expected)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "bfloat16"])
def test_xla(tf, dtype):
    """Under jit_compile=True the result is XLA's compilation of the op, equal to TensorFlow's under XLA.

    XLA lowers the op to a convolution with a one-hot kernel, so NaN and infinity spread to their
    neighbours' patches even in TensorFlow's own op: finite values are compared.
    """
    image = tf.constant(np.random.default_rng(5).normal(size=(2, 11, 9, 3)).astype(dtype))
    got = tf.function(lambda x: extract_patches(x, (3, 2), (2, 3), (2, 1), "SAME"), jit_compile=True)(image)
    expected = tf.function(lambda x: tf_patches(tf, x, (3, 2), (2, 3), (2, 1), "SAME"), jit_compile=True)(image)
    assert_patches_equal(got.numpy(), expected.numpy())
    assert_patches_equal(got.numpy(), tf_patches(tf, image, (3, 2), (2, 3), (2, 1), "SAME").numpy())


def test_tf_function_unknown_dims(tf):
    """A signature with unknown batch, height and width traces once and runs on any size."""
    run = tf.function(
        lambda x: extract_patches(x, 4, 3, padding="SAME"),
        input_signature=[tf.TensorSpec([None, None, None, 2], tf.float32)],
    )
    for shape in [(1, 9, 13, 2), (3, 20, 5, 2)]:
        image = random_image(shape, "float32")
        assert_patches_equal(run(tf.constant(image)).numpy(), tf_patches(tf, image, 4, 3, 1, "SAME").numpy())


@pytest.mark.parametrize(
    "signature, kwargs, error, match",
    [
        ([None, 10, 10], {}, InvalidImageError, r"rank 3"),
        ([None, 2, 10, 1], dict(sizes=5), KernelTooLargeError, r"height 2"),
        ([None, None, None, 1], dict(sizes=3, strides=0), PatchkitError, r"strides=0 must be positive"),
    ],
)
def test_errors_at_trace_time(tf, signature, kwargs, error, match):
    """Bad arguments inside tf.function raise patchkit's error while tracing, not a TF runtime error."""
    args = dict(sizes=2, strides=1) | kwargs
    run = tf.function(lambda x: extract_patches(x, **args), input_signature=[tf.TensorSpec(signature, tf.float32)])
    with pytest.raises(error, match=match):
        run.get_concrete_function()


def test_string_tensor_refused_at_trace_time(tf):
    """A dtype the op refuses is refused by patchkit's dtype check, naming the dtype."""
    run = tf.function(lambda x: extract_patches(x, 2, 1), input_signature=[tf.TensorSpec([1, 4, 4, 1], tf.string)])
    with pytest.raises(UnsupportedDtypeError, match="dtype string"):
        run.get_concrete_function()


def test_tf_data_map(tf):
    """The usual place: Dataset.map cutting each image into patches, equal to the op."""
    images = random_image((5, 32, 24, 3), "uint8")
    cut = lambda x: tf.reshape(extract_patches(x[tf.newaxis], 8, 4), (-1, 8 * 8 * 3))  # noqa: E731
    got = np.concatenate([p.numpy() for p in tf.data.Dataset.from_tensor_slices(images).map(cut)])
    expected = tf.reshape(tf_patches(tf, images, 8, 4, 1, "VALID"), (-1, 8 * 8 * 3)).numpy()
    assert_patches_equal(got, expected)


def test_tf1_graph_mode(tf):
    """tf.compat.v1 graphs with placeholders: the op's result through a Session."""
    image = random_image((2, 10, 12, 3), "float32")
    graph = tf.Graph()
    with graph.as_default():
        placeholder = tf.compat.v1.placeholder(tf.float32, (None, None, None, 3))
        patches = extract_image_patches(placeholder, [1, 3, 3, 1], [1, 2, 2, 1], [1, 1, 1, 1], "SAME")
        with tf.compat.v1.Session(graph=graph) as session:
            got = session.run(patches, {placeholder: image})
    assert_patches_equal(got, tf_patches(tf, image, 3, 2, 1, "SAME").numpy())


def test_variable_inside_tf_function(tf):
    """A variable read inside a graph is symbolic there: the op runs on it."""
    image = random_image((1, 8, 8, 2), "float32")
    variable = tf.Variable(image)
    got = tf.function(lambda: extract_patches(variable, 3, 2))()
    assert_patches_equal(got.numpy(), tf_patches(tf, image, 3, 2, 1, "VALID").numpy())


# ---- gradients ------------------------------------------------------------------------------------

#: TensorFlow's gradient test cases (extract_image_patches_grad_test.py).
GRAD_CASES = [
    ([2, 5, 5, 3], [1, 1], [2, 3], [1, 1]),
    ([2, 7, 7, 3], [3, 3], [1, 1], [1, 1]),
    ([2, 8, 7, 3], [2, 2], [1, 1], [1, 1]),
    ([2, 7, 8, 3], [3, 2], [4, 3], [1, 1]),
    ([1, 15, 20, 3], [4, 3], [1, 1], [2, 4]),
    ([2, 7, 8, 1], [3, 2], [3, 2], [2, 2]),
    ([2, 8, 9, 4], [2, 2], [4, 2], [3, 2]),
]


def _tape_gradient(tf, function, image, upstream):
    with tf.GradientTape() as tape:
        tape.watch(image)
        out = function(image)
    return tape.gradient(out, image, output_gradients=upstream)


@pytest.mark.slow
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: "x".join(map(str, c[0])))
def test_tensorflow_gradient_test(tf, case, padding):
    """TensorFlow's gradient test, on patchkit: the Jacobian from the tape agrees with the numeric one.

    TensorFlow's checker builds the theoretical Jacobian one output element at a time (thousands of
    backward passes, ~2 minutes for these cases); equality with TensorFlow's own gradient is checked
    bit for bit below.
    """
    in_shape, ksizes, strides, rates = case
    image = tf.constant(np.random.default_rng(42).random(in_shape), dtype=tf.float32)
    ours = lambda x: extract_patches(x, ksizes, strides, rates, padding)  # noqa: E731
    theoretical, numerical = tf.test.compute_gradient(ours, [image])
    assert max(np.max(np.abs(t - n)) for t, n in zip(theoretical, numerical)) < 1e-4


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "complex64", "complex128"])
@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: "x".join(map(str, c[0])))
def test_gradient_bit_exact(tf, case, dtype):
    """With integer-valued upstream gradients TensorFlow's sum is exact, and patchkit's equals it bit for bit."""
    in_shape, ksizes, strides, rates = case
    rng = np.random.default_rng(3)
    image = tf.constant(rng.random(in_shape).astype(dtype))
    for padding in ("VALID", "SAME"):
        ours = lambda x: extract_patches(x, ksizes, strides, rates, padding)  # noqa: E731
        theirs = lambda x: tf_patches(tf, x, ksizes, strides, rates, padding)  # noqa: E731
        upstream = tf.constant(rng.integers(-8, 9, theirs(image).shape).astype(dtype))
        got = _tape_gradient(tf, ours, image, upstream)
        assert got is not None and got.dtype == image.dtype
        np.testing.assert_array_equal(got.numpy(), _tape_gradient(tf, theirs, image, upstream).numpy())


def test_gradient_through_a_loss_and_a_variable(tf):
    """A trainable variable (watched automatically) gets TensorFlow's gradient through a loss."""
    image = tf.Variable(random_image((2, 12, 10, 3), "float32"))
    weights = tf.constant(random_image((1, 1, 1, 27), "float32"))
    grads = []
    for function in (lambda x: extract_patches(x, 3, 2, padding="SAME"), lambda x: tf_patches(tf, x, 3, 2, 1, "SAME")):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(function(image) * weights))
        grads.append(tape.gradient(loss, image))
    np.testing.assert_allclose(grads[0].numpy(), grads[1].numpy(), rtol=1e-6)


def test_second_order_gradient(tf):
    """Gradients of gradients: the fold's own gradient is extraction again, as TensorFlow's is."""
    image = tf.constant(random_image((1, 9, 8, 2), "float64"))
    results = []
    for function in (lambda x: extract_patches(x, 3, 2, 2, "SAME"), lambda x: tf_patches(tf, x, 3, 2, 2, "SAME")):
        with tf.GradientTape() as outer:
            outer.watch(image)
            with tf.GradientTape() as inner:
                inner.watch(image)
                loss = tf.reduce_sum(function(image) ** 3)
            grad = inner.gradient(loss, image)
            total = tf.reduce_sum(grad**2)
        results.append(outer.gradient(total, image).numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12)


def test_jacobian_with_pfor(tf):
    """tape.jacobian traces the gradient in a vectorised loop (symbolic): TensorFlow's gradient runs there."""
    image = tf.constant(random_image((1, 5, 4, 1), "float32"))
    jacobians = []
    for function in (lambda x: extract_patches(x, 2, 1, padding="SAME"), lambda x: tf_patches(tf, x, 2, 1, 1, "SAME")):
        with tf.GradientTape() as tape:
            tape.watch(image)
            out = function(image)
        jacobians.append(tape.jacobian(out, image).numpy())
    np.testing.assert_array_equal(jacobians[0], jacobians[1])


def test_gradient_inside_tf_function(tf):
    """A training step inside tf.function differentiates the op, as TensorFlow does."""
    image = tf.constant(np.random.default_rng(6).normal(size=(2, 10, 10, 1)).astype(np.float32))  # finite: XLA

    @tf.function(jit_compile=True)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(extract_patches(x, 3, 2, padding="SAME") ** 2)
        return tape.gradient(loss, x)

    expected = _tape_gradient(tf, lambda x: tf_patches(tf, x, 3, 2, 1, "SAME") ** 2, image, None)
    np.testing.assert_allclose(step(image).numpy(), expected.numpy(), rtol=1e-6)


@settings(max_examples=60)
@given(case=spec_cases(height=12, kernel=4, stride=5, rate=3), seed=st.integers(0, 2**32 - 1))
def test_gradient_property(tf, case, seed):
    """Random specs TensorFlow accepts, non-empty: patchkit's gradient equals TensorFlow's bit for bit for
    integer-valued upstream gradients."""
    shape, sizes, strides, rates, padding = case
    rng = np.random.default_rng(seed)
    image = tf.constant(rng.random(shape, dtype=np.float32))
    theirs = lambda x: tf_patches(tf, x, sizes, strides, rates, padding)  # noqa: E731
    upstream = tf.constant(rng.integers(-100, 100, theirs(image).shape).astype(np.float32))
    got = _tape_gradient(tf, lambda x: extract_patches(x, sizes, strides, rates, padding), image, upstream)
    np.testing.assert_array_equal(got.numpy(), _tape_gradient(tf, theirs, image, upstream).numpy())


# ---- tensors TensorFlow can use safely --------------------------------------------------------------

ALIGNMENT_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf
    import patchkit
    from patchkit.core.backends import to_tensor

    rng = np.random.default_rng(0)
    kernel = tf.ones((2, 2, 3, 1))
    for i in range(int(os.environ["ROUNDS"])):
        n = 3 + i % 7  # sizes vary, so numpy's allocations land at every 16-byte offset
        image = tf.constant(rng.random((1, 4 * n, 5, 3), dtype=np.float32))
        tensors = [
            patchkit.extract_patches(image, 2, 1),
            patchkit.extract_patches(tf.cast(image * 9, tf.int32), 2, 1, padding="SAME"),
            patchkit.extract_patches(tf.cast(image, tf.float64), (2, 3), 1, 2, "SAME"),
            patchkit.extract_patches(tf.cast(image, tf.bfloat16), 2, 2),
            patchkit.extract_patches(tf.Variable(image), 2, 1),
            *[block for _, block in patchkit.iter_patches(image, 2, 1, max_memory=4096)],
            to_tensor(rng.random((n, 7), dtype=np.float32)[1:]),
            to_tensor(np.arange(n * 3, dtype=np.float64)[1:]),
        ]
        with tf.GradientTape() as tape:
            tape.watch(image)
            patches = patchkit.extract_patches(image, 2, 1, padding="SAME")
        tensors.append(tape.gradient(patches, image, output_gradients=patches))
        for t in tensors:
            tf.reduce_sum(t).numpy()
            flat = tf.reshape(tf.cast(t, tf.float32), (-1, t.shape[-1]))
            tf.matmul(flat, flat, transpose_a=True).numpy()
        for t in (tensors[0], tensors[-1]):
            four = tf.reshape(t, (1, t.shape[1], -1, 3)) if t.shape[-1] % 3 == 0 else tf.reshape(t, (1, t.shape[1], -1, 1))
            tf.nn.conv2d(four, kernel[..., : four.shape[-1], :], 1, "VALID").numpy()
    print("ok")
    """
)


def test_returned_tensors_are_safe_for_tensorflow_kernels(tf):
    """Every kind of returned tensor survives reduce, matmul and conv many times (a SIGABRT fails the run)."""
    result = subprocess.run([sys.executable, "-c", ALIGNMENT_SCRIPT], capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "ROUNDS": "60"})
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_shared_buffers_are_aligned(tf):
    """Tensors that share patchkit's buffers start on 64-byte boundaries; others are TensorFlow's copies."""
    from patchkit.core.backends import TENSOR_ALIGNMENT, aligned_empty

    for shape, dtype in [((3, 5), "float32"), ((1,), "int8"), ((2, 3, 7), "complex128"), ((0, 4), "float64")]:
        array = aligned_empty(shape, dtype)
        assert array.shape == shape and array.dtype == dtype and array.flags.c_contiguous
        assert array.ctypes.data % TENSOR_ALIGNMENT == 0 or array.size == 0
    got = extract_patches(tf.constant(random_image((1, 9, 9, 3), "float32")), 3, 1)
    assert np.asarray(got).ctypes.data % TENSOR_ALIGNMENT == 0


def test_empty_result_has_tensorflows_gradient(tf):
    """An empty result of an eager tensor is the op's, gradient included (TensorFlow's is None there)."""
    image = tf.constant(np.ones((1, 2, 2, 1), np.float32))
    grads = []
    for function in (lambda x: extract_patches(x, 3, 2), lambda x: tf_patches(tf, x, 3, 2, 1, "VALID")):
        with tf.GradientTape() as tape:
            tape.watch(image)
            patches = function(image)
        assert tuple(patches.shape) == (1, 0, 0, 9)
        grads.append(tape.gradient(tf.reduce_sum(patches), image))
    assert grads[0] is None and grads[1] is None
