"""`onepixel robustness`: each defence's clean cost next to the attack it stops (docs/defences.md).

The settings (:mod:`onepixel.robustness.config`) import no model code; the measurement is in
:mod:`onepixel.robustness.runner` (``run_robustness``, ``clean_cost``, ``DefenceRow``).
"""

from onepixel.robustness.config import RobustnessConfig, parse_defences, run_folder_name

__all__ = ["RobustnessConfig", "parse_defences", "run_folder_name"]
