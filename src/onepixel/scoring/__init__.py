"""Scoring one-pixel candidates: the evaluator protocol, its engines and the one policy that picks.

An evaluator takes base images (B, H, W, C) uint8 and candidate pixel vectors (B, P, 5) of
integers ``(x, y, r, g, b)`` and returns scores (B, P). Engines: :class:`HostEvaluator` (any
classifier; perturbed images built on the host), :class:`TorchEvaluator` (images built and
scored on the model's device), :class:`IncrementalEvaluator` (Keras networks: only what one
pixel changes is recomputed). :func:`evaluator_for` / :func:`load_attack_evaluator` choose.
"""

from onepixel.scoring.evaluators import Evaluator, HostEvaluator, TorchEvaluator, make_evaluator
from onepixel.scoring.incremental import IncrementalEvaluator
from onepixel.scoring.policy import EVALUATORS, evaluator_for, load_attack_evaluator

__all__ = ["EVALUATORS", "Evaluator", "HostEvaluator", "IncrementalEvaluator", "TorchEvaluator",
           "evaluator_for", "load_attack_evaluator", "make_evaluator"]
