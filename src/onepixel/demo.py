"""``onepixel demo``: the whole study on the built-in model and real images, in one command.

1. builds the demo dataset (:mod:`onepixel.datasets.demo`) in ``OUT/dataset``;
2. attacks it in both directions with the papers' settings into ``OUT/run`` (resumable);
3. analyzes the run (``OUT/run/analysis``);
4. computes confidence maps for the most and the least successful mitosis-to-normal attack
   (a coarse colour step on CPU, the papers' step 5 on a GPU);
5. writes ``OUT/run/report.html`` and returns the headline numbers.

Running it again reuses what is already there (dataset, finished attacks, finished maps).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from onepixel.attack.config import AttackConfig, CampaignConfig
from onepixel.models.options import BUILTIN, ModelOptions, resolve_device
from onepixel.runs.reader import load_run
from onepixel.runs.summary import headlines

log = logging.getLogger(__name__)

CPU_CONFMAP_STEP = 85  # levels 0, 85, 170, 255: 64 colours, 262,144 evaluations per map
GPU_CONFMAP_STEP = 5  # the papers' grid: 140,608 colours, 575,930,368 evaluations per map


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo; the attack uses the papers' defaults."""

    out: Path = Path("onepixel-demo")
    model: str = BUILTIN
    model_options: ModelOptions = field(default_factory=ModelOptions)
    n_normal: int = 40
    confmap_step: int | None = None  # None: 5 on CUDA, 85 on CPU
    confmaps: bool = True
    progress: bool = True
    attack: AttackConfig = field(default_factory=AttackConfig)  # the papers' settings


@dataclass(frozen=True)
class DemoResult:
    """Where things are and the headline numbers."""

    report: Path
    run: Path
    summary: dict
    headlines: tuple[str, ...]
    seconds: dict[str, float]


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Run the whole demo (see the module docstring)."""
    # Here, not at import time: the CLI reads DemoConfig's defaults without loading torch.
    from onepixel.attack.campaign import run_campaign
    from onepixel.confmap.config import ConfmapConfig
    from onepixel.confmap.run_maps import confmap_run
    from onepixel.datasets.demo import build_demo_dataset
    from onepixel.report import analyze_run, write_report
    from onepixel.scoring.policy import load_attack_evaluator

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    # The model as the attack will run it (the incremental evaluator needs an eager network).
    classifier = load_attack_evaluator(cfg.model, cfg.model_options,
                                       updating=cfg.attack.de.updating).classifier
    dataset = cfg.out / "dataset"
    if not (dataset / "dataset.json").exists():
        info = build_demo_dataset(dataset, classifier, cfg.n_normal, cfg.model_options.assets_dir)
        log.info("demo dataset: %d mitosis, %d normal images in %s", info.n_mitosis,
                 info.n_normal, dataset)
    seconds["dataset"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    run = cfg.out / "run"
    campaign = CampaignConfig(dataset=dataset, out=run, model=cfg.model,
                              model_options=cfg.model_options, attack=cfg.attack,
                              progress=cfg.progress)
    summary = run_campaign(campaign, classifier)
    seconds["attack"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    analyze_run(run)
    seconds["analyze"] = time.perf_counter() - t0

    if cfg.confmaps:
        t0 = time.perf_counter()
        on_gpu = resolve_device(cfg.model_options.device).type == "cuda"
        step = cfg.confmap_step or (GPU_CONFMAP_STEP if on_gpu else CPU_CONFMAP_STEP)
        chosen = _confmap_images(run)
        if chosen:
            confmap_run(run, chosen, ConfmapConfig(step=step, progress=cfg.progress,
                                                   device=cfg.model_options.device),
                        model_options=cfg.model_options)
        seconds["confmaps"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    report = write_report(run)
    seconds["report"] = time.perf_counter() - t0
    return DemoResult(report, run, summary, headlines(summary, load_run(run).attacks), seconds)


def _confmap_images(run: Path) -> list[str]:
    """The most and the least successful attack of one direction (mitosis-to-normal when it
    was attacked): one map of a success and one of a failure, not four."""
    from onepixel.confmap.run_maps import select_run_images
    from onepixel.errors import ConfmapError

    try:
        picks = select_run_images(run)
    except ConfmapError:  # nothing was attacked: no map to draw
        return []
    goal = "decrease" if any(p.goal == "decrease" for p in picks) else picks[0].goal
    return list(dict.fromkeys(p.image for p in picks if p.goal == goal))
