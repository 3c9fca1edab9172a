"""Wrap any Python function as a Classifier."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onepixel.errors import ModelError, is_integer
from onepixel.models.base import Capabilities, check_batch, unsized_error, validate_probabilities


class CallableClassifier:
    """Classifier from a function ``fn(images uint8 (N, H, W, C)) -> probabilities``.

    With ``n_classes=1`` (binary) ``fn`` returns (N,) probabilities of the positive class; with
    ``n_classes=K`` it returns (N, K) class probabilities. The returned values are checked
    (:func:`~onepixel.models.base.validate_probabilities`): finite, in [0, 1], rows summing to 1,
    of that shape. ``fingerprint`` (e.g. the sha256 of the weights the function uses) is
    recorded in RUNs for provenance. ``input_shape`` None: the size is taken from the images
    (:func:`~onepixel.models.base.sized_for`).
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray],
                 input_shape: tuple[int, int, int] | None = None, name: str = "callable",
                 batch_size: int = 0, fingerprint: str = "", n_classes: int = 1):
        if not callable(fn):
            raise ModelError(f"{name}: expected a callable, got {type(fn).__name__}")
        if not is_integer(n_classes) or n_classes < 1:
            raise ModelError(f"{name}: n_classes is 1 (binary: one score per image) or the "
                             f"number K >= 2 of class probabilities per image, got {n_classes!r}")
        self.fn = fn
        self.name = name
        self.batch_size = batch_size
        self.fingerprint = fingerprint
        self.n_classes = int(n_classes)
        self.size_from_images = input_shape is None
        self._input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)

    def with_input_shape(self, input_shape: tuple[int, int, int]) -> CallableClassifier:
        """This function as a classifier of images of ``input_shape`` (H, W, C)."""
        return CallableClassifier(self.fn, input_shape, self.name, self.batch_size,
                                  self.fingerprint, self.n_classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        if self._input_shape is None:
            raise unsized_error(self.name)
        return self._input_shape  # type: ignore[return-value]

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(fingerprint=self.fingerprint, n_classes=self.n_classes)

    def scores(self, images: np.ndarray) -> np.ndarray:
        images = check_batch(images, self._input_shape, self.name)
        bs = self.batch_size or len(images)
        parts = [self._call(images[i : i + bs]) for i in range(0, len(images), bs)]
        extra = (self.n_classes,) if self.n_classes > 1 else ()
        return np.concatenate(parts) if parts else np.empty((0, *extra))

    def _call(self, chunk: np.ndarray) -> np.ndarray:
        want = (len(chunk), self.n_classes) if self.n_classes > 1 else (len(chunk),)
        out = np.asarray(self.fn(chunk), dtype=np.float64)
        out = out.reshape(want) if out.size == int(np.prod(want)) else out
        if out.shape != want:
            raise ModelError(f"{self.name} returned scores of shape {out.shape} for {len(chunk)} "
                             f"images; expected {want}")
        return validate_probabilities(out, self.n_classes, self.name, option="")
