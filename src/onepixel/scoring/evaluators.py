"""The hot path: score one-pixel candidates on base images.

Contract (:class:`Evaluator`): given base images (B, H, W, 3) uint8 and candidate pixel vectors
(B, P, 5) of integers ``(x, y, r, g, b)`` (``x`` the column, ``y`` the row), return the scores
(B, P) of the images with that one pixel set. :class:`HostEvaluator` builds the perturbed images
with numpy and calls any :class:`~onepixel.models.Classifier`; :class:`TorchEvaluator` builds
them on the classifier's device from base images that stay there, so a GPU never waits on the
host. Every evaluator can ``prepare`` base images once and score candidates on any rows of them.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from onepixel.errors import OnepixelError
from onepixel.models.base import Classifier, TensorClassifier, capabilities_of
from onepixel.models.torch_backend import TorchClassifier

log = logging.getLogger(__name__)



class Evaluator(Protocol):
    """Scores one-pixel candidates; see the module docstring for the contract.

    Attributes
    ----------
    classifier : Classifier
        The model it scores with.
    device : torch.device
        Where it computes (``cpu`` for host evaluators).
    on_device : bool
        It is a :class:`DeviceEvaluator`: ``scores_tensor(images, candidates)`` on tensors on
        ``device`` (the attack then keeps its population there too).
    n_evaluations : int
        Candidates scored so far.
    """

    classifier: Classifier
    device: torch.device
    on_device: bool
    n_evaluations: int

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    def scores(self, images, candidates) -> np.ndarray:
        """Scores (B, P) float64 of candidates (B, P, 5) on uint8 images (B, H, W, 3)."""
        ...

    def prepare(self, images) -> object:
        """Whatever the evaluator keeps per base image (B, H, W, 3), for :meth:`scores_prepared`."""
        ...

    def scores_prepared(self, prepared, rows, candidates) -> np.ndarray:
        """Scores (R, P) float64 of candidates (R, P, 5) on prepared images ``rows`` (R,)."""
        ...


@runtime_checkable
class DeviceEvaluator(Evaluator, Protocol):
    """An evaluator that scores on its device (``on_device`` True): what the attack's on-device
    path calls. Declared here so that a new engine that sets ``on_device`` gets a type error,
    not an ``AttributeError`` deep inside an attack."""

    def to_device(self, images) -> torch.Tensor:
        """uint8 images (B, H, W, C) as a tensor on ``device``."""
        ...

    def scores_tensor(self, images: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Scores (B, P) or (B, P, K) float64 on ``device`` of candidates (B, P, D) on images
        (B, H, W, C) already there."""
        ...


def scores_on_device(evaluator: object) -> bool:
    """Whether the attack may keep its candidates on ``evaluator``'s device (its
    :class:`DeviceEvaluator` path)."""
    return isinstance(evaluator, DeviceEvaluator) and bool(evaluator.on_device)


def pixel_width(input_shape: tuple[int, int, int]) -> int:
    """Integers per pixel in a candidate vector: ``x, y`` and one value per channel (5 for RGB)."""
    return 2 + int(input_shape[2])


def check_candidates(candidates, n_images: int, input_shape: tuple[int, int, int]) -> None:
    """Raise unless candidates (numpy or torch) are (B, P, k * (2 + C)) within the image and 0..255.

    A candidate is ``k`` pixels one after another, each ``(x, y, c_1, ..., c_C)``: 5 integers
    ``(x, y, r, g, b)`` per pixel for RGB models, 3 ``(x, y, v)`` for greyscale ones.
    """
    width = pixel_width(input_shape)
    shape = tuple(candidates.shape)
    if len(shape) != 3 or shape[2] == 0 or shape[2] % width or shape[0] != n_images:
        raise OnepixelError(f"candidates must have shape ({n_images}, P, k * {width}) (k pixels of "
                            f"x, y and {width - 2} channel values), got {shape}")
    if shape[1] == 0 or n_images == 0:
        return
    flat = candidates.reshape(-1, width)
    if isinstance(flat, torch.Tensor):
        low, high = flat.amin(0).cpu().numpy(), flat.amax(0).cpu().numpy()
    else:
        low, high = flat.min(0), flat.max(0)
    h, w = input_shape[:2]
    if low[0] < 0 or high[0] >= w or low[1] < 0 or high[1] >= h:
        raise OnepixelError(f"candidate coordinates outside the {w}x{h} image")
    if low[2:].min() < 0 or high[2:].max() > 255:
        raise OnepixelError("candidate colours outside 0..255")


def _out_shape(classifier: Classifier, n: int) -> tuple[int, ...]:
    k = capabilities_of(classifier).n_classes
    return (n, k) if k > 1 else (n,)


