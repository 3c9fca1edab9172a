"""``onepixel pareto``: fronts for images or a dataset, the budget curve, the detector's view.

Files written into ``out``:

- ``front.csv``: ``image, x, y, r, g, b, score, h``, one row per front point (by image, then h);
- ``figures/<image>.png``: every pixel the search scored (grey) and the front (h on x, score
  on y);
- ``budget_curve.csv`` and ``budget_curve.png`` (with two or more images, or a dataset): the
  share of images flipped (strongly flipped) within each colour budget H;
- ``summary.json``: the settings, per image the goal, original score, front size, best score
  and the lowest h that flips it, the budget curve and, with a detector, the share of
  successful front points it flags; with ``--campaign RUN``, the comparison with that RUN;
- ``pareto.json`` and ``images/<image>.npz``: the settings and each finished image's front, so
  that a rerun resumes (:mod:`onepixel.stealth.store`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from onepixel.attack.config import AttackConfig
from onepixel.attack.objective import plan_attack
from onepixel.datasets.images import expand_image_paths, load_image, scan_dataset
from onepixel.errors import OnepixelError
from onepixel.fileio import atomic_open, write_csv_atomic, write_json_atomic
from onepixel.models.base import capabilities_of
from onepixel.models.options import BUILTIN, ModelOptions
from onepixel.runs.schema import record_text
from onepixel.scoring.policy import load_attack_evaluator
from onepixel.stealth.config import (
    CURVE,
    CURVE_COLUMNS,
    FRONT,
    FRONT_COLUMNS,
    SUMMARY,
    ParetoConfig,
)
from onepixel.stealth.curve import BudgetCurve, budget_curve
from onepixel.stealth.pareto import ImageFront, apply_pixels, pareto_front
from onepixel.stealth.reference import campaign_pixels, compare, match
from onepixel.stealth.store import check_settings, front_path, load_front, save_front

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Detector:
    """The one-pixel detector as the pareto command uses it (built by the caller, which sits
    above :mod:`onepixel.detection`).

    Attributes
    ----------
    flag : callable
        ``flag(images uint8 (N, H, W, C)) -> (N,) bool``: which images it flags.
    info : dict
        Its calibration, recorded in summary.json.
    """

    flag: Callable[[np.ndarray], np.ndarray]
    info: dict


@dataclass(frozen=True)
class _Target:
    name: str
    image: np.ndarray
    goal: str
    original_score: float


def _figure_names(names: Sequence[str], relative: bool) -> list[str]:
    """A file name per image: a dataset's relative path, or a plain image's stem, with
    ``__`` for separators and odd characters; a repeated name gets ``-2``, ``-3``..."""
    out: list[str] = []
    for name in names:
        path = Path(name).with_suffix("")
        base = re.sub(r"[^A-Za-z0-9._-]+", "__", path.as_posix() if relative else path.name)
        base = base.strip("_") or "image"
        unique, k = base, 1
        while unique in out:
            k += 1
            unique = f"{base}-{k}"
        out.append(unique)
    return out


def _targets_from_dataset(dataset: Path, evaluator, attack: AttackConfig,
                          limit: int | None) -> tuple[list[_Target], list[dict]]:
    """The dataset's images with their goal (as a campaign plans it); skipped ones apart."""
    ds = scan_dataset(dataset)
    items = list(ds.items[:limit] if limit else ds.items)
    images = [load_image(it.path, evaluator.input_shape) for it in items]
    scores = evaluator.classifier.scores(np.stack(images))
    targets, skipped = [], []
    for it, image, score in zip(items, images, scores, strict=True):
        name = record_text(ds.relative_name(it))
        plan = plan_attack(float(score), it.positive, ds.positive_label, ds.negative_label, attack)
        if plan.skip_reason:
            skipped.append({"image": name, "reason": plan.skip_reason})
        else:
            targets.append(_Target(name, image, plan.goal, float(score)))
    return targets, skipped


def _targets_from_paths(paths: Sequence[str | Path], evaluator,
                        threshold: float) -> list[_Target]:
    """Plain images: decrease a score above ``threshold``, increase one at or below it."""
    files = expand_image_paths(paths)
    images = [load_image(p, evaluator.input_shape) for p in files]
    scores = evaluator.classifier.scores(np.stack(images))
    return [_Target(record_text(str(p)), im, "decrease" if s > threshold else "increase", float(s))
            for p, im, s in zip(files, images, scores, strict=True)]


