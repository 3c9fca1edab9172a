"""The one-pixel attack: objective, goals, the papers' skip rule, and campaigns over datasets."""

from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.attack.objective import (
    AttackConfig,
    AttackPlan,
    OnePixelAttack,
    attack_result,
    judge,
    plan_attack,
    problem_id_for,
    skipped_result,
)
from onepixel.runs.schema import AttackResult, Goal

__all__ = ["AttackConfig", "AttackPlan", "AttackResult", "CampaignConfig", "Goal", "OnePixelAttack",
           "attack_result", "judge", "plan_attack", "problem_id_for", "run_campaign",
           "skipped_result"]
