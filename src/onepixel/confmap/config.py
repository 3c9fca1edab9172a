"""Confidence-map settings (light: numpy only, so the CLI can read the defaults)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepixel.confmap.result import check_step, colour_levels
from onepixel.errors import ConfigError

#: How a map scores its candidates (the attack's word, :data:`onepixel.scoring.options.EVALUATORS`):
#: the exact incremental network, the full network, or ``auto`` (incremental where it applies).
EVALUATORS = ("auto", "incremental", "full")


@dataclass(frozen=True)
class ConfmapConfig:
    """How to compute a confidence map.

    Attributes
    ----------
    step : int
        Grid spacing per channel, 1..255 (5: the papers' 52^3 = 140,608 colours).
    evaluator : {"auto", "incremental", "full"}
        ``incremental`` recomputes only the window of the network a pixel changes (exact; Keras
        and built-in models loaded with their layers); ``full`` scores every candidate through
        the whole network (any classifier); ``auto`` takes incremental where it applies.
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
    evaluator: str = "auto"
    batch_size: int | None = None
    device: str = "auto"
    dtype: str = "float32"
    checkpoint_seconds: float = 60.0
    progress: bool = True
    pixels: tuple[tuple[int, int], ...] | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        try:
            check_step(self.step)
        except ConfigError as exc:
            raise ConfigError(f"ConfmapConfig.step: {exc}", field="ConfmapConfig.step") from None
        if self.evaluator not in EVALUATORS:
            raise ConfigError(f"ConfmapConfig.evaluator must be one of {', '.join(EVALUATORS)}, "
                              f"got {self.evaluator!r}", field="ConfmapConfig.evaluator")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or self.batch_size < 1):
            raise ConfigError(f"ConfmapConfig.batch_size must be a positive integer or None, "
                              f"got {self.batch_size!r}", field="ConfmapConfig.batch_size")
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            raise ConfigError(f"ConfmapConfig.workers must be a positive integer or None, "
                              f"got {self.workers!r}",
                              field="ConfmapConfig.workers")
        if not self.checkpoint_seconds > 0:
            raise ConfigError(f"ConfmapConfig.checkpoint_seconds must be > 0, "
                              f"got {self.checkpoint_seconds!r}",
                              field="ConfmapConfig.checkpoint_seconds")
        if self.pixels is not None:
            object.__setattr__(self, "pixels", tuple((int(x), int(y)) for x, y in self.pixels))
            if not self.pixels:
                raise ConfigError("ConfmapConfig.pixels is empty: give at least one (x, y) or None for all",
                                  field="ConfmapConfig.pixels")

    @property
    def levels(self) -> np.ndarray:
        return colour_levels(self.step)

    @property
    def n_colours(self) -> int:
        return len(self.levels) ** 3
