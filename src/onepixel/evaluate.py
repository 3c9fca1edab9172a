"""The hot path: score one-pixel candidates on base images.

Contract: given base images (B, H, W, 3) uint8 and candidate pixel vectors (B, P, 5) of integers
``(x, y, r, g, b)`` (``x`` the column, ``y`` the row), return the scores (B, P) of the images
with that one pixel set. :class:`HostEvaluator` builds the perturbed images with numpy and calls
any :class:`~onepixel.models.Classifier`; :class:`TorchEvaluator` builds them on the
classifier's device from base images that stay there, so a GPU never waits on the host.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
import torch

from onepixel.errors import OnepixelError
from onepixel.models.base import Classifier
from onepixel.models.registry import ModelOptions, is_keras_spec, load_classifier, load_eager_keras
from onepixel.models.torch_backend import TorchClassifier, resolve_device

log = logging.getLogger(__name__)

#: Evaluator kinds for attacks: ``incremental`` recomputes only what one pixel changes (Keras
#: and built-in models), ``full`` runs the whole network per candidate, ``auto`` picks.
EVALUATORS = ("auto", "incremental", "full")
#: Candidates per incremental pass on CPU: big enough for fast convolutions, small enough to
#: stay in cache (bench/results/attack-cpu.md).
INCREMENTAL_CPU_BATCH = 256


class Evaluator(Protocol):
    """Scores one-pixel candidates; see the module docstring for the contract."""

    n_evaluations: int

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    def scores(self, images, candidates) -> np.ndarray: ...


def check_candidates(candidates, n_images: int, input_shape: tuple[int, int, int]) -> None:
    """Raise if candidates (numpy or torch) are not (B, P, 5) within the image and colour bounds."""
    shape = tuple(candidates.shape)
    if len(shape) != 3 or shape[2] != 5 or shape[0] != n_images:
        raise OnepixelError(f"candidates must have shape ({n_images}, P, 5), got {shape}")
    if shape[1] == 0 or n_images == 0:
        return
    flat = candidates.reshape(-1, 5)
    if isinstance(flat, torch.Tensor):
        low, high = flat.amin(0).cpu().numpy(), flat.amax(0).cpu().numpy()
    else:
        low, high = flat.min(0), flat.max(0)
    h, w = input_shape[:2]
    if low[0] < 0 or high[0] >= w or low[1] < 0 or high[1] >= h:
        raise OnepixelError(f"candidate coordinates outside the {w}x{h} image")
    if low[2:].min() < 0 or high[2:].max() > 255:
        raise OnepixelError("candidate colours outside 0..255")


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

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.classifier.input_shape

    def scores(self, images: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Scores (B, P) float64 for uint8 images (B, H, W, 3) and int candidates (B, P, 5)."""
        images = np.asarray(images)
        candidates = np.asarray(candidates).astype(np.int64, copy=False)
        b, p = candidates.shape[:2]
        check_candidates(candidates, len(images), self.input_shape)
        flat = candidates.reshape(b * p, 5)
        owner = np.repeat(np.arange(b), p)
        out = np.empty(b * p, dtype=np.float64)
        for start in range(0, b * p, self.max_batch):
            stop = min(start + self.max_batch, b * p)
            batch = images[owner[start:stop]]  # fancy indexing copies
            c = flat[start:stop]
            batch[np.arange(stop - start), c[:, 1], c[:, 0]] = c[:, 2:].astype(np.uint8)
            out[start:stop] = self.classifier.scores(batch)
        self.n_evaluations += b * p
        return out.reshape(b, p)


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

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.classifier.input_shape

    def to_device(self, images) -> torch.Tensor:
        """uint8 images as a tensor on the evaluator's device."""
        if isinstance(images, torch.Tensor):
            return images.to(self.device)
        return torch.from_numpy(np.ascontiguousarray(images)).to(self.device)

    @torch.inference_mode()
    def scores_tensor(self, images: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Like :meth:`scores` but tensors in, a float64 tensor (B, P) on the device out."""
        b, p = candidates.shape[:2]
        flat = candidates.reshape(b * p, 5).to(self.device, torch.int64)
        owner = torch.arange(b, device=self.device).repeat_interleave(p)
        out = torch.empty(b * p, dtype=torch.float64, device=self.device)
        for start in range(0, b * p, self.max_batch):
            stop = min(start + self.max_batch, b * p)
            batch = images[owner[start:stop]]
            c = flat[start:stop]
            rows = torch.arange(stop - start, device=self.device)
            batch[rows, c[:, 1], c[:, 0]] = c[:, 2:].to(torch.uint8)
            out[start:stop] = self.classifier.score_tensor(batch)
        self.n_evaluations += b * p
        return out.reshape(b, p)

    def scores(self, images, candidates) -> np.ndarray:
        """Scores (B, P) float64 for uint8 images (B, H, W, 3) and int candidates (B, P, 5)."""
        cand = candidates if isinstance(candidates, torch.Tensor) else torch.from_numpy(
            np.ascontiguousarray(candidates, dtype=np.int64))  # writable, for torch
        check_candidates(cand, len(images), self.input_shape)
        return self.scores_tensor(self.to_device(images), cand).cpu().numpy()


def make_evaluator(classifier: Classifier, max_batch: int | None = None) -> Evaluator:
    """The fastest evaluator for a classifier: on-device for torch models, host otherwise."""
    if isinstance(classifier, TorchClassifier):
        return TorchEvaluator(classifier, max_batch or 8192)
    return HostEvaluator(classifier, max_batch or 4096)


def evaluator_for(classifier: Classifier, kind: str = "auto",
                  updating: str = "immediate") -> Evaluator:
    """An evaluator for ``classifier``: see :data:`EVALUATORS`.

    ``auto`` is incremental for an eager Keras network on CPU when the attack scores whole
    generations at once (``updating="deferred"``: about 1.8x the full network there); with
    immediate updating each call holds one candidate per image, too few for it to pay off, and
    on CUDA the full network runs whole batches fast (bench/results/attack-cpu.md).
    ``updating`` is the attack's (:class:`~onepixel.de.DEConfig`; scipy's default, immediate).
    """
    from onepixel.confmap_fast import keras_net_of
    from onepixel.incremental import IncrementalEvaluator

    _check_kind(kind)
    eager = keras_net_of(classifier) is not None
    if kind == "incremental" and not eager:
        raise OnepixelError(
            f"--evaluator incremental needs a Keras or built-in model run by torch; "
            f"{getattr(classifier, 'name', type(classifier).__name__)} is "
            f"{type(classifier).__name__} (use --evaluator full)")
    if kind == "incremental" or (kind == "auto" and eager and classifier.device.type == "cpu"
                                 and updating == "deferred"):
        batch = INCREMENTAL_CPU_BATCH if classifier.device.type == "cpu" else 4096
        return IncrementalEvaluator(classifier, max_batch=batch)
    return make_evaluator(classifier)


def load_attack_evaluator(spec: str, options: ModelOptions | None = None,
                          kind: str = "auto", updating: str = "immediate") -> Evaluator:
    """Load model ``spec`` for attacks, with the fastest exact evaluator for it.

    Where :func:`evaluator_for` would choose the incremental evaluator (and no ``engine`` is
    chosen), Keras and built-in models are loaded as eager torch networks so that it applies;
    otherwise as :func:`~onepixel.models.load_classifier` loads them.
    """
    options = options or ModelOptions()
    _check_kind(kind)
    if kind == "incremental" and options.engine == "onnxruntime":
        raise OnepixelError("--evaluator incremental runs the network itself with torch: drop "
                            "--engine onnxruntime, or use --evaluator full")
    on_cpu = resolve_device(options.device).type == "cpu"
    incremental = kind == "incremental" or (kind == "auto" and on_cpu and options.engine == "auto"
                                            and updating == "deferred")
    if incremental and is_keras_spec(spec):
        return evaluator_for(load_eager_keras(spec, options), kind, updating)
    return evaluator_for(load_classifier(spec, options), "full" if kind == "auto" else kind)


def _check_kind(kind: str) -> None:
    if kind not in EVALUATORS:
        raise OnepixelError(f"unknown evaluator {kind!r}: use one of {', '.join(EVALUATORS)}")
