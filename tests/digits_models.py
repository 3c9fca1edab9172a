"""Small real multi-class models for tests: CNNs trained on scikit-learn's handwritten digits.

The 8x8 digits (values 0..16) are upscaled by pixel repetition and scaled to 0..255: to 32x32
RGB (the three channels equal) for a 10-class RGB model, and to 24x32 greyscale (non-square,
one channel) for a greyscale model. Each model trains in a few seconds on a CPU, is exported to
ONNX (float NCHW input in [0, 1], logits out) and is loaded back through onepixel's ONNX backend.

Upscaled, one pixel is a sixteenth of a stroke and the 32x32 model resists every single pixel
(the exhaustive corner scan flips none of 30 held-out digits). At the digits' native resolution,
:data:`NATIVE` (8x8 RGB, ``train_and_export(path, NATIVE)``), one pixel is a sixty-fourth of the
image and the same network is fragile: the corner scan flips about 40 % of held-out digits, so
it is the K-class model on which one-pixel attacks can be compared.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

#: The digits' native shape (RGB, the three channels equal): a fragile but real 10-class model.
NATIVE = (8, 8, 3)


def model_options():
    """How onepixel loads these ONNX files: float NCHW in [0, 1] on the CPU, logits out."""
    from onepixel.models import ModelOptions

    return ModelOptions(device="cpu", preprocess="unit", layout="nchw", model_output="logit")


def digits(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 images of ``shape`` (H, W, C) and their labels (N,)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    h, w, c = shape
    scale = (h // 8, w // 8)
    images = np.stack([np.kron(img, np.ones(scale)) for img in data.images])  # (N, h, w)
    images = np.clip(images / 16.0 * 255.0, 0, 255).round().astype(np.uint8)
    images = np.repeat(images[..., None], c, axis=3)
    return images, data.target.astype(np.int64)


class _Net(nn.Module):
    def __init__(self, channels: int, h: int, w: int, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(16 * ((h + 3) // 4) * ((w + 3) // 4), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def train_net(shape: tuple[int, int, int], seed: int = 0,
              epochs: int = 12) -> tuple[nn.Module, np.ndarray, np.ndarray]:
    """Train on the first 1,500 digits; return the network (eval mode, float NCHW input in
    [0, 1], logits out) and the held-out images (N, H, W, C) uint8 and labels (N,)."""
    torch.manual_seed(seed)
    images, labels = digits(shape)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    y = torch.from_numpy(labels)
    net = _Net(shape[2], shape[0], shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    train = torch.arange(1500)
    for _ in range(epochs):
        for batch in train[torch.randperm(len(train))].split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            opt.step()
    return net.eval(), images[1500:], labels[1500:]


def export_onnx_file(net: nn.Module, path: Path, shape: tuple[int, int, int]) -> Path:
    """``net`` (float NCHW input) as an ONNX file with a dynamic batch axis."""
    example = torch.zeros(1, shape[2], shape[0], shape[1])
    with warnings.catch_warnings():  # the legacy exporter warns that it is legacy
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (example,), str(path), input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    return path


def train_and_export(path: Path, shape: tuple[int, int, int], seed: int = 0,
                     epochs: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Train on the first 1,500 digits, export to ONNX at ``path``; return the held-out images
    (N, H, W, C) uint8 and labels (N,)."""
    net, images, labels = train_net(shape, seed, epochs)
    export_onnx_file(net, path, shape)
    return images, labels


def model_and_folder(root: Path, name: str, shape: tuple[int, int, int], per_class: int,
                     epochs: int = 12) -> tuple[Path, Path]:
    """Train and export ``root/name``, write ``per_class`` held-out images of each digit to
    ``root/ds``; return (the ONNX file, the dataset folder)."""
    images, labels = train_and_export(root / name, shape, epochs=epochs)
    return root / name, write_image_folder(root / "ds", images, labels, per_class=per_class)


def ort_probs(model: Path, images: np.ndarray) -> np.ndarray:
    """Class probabilities (N, K) by ONNX Runtime itself for uint8 images (N, H, W, C): float
    NCHW in [0, 1] -> softmax of the logits (the judge the tests compare onepixel with)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = (images.astype(np.float32) / np.float32(255.0)).transpose(0, 3, 1, 2)
    logits = session.run(None, {"x": np.ascontiguousarray(x)})[0].astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray, per_class: int) -> Path:
    """``root/<digit>/<i>.png`` for the first ``per_class`` images of each digit."""
    counts: dict[int, int] = {}
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        if counts.get(int(label), 0) >= per_class:
            continue
        counts[int(label)] = counts.get(int(label), 0) + 1
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(folder / f"{i:04d}.png")
    return root
