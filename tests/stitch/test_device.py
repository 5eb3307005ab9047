"""predict's device path (patchkit.stitch.device): on the host with numpy as CuPy's array module, and on a GPU with
CuPy and a PyTorch model (marked ``gpu``: ``PATCHKIT_TEST_GPU=0 pytest -m gpu``; TensorFlow, rasterio, zarr and
dask are not needed there)."""

from __future__ import annotations

import numpy as np
import pytest

from patchkit.core.backends.cupy import CupyBackend
from patchkit.stitch import predict
from patchkit.stitch.device import Accumulation

from .test_predict import _tif, finite_image, identity


@pytest.mark.parametrize("blend, crop", [("gaussian", 0), ("mean", 2), ("cosine", 0)])
def test_the_device_path_blends_like_the_host(blend, crop):
    """``backend=CupyBackend(xp=numpy)``: patches extracted and predictions accumulated by the CuPy module's code;
    what the host path gives, exactly where patches agree (an identity model), and to an ulp of float32 where they
    do not."""
    device = CupyBackend(xp=np)
    image = finite_image((2, 45, 38, 3))
    agreeing = predict(image, identity, 12, 7, blend=blend, crop=crop, backend=device)
    np.testing.assert_array_equal(agreeing, predict(image, identity, 12, 7, blend=blend, crop=crop))
    disagree = lambda b: b * (1 + b.mean(axis=(1, 2, 3), keepdims=True))  # noqa: E731
    np.testing.assert_allclose(predict(image, disagree, 12, 7, blend=blend, crop=crop, backend=device),
                               predict(image, disagree, 12, 7, blend=blend, crop=crop), rtol=2e-7, atol=1e-7)


def test_the_device_path_is_left_when_the_accumulators_do_not_fit(tmp_path, monkeypatch):
    """The planner decides: under a ``gpu_memory`` that holds batches but not the image's accumulators, predictions
    are blended on the host (the same result); with room, on the device."""
    used = []
    monkeypatch.setattr(Accumulation, "run", lambda self, run=Accumulation.run: used.append(1) or run(self))
    image, device = finite_image((1, 64, 64, 2)), CupyBackend(xp=np)
    pytest.importorskip("rasterio")
    small = predict(image, identity, 16, 12, backend=device, gpu_memory="256KiB", out=tmp_path / "p.tif")
    assert not used
    np.testing.assert_array_equal(_tif(small), image)
    roomy = predict(image, identity, 16, 12, backend=device, gpu_memory="64MiB", out=tmp_path / "q.tif")
    assert used == [1]
    np.testing.assert_array_equal(_tif(roomy), image)


# ---- on a GPU ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_conv(cp):
    """A PyTorch 1x1 convolution on the GPU taking CuPy batches ``[n, h, w, c]`` through DLPack, and the same
    arithmetic in numpy."""
    torch = pytest.importorskip("torch")
    conv = torch.nn.Conv2d(3, 2, 1).cuda().eval()
    weight = conv.weight.detach().cpu().numpy()[:, :, 0, 0]
    bias = conv.bias.detach().cpu().numpy()

    def model(batch):
        with torch.no_grad():
            x = torch.from_dlpack(batch).permute(0, 3, 1, 2).float()
            return conv(x).permute(0, 2, 3, 1).contiguous()

    return model, lambda image: (image @ weight.T + bias).astype("float32")


@pytest.mark.gpu
@pytest.mark.parametrize("blend", ["gaussian", "mean"])
def test_gpu_identity_is_exact_and_stays_on_the_device(cp, blend, monkeypatch):
    """CuPy batches reach the model; the accumulators live on the device; agreeing predictions come back bit for bit."""
    seen, used = [], []
    monkeypatch.setattr(Accumulation, "run", lambda self, run=Accumulation.run: used.append(1) or run(self))
    image = finite_image((1, 300, 260, 3))
    out = predict(image, lambda b: seen.append(type(b).__module__) or b, 64, 48, blend=blend, backend="cupy")
    assert set(seen) == {"cupy"} and used == [1]
    np.testing.assert_array_equal(out, image)


@pytest.mark.gpu
def test_gpu_torch_model_through_dlpack_equals_the_model_on_the_whole_scene(cp, torch_conv):
    """A pointwise PyTorch model on CuPy batches (DLPack both ways): the blended prediction is the model applied to
    the whole scene, on the device and when the accumulators are sent to the host by a small gpu_memory."""
    model, reference = torch_conv
    image = finite_image((1, 257, 300, 3))
    expected = reference(image)
    on_device = predict(image, model, 64, 40, backend="cupy")
    np.testing.assert_allclose(on_device, expected, rtol=1e-5, atol=1e-5)
    on_host = predict(image, model, 64, 40, backend="cupy", gpu_memory="4MiB")
    np.testing.assert_allclose(on_host, on_device, rtol=1e-6, atol=1e-6)
