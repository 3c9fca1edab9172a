"""Wrap any Python function as a Classifier."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onepixel.errors import ModelError
from onepixel.models.base import Capabilities, check_batch


class CallableClassifier:
    """Classifier from a function ``fn(images uint8 (N, H, W, 3)) -> probabilities (N,)``.

    The returned values are checked: one finite value in [0, 1] per image. ``fingerprint``
    (e.g. the sha256 of the weights the function uses) is recorded in RUNs for provenance.
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray],
                 input_shape: tuple[int, int, int] = (64, 64, 3), name: str = "callable",
                 batch_size: int = 0, fingerprint: str = ""):
        if not callable(fn):
            raise ModelError(f"{name}: expected a callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name
        self.batch_size = batch_size
        self.fingerprint = fingerprint
        self._input_shape = tuple(int(s) for s in input_shape)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self._input_shape  # type: ignore[return-value]

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(fingerprint=self.fingerprint)

    def scores(self, images: np.ndarray) -> np.ndarray:
        images = check_batch(images, self.input_shape, self.name)
        bs = self.batch_size or len(images)
        parts = [self._call(images[i : i + bs]) for i in range(0, len(images), bs)]
        return np.concatenate(parts) if parts else np.empty(0)

    def _call(self, chunk: np.ndarray) -> np.ndarray:
        out = np.asarray(self.fn(chunk), dtype=np.float64).reshape(-1)
        if out.shape != (len(chunk),):
            raise ModelError(f"{self.name} returned {out.size} scores for {len(chunk)} images")
        if not np.all(np.isfinite(out)) or out.min(initial=0) < 0 or out.max(initial=0) > 1:
            raise ModelError(f"{self.name} returned scores outside [0, 1] or not finite")
        return out