def run_pareto(out: str | Path, images: Sequence[str | Path] = (), dataset: str | Path | None = None,
               config: ParetoConfig | None = None, model: str = BUILTIN,
               model_options: ModelOptions | None = None, defence: str | None = None,
               evaluator_kind: str = "auto", limit: int | None = None,
               detector: Detector | None = None, progress: bool = True,
               evaluator=None, campaign: str | Path | None = None,
               campaign_seed: bool = False) -> dict:
    """Search each image's front and write the files (see the module); return the summary.

    Parameters
    ----------
    out : path
        Output folder.
    images : sequence of paths
        Image files or folders; each is attacked away from its predicted side of 0.5.
    dataset : path, optional
        A ``mitosis``/``normal`` dataset instead: goals and skip rule as a campaign's.
    evaluator_kind : str
        ``--evaluator`` (:data:`onepixel.scoring.options.EVALUATORS`).
    limit : int, optional
        Only the first N images of the dataset.
    detector : Detector, optional
        Flag the attacked images of successful front points.
    evaluator : Evaluator, optional
        Use this instead of loading ``model`` (tests, callers that hold one).
    campaign : path, optional
        A one-pixel campaign RUN of the same images without a colour budget: summary.json's
        ``campaign`` compares its pixel with each front's lowest-score end
        (:mod:`onepixel.stealth.reference`).
    campaign_seed : bool
        Also put the campaign's pixel into each search's initial population.

    A rerun into the same ``out`` with the same settings loads the images already searched and
    searches the rest (:mod:`onepixel.stealth.store`); other settings are refused.
    """
    config = config or ParetoConfig()
    if bool(images) == (dataset is not None):
        raise OnepixelError("give IMAGE... or --dataset DATASET (one of them)")
    if campaign_seed and campaign is None:
        raise OnepixelError("--campaign-seed needs --campaign RUN (the RUN whose pixels seed the "
                            "search)")
    if evaluator is None:
        # One call scores one image's generation (population-sized): on CPU the incremental
        # engine's fixed cost per call loses there (0.7 s for 12 pixels vs the full network's
        # 0.1 s), so ``auto`` gets the policy's choice for small calls, "immediate"'s.
        evaluator = load_attack_evaluator(model, model_options, evaluator_kind, "immediate", 1,
                                          config.population, defence)
    if evaluator.input_shape[2] != 3:
        raise OnepixelError("pareto searches (x, y, r, g, b) pixels: the model must take RGB images")
    if dataset is not None:
        attack = AttackConfig(success_threshold=config.success_threshold,
                              strong_decrease_below=config.strong_decrease_below,
                              strong_increase_above=config.strong_increase_above)
        targets, skipped = _targets_from_dataset(Path(dataset), evaluator, attack, limit)
    else:
        targets, skipped = _targets_from_paths(images, evaluator, config.success_threshold), []
    if not targets:
        raise OnepixelError("no image to attack: every image was skipped as ambiguous "
                            f"({len(skipped)} skipped)")
    fingerprint = capabilities_of(evaluator.classifier).fingerprint
    reference = {}
    if campaign is not None:
        reference = match([t.name for t in targets], campaign_pixels(campaign, fingerprint))
        if campaign_seed and not reference:
            raise OnepixelError(f"--campaign {campaign} has no attacked image of these names: "
                                "nothing to seed the search with")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    resumed = check_settings(out, {
        "format": 1, "search": config.to_dict(), "model": model, "model_sha256": fingerprint,
        "defence": defence,
        "seeded_from": str(Path(campaign).resolve()) if campaign_seed else None})
    total = len(targets) * config.population * config.generations
    bar = tqdm(total=total, unit="px", disable=not progress, desc="pareto", dynamic_ncols=True)
    fronts: list[ImageFront] = []
    loaded = 0
    figure_names = _figure_names([t.name for t in targets], relative=dataset is not None)
    try:
        for target, figure in zip(targets, figure_names, strict=True):
            done = bar.n
            saved = front_path(out, figure)
            front = load_front(saved, target.name, target.goal) if resumed else None
            figure_file = out / "figures" / f"{figure}.png"
            if front is None:
                def step(n_eval: int, done: int = done) -> None:
                    bar.update(min(done + n_eval, total) - bar.n)

                bar.set_postfix(image=target.name[-24:], refresh=False)
                seed = reference[target.name].pixel[None] if campaign_seed and \
                    target.name in reference else None
                front = pareto_front(evaluator, target.image, target.name, target.goal,
                                     target.original_score, config, on_generation=step,
                                     seed_pixels=seed)
                save_front(saved, front)
                _front_figure(figure_file, front, config)
            else:
                loaded += 1
                if not figure_file.exists():
                    _front_figure(figure_file, front, config)
            fronts.append(front)
            bar.update(done + config.population * config.generations - bar.n)
    finally:
        bar.close()
    if loaded:
        log.info("resumed %s: %d of %d images loaded from %s", out, loaded, len(targets),
                 out / "images")
    write_csv_atomic(out / FRONT, FRONT_COLUMNS, [
        (f.name, *map(int, p), f"{s:.10g}", f"{h:.10g}")
        for f in fronts for p, s, h in zip(f.pixels, f.score, f.h, strict=True)])
    curve = budget_curve(fronts, config)
    summary = {
        "model": model,
        "source": str(dataset) if dataset is not None else "images",
        "search": {"algorithm": "pymoo NSGA-II, integer (x, y, r, g, b)", **config.to_dict()},
        "h": "RMSE in [0, 1] between the colour and the mean of its existing neighbours in the "
             "original image (onepixel.attack.budget)",
        "n_images": len(fronts),
        "resumed_images": loaded,
        "skipped": skipped,
        "images": [_image_summary(f, curve, config) for f in fronts],
        "lowest_flip_h": curve.lowest_h,
        "lowest_strong_flip_h": curve.lowest_h_strong,
        "budget_curve": [dict(zip(CURVE_COLUMNS, row, strict=True)) for row in curve.rows()],
    }
    if dataset is not None or len(fronts) > 1:
        write_csv_atomic(out / CURVE, CURVE_COLUMNS, curve.rows())
        _curve_figure(out / "budget_curve.png", curve)
    if campaign is not None:
        summary["campaign"] = compare(fronts, {t.name: t.image for t in targets}, reference,
                                      evaluator.classifier, campaign, campaign_seed)
    if detector is not None:
        summary["detector"] = detect_fronts(fronts, {t.name: t.image for t in targets}, detector,
                                            config)
    write_json_atomic(out / SUMMARY, summary)
    return summary


