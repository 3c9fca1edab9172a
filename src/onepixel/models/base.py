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

    ``scores(images)`` takes uint8 images of shape (N, H, W, C) and returns float64 of shape
    (N,), the probability of the positive class of a binary model, or (N, K), the class
    probabilities of a K-class model (``capabilities.n_classes == K``). ``input_shape`` is
    (H, W, C) with C 3 (RGB) or 1 (greyscale).
    """

    name: str

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    # Optional: ``capabilities`` (a :class:`Capabilities`); see :func:`capabilities_of`.

    def scores(self, images: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class TensorClassifier(Classifier, Protocol):
    """A classifier that scores uint8 tensors already on its device (``Capabilities.
    tensor_scoring``): what the on-device evaluator calls."""

    def score_tensor(self, images):
        """Scores of uint8 images (N, H, W, C) on the classifier's device, as a float64 tensor
        (N,) or (N, K) there."""
        ...


@dataclass(frozen=True)
class Capabilities:
    """What a classifier declares about itself, so that policies ask instead of probing.

    Attributes
    ----------
    fingerprint : str
        sha256 of the model file ("" when unknown), recorded in RUNs and maps for provenance.
    device : str
        Where it computes: ``cpu``, ``cuda:N``, or ``remote`` (a service over HTTP).
    tensor_scoring : bool
        It is a :class:`TensorClassifier`: ``score_tensor(images)`` for uint8 tensors already on
        ``device`` (the on-device evaluator builds perturbed images there).
    layers : bool
        It has ``eager_network()``: the eager :class:`~onepixel.models.keras_h5.KerasNet` and
        its :class:`ModelIO`, which the incremental engines walk layer by layer.
    n_classes : int
        1 for a binary model scored by one probability (``scores`` returns (N,)); K > 1 for a
        K-class model (``scores`` returns (N, K) class probabilities).
    """

    fingerprint: str = ""
    device: str = "cpu"
    tensor_scoring: bool = False
    layers: bool = False
    n_classes: int = 1

    @property
    def on_cpu(self) -> bool:
        return self.device == "cpu"


def capabilities_of(classifier: object) -> Capabilities:
    """A classifier's declared :class:`Capabilities`; plain objects that only score get the defaults."""
    caps = getattr(classifier, "capabilities", None)
    return caps if isinstance(caps, Capabilities) else Capabilities()


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


def preprocess(x, mode: Preprocess):
    """Apply :class:`ModelIO` preprocessing to images already cast to the compute dtype.

    The one preprocessing function of every backend and engine: numpy arrays and torch tensors
    of any shape, in the MAX service's exact order of operations (so float32 results match it bit
    for bit): ``max`` is ``(x / 255 - 0.5) * 2``, ``unit`` is ``x / 255``, ``raw`` is ``x``.
    """
    if mode == "max":
        return (x / 255.0 - 0.5) * 2.0
    if mode == "unit":
        return x / 255.0
    return x


def preprocess_numpy(images: np.ndarray, mode: Preprocess, dtype=np.float32) -> np.ndarray:
    """uint8 images (any shape) -> :func:`preprocess` ed float array in ``dtype``."""
    return preprocess(images.astype(dtype), mode)


def output_column(k: int, io: ModelIO, model_name: str) -> int:
    """The column of the positive class among ``k`` outputs, or a :class:`ModelError` saying why not."""
    if k == 1:
        if io.positive_index not in (None, 0):
            raise ModelError(f"{model_name} has one output; ModelIO.positive_index must be 0 or None")
        return 0
    if io.positive_index is None:
        raise ModelError(
            f"{model_name} returns {k} outputs per image; say which is the positive class with "
            f"ModelIO.positive_index (0..{k - 1})"
        )
    if io.positive_index >= k:
        raise ModelError(f"ModelIO.positive_index {io.positive_index} is out of range for {k} outputs")
    return io.positive_index


