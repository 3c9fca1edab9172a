"""onepixel: one-pixel attack robustness assessment for image classifiers.

The public API, by layer (docs/api.md has a runnable tour):

- models: :func:`load_classifier`, :class:`ModelOptions`, :class:`Classifier`, :class:`ModelIO`
- scoring: :func:`make_evaluator`, :func:`evaluator_for`, :func:`load_attack_evaluator`
- optimisation: :class:`DEConfig`, :class:`BatchDESolver`
- attacks: ``attack(model, images, labels)`` (the one call; :class:`AttackOutput`),
  :class:`OnePixelAttack`, :class:`AttackConfig`, :class:`CampaignConfig`, :func:`run_campaign`;
  :func:`evaluate`, :class:`EvaluateConfig` (the ensemble, ``onepixel evaluate``)
- RUN folders: :func:`load_run`, :class:`AttackResult`, :class:`AttackTable`, :func:`summarize`,
  :func:`summarize_run`
- confidence maps: :class:`ConfmapConfig`, :func:`compute_confmap`, :class:`ConfidenceMap`,
  :func:`save_confmap`, :func:`load_confmap`
- analysis and report: :func:`compute_analysis`, :func:`analyze_run`, :func:`write_report`
- datasets: :func:`scan_dataset`, :func:`load_image`, :func:`load_images`
- errors: :class:`OnepixelError` and its subclasses in :mod:`onepixel.errors`

Names load on first use, so ``import onepixel`` (and the CLI) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onepixel._lazy import lazy_exports
from onepixel.version import __version__

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Classifier": "onepixel.models.base",
    "ModelIO": "onepixel.models.base",
    "ModelOptions": "onepixel.models.options",
    "load_classifier": "onepixel.models.registry",
    "make_evaluator": "onepixel.scoring.evaluators",
    "evaluator_for": "onepixel.scoring.policy",
    "load_attack_evaluator": "onepixel.scoring.policy",
    "DEConfig": "onepixel.optimize.de",
    "BatchDESolver": "onepixel.optimize.de",
    "OnePixelAttack": "onepixel.attack.objective",
    # The subpackage itself, which is callable (onepixel/attack/__init__.py says why).
    "attack": "onepixel.attack",
    "AttackOutput": "onepixel.attack.oneshot",
    "AttackConfig": "onepixel.attack.config",
    "CampaignConfig": "onepixel.attack.config",
    "run_campaign": "onepixel.attack.campaign",
    "evaluate": "onepixel.evaluation.runner",
    "EvaluateConfig": "onepixel.evaluation.config",
    "AttackResult": "onepixel.runs.schema",
    "AttackTable": "onepixel.runs.reader",
    "load_run": "onepixel.runs.reader",
    "summarize": "onepixel.runs.summary",
    "summarize_run": "onepixel.runs.summary",
    "ConfmapConfig": "onepixel.confmap.config",
    "ConfidenceMap": "onepixel.confmap.result",
    "compute_confmap": "onepixel.confmap.engine",
    "save_confmap": "onepixel.confmap.engine",
    "load_confmap": "onepixel.confmap.result",
    "compute_analysis": "onepixel.analysis.compute",
    "analyze_run": "onepixel.report.analyze",
    "write_report": "onepixel.report.html",
    "scan_dataset": "onepixel.datasets.images",
    "load_image": "onepixel.datasets.images",
    "load_images": "onepixel.datasets.images",
    "OnepixelError": "onepixel.errors",
}

__all__ = [
    "AttackConfig",
    "AttackOutput",
    "AttackResult",
    "AttackTable",
    "BatchDESolver",
    "CampaignConfig",
    "Classifier",
    "ConfidenceMap",
    "ConfmapConfig",
    "DEConfig",
    "EvaluateConfig",
    "ModelIO",
    "ModelOptions",
    "OnePixelAttack",
    "OnepixelError",
    "__version__",
    "analyze_run",
    "attack",
    "compute_analysis",
    "compute_confmap",
    "evaluate",
    "evaluator_for",
    "load_attack_evaluator",
    "load_classifier",
    "load_confmap",
    "load_image",
    "load_images",
    "load_run",
    "make_evaluator",
    "run_campaign",
    "save_confmap",
    "scan_dataset",
    "summarize",
    "summarize_run",
    "write_report",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from onepixel.analysis.compute import compute_analysis
    from onepixel.attack.campaign import run_campaign
    from onepixel.attack.config import AttackConfig, CampaignConfig
    from onepixel.attack.objective import OnePixelAttack
    from onepixel.attack.oneshot import AttackOutput
    from onepixel.confmap.config import ConfmapConfig
    from onepixel.confmap.engine import compute_confmap, save_confmap
    from onepixel.confmap.result import ConfidenceMap, load_confmap
    from onepixel.datasets.images import load_image, load_images, scan_dataset
    from onepixel.errors import OnepixelError
    from onepixel.evaluation.config import EvaluateConfig
    from onepixel.evaluation.runner import evaluate
    from onepixel.models.base import Classifier, ModelIO
    from onepixel.models.options import ModelOptions
    from onepixel.models.registry import load_classifier
    from onepixel.optimize.de import BatchDESolver, DEConfig
    from onepixel.report.analyze import analyze_run
    from onepixel.report.html import write_report
    from onepixel.runs.reader import AttackTable, load_run
    from onepixel.runs.schema import AttackResult
    from onepixel.runs.summary import summarize, summarize_run
    from onepixel.scoring.evaluators import make_evaluator
    from onepixel.scoring.policy import evaluator_for, load_attack_evaluator