def _image_summary(f: ImageFront, curve: BudgetCurve, config: ParetoConfig) -> dict:
    best = int(np.argmin(f.energy())) if len(f.score) else None
    return {"image": f.name, "goal": f.goal, "original_score": f.original_score,
            "front_size": len(f.score), "evaluated": len(f.evaluated_score),
            "best_score": None if best is None else float(f.score[best]),
            "best_h": None if best is None else float(f.h[best]),
            "lowest_flip_h": curve.lowest_h[f.name],
            "lowest_strong_flip_h": curve.lowest_h_strong[f.name],
            "seconds": round(f.seconds, 3)}


def detect_fronts(fronts: Sequence[ImageFront], originals: dict, detector: Detector,
                  config: ParetoConfig) -> dict:
    """The detector on the originals and on the attacked images of successful front points.

    Returns the shares flagged: of every successful front point, of each image's stealthiest
    successful point (its lowest h), and of the originals.
    """
    flagged_points, stealthiest, n_points = 0, [], 0
    for f in fronts:
        success = np.asarray(config.judge(f.goal, f.score)[0], bool)
        if not success.any():
            continue
        adv = apply_pixels(originals[f.name], f.pixels[success])
        flags = np.asarray(detector.flag(adv), bool)
        flagged_points += int(flags.sum())
        n_points += len(flags)
        stealthiest.append(bool(flags[np.argmin(f.h[success])]))
    orig_flags = np.asarray(detector.flag(np.stack([originals[f.name] for f in fronts])), bool)

    def share(k: int, n: int) -> float | None:
        return k / n if n else None

    return {"calibration": detector.info,
            "successful_points": n_points,
            "successful_points_flagged": share(flagged_points, n_points),
            "images_with_success": len(stealthiest),
            "stealthiest_success_flagged": share(sum(stealthiest), len(stealthiest)),
            "originals_flagged": share(int(orig_flags.sum()), len(orig_flags))}


def _save(fig, path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")


def _front_figure(path: Path, f: ImageFront, config: ParetoConfig) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 3.6), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(f.evaluated_h, f.evaluated_score, s=4, c="0.75", lw=0, label="evaluated pixels")
    ax.plot(f.h, f.score, "o-", color="C3", ms=3.5, lw=1, label="front")
    ax.axhline(config.success_threshold, ls=":", color="0.3", lw=0.8)
    ax.axhline(f.original_score, ls="--", color="C0", lw=0.8, label="original")
    ax.set_xlabel("h (visibility)")
    ax.set_ylabel("score")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{f.name} ({f.goal})", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    _save(fig, path)


def _curve_figure(path: Path, curve: BudgetCurve) -> None:
    from matplotlib.figure import Figure

    n = max(curve.n_images, 1)
    fig = Figure(figsize=(4.6, 3.4), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.step(curve.budgets, curve.success / n, where="post", color="C3", label="success (0.5)")
    ax.step(curve.budgets, curve.strong / n, where="post", color="C1", ls="--",
            label="strong success (0.05 / 0.95)")
    ax.set_xlabel("colour budget H (max h)")
    ax.set_ylabel(f"share of {curve.n_images} images flipped")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, path)
