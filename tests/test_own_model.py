"""Your own model, in one call (issue 25): a small digits CNN (32x32 RGB, 10 logits) as an
nn.Module, as ONNX with logits, as ONNX ending in Softmax and as a traced TorchScript file (no
input_shape attribute) gives the same probabilities with no flags; ``onepixel.attack`` on torch
tensors returns adversarial images that the module itself, re-run here, judges exactly as
``success`` says.
"""

from __future__ import annotations

import csv
import io
import json
import types
import warnings
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("sklearn")
pytest.importorskip("onnxruntime")

import onepixel.attack.config  # noqa: F401 - first: the package must stay callable after it
from digits_models import export_onnx_file, train_net
from onepixel.cli.main import main
from onepixel.errors import ConfigError, ModelError
from onepixel.models import ModelOptions, load_classifier
from onepixel.models.base import sized_for, validate_probabilities

SHAPE = (32, 32, 3)
MEAN = (0.2, 0.3, 0.4)
STD = (0.5, 0.25, 0.4)


class Softmaxed(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)


class Normalised(nn.Module):
    """The same network, for inputs normalised by MEAN/STD (as torchvision models expect)."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, z):
        return self.net(z * self.std + self.mean)


class HuggingFaceLike(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return types.SimpleNamespace(logits=self.net(x), hidden_states=None)


class OneLogit(nn.Module):
    """A binary model: one logit, 'is it a 3' against the rest."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        z = self.net(x)
        return z[:, 3:4] - torch.logsumexp(torch.cat([z[:, :3], z[:, 4:]], dim=1), 1, keepdim=True)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("own-model")
    net, images, labels = train_net(SHAPE, epochs=4)
    export_onnx_file(net, root / "logits.onnx", SHAPE)
    export_onnx_file(Softmaxed(net).eval(), root / "softmax.onnx", SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, torch.zeros(1, 3, 32, 32))  # tracing drops attributes
    traced.save(str(root / "traced.pt"))
    pngs = root / "pngs"
    pngs.mkdir()
    from PIL import Image

    for i in range(4):
        Image.fromarray(images[i]).save(pngs / f"{i}.png")
    return net, images, labels, root


def _module_probs(module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        out = module(x)
    out = out.logits if hasattr(out, "logits") else out
    return torch.softmax(out.double(), dim=1).numpy()


def _predict(model: str, pngs) -> np.ndarray:
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["-q", "predict", str(pngs), "--model", model, "--device", "cpu"]) == 0
    rows = list(csv.reader(io.StringIO(buf.getvalue())))
    assert rows[0][:3] == ["image", "class", "p0"]
    return np.array([[float(v) for v in row[2:]] for row in rows[1:]])


def test_four_forms_give_the_same_probabilities(digits):
    net, images, _, root = digits
    x = torch.from_numpy(images[:4]).permute(0, 3, 1, 2).float() / 255.0
    truth = _module_probs(net, x)  # the network itself, run here
    by_module = load_classifier(net, ModelOptions(device="cpu"))
    assert by_module.size_from_images
    got = {"module": sized_for(by_module, SHAPE).scores(images[:4])}
    for name in ("logits.onnx", "softmax.onnx", "traced.pt"):
        got[name] = _predict(str(root / name), root / "pngs")  # `onepixel predict`, no flags
    for name, probs in got.items():
        np.testing.assert_allclose(probs, truth, atol=1e-5, err_msg=name)
    assert load_classifier(str(root / "softmax.onnx")).io.output == "probability"
    assert load_classifier(str(root / "logits.onnx")).io.output == "logit"


