"""The one place that picks how a model is loaded and how its candidates are scored.

Attacks and confidence maps ask here; nothing else decides between the full network (ONNX
Runtime or torch) and the incremental engines, or re-reads a model spec to guess. A ``defence``
(``--defence``, :mod:`onepixel.defences`) wraps the loaded model here too: a defended model is
scored whole (no layers, no on-device engine), so no engine bypasses the defence.
"""

from __future__ import annotations

import logging

from onepixel.defences.spec import parse_defence
from onepixel.defences.wrapper import defend
from onepixel.errors import ConfmapError, ModelError, OnepixelError
from onepixel.models.base import Classifier, capabilities_of, declared_input_shape, sized_for
from onepixel.models.registry import ModelOptions, is_keras_spec, load_classifier
from onepixel.models.torch_backend import resolve_device
from onepixel.scoring.evaluators import Evaluator, make_evaluator
from onepixel.scoring.incremental import IncrementalEvaluator
from onepixel.scoring.options import (
    AUTO_BATCH_IMAGES,
    EVALUATORS,
    INCREMENTAL_CPU_BATCH,
)

log = logging.getLogger(__name__)

def _check_kind(kind: str) -> None:
    if kind not in EVALUATORS:
        raise OnepixelError(f"unknown evaluator {kind!r}: use one of {', '.join(EVALUATORS)}")


def incremental_pays_off(on_cpu: bool, updating: str, images_per_call: int | None = None) -> bool:
    """Whether ``auto`` picks the incremental evaluator for an attack.

    On CPU when the attack scores whole generations at once (``updating="deferred"``: about
    1.8x the full network there). Immediate updating holds one candidate per image per call;
    from :data:`IMMEDIATE_INCREMENTAL_IMAGES` images per call the incremental evaluator might
    pay for its fixed cost per call, but that is not measured yet (a bench of 256 images did
    not finish within this session's limit), so ``auto`` keeps the full network there until it
    is (``images_per_call`` is taken for that switch). On CUDA the full network runs whole
    batches fast (bench/results/attack-cpu.md).
    """
    del images_per_call  # see the docstring: the immediate-mode switch awaits its measurement
    return on_cpu and updating == "deferred"


def evaluator_for(classifier: Classifier, kind: str = "auto",
                  updating: str = "immediate", pixels: int = 1,
                  images_per_call: int | None = None) -> Evaluator:
    """An evaluator for a loaded ``classifier``: see :data:`EVALUATORS`.

    ``updating`` is the attack's (:class:`~onepixel.optimize.de.DEConfig`; scipy's default,
    immediate). ``incremental`` needs a classifier that declares its layers
    (:attr:`~onepixel.models.base.Capabilities.layers`), one score per image and one pixel per
    candidate (``pixels``).
    """
    _check_kind(kind)
    caps = capabilities_of(classifier)
    if kind == "incremental" and (pixels != 1 or caps.n_classes != 1):
        raise OnepixelError("--evaluator incremental scores one-pixel candidates of binary Keras "
                            "models; use --evaluator full (or auto) for --pixels > 1 or a "
                            "multi-class model")
    if kind == "incremental" and not caps.layers:
        raise OnepixelError(
            f"--evaluator incremental needs a Keras or built-in model run by torch; "
            f"{getattr(classifier, 'name', type(classifier).__name__)} is "
            f"{type(classifier).__name__} (use --evaluator full)")
    if kind == "incremental" or (kind == "auto" and caps.layers and pixels == 1
                                 and caps.n_classes == 1
                                 and incremental_pays_off(caps.on_cpu, updating, images_per_call)):
        batch = INCREMENTAL_CPU_BATCH if caps.on_cpu else 4096
        return IncrementalEvaluator(classifier, max_batch=batch)
    return make_evaluator(classifier)


def load_attack_evaluator(spec: str, options: ModelOptions | None = None,
                          kind: str = "auto", updating: str = "immediate",
                          pixels: int = 1, images_per_call: int | None = None,
                          defence: str | None = None, image_shape=None) -> Evaluator:
    """Load model ``spec`` for attacks, with the fastest exact evaluator for it.

    Where :func:`evaluator_for` would choose the incremental evaluator (and no ``engine`` is
    chosen), Keras and built-in models are loaded with their layers so that it applies;
    otherwise as :func:`~onepixel.models.load_classifier` loads them by default. With a
    ``defence`` the attack queries the defended pipeline, scored whole (the host evaluator).
    ``image_shape`` ((H, W, C), or a function that returns it, called only when needed) sizes a
    model that takes its size from the images (:func:`~onepixel.models.base.sized_for`).
    """
    options = options or ModelOptions()
    _check_kind(kind)
    if parse_defence(defence):
        if kind == "incremental":
            raise OnepixelError("--evaluator incremental scores the network's layers and would "
                                "bypass --defence; use --evaluator full (or auto)")
        return evaluator_for(load_scoring_classifier(spec, options, defence, image_shape), "full",
                             updating, pixels, images_per_call)
    if kind == "incremental" and options.engine == "onnxruntime":
        raise OnepixelError("--evaluator incremental runs the network itself with torch: drop "
                            "--engine onnxruntime, or use --evaluator full")
    on_cpu = resolve_device(options.device).type == "cpu"
    incremental = kind == "incremental" or (kind == "auto" and options.engine == "auto" and pixels == 1
                                            and incremental_pays_off(on_cpu, updating, images_per_call))
    if incremental and is_keras_spec(spec):
        return evaluator_for(load_classifier(spec, options, layers=True), kind, updating, pixels,
                             images_per_call)
    return evaluator_for(_sized(load_classifier(spec, options), image_shape),
                         "full" if kind == "auto" else kind, updating, pixels, images_per_call)


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
                            method: str = "auto", defence: str | None = None) -> Classifier:
    """Load a model for confidence maps.

    Keras and built-in models get their layers (so the exact fast path applies) unless
    ``method`` is ``brute`` or ONNX Runtime is asked for; then the default loading (ONNX
    Runtime on CPU: the fastest brute force there). With a ``defence``, the defended model
    is mapped by brute force (the fast path would bypass the defence).
    """
    options = options or ModelOptions()
    if parse_defence(defence):
        if method == "fast":
            raise ConfmapError("--method fast walks the network's layers and would bypass "
                               "--defence; use --method brute (or auto)")
        return load_scoring_classifier(spec, options, defence)
    if method == "brute" or not is_keras_spec(spec) or options.engine == "onnxruntime":
        return load_classifier(spec, options)
    try:
        return load_classifier(spec, options, layers=True)
    except ModelError as exc:
        raise ConfmapError(str(exc)) from exc
