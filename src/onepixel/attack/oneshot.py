"""The one-call attack: ``onepixel.attack(model, images, labels)`` for a PyTorch or numpy user.

torchattacks' ``OnePixel(model)(images, labels)`` in one call, on the campaign's engine
(:class:`~onepixel.attack.objective.OnePixelAttack` and its goals): any model
:func:`~onepixel.models.registry.load_classifier` takes (an ``nn.Module``, a model file, a
Classifier), float tensors (N, C, H, W) in [0, 1] or uint8 arrays (N, H, W, C), binary
(one score) and K-class models, labels or none (the model's own predictions).

The attack works on the uint8 grid, as every onepixel attack does: float images are rounded
to ``k / 255`` first (a warning says so when that changed them), and ``adversarial`` differs from
the rounded images in at most ``pixels`` pixels per image. Unlike a campaign it attacks every
image (no papers' skip band); an image that already meets its goal (misclassified, or already
of the target class) counts as a success with no query.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from onepixel.attack.config import AttackConfig
from onepixel.attack.goals import Decrease, Goal, Increase, Targeted, Untargeted
from onepixel.attack.objective import OnePixelAttack, problem_id_for
from onepixel.errors import ConfigError
from onepixel.models.base import capabilities_of, sized_for
from onepixel.models.options import ModelOptions
from onepixel.models.registry import load_classifier
from onepixel.optimize.de import DEConfig
from onepixel.scoring.policy import evaluator_for

log = logging.getLogger(__name__)

#: Images attacked at once (the DE's batch dimension) when the call does not say.
BATCH_IMAGES = 256


@dataclass(frozen=True)
class AttackOutput:
    """What :func:`attack` returns.

    Attributes
    ----------
    adversarial : Tensor or ndarray
        The attacked images, of the same type, shape, dtype and device as the input (every value
        on the uint8 grid: ``k / 255`` for floats).
    success : ndarray, (N,) bool
        The model's scores of ``adversarial`` meet the goal: another class than the label
        (untargeted), the target class (targeted), the other side of 0.5 (binary).
    queries : ndarray, (N,) int64
        The model evaluations of each image's search (0 for an image that already met its goal).
    pixels : ndarray, (N, k, 2 + C) int64
        The changed pixels ``(x, y, channel values...)``: ``(x, y, r, g, b)`` for RGB; -1 rows
        for images that were not attacked.
    labels : ndarray, (N,) int64
        The labels attacked: the given ones, or the model's predictions (binary: 1 when the score
        is above 0.5).
    original_scores, scores : ndarray, (N,) or (N, K) float64
        The model's probabilities of the (rounded) original and of the adversarial images.
    """

    adversarial: Any
    success: np.ndarray
    queries: np.ndarray
    pixels: np.ndarray
    labels: np.ndarray
    original_scores: np.ndarray
    scores: np.ndarray

    @property
    def success_rate(self) -> float:
        """The fraction of images whose attack succeeded."""
        return float(np.mean(self.success)) if len(self.success) else float("nan")


def attack(model, images, labels=None, *, pixels: int = 1, target=None, method: str = "de",
           seed: int = 0, maxiter: int | None = None, popsize: int | None = None,
           stop_on_success: bool = True, max_colour_diff: float | None = None,
           mean=None, std=None, model_output: str | None = None,
           options: ModelOptions | None = None, config: AttackConfig | None = None,
           batch_images: int = BATCH_IMAGES) -> AttackOutput:
    """Attack ``images`` with ``pixels`` changed pixels each; see the module docstring.

    Parameters
    ----------
    model : torch.nn.Module, str or Classifier
        An ``nn.Module`` (float NCHW input in [0, 1], logits out, unless ``options`` say
        otherwise), a model spec (``max-mitosis``, a model file, ``http://HOST:PORT``) or a
        loaded Classifier.
    images : Tensor (N, C, H, W) float in [0, 1] or uint8, or ndarray (N, H, W, C) uint8 (or
        float in [0, 1])
    labels : Tensor or ndarray (N,) of int, optional
        Class indices (binary: 1 for the positive class). Default: the model's predictions.
    pixels : int
        Pixels changed per image.
    target : int or sequence of int (N,), optional
        K-class models: the class to reach (targeted); default untargeted.
    method : str
        The search (``AttackConfig.method``): ``de``, the papers' differential evolution.
    seed : int
        Seeds every image's search (``DEConfig.seed``).
    maxiter, popsize : int, optional
        Generations and population (``DEConfig.maxiter``, ``DEConfig.population``).
    stop_on_success : bool
        Stop an image's search once its goal is met (torchattacks' and ART's behaviour; the
        papers' campaigns run every generation).
    max_colour_diff : float, optional
        The colour budget ``AttackConfig.max_colour_diff``.
    mean, std : sequence of float, optional
        Per-channel normalisation the module expects (``ModelOptions.mean``/``std``).
    model_output : {"logit", "probability"}, optional
        What the model returns (``ModelOptions.model_output``); default from the model.
    options : ModelOptions, optional
        Every other model setting; ``mean``/``std``/``model_output`` above override it.
    config : AttackConfig, optional
        Every other attack setting; the keywords above override it. Default: the papers'
        settings with ``DEConfig.updating="deferred"`` (whole generations per model call).
    batch_images : int
        Images searched at once.

    Returns
    -------
    AttackOutput

    Raises
    ------
    ConfigError
        Images, labels or targets of the wrong shape, type or range (the message names the
        argument); ``target`` for a binary model.
    ModelError
        A model that does not take images of this size (the message names ``onepixel tiles``),
        or whose outputs are not probabilities as read (it names ``ModelOptions.model_output``).
    """
    images_u8, restore = _to_uint8(images)
    n, h, w, c = images_u8.shape
    options = options or ModelOptions()
    overrides = {k: v for k, v in (("mean", _floats(mean)), ("std", _floats(std)),
                                   ("model_output", model_output)) if v is not None}
    options = replace(options, **overrides) if overrides else options
    cfg = _attack_config(config, pixels, method, seed, maxiter, popsize, stop_on_success,
                         max_colour_diff)
    was_training = getattr(model, "training", None)
    try:
        classifier = sized_for(load_classifier(model, options), (h, w, c))
        n_classes = capabilities_of(classifier).n_classes
        originals = classifier.scores(images_u8) if n else np.empty((0,))
        label_arr = _labels(labels, originals, n, n_classes)
        goals = _goals(label_arr, target, n, n_classes, cfg)
        evaluator = evaluator_for(classifier, "full", cfg.de.updating, cfg.pixels)
        engine = OnePixelAttack(evaluator, cfg)
        width = 2 + c
        found = np.full((n, cfg.pixels, width), -1, dtype=np.int64)
        queries = np.zeros(n, dtype=np.int64)
        already = np.array([g.judge(s)[0] for g, s in zip(goals, originals, strict=True)], bool)
        todo = np.flatnonzero(~already)
        for start in range(0, len(todo), max(1, int(batch_images))):
            rows = todo[start:start + max(1, int(batch_images))]
            results = engine.run(images_u8[rows], [goals[i] for i in rows],
                                 [problem_id_for(f"image {i}") for i in rows])
            for i, result in zip(rows, results, strict=True):
                found[i] = np.asarray(result.x, dtype=np.int64).reshape(cfg.pixels, width)
                queries[i] = result.nfev
        adversarial = images_u8.copy()
        for i in todo:
            for x, y, *values in found[i]:  # later pixels win, as the evaluators apply them
                adversarial[i, y, x] = values
        # Success is judged on the returned images, scored once more: what the user re-scores.
        final = classifier.scores(adversarial) if n else originals
        success = np.array([g.judge(s)[0] for g, s in zip(goals, final, strict=True)], dtype=bool)
    finally:
        if was_training is not None and hasattr(model, "train"):
            model.train(was_training)  # the module comes back in the mode it was given in
    log.info("attacked %d images: %d successes, %d queries", n, int(success.sum()),
             int(queries.sum()))
    return AttackOutput(adversarial=restore(adversarial), success=success, queries=queries,
                        pixels=found, labels=label_arr, original_scores=originals, scores=final)


def _floats(values) -> tuple[float, ...] | None:
    if values is None:
        return None
    return tuple(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))


def _attack_config(config: AttackConfig | None, pixels: int, method: str, seed: int,
                   maxiter: int | None, popsize: int | None, stop_on_success: bool,
                   max_colour_diff: float | None) -> AttackConfig:
    if config is None:
        # Whole generations per model call: a batched module runs them many times faster than
        # scipy's immediate updating (one candidate per image per call), the campaigns' default.
        config = AttackConfig(de=DEConfig(updating="deferred"))
    de_changes: dict = {"seed": int(seed)}
    if maxiter is not None:
        de_changes["maxiter"] = int(maxiter)
    if popsize is not None:
        de_changes["population"] = int(popsize)
    cfg = replace(config, de=replace(config.de, **de_changes), pixels=pixels, method=method,
                  stop_on_success=stop_on_success,
                  max_colour_diff=max_colour_diff if max_colour_diff is not None
                  else config.max_colour_diff)
    if cfg.method == "scan":
        raise ConfigError("onepixel.attack: method 'scan' runs over a dataset (run_campaign with "
                          "AttackConfig(method='scan')); use method='de'", field="attack(method)")
    return cfg


def _to_uint8(images):
    """``images`` as uint8 (N, H, W, C) numpy, and the function that turns such an array back into
    the input's type, layout, dtype and device."""
    if type(images).__module__.startswith("torch"):
        import torch

        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ConfigError(f"images: expected a tensor (N, C, H, W) with C 1 or 3, got "
                              f"{tuple(getattr(images, 'shape', ()))}")
        dtype, device = images.dtype, images.device
        host = images.detach().to("cpu")
        if dtype == torch.uint8:
            u8 = host.permute(0, 2, 3, 1).contiguous().numpy()

            def restore(adv: np.ndarray):
                return torch.from_numpy(adv).permute(0, 3, 1, 2).contiguous().to(device)
            return u8, restore
        if not dtype.is_floating_point:
            raise ConfigError(f"images: expected float in [0, 1] or uint8, got {dtype}")
        u8 = _round_floats(host.to(torch.float64).permute(0, 2, 3, 1).numpy())

        def restore_float(adv: np.ndarray):
            # The same operation as the model's input scaling (x / 255 in the compute dtype).
            t = torch.from_numpy(adv).permute(0, 3, 1, 2).contiguous().to(device)
            return t.to(dtype) / 255.0
        return u8, restore_float
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[3] not in (1, 3):
        raise ConfigError(f"images: expected an array (N, H, W, C) with C 1 or 3 (channels last), "
                          f"got {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array), lambda adv: adv
    if not np.issubdtype(array.dtype, np.floating):
        raise ConfigError(f"images: expected uint8 or float in [0, 1], got {array.dtype}")
    dtype = array.dtype
    return _round_floats(array.astype(np.float64)), lambda adv: (adv.astype(dtype) / 255).astype(dtype)


def _round_floats(x: np.ndarray) -> np.ndarray:
    if x.size and (not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1):
        raise ConfigError(f"images: float images must be in [0, 1], got values from {np.nanmin(x)} "
                          f"to {np.nanmax(x)} (give unnormalised images and the normalisation "
                          "as mean/std)")
    scaled = x * 255.0
    rounded = np.rint(scaled)
    off = float(np.abs(scaled - rounded).max(initial=0.0))
    if off > 1e-3:
        log.warning("images are not on the uint8 grid (k/255; up to %.3g/255 off): the attack "
                    "rounds them to it, and adversarial holds the rounded images", off)
    return rounded.astype(np.uint8)


def _labels(labels, originals: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    if labels is None:
        if n_classes == 1:
            return (np.asarray(originals) > 0.5).astype(np.int64)
        return np.asarray(originals).argmax(axis=1).astype(np.int64)
    if type(labels).__module__.startswith("torch"):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"labels: expected {n} integer class indices (N,), got {arr.dtype} "
                          f"{arr.shape}")
    top = 2 if n_classes == 1 else n_classes
    if n and (arr.min() < 0 or arr.max() >= top):
        raise ConfigError(f"labels: class indices must be in 0..{top - 1}"
                          f"{' (binary: 1 = positive)' if n_classes == 1 else ''}, got "
                          f"{int(arr.min())}..{int(arr.max())}")
    return arr.astype(np.int64)


def _goals(labels: np.ndarray, target, n: int, n_classes: int, cfg: AttackConfig) -> list[Goal]:
    strong = dict(strong_decrease_below=cfg.strong_decrease_below,
                  strong_increase_above=cfg.strong_increase_above)
    if n_classes == 1:
        if target is not None:
            raise ConfigError("target: a binary model (one score) is attacked towards the other "
                              "side of 0.5; leave target None")
        binary = dict(success_threshold=cfg.success_threshold, **strong)
        return [Decrease(**binary) if label == 1 else Increase(**binary) for label in labels]
    if target is None:
        return [Untargeted(true_class=int(label), **strong) for label in labels]
    if type(target).__module__.startswith("torch"):
        target = target.detach().cpu().numpy()
    targets = np.broadcast_to(np.asarray(target), (n,)) if np.ndim(target) == 0 else np.asarray(target)
    if targets.shape != (n,) or not np.issubdtype(targets.dtype, np.integer) or \
            (n and (targets.min() < 0 or targets.max() >= n_classes)):
        raise ConfigError(f"target: expected a class index in 0..{n_classes - 1}, or one per image "
                          f"(N,), got {target!r}")
    return [Targeted(target_class=int(t), **strong) for t in targets]
