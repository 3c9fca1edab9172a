"""Confidence-map settings (light: numpy only, so the CLI can read the defaults)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepixel.confmap.result import check_step, colour_levels
from onepixel.errors import ConfmapError

METHODS = ("auto", "fast", "brute")


@dataclass(frozen=True)
class ConfmapConfig:
    """How to compute a confidence map.

    Attributes
    ----------
    step : int
        Grid spacing per channel, 1..255 (5: the papers' 52^3 = 140,608 colours).
    method : {"auto", "fast", "brute"}
        ``auto`` uses the exact fast path when the classifier allows it, else brute force.
    batch_size : int or None
        Evaluations per model call; None sizes batches to the device (free GPU memory on CUDA).
    device, dtype : str
        Used only when the model is given as a spec string (see :func:`load_confmap_classifier`);
        a classifier object runs where it was loaded.
    checkpoint_seconds : float
        With a checkpoint folder, save the partial map this often.
    progress : bool
        Show a tqdm progress bar (evaluations/s, ETA).
    pixels : tuple of (x, y) or None
        Map only these pixels (others are NaN in the result); None maps all.
    workers : int or None
        Threads evaluating batches in parallel. None: on CPU torch paths one per torch thread,
        each running torch single-threaded while the map runs (small batches scale better
        across cores than torch's intra-op threads, and do not stall on a busy machine);
        1 on CUDA and for other classifiers.
    """

    step: int = 5
    method: str = "auto"
    batch_size: int | None = None
    device: str = "auto"
    dtype: str = "float32"
    checkpoint_seconds: float = 60.0
    progress: bool = True
    pixels: tuple[tuple[int, int], ...] | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        check_step(self.step)
        if self.method not in METHODS:
            raise ConfmapError(f"unknown confmap method {self.method!r}: use one of {', '.join(METHODS)}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or self.batch_size < 1):
            raise ConfmapError(f"batch size must be a positive integer or None, got {self.batch_size!r}")
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            raise ConfmapError(f"workers must be a positive integer or None, got {self.workers!r}")
        if not self.checkpoint_seconds > 0:
            raise ConfmapError(f"checkpoint interval must be > 0 seconds, got {self.checkpoint_seconds}")
        if self.pixels is not None:
            object.__setattr__(self, "pixels", tuple((int(x), int(y)) for x, y in self.pixels))
            if not self.pixels:
                raise ConfmapError("pixels is empty: give at least one (x, y) or None for all")

    @property
    def levels(self) -> np.ndarray:
        return colour_levels(self.step)

    @property
    def n_colours(self) -> int:
        return len(self.levels) ** 3
