"""The one-pixel attack: objective, goals, the papers' skip rule, and campaigns over datasets.

Public names load on first use (:func:`onepixel._lazy.lazy_exports`).
"""

from onepixel._lazy import lazy_exports

_EXPORTS = {
    "attack_result": "onepixel.attack.objective",
    "AttackConfig": "onepixel.attack.config",
    "AttackPlan": "onepixel.attack.objective",
    "AttackResult": "onepixel.runs.schema",
    "CampaignConfig": "onepixel.attack.config",
    "Goal": "onepixel.runs.schema",
    "judge": "onepixel.attack.objective",
    "OnePixelAttack": "onepixel.attack.objective",
    "plan_attack": "onepixel.attack.objective",
    "problem_id_for": "onepixel.attack.objective",
    "run_campaign": "onepixel.attack.campaign",
    "skipped_result": "onepixel.attack.objective",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
