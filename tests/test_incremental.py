"""The incremental evaluator: exact against the full network, wired into attacks and campaigns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from keras_files import residual_classifier_file, tiny_classifier_file
from onepixel.attack import AttackConfig, OnePixelAttack
from onepixel.errors import OnepixelError
from onepixel.models import ModelOptions, load_classifier
from onepixel.models.registry import load_eager_keras
from onepixel.optimize.de import DEConfig
from onepixel.scoring.evaluators import HostEvaluator, TorchEvaluator
from onepixel.scoring.incremental import IncrementalEvaluator
from onepixel.scoring.policy import evaluator_for, load_attack_evaluator


def _every_pixel(size: int, colours: np.ndarray) -> np.ndarray:
    """Candidates (len(colours) * size * size, 5): every pixel with every colour."""
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    pos = np.stack([xs.ravel(), ys.ravel()], axis=1)
    return np.concatenate([np.repeat(pos, len(colours), axis=0),
                           np.tile(colours, (len(pos), 1))], axis=1)


@pytest.mark.parametrize("size", [16, 17, 18])
@pytest.mark.slow
def test_every_pixel_scores_as_the_full_network(tmp_path, size):
    """All positions (borders, both parities, odd map sizes) and colours, several base images."""
    clf = load_eager_keras(str(residual_classifier_file(tmp_path / "res.h5", size=size)))
    rng = np.random.default_rng(size)
    images = rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    colours = np.array([[0, 0, 0], [255, 255, 0], [17, 200, 90]])
    cand = np.broadcast_to(_every_pixel(size, colours), (3, size * size * 3, 5))
    full = TorchEvaluator(clf).scores(images, cand)
    inc = IncrementalEvaluator(clf, max_batch=97)  # odd batch: chunks cut across images
    got = inc.scores(images, cand)
    np.testing.assert_allclose(got, full, atol=1e-5, rtol=0)
    assert inc.n_evaluations == cand.shape[0] * cand.shape[1]
    assert inc.scorer.macs_window < inc.scorer.macs_full


def test_prepared_rows_mix_images_in_one_batch(tmp_path):
    clf = load_eager_keras(str(residual_classifier_file(tmp_path / "res.h5")))
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 18, 18, 3), dtype=np.uint8)
    inc = IncrementalEvaluator(clf)
    prepared = inc.prepare(images)
    rows = np.array([3, 0, 3, 1, 2, 2])
    cand = np.concatenate([rng.integers(0, 18, (6, 5, 2)), rng.integers(0, 256, (6, 5, 3))], 2)
    np.testing.assert_allclose(inc.scores_prepared(prepared, rows, cand),
                               HostEvaluator(clf).scores(images[rows], cand), atol=1e-5, rtol=0)
    with pytest.raises(OnepixelError, match="rows must index the 4 prepared images"):
        inc.scores_prepared(prepared, np.array([4]), cand[:1])
    with pytest.raises(OnepixelError, match=r"uint8 of shape \(B, 18, 18, 3\), got float64"):
        inc.prepare(images.astype(np.float64))
    with pytest.raises(OnepixelError, match="got uint8 \\(4, 18, 3\\)"):
        inc.prepare(images[:, 0])
    with pytest.raises(OnepixelError, match="outside"):
        inc.scores_prepared(prepared, np.array([0]), np.array([[[18, 0, 0, 0, 0]]]))


@pytest.mark.parametrize("model", ["residual", "max"])
@pytest.mark.slow
def test_scores_do_not_depend_on_the_batch(tmp_path, model, request):
    """Bit for bit, whatever shares a candidate's batch: resumed campaigns rely on it."""
    if model == "max":
        request.getfixturevalue("max_model_path")
        clf, size = load_eager_keras("max-mitosis", ModelOptions(device="cpu")), 64
    else:
        clf, size = load_eager_keras(str(residual_classifier_file(tmp_path / "r.h5"))), 18
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    cand = np.concatenate([rng.integers(0, size, (3, 40, 2)), rng.integers(0, 256, (3, 40, 3))], 2)
    inc = IncrementalEvaluator(clf)
    prepared = inc.prepare(images)
    together = inc.scores_prepared(prepared, np.arange(3), cand)
    for batch in (1, 2, 7):
        inc.max_batch = batch
        np.testing.assert_array_equal(inc.scores_prepared(prepared, np.arange(3), cand), together)
    alone = [inc.scores_prepared(prepared, np.array([i]), cand[i:i + 1, j:j + 1])[0, 0]
             for i, j in ((0, 0), (2, 39), (1, 17))]
    assert alone == [together[0, 0], together[2, 39], together[1, 17]]
    # Nor on which images were prepared with it.
    inc.max_batch = 256
    np.testing.assert_array_equal(
        inc.scores_prepared(inc.prepare(images[2:]), np.array([0]), cand[2:]), together[2:])


