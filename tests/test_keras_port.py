"""The PyTorch port of the MAX Keras model against the MAX reference scores and an independent
numpy interpreter (tests/keras_reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from keras_reference import run_keras_h5
from onepixel.datasets.demo import dihedral_variants
from onepixel.models import ModelOptions, load_classifier, load_keras_module
from onepixel.models.base import preprocess_numpy

MAX_README_TRUE = 0.9884441494941711


@pytest.fixture(scope="module")
def net(max_model_path):
    module, _graph = load_keras_module(max_model_path)
    return module


def _torch_out(net, images_uint8, until=None):
    x = torch.from_numpy(preprocess_numpy(images_uint8, "max")).permute(0, 3, 1, 2)
    with torch.no_grad():
        out = net(x, until=until)
    return out.permute(0, 2, 3, 1).double().numpy() if out.dim() == 4 else out.double().numpy()


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_reference_scores(max_model_path, sample_images, engine):
    clf = load_classifier(str(max_model_path), ModelOptions(engine=engine, device="cpu"))
    true_score, false_score = clf.scores(sample_images)
    assert abs(true_score - MAX_README_TRUE) < 1e-5
    assert 4.5e-5 < false_score < 5.7e-5


def test_unoptimised_module_matches_max(net, sample_images):
    logits = _torch_out(net, sample_images)[:, 0]
    probs = 1 / (1 + np.exp(-logits))
    assert abs(probs[0] - MAX_README_TRUE) < 1e-6


def test_rotations_and_flips_stay_mitosis(max_model_path, true_png):
    from onepixel.datasets.images import load_image

    clf = load_classifier(str(max_model_path), ModelOptions(device="cpu"))
    variants = dihedral_variants(load_image(true_png))
    assert len(variants) == 8
    assert len({v.tobytes() for v in variants.values()}) == 8
    scores = clf.scores(np.stack(list(variants.values())))
    assert np.all(scores > 0.96), scores


def _random_with_edge_pixels(sample_images, rng):
    base = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    images = [*base, sample_images[0]]
    for y, x in [(63, 10), (20, 63), (63, 63), (0, 0)]:
        changed = sample_images[0].copy()
        changed[y, x] = (255, 255, 0)
        images.append(changed)
    return np.stack(images)


def test_stem_and_first_block_match_numpy(net, max_model_path, sample_images):
    images = _random_with_edge_pixels(sample_images, np.random.default_rng(0))
    x = preprocess_numpy(images, "max").astype(np.float64)
    for layer in ("activation_1", "add_1"):
        ours = _torch_out(net, images, until=layer)
        ref = run_keras_h5(max_model_path, x, until=layer)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=2e-5, rtol=1e-4)


def test_whole_network_matches_numpy(net, max_model_path, sample_images):
    images = _random_with_edge_pixels(sample_images, np.random.default_rng(1))
    ref = run_keras_h5(max_model_path, preprocess_numpy(images, "max").astype(np.float64))
    ours = _torch_out(net, images)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)
    # The one-pixel changes in the last row/column must move the logit: they are seen.
    assert np.all(np.abs(ours[4:7, 0] - ours[3, 0]) > 1e-4)


def test_symmetric_padding_is_a_different_network(net, sample_images):
    """PyTorch's padding=1 on the stride-2 stem shifts every sample by one pixel."""
    conv = net.ops["conv2d_1"]
    assert conv.pad == (0, 1, 0, 1)
    x = torch.from_numpy(preprocess_numpy(sample_images, "max")).permute(0, 3, 1, 2)
    with torch.no_grad():
        keras_like = conv(x)
        symmetric = torch.nn.functional.conv2d(x, conv.conv.weight, conv.conv.bias, stride=2, padding=1)
    assert keras_like.shape == symmetric.shape
    assert (keras_like - symmetric).abs().max() > 0.1


def test_batch_independent_scores(max_model_path, sample_images):
    clf = load_classifier(str(max_model_path), ModelOptions(device="cpu"))
    rng = np.random.default_rng(2)
    batch = np.concatenate([sample_images, rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8)])
    together = clf.scores(batch)
    alone = np.array([clf.scores(batch[i : i + 1])[0] for i in range(len(batch))])
    np.testing.assert_array_equal(together, alone)