def test_outputs_that_are_not_probabilities_name_the_option(digits):
    _, images, _, root = digits
    wrong = load_classifier(str(root / "logits.onnx"),
                            ModelOptions(device="cpu", model_output="probability"))
    with pytest.raises(ModelError, match=r"model_output='logit' \(CLI: --model-output logit\)"):
        wrong.scores(images[:2])
    traced = load_classifier(str(root / "traced.pt"),
                             ModelOptions(device="cpu", model_output="probability",
                                          input_shape=SHAPE))
    with pytest.raises(ModelError, match="model_output"):
        traced.scores(images[:2])
    with pytest.raises(ModelError, match="sum to"):
        validate_probabilities(np.array([[0.5, 0.6]]), 2, "m")
    with pytest.raises(ModelError, match="not finite"):
        validate_probabilities(np.array([np.nan]), 1, "m")
    assert validate_probabilities(np.array([[0.25, 0.75]]), 2, "m").dtype == np.float64
    # A declared size that the images do not have: the error names the way to cut them.
    with pytest.raises(ModelError, match="onepixel tiles"):
        load_classifier(str(root / "traced.pt"), ModelOptions(device="cpu", input_shape=(64, 64, 3)))
    with pytest.raises(ModelError, match="onepixel tiles"):
        load_classifier(str(root / "logits.onnx")).scores(np.zeros((1, 64, 64, 3), np.uint8))


def test_keras_output_activation_is_read_from_the_file(tmp_path):
    """A Keras file ending in softmax gives probabilities; the same network without it, logits:
    both give the same probabilities with no flags, on both engines."""
    import h5py

    from keras_files import layer, tiny_classifier_file, write_model

    plain = tiny_classifier_file(tmp_path / "logits.h5")
    with h5py.File(plain) as fh:
        config = json.loads(fh.attrs["model_config"])
        weights = {name: {k.split("/")[-1][:-2]: fh["model_weights"][name][k][()]
                          for k in fh["model_weights"][name].attrs["weight_names"].astype(str)}
                   for name in ("conv", "dense")}
    layers = config["config"]["layers"] + [layer("prob", "Activation", ["dense"], activation="softmax")]
    softmaxed = write_model(tmp_path / "softmax.h5", layers, weights, "prob")
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    for engine in ("torch", "onnxruntime"):
        options = ModelOptions(device="cpu", engine=engine)
        a, b = (load_classifier(str(f), options) for f in (plain, softmaxed))
        assert b.io.output == "probability" and a.io.output == "logit"
        np.testing.assert_allclose(b.scores(images), a.scores(images), atol=1e-6)


def _check_attack(result, module, x, labels, pixels, normalise=lambda t: t):
    adv = result.adversarial
    assert isinstance(adv, torch.Tensor) and adv.shape == x.shape and adv.dtype == x.dtype
    assert adv.device == x.device
    grid = adv * 255
    assert torch.equal(grid, torch.round(grid))  # every value on the uint8 grid
    changed = (adv != x).any(dim=1).sum(dim=(1, 2))  # pixels changed per image
    assert (changed <= pixels).all()
    # The module itself, re-run on the returned images: exactly `success`.
    probs = _module_probs(module, normalise(adv))
    np.testing.assert_array_equal(probs.argmax(axis=1) != labels, result.success)
    assert result.success.shape == result.queries.shape == (len(x),)
    assert result.pixels.shape == (len(x), pixels, 5)
    assert (result.queries[result.success] >= 0).all() and result.queries.max() > 0


