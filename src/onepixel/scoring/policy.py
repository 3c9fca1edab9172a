"""The one place that picks how a model is loaded and how its candidates are scored.

Attacks and confidence maps ask here; nothing else decides between the full network (ONNX
Runtime or torch) and the incremental engines, or re-reads a model spec to guess. A ``defence``
(``--defence``, :mod:`onepixel.defences`) wraps the loaded model here too: a defended model is
scored whole (no layers, no on-device engine), so no engine bypasses the defence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from onepixel.defences.spec import parse_defence
from onepixel.defences.wrapper import defend
from onepixel.errors import ConfigError, ConfmapError, ModelError
from onepixel.models.base import Classifier, capabilities_of, declared_input_shape, sized_for
from onepixel.models.registry import ModelOptions, is_keras_spec, load_classifier
from onepixel.models.torch_backend import resolve_device
from onepixel.scoring.evaluators import Evaluator, make_evaluator
from onepixel.scoring.incremental import IncrementalEvaluator
from onepixel.scoring.measure import EngineChoice, choose_evaluator
from onepixel.scoring.options import (
    AUTO_BATCH_IMAGES,
    EVALUATORS,
    INCREMENTAL_CPU_BATCH,
)

log = logging.getLogger(__name__)

def _check_kind(kind: str) -> None:
    if kind not in EVALUATORS:
        raise ConfigError(f"unknown evaluator {kind!r}: use one of {', '.join(EVALUATORS)}",
                          field="CampaignConfig.evaluator")


def incremental_pays_off(on_cpu: bool, updating: str) -> bool:
    """The rule ``auto`` falls back on when it has no call shape to measure: the incremental
    evaluator on CPU when the attack scores whole generations at once (``updating="deferred"``),
    the full network otherwise (bench/results/attack-cpu.md)."""
    return on_cpu and updating == "deferred"


def call_shape_for(batch_images: int | None, updating: str, population: int) -> tuple[int, int] | None:
    """(images, candidates per image) of an attack's model calls: a deferred generation scores
    the whole population of every image at once, immediate updating one candidate per image."""
    if not batch_images:
        return None
    return int(batch_images), int(population) if updating == "deferred" else 1


@dataclass(frozen=True)
class PickedEvaluator:
    """An evaluator and, where ``auto`` measured, the :class:`EngineChoice` that picked it."""

    evaluator: Evaluator
    choice: EngineChoice | None = None


def _incremental_eligible(caps, pixels: int) -> bool:
    return caps.layers and pixels == 1 and caps.n_classes == 1


def _incremental(classifier: Classifier) -> IncrementalEvaluator:
    caps = capabilities_of(classifier)
    return IncrementalEvaluator(classifier, max_batch=INCREMENTAL_CPU_BATCH if caps.on_cpu else 4096)


def pick_evaluator(classifier: Classifier, kind: str = "auto", updating: str = "immediate",
                   pixels: int = 1, call_shape: tuple[int, int] | None = None,
                   measure: bool | Path = True) -> PickedEvaluator:
    """:func:`evaluator_for`, with the measurement behind an ``auto`` choice.

    With ``kind="auto"``, a classifier whose layers the incremental evaluator can walk, and a
    ``call_shape`` (images, candidates per image), both evaluators are timed on that shape
    (:func:`onepixel.scoring.measure.choose_evaluator`) and the faster one is returned;
    ``measure`` False (or no call shape) falls back on :func:`incremental_pays_off`. A path for
    ``measure`` is the decision cache to use.
    """
    _check_kind(kind)
    caps = capabilities_of(classifier)
    if kind == "incremental" and (pixels != 1 or caps.n_classes != 1):
        raise ConfigError("the incremental evaluator scores one-pixel candidates of binary Keras "
                          "models; use evaluator 'full' (or 'auto') for AttackConfig.pixels > 1 or a "
                          "multi-class model", field="CampaignConfig.evaluator")
    if kind == "incremental" and not caps.layers:
        raise ConfigError(
            f"the incremental evaluator needs a Keras or built-in model run by torch and loaded "
            f"with its layers; {getattr(classifier, 'name', 'this model')} is not (use evaluator "
            "'full', or load a Keras/built-in model with load_classifier(..., layers=True))",
            field="CampaignConfig.evaluator")
    if kind == "incremental":
        return PickedEvaluator(_incremental(classifier))
    if kind == "full" or not _incremental_eligible(caps, pixels):
        return PickedEvaluator(make_evaluator(classifier))
    if measure is not False and call_shape is not None:
        options = {"incremental": _incremental(classifier), "full": make_evaluator(classifier)}
        choice = choose_evaluator(options, call_shape, model=caps.fingerprint,
                                  cache=True if measure is True else measure)
        return PickedEvaluator(options[choice.chosen], choice)
    if incremental_pays_off(caps.on_cpu, updating):
        return PickedEvaluator(_incremental(classifier))
    return PickedEvaluator(make_evaluator(classifier))


def evaluator_for(classifier: Classifier, kind: str = "auto",
                  updating: str = "immediate", pixels: int = 1,
                  call_shape: tuple[int, int] | None = None) -> Evaluator:
    """An evaluator for a loaded ``classifier``: see :data:`EVALUATORS`.

    ``updating`` is the attack's (:class:`~onepixel.optimize.de.DEConfig`; scipy's default,
    immediate). ``incremental`` needs a classifier that declares its layers
    (:attr:`~onepixel.models.base.Capabilities.layers`), one score per image and one pixel per
    candidate (``pixels``). ``auto`` measures both where both apply and ``call_shape`` is given
    (:func:`pick_evaluator`).
    """
    return pick_evaluator(classifier, kind, updating, pixels, call_shape).evaluator


def pick_attack_evaluator(spec: str, options: ModelOptions | None = None,
                          kind: str = "auto", updating: str = "immediate",
                          pixels: int = 1, call_shape: tuple[int, int] | None = None,
                          *, defence: str | None = None, measure: bool | Path = True,
                          image_shape=None) -> PickedEvaluator:
    """:func:`load_attack_evaluator`, with the :class:`EngineChoice` behind an ``auto`` pick.

    With ``auto``, a Keras or built-in model, one pixel, no engine chosen and a ``call_shape``,
    the model is loaded twice, with its layers (for the incremental evaluator) and as
    :func:`~onepixel.models.load_classifier` loads it by default (ONNX Runtime on CPU), both
    are timed on the call shape and the faster is kept. ``image_shape`` ((H, W, C), or a
    function that returns it, called only when needed) sizes a model that takes its size from
    the images (:func:`~onepixel.models.base.sized_for`).
    """
    options = options or ModelOptions()
    _check_kind(kind)
    if parse_defence(defence):
        if kind == "incremental":
            raise ConfigError("the incremental evaluator scores the network's layers and would "
                              "bypass the defence; use evaluator 'full' (or 'auto')",
                              field="CampaignConfig.evaluator")
        return pick_evaluator(load_scoring_classifier(spec, options, defence, image_shape), "full",
                              updating, pixels)
    if kind == "incremental" and options.engine == "onnxruntime":
        raise ConfigError("the incremental evaluator runs the network itself with torch: leave "
                          "ModelOptions.engine at 'auto' (not 'onnxruntime'), or use evaluator 'full'",
                          field="CampaignConfig.evaluator")
    keras = is_keras_spec(spec)
    if kind == "incremental" and keras:
        return pick_evaluator(load_classifier(spec, options, layers=True), kind, updating, pixels)
    if kind == "auto" and keras and options.engine == "auto" and pixels == 1:
        measuring = measure is not False and call_shape is not None
        on_cpu = resolve_device(options.device).type == "cpu"
        if measuring or incremental_pays_off(on_cpu, updating):
            layered = load_classifier(spec, options, layers=True)
            caps = capabilities_of(layered)
            if _incremental_eligible(caps, pixels) and measuring:
                default = load_classifier(spec, options)
                candidates = {"incremental": _incremental(layered), "full": make_evaluator(default)}
                choice = choose_evaluator(candidates, call_shape, model=caps.fingerprint,
                                          cache=True if measure is True else measure)
                return PickedEvaluator(candidates[choice.chosen], choice)
            if _incremental_eligible(caps, pixels):
                return PickedEvaluator(_incremental(layered))
    return pick_evaluator(_sized(load_classifier(spec, options), image_shape),
                          "full" if kind == "auto" else kind, updating, pixels)


def load_attack_evaluator(spec: str, options: ModelOptions | None = None,
                          kind: str = "auto", updating: str = "immediate",
                          pixels: int = 1, call_shape: tuple[int, int] | None = None,
                          *, defence: str | None = None, image_shape=None) -> Evaluator:
    """Load model ``spec`` for attacks, with the fastest exact evaluator for it.

    ``auto`` times the incremental evaluator against the full network on ``call_shape`` where
    both apply (:func:`pick_attack_evaluator`); otherwise Keras and built-in models are loaded as
    :func:`~onepixel.models.load_classifier` loads them by default. With a ``defence`` the attack
    queries the defended pipeline, scored whole (the host evaluator). ``image_shape`` sizes a
    model that takes its size from the images (:func:`pick_attack_evaluator`).
    """
    return pick_attack_evaluator(spec, options, kind, updating, pixels, call_shape,
                                 defence=defence, image_shape=image_shape).evaluator


def _sized(classifier: Classifier, image_shape) -> Classifier:
    """``classifier`` sized by ``image_shape`` (a shape or a function giving it) if it takes its
    size from the images and a shape is given."""
    if image_shape is None or declared_input_shape(classifier) is not None:
        return classifier
    return sized_for(classifier, image_shape() if callable(image_shape) else image_shape)


def auto_batch_images(n_images: int, on_cpu: bool) -> int:
    """Images to attack at once when the campaign does not say: all, up to
    :data:`AUTO_BATCH_IMAGES` for the device."""
    return max(1, min(n_images, AUTO_BATCH_IMAGES["cpu" if on_cpu else "cuda"]))


def load_scoring_classifier(spec: str, options: ModelOptions | None = None,
                            defence: str | None = None, image_shape=None) -> Classifier:
    """Load a model to score whole images (``predict``, ``serve``), behind ``defence`` if given
    (``image_shape`` as for :func:`load_attack_evaluator`).

    Raises
    ------
    ConfigError
        A malformed ``defence`` spec (the message names ``--defence``).
    """
    parse_defence(defence)  # a bad spec fails before the model loads
    return defend(_sized(load_classifier(spec, options or ModelOptions()), image_shape), defence)


def load_confmap_classifier(spec: str, options: ModelOptions | None = None,
                            evaluator: str = "auto", defence: str | None = None) -> Classifier:
    """Load a model for confidence maps.

    Keras and built-in models get their layers (so the exact incremental evaluator applies)
    unless ``evaluator`` is ``full`` or ONNX Runtime is asked for; then the default loading
    (ONNX Runtime on CPU: the fastest full network there). With a ``defence``, the defended
    model is scored whole (the incremental evaluator would bypass the defence).
    """
    options = options or ModelOptions()
    if parse_defence(defence):
        if evaluator == "incremental":
            raise ConfigError("ConfmapConfig.evaluator='incremental' walks the network's layers and "
                               "would bypass the defence; use 'full' (or 'auto')",
                               field="ConfmapConfig.evaluator")
        return load_scoring_classifier(spec, options, defence)
    if evaluator == "full" or not is_keras_spec(spec) or options.engine == "onnxruntime":
        return load_classifier(spec, options)
    try:
        return load_classifier(spec, options, layers=True)
    except ModelError as exc:
        raise ConfmapError(str(exc)) from exc