def positive_probability(outputs, io: ModelIO, model_name: str, float64: bool = True):
    """Reduce raw network outputs (N,) or (N, K) to positive-class probabilities (N,).

    The one output-to-probability rule of every backend and engine: one output is a logit
    (sigmoid) or a probability; several are logits (softmax) or probabilities, and
    ``io.positive_index`` picks the column.

    Parameters
    ----------
    outputs : ndarray or Tensor, (N,) or (N, K)
        numpy arrays are reduced on the host (a sign-split sigmoid: element by element the same
        whatever the batch), tensors on their device.
    float64 : bool
        Compute in float64 (the scores' dtype); False keeps a tensor's dtype (graphs for export).

    Returns
    -------
    ndarray or Tensor, (N,)
    """
    if not isinstance(outputs, np.ndarray) and type(outputs).__module__.startswith("torch"):
        import torch

        out = outputs.to(torch.float64) if float64 else outputs
        out = out.reshape(out.shape[0], -1)
        col = output_column(out.shape[1], io, model_name)
        if io.output == "probability":
            return out[:, col]
        return torch.sigmoid(out[:, 0]) if out.shape[1] == 1 else torch.softmax(out, dim=1)[:, col]
    out = np.asarray(outputs, dtype=np.float64)
    out = out.reshape(out.shape[0], -1)
    col = output_column(out.shape[1], io, model_name)
    if io.output == "probability":
        return out[:, col]
    if out.shape[1] == 1:
        return _sigmoid(out[:, 0])
    shifted = out - out.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp[:, col] / exp.sum(axis=1)