def _hardest(net, images, labels, n=4):
    """The correctly classified held-out digits with the smallest margins: attackable."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    probs = _module_probs(net, x)
    right = np.flatnonzero(probs.argmax(axis=1) == labels)
    top2 = np.sort(probs[right], axis=1)[:, -2:]
    pick = right[np.argsort(top2[:, 1] - top2[:, 0])[:n]]
    return x[pick], labels[pick]


def test_attack_one_call_on_tensors(digits):
    net, images, labels, _ = digits
    x, y = _hardest(net, images, labels)
    result = onepixel_attack(net, x, torch.from_numpy(y), pixels=3, maxiter=8, popsize=40)
    _check_attack(result, net, x, y, 3)
    assert result.success.any()  # the weakest digits do fall to 3 pixels
    # Labels default to the model's own predictions (here: the true labels).
    again = onepixel_attack(net, x, pixels=3, maxiter=8, popsize=40)
    np.testing.assert_array_equal(again.labels, y)
    np.testing.assert_array_equal(again.success, result.success)


def test_attack_with_normalisation_and_logits_objects(digits):
    net, images, labels, _ = digits
    x, y = _hardest(net, images, labels, n=3)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    normalised = Normalised(net).eval()
    result = onepixel_attack(normalised, x, y, pixels=3, maxiter=6, popsize=30, mean=MEAN, std=STD)
    _check_attack(result, normalised, x, y, 3, normalise=lambda t: (t - mean) / std)
    hf = HuggingFaceLike(net).eval()
    result = onepixel_attack(hf, x, y, pixels=3, maxiter=6, popsize=30)
    _check_attack(result, hf, x, y, 3)


def test_attack_binary_module_and_numpy_images(digits):
    net, images, _, _ = digits
    model = OneLogit(net).train()  # given in training mode: used in eval, given back in training
    batch = images[:4]
    result = onepixel_attack(model, batch, pixels=1, maxiter=5, popsize=30)
    assert model.training
    assert isinstance(result.adversarial, np.ndarray) and result.adversarial.dtype == np.uint8
    assert result.original_scores.shape == (4,) and result.pixels.shape == (4, 1, 5)
    with torch.no_grad():
        p = torch.sigmoid(model.eval()(torch.from_numpy(result.adversarial).permute(0, 3, 1, 2)
                                       .float() / 255.0)).double().numpy()[:, 0]
    np.testing.assert_array_equal((p > 0.5) != result.labels.astype(bool), result.success)
    with pytest.raises(ConfigError, match="target"):
        onepixel_attack(model, batch, target=1)
    with pytest.raises(ConfigError, match="images"):
        onepixel_attack(net, torch.zeros(2, 32, 32, 3))  # channels last in a tensor
    with pytest.raises(ConfigError, match="labels"):
        onepixel_attack(net, batch, labels=np.array([0, 1]))


@pytest.mark.slow  # five commands: 3.4 s on an idle 2-core machine, ~45 s on a busy one
def test_unlabelled_pngs_attacked_analysed_reported_from_the_cli(digits, tmp_path):
    """A flat folder of PNGs, no labels, the traced TorchScript file with no flags (its size comes
    from the images): the labels are the model's predictions, recorded as such; analyze, report
    and audit read the RUN, and pareto takes the folder."""
    net, images, _, root = digits
    run, model = tmp_path / "run", str(root / "traced.pt")
    assert main(["-q", "attack", str(root / "pngs"), "--out", str(run), "--model", model,
                 "--device", "cpu", "--popsize", "20", "--maxiter", "3", "--updating", "deferred",
                 "--no-progress"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["labels"] == "predicted" and config["classes"] == [str(k) for k in range(10)]
    with (run / "attacks.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    x = torch.from_numpy(images[:4]).permute(0, 3, 1, 2).float() / 255.0
    predicted = _module_probs(net, x).argmax(axis=1)
    assert {r["image"]: r["label"] for r in rows} == {f"{i}.png": str(k) for i, k in enumerate(predicted)}
    assert all(r["status"] == "attacked" for r in rows)  # predicted labels are never "misclassified"
    assert main(["-q", "analyze", str(run)]) == 0
    assert main(["-q", "report", str(run)]) == 0
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "the model&#x27;s own predictions" in html or "the model's own predictions" in html
    audit = tmp_path / "audit"
    assert main(["-q", "audit", str(run), "--out", str(audit), "--images", "0.png", "--step", "128",
                 "--top", "2", "--rounds", "1", "--device", "cpu", "--no-progress"]) == 0
    assert json.loads((audit / "summary.json").read_text())["goals"]["untargeted"]["audited"] == 1
    pareto = tmp_path / "pareto"
    assert main(["-q", "pareto", "--dataset", str(root / "pngs"), "--out", str(pareto), "--model",
                 model, "--device", "cpu", "--pop", "8", "--gens", "2", "--limit", "1",
                 "--no-detector", "--no-progress"]) == 0
    assert (pareto / "front.csv").is_file()


def onepixel_attack(*args, **kwargs):
    import onepixel

    return onepixel.attack(*args, **kwargs)
