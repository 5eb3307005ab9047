"""``patchkit.load_model``: Keras files, SavedModel folders and ``module:function`` references, loaded into
callables that give the saved model's own predictions; each bad reference refused with a patchkit error."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import patchkit
from patchkit.errors import PatchkitTypeError, PatchkitValueError
from patchkit.stitch.loading import SavedModelFunction, load_model

BATCH = np.random.default_rng(3).uniform(0, 1, (2, 8, 8, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tf):
    """A small convolutional Keras model (4 -> 3 -> 1 channels, seeded), saved as .keras, .h5 and a SavedModel
    (``model.export``), and a fixed-shape ``tf.Module`` SavedModel; with the model's own predictions of BATCH."""
    import keras

    folder = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((None, None, 4)), keras.layers.Conv2D(3, 3, padding="same", activation="relu"),
                              keras.layers.Conv2D(1, 1)])
    model.save(folder / "model.keras")
    model.save(folder / "model.h5")
    model.export(folder / "exported", verbose=False)

    class Double(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 4], tf.float32)], autograph=False)
        def __call__(self, x):
            return {"doubled": x * 2.0}

    tf.saved_model.save(Double(), str(folder / "fixed"))
    return folder, np.asarray(model(BATCH))


def test_keras_file_loads_the_model(saved):
    """A .keras file loads as the Keras model it was saved from: the same predictions, bit for bit."""
    folder, expected = saved
    model = patchkit.load_model(folder / "model.keras")
    assert np.array_equal(np.asarray(model(BATCH)), expected) and expected.std() > 0


def test_h5_file_loads_the_model(saved):
    """A legacy .h5 file (given as a string) loads too."""
    folder, expected = saved
    np.testing.assert_allclose(np.asarray(load_model(str(folder / "model.h5"))(BATCH)), expected, rtol=1e-6)


def test_saved_model_folder_is_a_function_of_a_batch(saved):
    """A SavedModel folder gives its serving signature as a function of one batch that returns the one output
    tensor, casting the batch to the signature's dtype (float64 patches in, the float32 model's result out)."""
    folder, expected = saved
    model = load_model(folder / "exported")
    assert isinstance(model, SavedModelFunction) and "keras_tensor" in repr(model)
    out = model(BATCH.astype(np.float64))
    assert out.dtype.name == "float32"
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)


def test_saved_model_of_a_module_with_a_named_output(saved):
    """A tf.Module's SavedModel with a fixed input shape and a named output: the output comes back; a batch of
    another patch size is refused naming the shape it takes and the sizes to pass."""
    folder, _ = saved
    model = load_model(folder / "fixed")
    assert np.array_equal(np.asarray(model(BATCH)), BATCH * 2)
    with pytest.raises(PatchkitValueError, match=r"takes batches of shape \(None, 8, 8, 4\) and was given \(1, 16, 16, 4\); "
                                                 r"pass patches of 8x8 pixels"):
        model(np.zeros((1, 16, 16, 4), np.float32))


def test_module_function_reference(tmp_path, monkeypatch):
    """'package.module:function' (and module:Class.method) gives the attribute itself, not called."""
    (tmp_path / "pk_models_for_test.py").write_text(
        "def ndvi(batch):\n    return batch[..., 3:] - batch[..., 2:3]\n\n"
        "class Zoo:\n    @staticmethod\n    def double(batch):\n        return batch * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pk_models_for_test", raising=False)
    ndvi = load_model("pk_models_for_test:ndvi")
    assert ndvi.__name__ == "ndvi" and np.array_equal(ndvi(BATCH), BATCH[..., 3:] - BATCH[..., 2:3])
    assert np.array_equal(load_model("pk_models_for_test:Zoo.double")(BATCH), BATCH * 2)


def test_a_callable_passes_through():
    """A model already loaded is returned as it is."""
    fn = lambda batch: batch  # noqa: E731
    assert load_model(fn) is fn


def test_a_path_with_a_colon_is_a_path(tmp_path, saved):
    """A file whose name looks like module:function is loaded as the file it is."""
    folder, expected = saved
    odd = tmp_path / "models:v2.keras"
    odd.write_bytes((folder / "model.keras").read_bytes())
    assert np.array_equal(np.asarray(load_model(str(odd))(BATCH)), expected)


@pytest.mark.parametrize(
    ("ref", "error", "match"),
    [
        ("", PatchkitValueError, r"ref='' is empty; pass a Keras file"),
        ("{tmp}/missing.keras", PatchkitValueError, r"ref='.*missing\.keras': no such file or folder; check the path"),
        ("{tmp}/notes.txt", PatchkitValueError, r"notes\.txt' has the suffix '\.txt', which no model loader reads; pass"),
        ("{tmp}/fake.keras", PatchkitValueError, r"fake\.keras' is not a \.keras file \(a zip archive\) \(its first bytes "
                                                 r"are b'not a zi'\); check that it was written by model.save\(\)"),
        ("{tmp}", PatchkitValueError, r"is a folder without saved_model\.pb, so not a SavedModel; pass .*model\.export"),
        ("pk_no_such_module:f", PatchkitValueError, r"ref='pk_no_such_module:f': no module named 'pk_no_such_module'; "
                                                    r"check the spelling, install"),
        ("patchkit.sample:nope", PatchkitValueError, r"'patchkit.sample' has no attribute 'nope'; check the name "
                                                     r"\(callables there: land_cover, make_scene"),
        ("patchkit.sample:BANDS", PatchkitTypeError, r"ref='patchkit.sample:BANDS' is \('blue', .*\(a tuple\), not a "
                                                     r"callable; name a function"),
        ("a:b/c", PatchkitValueError, r"no such file or folder \(a 'module:function' reference needs dotted Python names"),
        (3, PatchkitTypeError, r"ref=3 \(int\) is neither a path nor a callable; pass a path"),
    ],
)
def test_bad_references(tmp_path, ref, error, match):
    """Each bad reference is a patchkit error naming ref, its value and the fix (a file is checked by its suffix and
    first bytes before Keras reads it)."""
    (tmp_path / "notes.txt").write_text("not a model\n")
    (tmp_path / "fake.keras").write_bytes(b"not a zip archive")
    ref = ref.format(tmp=tmp_path) if isinstance(ref, str) else ref
    with pytest.raises(error, match=match):
        load_model(ref)


def test_a_module_that_fails_to_import(tmp_path, monkeypatch):
    """A module whose own code raises on import, or that imports a missing package, names the module and the cause."""
    (tmp_path / "pk_broken_for_test.py").write_text("raise RuntimeError('no GPU here')\n")
    (tmp_path / "pk_needy_for_test.py").write_text("import pk_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PatchkitValueError, match=r"importing 'pk_broken_for_test' raised RuntimeError: no GPU here; fix"):
        load_model("pk_broken_for_test:f")
    with pytest.raises(PatchkitValueError, match=r"importing 'pk_needy_for_test' failed: No module named "
                                                 r"'pk_absent_dependency'; install the package 'pk_absent_dependency'"):
        load_model("pk_needy_for_test:f")


def test_a_damaged_saved_model(tmp_path, saved):
    """A SavedModel folder whose variables are gone does not load: the folder is named, with TensorFlow's reason."""
    import shutil

    folder, _ = saved
    shutil.copytree(folder / "exported", tmp_path / "damaged")
    shutil.rmtree(tmp_path / "damaged" / "variables")
    with pytest.raises(PatchkitValueError, match=r"damaged' does not load as a SavedModel \(.*\); check the folder is whole"):
        load_model(Path(tmp_path / "damaged"))
