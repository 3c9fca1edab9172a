"""Scoring one-pixel candidates: the evaluator protocol, its engines and the one policy that picks.

An evaluator takes base images (B, H, W, C) uint8 and candidate pixel vectors (B, P, 5) of
integers ``(x, y, r, g, b)`` and returns scores (B, P). Engines: :class:`HostEvaluator` (any
classifier; perturbed images built on the host), :class:`TorchEvaluator` (images built and
scored on the model's device), :class:`IncrementalEvaluator` (Keras networks: only what one
pixel changes is recomputed). :func:`evaluator_for` / :func:`load_attack_evaluator` choose.

Public names load on first use (:func:`onepixel._lazy.lazy_exports`).
"""

from onepixel._lazy import lazy_exports

_EXPORTS = {
    "Evaluator": "onepixel.scoring.evaluators",
    "evaluator_for": "onepixel.scoring.policy",
    "EVALUATORS": "onepixel.scoring.options",
    "HostEvaluator": "onepixel.scoring.evaluators",
    "IncrementalEvaluator": "onepixel.scoring.incremental",
    "load_attack_evaluator": "onepixel.scoring.policy",
    "make_evaluator": "onepixel.scoring.evaluators",
    "TorchEvaluator": "onepixel.scoring.evaluators",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