def class_probabilities(outputs, io: ModelIO, model_name: str, float64: bool = True):
    """Raw network outputs to what ``Classifier.scores`` returns.

    One output, or several with ``io.positive_index`` chosen: a binary model, (N,) probabilities
    of the positive class (:func:`positive_probability`). Several outputs and no positive index:
    a K-class model, (N, K) class probabilities (softmax of logits, or the probabilities as
    they are).

    Parameters
    ----------
    outputs : ndarray or Tensor, (N,) or (N, K)
    float64 : bool
        Compute in float64; False keeps a tensor's dtype.

    Returns
    -------
    ndarray or Tensor, (N,) or (N, K)
    """
    k = int(np.prod(outputs.shape[1:])) if len(outputs.shape) > 1 else 1
    if k == 1 or io.positive_index is not None:
        return positive_probability(outputs, io, model_name, float64)
    if not isinstance(outputs, np.ndarray) and type(outputs).__module__.startswith("torch"):
        import torch

        out = outputs.to(torch.float64) if float64 else outputs
        out = out.reshape(out.shape[0], -1)
        return out if io.output == "probability" else torch.softmax(out, dim=1)
    out = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    if io.output == "probability":
        return out
    shifted = out - out.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def n_classes_for(k_outputs: int, io: ModelIO) -> int:
    """The class count a model with ``k_outputs`` outputs scores as (1: binary, one score)."""
    return 1 if k_outputs == 1 or io.positive_index is not None else k_outputs


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so large |x| neither overflows nor loses the tiny probabilities.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def check_batch(images: np.ndarray, input_shape: tuple[int, int, int] | None,
                model_name: str) -> np.ndarray:
    """Validate a batch for ``scores``: uint8, (N, H, W, C) matching the model input.

    ``input_shape`` None (a model that takes its size from the images) accepts any (H, W, C)
    with C 1 or 3.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ModelError(f"{model_name}: images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[None]
    if input_shape is None:
        if images.ndim != 4 or images.shape[3] not in (1, 3):
            raise ModelError(f"{model_name}: expected images of shape (N, H, W, C) with C 1 or 3, "
                             f"got {images.shape}")
        return images
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(input_shape):
        raise ModelError(
            f"{model_name}: expected images of shape (N, {input_shape[0]}, {input_shape[1]}, "
            f"{input_shape[2]}), got {images.shape}{SIZE_HINT}"
        )
    return images


#: What every size error says about larger images.
SIZE_HINT = "; cut larger images into tiles of the model's size with `onepixel tiles`"


def unsized_error(model_name: str) -> ModelError:
    """The error of asking a model that takes its size from the images for its size too early."""
    return ModelError(
        f"{model_name} declares no input size: onepixel takes it from the images where it has "
        "them (predict, attack, onepixel.attack); elsewhere set ModelOptions.input_shape "
        "(CLI: --input-shape HxWxC)")


def sized_for(classifier: Classifier, shape) -> Classifier:
    """``classifier`` for images of ``shape`` (H, W, C) when it takes its size from the images.

    Models that declare a size are returned as they are (a mismatch is then an error where the
    images are checked); the others (TorchScript files without an ``input_shape`` attribute,
    ``nn.Module`` s, callables without ``input_shape``) get a copy fixed to that size.
    """
    resize = getattr(classifier, "with_input_shape", None)
    if resize is None or not getattr(classifier, "size_from_images", False):
        return classifier
    h, w, c = (int(s) for s in shape)
    return resize((h, w, c))


def declared_input_shape(classifier: Classifier) -> tuple[int, int, int] | None:
    """The (H, W, C) a model declares, or None for one that takes its size from the images."""
    if getattr(classifier, "size_from_images", False):
        return None
    return tuple(classifier.input_shape)  # type: ignore[return-value]


def validate_probabilities(scores: np.ndarray, n_classes: int, model_name: str, *,
                           option: str = "model_output") -> np.ndarray:
    """Check that a model's scores are probabilities; return them as float64.

    The one check of every backend, once per ``scores`` call: finite; a binary model's (N,)
    scores in [0, 1]; a K-class model's (N, K) rows in [0, 1] summing to 1 within 1e-3.
    Outputs that fail are almost always logits read as probabilities (or independent sigmoids
    read as a softmax), which would make every score and every attack silently wrong.

    Parameters
    ----------
    scores : array-like, (N,) or (N, K)
    n_classes : int
        1 (binary) or K.
    model_name : str
        Named in the error.
    option : str
        The setting that declares what the model returns (``ModelOptions.model_output``), named in
        the error with its CLI spelling; "" for a model that must return probabilities (a
        Python function): the error then says so.

    Returns
    -------
    ndarray, float64, (N,) or (N, K)

    Raises
    ------
    ModelError
        Not finite, outside [0, 1], or rows not summing to 1; the message names ``option``.
    """
    out = np.asarray(scores, dtype=np.float64)
    flag = "--" + option.replace("_", "-")
    fix = (f"set {option}='logit' (CLI: {flag} logit)" if option else
           "return probabilities (a sigmoid or softmax of the logits)")
    want = "(N,)" if n_classes == 1 else f"(N, {n_classes})"
    if (n_classes == 1 and out.ndim != 1) or (n_classes > 1 and (out.ndim != 2
                                                                 or out.shape[1] != n_classes)):
        raise ModelError(f"{model_name} returns scores of shape {out.shape}; expected {want}")
    if out.size == 0:
        return out
    if not np.all(np.isfinite(out)):
        raise ModelError(f"{model_name} returns values that are not finite (NaN or inf): check the "
                         f"model and its input scaling (ModelOptions.preprocess, mean/std)")
    low, high = float(out.min()), float(out.max())
    if low < 0.0 or high > 1.0:
        raise ModelError(
            f"{model_name} returns values outside [0, 1] (from {low:.4g} to {high:.4g}): it gives "
            f"logits; {fix}")
    if n_classes > 1:
        sums = out.sum(axis=1)
        worst = int(np.argmax(np.abs(sums - 1.0)))
        if abs(sums[worst] - 1.0) > 1e-3:
            raise ModelError(
                f"{model_name} returns {n_classes} class scores whose rows sum to "
                f"{sums[worst]:.4g}, not 1: they are not class probabilities (logits, or "
                f"independent sigmoids); {fix}")
    return out


def probabilities_look_like(outputs: np.ndarray) -> bool:
    """Whether raw outputs (N, K), K > 1, already look like class probabilities (in [0, 1], rows
    summing to 1): a model read as giving logits that does this is worth a warning (one output in
    [0, 1] says nothing: a logit can be there too)."""
    out = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    if out.size == 0 or out.shape[1] < 2 or not np.all(np.isfinite(out)):
        return False
    if out.min() < 0 or out.max() > 1:
        return False
    return bool(np.all(np.abs(out.sum(axis=1) - 1.0) <= 1e-3))


class ClassProbability:
    """A K-class classifier seen as a binary one: the probability of one class.

    What a confidence map of a K-class model maps (the probability of the class it predicts for
    the original image), and how any single-score tool can look at one class.

    Parameters
    ----------
    classifier : Classifier
        ``capabilities.n_classes == K > 1``.
    class_index : int
        The class, 0..K-1 in the model's output order.
    """

    def __init__(self, classifier: Classifier, class_index: int):
        k = capabilities_of(classifier).n_classes
        if not 0 <= int(class_index) < k:
            raise ModelError(f"class {class_index} is not one of the {k} classes of {classifier.name}")
        self.classifier = classifier
        self.class_index = int(class_index)
        self.name = f"{classifier.name}[{self.class_index}]"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.classifier.input_shape

    @property
    def capabilities(self) -> Capabilities:
        caps = capabilities_of(self.classifier)
        return Capabilities(fingerprint=caps.fingerprint, device=caps.device)

    def scores(self, images: np.ndarray) -> np.ndarray:
        """(N,) float64: the probability of ``class_index``."""
        return np.asarray(self.classifier.scores(images))[:, self.class_index]