class HostEvaluator:
    """Build perturbed images on the host and score them with any classifier.

    Parameters
    ----------
    classifier : Classifier
    max_batch : int
        Most perturbed images built at once (bounds memory: 12 KiB each at 64x64).
    """

    def __init__(self, classifier: Classifier, max_batch: int = 4096):
        self.classifier = classifier
        self.max_batch = max_batch
        self.n_evaluations = 0
        self.device = torch.device("cpu")
        self.on_device = False

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.classifier.input_shape

    def scores(self, images: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Scores (B, P), or class probabilities (B, P, K), float64, for uint8 images
        (B, H, W, C) and int candidates (B, P, k * (2 + C)); later pixels of a candidate win
        where two share a position."""
        images = np.asarray(images)
        candidates = np.asarray(candidates).astype(np.int64, copy=False)
        b, p, d = candidates.shape
        check_candidates(candidates, len(images), self.input_shape)
        width = pixel_width(self.input_shape)
        flat = candidates.reshape(b * p, d)
        owner = np.repeat(np.arange(b), p)
        out = np.empty(_out_shape(self.classifier, b * p), dtype=np.float64)
        for start in range(0, b * p, self.max_batch):
            stop = min(start + self.max_batch, b * p)
            batch = images[owner[start:stop]]  # fancy indexing copies
            rows = np.arange(stop - start)
            for g in range(0, d, width):
                c = flat[start:stop, g:g + width]
                batch[rows, c[:, 1], c[:, 0]] = c[:, 2:].astype(np.uint8)
            out[start:stop] = self.classifier.scores(batch)
        self.n_evaluations += b * p
        return out.reshape(b, p, *out.shape[1:])

    def prepare(self, images) -> np.ndarray:
        """The base images themselves, (B, H, W, 3) uint8."""
        return np.asarray(images)

    def scores_prepared(self, prepared: np.ndarray, rows, candidates) -> np.ndarray:
        """Scores (R, P) of candidates (R, P, 5) on ``prepared[rows]``."""
        return self.scores(prepared[np.asarray(rows, dtype=np.int64)], candidates)


class TorchEvaluator:
    """Build perturbed images on the classifier's device and score them there.

    ``images`` and ``candidates`` may be numpy arrays or tensors; keep the base images on the
    device (``to_device``) across calls to avoid host copies.
    """

    def __init__(self, classifier: TorchClassifier, max_batch: int = 8192):
        self.classifier = classifier
        self.device = classifier.device
        self.max_batch = max_batch
        self.n_evaluations = 0
        self.on_device = True

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.classifier.input_shape

    def to_device(self, images) -> torch.Tensor:
        """uint8 images as a tensor on the evaluator's device."""
        if isinstance(images, torch.Tensor):
            return images.to(self.device)
        # Read-only images (PIL-decoded) are copied: torch warns on non-writable arrays.
        return torch.from_numpy(np.require(images, requirements=("C", "W"))).to(self.device)

    @torch.inference_mode()
    def scores_tensor(self, images: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Like :meth:`scores` but tensors in, a float64 tensor (B, P) or (B, P, K) on the
        device out."""
        b, p, d = candidates.shape
        width = pixel_width(self.input_shape)
        flat = candidates.reshape(b * p, d).to(self.device, torch.int64)
        owner = torch.arange(b, device=self.device).repeat_interleave(p)
        out = torch.empty(_out_shape(self.classifier, b * p), dtype=torch.float64, device=self.device)
        for start in range(0, b * p, self.max_batch):
            stop = min(start + self.max_batch, b * p)
            batch = images[owner[start:stop]]
            rows = torch.arange(stop - start, device=self.device)
            for g in range(0, d, width):
                c = flat[start:stop, g:g + width]
                batch[rows, c[:, 1], c[:, 0]] = c[:, 2:].to(torch.uint8)
            out[start:stop] = self.classifier.score_tensor(batch)
        self.n_evaluations += b * p
        return out.reshape(b, p, *out.shape[1:])

    def scores(self, images, candidates) -> np.ndarray:
        """Scores (B, P) or (B, P, K) float64 for uint8 images (B, H, W, C) and int candidates
        (B, P, k * (2 + C))."""
        cand = candidates if isinstance(candidates, torch.Tensor) else torch.from_numpy(
            np.ascontiguousarray(candidates, dtype=np.int64))  # writable, for torch
        check_candidates(cand, len(images), self.input_shape)
        return self.scores_tensor(self.to_device(images), cand).cpu().numpy()

    def prepare(self, images) -> torch.Tensor:
        """The base images on the device, (B, H, W, 3) uint8."""
        return self.to_device(images)

    def scores_prepared(self, prepared: torch.Tensor, rows, candidates) -> np.ndarray:
        """Scores (R, P) of candidates (R, P, 5) on ``prepared[rows]``."""
        idx = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=self.device)
        return self.scores(prepared[idx], candidates)


def make_evaluator(classifier: Classifier, max_batch: int | None = None) -> Evaluator:
    """The fastest evaluator for a classifier: on-device for torch models, host otherwise."""
    if capabilities_of(classifier).tensor_scoring and isinstance(classifier, TensorClassifier):
        return TorchEvaluator(classifier, max_batch or 8192)
    return HostEvaluator(classifier, max_batch or 4096)
