"""Regenerate the golden RUNs that pin the attack's behaviour (tests/test_golden.py).

The committed files were made with the code of commit d0a4638, before the package layout
changed, by ``ONEPIXEL_ASSETS=../shared/assets python tests/golden/make_golden.py``: a test then
shows the same seed and dataset give the same attacks.csv and history.csv today. Run it again only
for a change that is meant to alter attack results, and say so in the commit.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from onepixel import assets

try:  # the layout since the architecture issue
    from onepixel.attack.campaign import run_campaign
    from onepixel.attack.config import AttackConfig, CampaignConfig
    from onepixel.optimize.de import DEConfig
except ImportError:  # the seed layout (commit d0a4638)
    from onepixel.campaign import CampaignConfig, run_campaign
    from onepixel.de import DEConfig

    from onepixel.attack import AttackConfig

HERE = Path(__file__).parent
#: name -> (updating, evaluator, tol): the papers' immediate mode on the full network with
#: their tolerance (some attacks converge early), and scipy's vectorised deferred mode on the
#: incremental evaluator (what ``auto`` picks on CPU) with no convergence test (every
#: generation runs).
RUNS = {"immediate": ("immediate", "full", 0.01), "deferred": ("deferred", "incremental", 0.0)}
SEED = 7
POPULATION = 60
MAXITER = 15


def build_dataset(root: Path, assets_dir: str | None = None) -> Path:
    """true.png and two of its rotations/flips as mitosis, false.png and two as normal."""
    true = np.asarray(Image.open(assets.ensure("true.png", assets_dir)).convert("RGB"))
    false = np.asarray(Image.open(assets.ensure("false.png", assets_dir)).convert("RGB"))
    for label, image in (("mitosis", true), ("normal", false)):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for name, variant in (("a", image), ("b", np.rot90(image)), ("c", np.fliplr(image))):
            Image.fromarray(np.ascontiguousarray(variant)).save(folder / f"{name}.png")
    return root


def campaign(dataset: Path, out: Path, updating: str, evaluator: str, tol: float) -> CampaignConfig:
    de = DEConfig(population=POPULATION, maxiter=MAXITER, seed=SEED, updating=updating, tol=tol)
    return CampaignConfig(dataset=dataset, out=out, attack=AttackConfig(de=de), batch_images=4,
                          progress=False, evaluator=evaluator)


def main() -> int:
    work = HERE / "_work"
    shutil.rmtree(work, ignore_errors=True)
    dataset = build_dataset(work / "dataset")
    for name, (updating, evaluator, tol) in RUNS.items():
        run_campaign(campaign(dataset, work / name, updating, evaluator, tol))
        for file in ("attacks.csv", "history.csv"):
            shutil.copy(work / name / file, HERE / f"{name}-{file}")
    shutil.rmtree(work)
    print(f"wrote golden RUNs to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
