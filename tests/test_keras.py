"""patchkit.keras.ExtractPatches against tf.image.extract_patches, in models, saved and loaded."""

from __future__ import annotations

import numpy as np
import pytest

from patchkit.errors import InvalidSpecError, KernelTooLargeError
from patchkit.testing import assert_patches_equal

from .helpers import random_image

keras = pytest.importorskip("keras")


@pytest.fixture
def layer_class(tf):
    from patchkit.keras import ExtractPatches

    return ExtractPatches


def test_layer_in_a_model_equals_the_op(tf, layer_class, tmp_path):
    """Built on a symbolic input, trained, saved and loaded: the patches are the op's, before and after."""
    inputs = keras.Input((20, 18, 3))
    patches = layer_class((4, 3), (2, 3), (2, 1), "same", name="cut")(inputs)
    model = keras.Model(inputs, patches)
    assert tuple(patches.shape) == (None, 10, 6, 36)
    images = random_image((5, 20, 18, 3), "float32")
    expected = tf.image.extract_patches(images, [1, 4, 3, 1], [1, 2, 3, 1], [1, 2, 1, 1], "SAME").numpy()
    assert_patches_equal(model.predict(images, verbose=0), expected)
    model.save(tmp_path / "cut.keras")
    loaded = keras.models.load_model(tmp_path / "cut.keras")
    assert loaded.get_layer("cut").get_config()["sizes"] == [4, 3]
    assert_patches_equal(loaded.predict(images, verbose=0), expected)


def test_layer_trains(tf, layer_class):
    """model.fit through the layer: the Dense weights after a step equal those of a model using the op."""
    images = random_image((4, 12, 12, 2), "float32")
    targets = np.random.default_rng(0).random((4, 6, 6, 1)).astype("float32")
    weights = []
    for cut in (layer_class(3, 2, padding="SAME"),
                keras.layers.Lambda(lambda x: tf.image.extract_patches(x, [1, 3, 3, 1], [1, 2, 2, 1], [1, 1, 1, 1], "SAME"))):
        keras.utils.set_random_seed(1)
        inputs = keras.Input((12, 12, 2))
        model = keras.Model(inputs, keras.layers.Dense(1)(cut(inputs)))
        model.compile(keras.optimizers.SGD(0.01), "mse")
        model.fit(images, targets, epochs=2, batch_size=2, verbose=0, shuffle=False)
        weights.append(model.get_weights())
    for ours, theirs in zip(*weights):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_eager_call_is_patchkits_copy(tf, layer_class):
    """Called eagerly the layer returns patchkit's (aligned) tensor with the op's values."""
    images = tf.constant(random_image((2, 9, 9, 1), "float32"))
    got = layer_class(3, 3)(images)
    assert isinstance(got, tf.Tensor)
    assert_patches_equal(got.numpy(), tf.image.extract_patches(images, [1, 3, 3, 1], [1, 3, 3, 1], [1, 1, 1, 1], "VALID").numpy())


def test_unknown_dims_and_output_shape(tf, layer_class):
    """compute_output_shape follows TensorFlow's sizes and leaves unknown dims unknown."""
    layer = layer_class(5, 2, padding="VALID")
    assert layer.compute_output_shape((None, None, 9, 2)) == (None, None, 3, 50)
    assert layer.compute_output_shape((1, 4, 4, None)) == (1, 0, 0, None)  # within two strides: empty


@pytest.mark.parametrize(
    "kwargs, shape, error, match",
    [
        (dict(sizes=0, strides=1), (8, 8, 1), InvalidSpecError, "sizes=0 must be positive"),
        (dict(sizes=3, strides=1, padding="full"), (8, 8, 1), InvalidSpecError, "padding='full'"),
        (dict(sizes=12, strides=1), (8, 8, 1), KernelTooLargeError, "height 8 by two strides"),
    ],
)
def test_bad_arguments(tf, layer_class, kwargs, shape, error, match):
    """Bad specs fail when the layer is made; kernels too large for the input fail when it is built."""
    with pytest.raises(error, match=match):
        layer_class(**kwargs)(keras.Input(shape))
