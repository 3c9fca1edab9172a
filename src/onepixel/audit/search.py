"""The audit's search on one image (the scan and the refinement): it lives in
:mod:`onepixel.attack.scan`, where campaigns run it as ``AttackConfig(method="scan")``; these
names are re-exported for the audit's modules."""

from onepixel.attack.scan import (
    Candidate,
    Refiner,
    apply_pixel,
    energy,
    goal_class,
    pick_best,
    prove_best,
    rescore,
    scan,
    scan_candidates,
    single_threaded_torch,
    verify,
)

__all__ = ["Candidate", "Refiner", "apply_pixel", "energy", "goal_class", "pick_best",
           "prove_best", "rescore", "scan", "scan_candidates", "single_threaded_torch", "verify"]