@pytest.mark.slow
def test_max_model_random_candidates_match_onnx_runtime(max_model_path, sample_images):
    """The real MAX network: incremental scores equal the default (ONNX Runtime) classifier's."""
    inc = load_attack_evaluator("max-mitosis", ModelOptions(device="cpu"), updating="deferred")
    assert isinstance(inc, IncrementalEvaluator)
    rng = np.random.default_rng(0)
    cand = np.concatenate([rng.integers(0, 64, (2, 400, 2)), rng.integers(0, 256, (2, 400, 3))], 2)
    cand[:, :4, :2] = [[0, 0], [63, 63], [0, 63], [63, 0]]  # the four corners
    reference = HostEvaluator(load_classifier("max-mitosis", ModelOptions(device="cpu")))
    np.testing.assert_allclose(inc.scores(sample_images, cand),
                               reference.scores(sample_images, cand), atol=1e-5, rtol=0)
    # Most of the arithmetic is in the 8x8 stage, which every pixel reaches in full.
    assert 4e6 < inc.scorer.macs_window < 7e6 < 16e6 < inc.scorer.macs_full < 16.1e6


@pytest.mark.parametrize("updating", ["immediate", "deferred"])
@pytest.mark.slow
def test_attack_results_equal_the_full_network_evaluator(tmp_path, updating):
    clf = load_eager_keras(str(residual_classifier_file(tmp_path / "res.h5")))
    images = np.random.default_rng(2).integers(0, 256, (5, 18, 18, 3), dtype=np.uint8)
    config = AttackConfig(de=DEConfig(population=30, maxiter=8, updating=updating, seed=3))
    goals = ["decrease", "increase", "decrease", "increase", "decrease"]
    full = OnePixelAttack(TorchEvaluator(clf), config).run(images, goals, range(5))
    inc = OnePixelAttack(IncrementalEvaluator(clf), config).run(images, goals, range(5))
    for a, b in zip(full, inc, strict=True):
        assert a.x.tolist() == b.x.tolist() and a.nit == b.nit and a.nfev == b.nfev
        np.testing.assert_allclose(a.history, b.history, atol=1e-6)


def test_evaluator_choice(tmp_path):
    path = str(residual_classifier_file(tmp_path / "res.h5"))
    cpu = ModelOptions(device="cpu")
    deferred = dict(updating="deferred")
    assert isinstance(load_attack_evaluator(path, cpu, **deferred), IncrementalEvaluator)
    assert isinstance(load_attack_evaluator(path, cpu, "full", **deferred),
                      HostEvaluator)  # ONNX Runtime
    # Immediate updating (the default) scores too few candidates per call for it to pay off.
    assert isinstance(load_attack_evaluator(path, cpu), HostEvaluator)
    assert isinstance(load_attack_evaluator(path, cpu, "incremental"), IncrementalEvaluator)
    assert isinstance(load_attack_evaluator(path, ModelOptions(device="cpu", engine="torch"),
                                            **deferred), TorchEvaluator)  # a chosen engine wins
    eager = load_eager_keras(path, cpu)
    assert isinstance(evaluator_for(eager, **deferred), IncrementalEvaluator)
    assert isinstance(evaluator_for(eager), TorchEvaluator)
    assert isinstance(evaluator_for(eager, "full", **deferred), TorchEvaluator)
    onnx = load_classifier(path, cpu)
    assert isinstance(evaluator_for(onnx), HostEvaluator)
    with pytest.raises(OnepixelError, match="use evaluator 'full'"):
        evaluator_for(onnx, "incremental")
    with pytest.raises(OnepixelError, match="unknown evaluator 'fast'"):
        evaluator_for(eager, "fast")


def test_incremental_needs_a_keras_model(tmp_path):
    from onepixel.models.base import ModelError

    with pytest.raises(ModelError, match="not a Keras model"):
        load_eager_keras(str(tmp_path / "model.onnx"))
    with pytest.raises(ModelError, match="model file not found"):
        load_eager_keras(str(tmp_path / "missing.h5"))
    # A Dense-only head after pooling still works: "full" steps take whole maps.
    clf = load_eager_keras(str(tiny_classifier_file(tmp_path / "tiny.h5", units=1)))
    images = np.random.default_rng(3).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    cand = np.broadcast_to(_every_pixel(8, np.array([[255, 0, 255]])), (2, 64, 5))
    np.testing.assert_allclose(IncrementalEvaluator(clf).scores(images, cand),
                               HostEvaluator(clf).scores(images, cand), atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_incremental_on_cuda(tmp_path):  # pragma: no cover - GPU only
    clf = load_eager_keras(str(residual_classifier_file(tmp_path / "res.h5")),
                           ModelOptions(device="cuda"))
    images = np.random.default_rng(4).integers(0, 256, (2, 18, 18, 3), dtype=np.uint8)
    cand = np.broadcast_to(_every_pixel(18, np.array([[9, 99, 199]])), (2, 324, 5))
    np.testing.assert_allclose(IncrementalEvaluator(clf).scores(images, cand),
                               TorchEvaluator(clf).scores(images, cand), atol=1e-5, rtol=0)
