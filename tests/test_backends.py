"""Classifier backends, model specs and model-loading errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from keras_files import tiny_classifier_file
from keras_reference import run_keras_h5
from onepixel.errors import ModelError
from onepixel.models import (
    CallableClassifier,
    ModelIO,
    ModelOptions,
    TorchClassifier,
    TorchOptions,
    export_onnx,
    load_classifier,
    load_keras_module,
)
from onepixel.models.base import preprocess_numpy


def _images(n, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_tiny_keras_file_matches_numpy_reference(tmp_path):
    path = tiny_classifier_file(tmp_path / "tiny.h5")
    net, graph = load_keras_module(path)
    assert graph.input_shape == (8, 8, 3)
    images = _images(5)
    x = preprocess_numpy(images, "max")
    with torch.no_grad():
        ours = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    ref = run_keras_h5(path, x.astype(np.float64))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)  # Flatten order is channels-last


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_multiclass_scores_or_positive_index(tmp_path, engine):
    """Several outputs: K class probabilities, or one score with --positive-index."""
    path = tiny_classifier_file(tmp_path / "tiny.h5")
    images = _images(4)
    logits = run_keras_h5(path, preprocess_numpy(images, "max").astype(np.float64))
    softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    multi = load_classifier(str(path), ModelOptions(engine=engine, device="cpu"))
    assert multi.capabilities.n_classes == logits.shape[1] > 1
    np.testing.assert_allclose(multi.scores(images), softmax, rtol=1e-5, atol=1e-6)
    clf = load_classifier(str(path), ModelOptions(engine=engine, device="cpu", positive_index=2))
    assert clf.capabilities.n_classes == 1
    np.testing.assert_allclose(clf.scores(images), softmax[:, 2], rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelError, match="out of range"):
        load_classifier(str(path), ModelOptions(engine=engine, device="cpu",
                                                positive_index=5)).scores(images)


def test_unsupported_layer_is_named(tmp_path):
    path = tiny_classifier_file(tmp_path / "odd.h5", extra_layer="Dropout")
    with pytest.raises(ModelError, match=r"'odd' is a Dropout"):
        load_classifier(str(path))


def test_weights_only_and_non_hdf5_files(tmp_path):
    import h5py

    with h5py.File(tmp_path / "w.h5", "w") as fh:
        fh.create_group("conv")
    with pytest.raises(ModelError, match="weights only"):
        load_classifier(str(tmp_path / "w.h5"))
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ModelError, match="junk.h5"):
        load_classifier(str(tmp_path / "junk.h5"))


def test_unknown_specs_and_missing_files(tmp_path):
    with pytest.raises(ModelError, match="unknown model spec"):
        load_classifier("resnet50")
    with pytest.raises(ModelError, match="not found"):
        load_classifier(str(tmp_path / "missing.onnx"))
    with pytest.raises(ModelError, match="engine"):
        ModelOptions(engine="tensorflow")


class _Tiny(torch.nn.Module):
    input_shape = (8, 8, 3)

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3)
        torch.nn.init.normal_(self.conv.weight, std=0.2)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_file_roundtrip(tmp_path):
    module = _Tiny().eval()
    scripted = torch.jit.script(module)
    scripted.save(str(tmp_path / "tiny.pt"))
    clf = load_classifier(str(tmp_path / "tiny.pt"),
                          ModelOptions(device="cpu", positive_index=1, input_shape=(8, 8, 3)))
    images = _images(3)
    with torch.no_grad():
        logits = module(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0).double()
    np.testing.assert_allclose(clf.scores(images), torch.softmax(logits, 1)[:, 1].numpy(), rtol=1e-5)


def test_pickled_module_is_refused(tmp_path):
    torch.save(_Tiny(), tmp_path / "pickled.pt")
    with pytest.raises(ModelError, match="TorchScript"):
        load_classifier(str(tmp_path / "pickled.pt"))


def test_torch_classifier_probability_output_and_batches():
    net = _Tiny().eval()
    io = ModelIO(layout="nchw", preprocess="unit", output="probability", positive_index=0)
    clf = TorchClassifier(net, (8, 8, 3), "tiny", io, TorchOptions(device="cpu", batch_size=2,
                                                                    optimize=False))
    images = _images(5)
    with torch.no_grad():
        raw = net(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).double()[:, 0]
    # atol: a score near 0 differs in relative terms when oneDNN sums in another order per batch
    np.testing.assert_allclose(clf.scores(images), raw.numpy(), rtol=1e-6, atol=1e-7)
    with pytest.raises(ModelError, match="uint8"):
        clf.scores(images.astype(np.float32))
    with pytest.raises(ModelError, match="expected images of shape"):
        clf.scores(_images(2, size=9))


def test_callable_classifier_checks_outputs():
    clf = CallableClassifier(lambda x: x.mean(axis=(1, 2, 3)) / 255.0, (8, 8, 3), batch_size=2)
    images = _images(5)
    np.testing.assert_allclose(clf.scores(images), images.mean(axis=(1, 2, 3)) / 255.0)
    with pytest.raises(ModelError, match="outside"):
        CallableClassifier(lambda x: np.full(len(x), 2.0), (8, 8, 3)).scores(images)
    with pytest.raises(ModelError, match=r"returned scores of shape \(1,\) for 5 images"):
        CallableClassifier(lambda x: np.zeros(1), (8, 8, 3)).scores(images)
    with pytest.raises(ModelError, match="callable"):
        CallableClassifier(42)


def test_bad_io_options():
    with pytest.raises(ModelError, match="layout"):
        ModelIO(layout="hwcn")
    with pytest.raises(ModelError, match="dtype"):
        TorchOptions(dtype="int3")
    with pytest.raises(ModelError, match="device"):
        ModelOptions(device="tpu")


def test_cuda_request_without_gpu_is_clear():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from onepixel.models.torch_backend import resolve_device

    with pytest.raises(ModelError, match="no CUDA"):
        resolve_device("cuda")


@pytest.mark.slow
def test_onnx_export_roundtrip(tmp_path, max_model_path, sample_images):
    out = export_onnx(str(max_model_path), tmp_path / "model.onnx")
    exported = load_classifier(str(out))
    in_process = load_classifier(str(max_model_path), ModelOptions(engine="torch", device="cpu"))
    rng = np.random.default_rng(3)
    images = np.concatenate([sample_images, rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)])
    np.testing.assert_allclose(exported.scores(images), in_process.scores(images), rtol=2e-5,
                               atol=1e-7)
    assert exported.name == "deep_histopath_model"
