"""The ``Classifier`` contract and the input/output conventions shared by array backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from onepixel.errors import ModelError

Layout = Literal["nhwc", "nchw"]
Preprocess = Literal["max", "unit", "raw"]
Output = Literal["logit", "probability"]


@runtime_checkable
class Classifier(Protocol):
    """Anything that scores images.

    ``scores(images)`` takes uint8 images of shape (N, H, W, 3) and returns float64 of shape
    (N,): the probability of the positive class. ``input_shape`` is (H, W, 3).
    """

    name: str

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    def scores(self, images: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ModelIO:
    """How raw uint8 images go into a network and how its output becomes a probability.

    Attributes
    ----------
    layout : {"nhwc", "nchw"}
        Tensor layout the network expects.
    preprocess : {"max", "unit", "raw"}
        ``max``: ``(x/255 - 0.5) * 2`` (MAX / deep-histopath "resnet_custom");
        ``unit``: ``x/255``; ``raw``: the 0..255 values as float.
    output : {"logit", "probability"}
        What the network returns. Logits go through a sigmoid (one output) or a softmax
        (several); probabilities are used as they are.
    positive_index : int or None
        Column of the positive class for multi-output networks (required when there are
        several outputs).
    """

    layout: Layout = "nhwc"
    preprocess: Preprocess = "max"
    output: Output = "logit"
    positive_index: int | None = None

    def __post_init__(self) -> None:
        if self.layout not in ("nhwc", "nchw"):
            raise ModelError(f"layout must be 'nhwc' or 'nchw', got {self.layout!r}")
        if self.preprocess not in ("max", "unit", "raw"):
            raise ModelError(f"preprocess must be 'max', 'unit' or 'raw', got {self.preprocess!r}")
        if self.output not in ("logit", "probability"):
            raise ModelError(f"output must be 'logit' or 'probability', got {self.output!r}")
        if self.positive_index is not None and self.positive_index < 0:
            raise ModelError(f"positive index must be >= 0, got {self.positive_index}")


def preprocess_numpy(images: np.ndarray, mode: Preprocess, dtype=np.float32) -> np.ndarray:
    """Apply :class:`ModelIO` preprocessing to uint8 images (any shape), in ``dtype``."""
    x = images.astype(dtype)
    if mode == "max":
        # The MAX service's exact order of operations, so float32 results match it bit for bit.
        return (x / dtype(255.0) - dtype(0.5)) * dtype(2.0)
    if mode == "unit":
        return x / dtype(255.0)
    return x


def positive_probability(outputs: np.ndarray, io: ModelIO, model_name: str) -> np.ndarray:
    """Reduce raw network outputs (N,) or (N, K) to positive-class probabilities (N,) float64."""
    out = np.asarray(outputs, dtype=np.float64)
    out = out.reshape(out.shape[0], -1)
    k = out.shape[1]
    if k == 1:
        if io.positive_index not in (None, 0):
            raise ModelError(f"{model_name} has one output; --positive-index must be 0 or unset")
        col = out[:, 0]
        if io.output == "logit":
            return _sigmoid(col)
        return col
    if io.positive_index is None:
        raise ModelError(
            f"{model_name} returns {k} outputs per image; say which is the positive class with "
            f"--positive-index (0..{k - 1})"
        )
    if io.positive_index >= k:
        raise ModelError(f"--positive-index {io.positive_index} is out of range for {k} outputs")
    if io.output == "logit":
        shifted = out - out.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp[:, io.positive_index] / exp.sum(axis=1)
    return out[:, io.positive_index]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so large |x| neither overflows nor loses the tiny probabilities.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def check_batch(images: np.ndarray, input_shape: tuple[int, int, int], model_name: str) -> np.ndarray:
    """Validate a batch for ``scores``: uint8, (N, H, W, 3) matching the model input."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ModelError(f"{model_name}: images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(input_shape):
        raise ModelError(
            f"{model_name}: expected images of shape (N, {input_shape[0]}, {input_shape[1]}, "
            f"{input_shape[2]}), got {images.shape}"
        )
    return images
