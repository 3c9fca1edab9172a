"""The one-pixel attack: objective, goals, the papers' skip rule, and campaigns over datasets.

This package is also the one-call attack: ``onepixel.attack(model, images, labels)`` calls
:func:`onepixel.attack.oneshot.attack` (see there). A function of that name in ``onepixel``'s
namespace would be replaced by this package as soon as any ``onepixel.attack.*`` module is
imported (the import system sets the attribute), so the package module itself is callable:
whatever imported what, ``onepixel.attack`` is this module and calling it attacks.

Public names load on first use (:func:`onepixel._lazy.lazy_exports`).
"""

import sys
import types

from onepixel._lazy import lazy_exports

_EXPORTS = {
    "attack": "onepixel.attack.oneshot",
    "attack_result": "onepixel.attack.objective",
    "AttackConfig": "onepixel.attack.config",
    "AttackOutput": "onepixel.attack.oneshot",
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


class _CallablePackage(types.ModuleType):
    """This package's module type: calling it runs :func:`onepixel.attack.oneshot.attack`."""

    def __call__(self, *args, **kwargs):
        from onepixel.attack.oneshot import attack

        return attack(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
