"""``onepixel pareto``: fronts for images or a dataset, the budget curve, the detector's view.

Any classifier and goal: a binary model's images are pushed across 0.5 (decrease / increase), a
K-class model's away from the class it predicts (untargeted) or towards ``target`` (targeted);
RGB or greyscale images of any size (docs/pareto.md, "Any classifier and goal").

Files written into ``out``:

- ``front.csv``: ``image, x, y, r, g, b, score, h``, one row per front point (by image, then h);
  a greyscale pixel's value v as ``r = g = b = v`` (as attacks.csv); ``score`` is the goal's
  probability (the positive class, the true class or the target); K-class runs add
  ``attacked_class``, the class predicted for the attacked image;
- ``figures/<image>.png``: every pixel the search scored (grey) and the front (h on x, score
  on y);
- ``budget_curve.csv`` and ``budget_curve.png`` (with two or more images, or a dataset): the
  share of images flipped (strongly flipped) within each colour budget H;
- ``summary.json``: the settings, per image the goal, original score, front size, best score
  and the lowest h that flips it, the budget curve and, with a detector, the share of
  successful front points it flags (skipped, with ``detector_skipped`` saying why, for
  non-RGB models); with ``--campaign RUN``, the comparison with that RUN;
- ``pareto.json`` and ``images/<image>.npz``: the settings and each finished image's front, so
  that a rerun resumes (:mod:`onepixel.pareto.store`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onepixel.attack.config import AttackConfig
from onepixel.attack.goals import Decrease, Goal, Increase, Targeted, Untargeted
from onepixel.attack.objective import plan_attack, plan_multiclass
from onepixel.datasets.images import (
    expand_image_paths,
    is_unlabelled,
    limit_items,
    load_image,
    scan_dataset,
    scan_image_folder,
)
from onepixel.errors import ConfigError, DatasetError, OnepixelError
from onepixel.fileio import atomic_open, write_csv_atomic, write_json_atomic
from onepixel.models.base import capabilities_of
from onepixel.models.options import BUILTIN, ModelOptions
from onepixel.pareto.config import (
    CURVE,
    CURVE_COLUMNS,
    FRONT,
    FRONT_CLASS_COLUMN,
    FRONT_COLUMNS,
    SUMMARY,
    ParetoConfig,
)
from onepixel.pareto.curve import BudgetCurve, budget_curve
from onepixel.pareto.pareto import (
    ImageFront,
    apply_pixels,
    front_flags,
    goal_class_of,
    pareto_front,
)
from onepixel.pareto.reference import campaign_pixels, compare, match
from onepixel.pareto.store import check_settings, front_path, load_front, save_front
from onepixel.plotting import new_figure, png_bytes, styled
from onepixel.progress import progress_bar
from onepixel.runs.schema import record_text
from onepixel.scoring.policy import load_attack_evaluator

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
    """One image to search: its goal (a :class:`Goal`), and its original score under that goal."""

    name: str
    image: np.ndarray
    goal: Goal
    original_score: float
    original_class: str = ""


@dataclass(frozen=True)
class _Plan:
    """What a run searches: the targets, the images skipped, and the K-class model's class names
    (empty for a binary model) and target class."""

    targets: list[_Target]
    skipped: list[dict]
    classes: tuple[str, ...] = ()
    target: int | None = None


def resolve_target(target: str | int | None, classes: Sequence[str], where: str) -> int | None:
    """The index of ``--target`` in ``classes``: a class name, or else an index 0..K-1.

    Raises
    ------
    OnepixelError
        Neither a name nor an index of ``classes`` (``where`` says where the names come from).
    """
    if target is None:
        return None
    text = str(target).strip()
    if text in classes:
        return list(classes).index(text)
    if text.isdigit() and int(text) < len(classes):
        return int(text)
    shown = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
    raise ConfigError(f"run_pareto(target) {target!r} is not a class of the model: give a class "
                      f"name ({where}: {shown}) or an index 0..{len(classes) - 1}",
                      field="run_pareto(target)")


def _class_names(classes: Sequence[str] | None, n_classes: int) -> tuple[str, ...]:
    """Plain images' class names: ``--classes`` (K distinct names) or the indices "0".."K-1"."""
    if classes is None:
        return tuple(str(k) for k in range(n_classes))
    names = tuple(classes)
    if len(names) != n_classes or len(set(names)) != len(names):
        raise ConfigError(f"run_pareto(classes) must name the model's {n_classes} classes once each, "
                          f"in its output order; got {len(names)} name(s): {', '.join(names)}",
                          field="run_pareto(classes)")
    return names


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


def _targets_from_dataset(dataset: Path, evaluator, attack: AttackConfig, limit: int | None,
                          n_classes: int, classes: Sequence[str] | None = None,
                          target: str | None = None) -> _Plan:
    """The dataset's images with their goal, planned as a campaign plans them: a binary model's
    ``mitosis``/``normal`` folders (the papers' skip rule), a K-class model's class folders
    (ImageFolder: misclassified images and images of the target class skipped)."""
    if not Path(dataset).is_dir():
        raise DatasetError(f"run_pareto(dataset) {dataset}: folder not found")
    if n_classes == 1:
        try:
            ds = scan_dataset(dataset)
        except DatasetError as exc:
            raise DatasetError(f"run_pareto(dataset): {exc} (this model returns one score: a binary "
                               "dataset; class folders are for K-class models)") from exc
    else:
        ds = scan_image_folder(dataset, classes)
        if len(ds.classes) != n_classes:
            raise DatasetError(
                f"run_pareto(dataset) {dataset}: the model returns {n_classes} class probabilities but the "
                f"dataset has {len(ds.classes)} class folders ({', '.join(ds.classes[:12])}); give "
                f"a folder per class, or run_pareto(classes) the {n_classes} class names in the "
                "model's output order")
    items = limit_items(ds.items, limit)
    images = [load_image(it.path, evaluator.input_shape) for it in items]
    scores = evaluator.classifier.scores(np.stack(images))
    goal_index = resolve_target(target, ds.classes, f"the class folders of {dataset}") \
        if n_classes > 1 else None
    targets, skipped = [], []
    for it, image, score in zip(items, images, scores, strict=True):
        name = record_text(ds.relative_name(it))
        if n_classes == 1:
            plan = plan_attack(float(score), it.positive, ds.positive_label, ds.negative_label,
                               attack)
            original, original_class = float(score), ""
        else:
            plan = plan_multiclass(score, it.class_index, ds.classes, goal_index, attack)
            original = float(plan.objective.score(score))
            original_class = ds.classes[int(np.argmax(score))]
        if plan.skip_reason:
            skipped.append({"image": name, "reason": plan.skip_reason})
        else:
            targets.append(_Target(name, image, plan.objective, original, original_class))
    return _Plan(targets, skipped, tuple(ds.classes), goal_index)


def _targets_from_paths(paths: Sequence[str | Path], evaluator, config: ParetoConfig,
                        n_classes: int, classes: Sequence[str] | None = None,
                        target: str | None = None) -> _Plan:
    """Plain images. Binary: decrease a score above the success threshold, increase one at or
    below it. K-class: away from the predicted class (untargeted), or towards ``target``
    (images already predicted as the target are skipped)."""
    files = expand_image_paths(paths)
    images = [load_image(p, evaluator.input_shape) for p in files]
    scores = evaluator.classifier.scores(np.stack(images))
    thresholds = config.thresholds()
    if n_classes == 1:
        return _Plan([_Target(record_text(str(p)), im,
                              Decrease(**thresholds) if s > config.success_threshold
                              else Increase(**thresholds), float(s))
                      for p, im, s in zip(files, images, scores, strict=True)], [])
    names = _class_names(classes, n_classes)
    goal_index = resolve_target(target, names, "the classes given" if classes else "no class names given, so "
                                "the indices")
    targets, skipped = [], []
    for p, im, probs in zip(files, images, scores, strict=True):
        name, predicted = record_text(str(p)), int(np.argmax(probs))
        goal: Goal = Untargeted(true_class=predicted, **thresholds) if goal_index is None \
            else Targeted(target_class=goal_index, **thresholds)
        if goal_index is not None and predicted == goal_index:
            skipped.append({"image": name,
                            "reason": f"already predicted as the target class {names[predicted]}"})
            continue
        targets.append(_Target(name, im, goal, float(goal.score(probs)), names[predicted]))
    return _Plan(targets, skipped, names, goal_index)


def run_pareto(out: str | Path, images: Sequence[str | Path] = (), dataset: str | Path | None = None,
               config: ParetoConfig | None = None, model: str = BUILTIN,
               model_options: ModelOptions | None = None, defence: str | None = None,
               evaluator_kind: str = "auto", limit: int | None = None,
               detector: Detector | Callable[[], Detector] | None = None, progress: bool = True,
               evaluator=None, campaign: str | Path | None = None,
               campaign_seed: bool = False, target: str | None = None,
               classes: Sequence[str] | None = None) -> dict:
    """Search each image's front and write the files (see the module); return the summary.

    Parameters
    ----------
    out : path
        Output folder.
    images : sequence of paths
        Image files or folders. A binary model's are attacked away from their predicted side of
        0.5; a K-class model's away from their predicted class (untargeted), or towards
        ``target``.
    dataset : path, optional
        A dataset instead: ``mitosis``/``normal`` folders for a binary model, class folders
        (ImageFolder) for a K-class one; goals and skip rule as a campaign's.
    evaluator_kind : str
        ``--evaluator`` (:data:`onepixel.scoring.options.EVALUATORS`).
    limit : int, optional
        Only the first N images of the dataset.
    detector : Detector or callable returning one, optional
        Flag the attacked images of successful front points. A callable is called only when the
        detector applies (RGB images: it is calibrated on RGB H&E tiles); for other models it is
        skipped with a note (summary.json ``detector_skipped``).
    evaluator : Evaluator, optional
        Use this instead of loading ``model`` (tests, callers that hold one).
    campaign : path, optional
        A one-pixel campaign RUN of the same images without a colour budget: summary.json's
        ``campaign`` compares its pixel with each front's lowest-score end
        (:mod:`onepixel.pareto.reference`; binary models only).
    campaign_seed : bool
        Also put the campaign's pixel into each search's initial population.
    target : str, optional
        K-class models: the target class (a name, or an index 0..K-1) of a targeted search.
    classes : sequence of str, optional
        K-class models: the class names in the model's output order (for a dataset, as a
        campaign's ``--classes``; default: its sorted class folders, or for plain images the
        indices).

    A rerun into the same ``out`` with the same settings loads the images already searched and
    searches the rest (:mod:`onepixel.pareto.store`); other settings are refused.

    Raises
    ------
    OnepixelError
        ``--target`` / ``--classes`` on a binary model, an unknown target class, a dataset that
        does not fit the model, ``--campaign`` on a K-class model, and the like.
    """
    config = config or ParetoConfig()
    if bool(images) == (dataset is not None):
        raise ConfigError("run_pareto: give images or a dataset (one of them)", field="run_pareto(images)")
    if campaign_seed and campaign is None:
        raise ConfigError("run_pareto(campaign_seed) needs run_pareto(campaign) (the RUN whose "
                          "pixels seed the search)", field="run_pareto(campaign_seed)")
    if evaluator is None:
        # One call scores one image's generation (population-sized): auto times the engines
        # on exactly that call. A model that takes its size from the images gets the first
        # image's.
        evaluator = load_attack_evaluator(
            model, model_options, evaluator_kind, "immediate", 1, (1, config.population),
            defence=defence, image_shape=lambda: load_image(expand_image_paths(
                [dataset] if dataset is not None else images)[0]).shape)
    if dataset is not None and is_unlabelled(dataset):
        # A flat folder (or one file) has no labels: searched as plain images, whose goals
        # come from the model's predictions.
        images, dataset = expand_image_paths([dataset]), None
    n_classes = capabilities_of(evaluator.classifier).n_classes
    channels = int(evaluator.input_shape[2])
    if n_classes == 1 and (target is not None or classes is not None):
        raise ConfigError("run_pareto(target) and run_pareto(classes) are for K-class models; this "
                          "model returns one score (binary: each image is pushed across "
                          f"{config.success_threshold:g})",
                          field="run_pareto(target)" if target is not None else "run_pareto(classes)")
    if n_classes > 1 and campaign is not None:
        raise ConfigError("run_pareto(campaign) compares the fronts with a binary one-pixel campaign; "
                          f"this model has {n_classes} classes: leave campaign None",
                          field="run_pareto(campaign)")
    if detector is not None and channels == 3 and not isinstance(detector, Detector):
        detector = detector()  # built before the search, so that a failure costs no search
    if dataset is not None:
        plan = _targets_from_dataset(Path(dataset), evaluator, AttackConfig(**config.thresholds()),
                                     limit, n_classes, classes, target)
    else:
        plan = _targets_from_paths(images, evaluator, config, n_classes, classes, target)
    targets, skipped = plan.targets, plan.skipped
    if not targets:
        first = f": {skipped[0]['image']}, {skipped[0]['reason']}" if skipped else ""
        raise OnepixelError(f"no image to attack: every image was skipped ({len(skipped)} "
                            f"skipped{first})")
    fingerprint = capabilities_of(evaluator.classifier).fingerprint
    reference = {}
    if campaign is not None:
        reference = match([t.name for t in targets], campaign_pixels(campaign, fingerprint))
        if campaign_seed and not reference:
            raise ConfigError(f"run_pareto(campaign) {campaign} has no attacked image of these names: "
                              "nothing to seed the search with", field="run_pareto(campaign)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "format": 1, "search": config.to_dict(), "model": model, "model_sha256": fingerprint,
        "defence": defence,
        "seeded_from": str(Path(campaign).resolve()) if campaign_seed else None}
    if plan.target is not None:
        # Binary and untargeted folders lack the key (read as None): theirs stays as it was.
        settings["target"] = plan.classes[plan.target]
    resumed = check_settings(out, settings)
    total = len(targets) * config.population * config.generations
    bar = progress_bar(total=total, unit="px", disable=not progress, desc="pareto", dynamic_ncols=True)
    fronts: list[ImageFront] = []
    loaded = 0
    figure_names = _figure_names([t.name for t in targets], relative=dataset is not None)
    try:
        for target_image, figure in zip(targets, figure_names, strict=True):
            done = bar.n
            saved = front_path(out, figure)
            goal = target_image.goal
            front = load_front(saved, target_image.name, goal.name, goal_class_of(goal)) \
                if resumed else None
            figure_file = out / "figures" / f"{figure}.png"
            if front is None:
                def step(n_eval: int, done: int = done) -> None:
                    bar.update(min(done + n_eval, total) - bar.n)

                bar.set_postfix(image=target_image.name[-24:], refresh=False)
                seed = reference[target_image.name].pixel[None] if campaign_seed and \
                    target_image.name in reference else None
                front = pareto_front(evaluator, target_image.image, target_image.name, goal,
                                     target_image.original_score, config, on_generation=step,
                                     seed_pixels=seed)
                save_front(saved, front)
                _front_figure(figure_file, front, config, plan.classes)
            else:
                loaded += 1
                if not figure_file.exists():
                    _front_figure(figure_file, front, config, plan.classes)
            fronts.append(front)
            bar.update(done + config.population * config.generations - bar.n)
    finally:
        bar.close()
    if loaded:
        log.info("resumed %s: %d of %d images loaded from %s", out, loaded, len(targets),
                 out / "images")
    columns = FRONT_COLUMNS + ((FRONT_CLASS_COLUMN,) if plan.classes else ())
    write_csv_atomic(out / FRONT, columns,
                     [row for f in fronts for row in _front_rows(f, plan.classes)])
    curve = budget_curve(fronts, config)
    variables = "(x, y, r, g, b)" if channels == 3 else \
        "(x, y, v)" if channels == 1 else f"(x, y, c_1..c_{channels})"
    summary = {
        "model": model,
        "source": str(dataset) if dataset is not None else "images",
        "search": {"algorithm": f"pymoo NSGA-II, integer {variables}", **config.to_dict()},
        "h": "RMSE in [0, 1] between the colour and the mean of its existing neighbours in the "
             "original image (onepixel.attack.budget)",
    }
    if plan.classes:
        summary["classes"] = list(plan.classes)
        summary["target"] = None if plan.target is None else plan.classes[plan.target]
    originals = {t.name: t for t in targets}
    summary.update({
        "n_images": len(fronts),
        "resumed_images": loaded,
        "skipped": skipped,
        "images": [_image_summary(f, curve, config, plan.classes, originals[f.name])
                   for f in fronts],
        "lowest_flip_h": curve.lowest_h,
        "lowest_strong_flip_h": curve.lowest_h_strong,
        "budget_curve": [dict(zip(CURVE_COLUMNS, row, strict=True)) for row in curve.rows()],
    })
    if dataset is not None or len(fronts) > 1:
        write_csv_atomic(out / CURVE, CURVE_COLUMNS, curve.rows())
        _curve_figure(out / "budget_curve.png", curve, config, multiclass=bool(plan.classes))
    if campaign is not None:
        summary["campaign"] = compare(fronts, {t.name: t.image for t in targets}, reference,
                                      evaluator.classifier, campaign, campaign_seed)
    if detector is not None:
        if channels != 3:
            note = (f"the detector was not run: it is calibrated on RGB H&E tiles, and this model "
                    f"takes {channels}-channel images")
            log.info(note)
            summary["detector_skipped"] = note
        else:
            summary["detector"] = detect_fronts(fronts, {t.name: t.image for t in targets},
                                                detector, config)
    write_json_atomic(out / SUMMARY, summary)
    return summary


def _front_rows(f: ImageFront, classes: Sequence[str]) -> list[tuple]:
    """front.csv rows of one front: a greyscale value v as r = g = b = v (as attacks.csv); K-class
    fronts add the predicted class's name."""
    rows = []
    for k, (p, s, h) in enumerate(zip(f.pixels, f.score, f.h, strict=True)):
        x, y, *colour = (int(v) for v in p)
        if len(colour) == 1:
            colour *= 3
        elif len(colour) != 3:
            raise OnepixelError(f"front.csv holds RGB or greyscale pixels; {f.name} has "
                                f"{len(colour)} channels")
        row = (f.name, x, y, *colour, f"{s:.10g}", f"{h:.10g}")
        if classes:
            row += (classes[int(f.predicted[k])],)
        rows.append(row)
    return rows


def _image_summary(f: ImageFront, curve: BudgetCurve, config: ParetoConfig,
                   classes: Sequence[str] = (), target: _Target | None = None) -> dict:
    best = int(np.argmin(f.energy())) if len(f.score) else None
    out = {"image": f.name, "goal": f.goal, "original_score": f.original_score,
           "front_size": len(f.score), "evaluated": len(f.evaluated_score),
           "best_score": None if best is None else float(f.score[best]),
           "best_h": None if best is None else float(f.h[best]),
           "lowest_flip_h": curve.lowest_h[f.name],
           "lowest_strong_flip_h": curve.lowest_h_strong[f.name],
           "seconds": round(f.seconds, 3)}
    if classes:
        # K-class: which class the score is of, and what the model says before and at the best.
        out["goal_class"] = classes[f.goal_class]
        out["original_class"] = target.original_class if target is not None else None
        out["best_class"] = None if best is None else classes[int(f.predicted[best])]
        out["successful_points"] = int(front_flags(f, config)[0].sum())
    return out


def detect_fronts(fronts: Sequence[ImageFront], originals: dict, detector: Detector,
                  config: ParetoConfig) -> dict:
    """The detector on the originals and on the attacked images of successful front points.

    Returns the shares flagged: of every successful front point, of each image's stealthiest
    successful point (its lowest h), and of the originals.
    """
    flagged_points, stealthiest, n_points = 0, [], 0
    for f in fronts:
        success = front_flags(f, config)[0]
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
        fh.write(png_bytes(fig))


@styled()
def _front_figure(path: Path, f: ImageFront, config: ParetoConfig,
                  classes: Sequence[str] = ()) -> None:
    fig = new_figure(4.6, 3.6)
    ax = fig.add_subplot()
    ax.scatter(f.evaluated_h, f.evaluated_score, s=4, c="0.75", lw=0, label="evaluated pixels")
    ax.plot(f.h, f.score, "o-", color="C3", ms=3.5, lw=1, label="front")
    if classes:
        # K-class success is the predicted class, not a line: mark the successful points.
        success = front_flags(f, config)[0]
        ax.plot(f.h[success], f.score[success], "o", mfc="none", mec="k", ms=6, lw=0,
                label="success")
        which = "true class" if f.goal == "untargeted" else "target"
        ylabel, title = f"p[{which} {classes[f.goal_class]}]", f"{f.name} ({f.goal})"
    else:
        ax.axhline(config.success_threshold, ls=":", color="0.3", lw=0.8)
        ylabel, title = "score", f"{f.name} ({f.goal})"
    ax.axhline(f.original_score, ls="--", color="C0", lw=0.8, label="original")
    ax.set_xlabel("h (visibility)")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    _save(fig, path)


@styled()
def _curve_figure(path: Path, curve: BudgetCurve, config: ParetoConfig, multiclass: bool = False) -> None:
    n = max(curve.n_images, 1)
    fig = new_figure(4.6, 3.4)
    ax = fig.add_subplot()
    # The run's own thresholds, not the papers' defaults (K-class success is the predicted class).
    success = "success (predicted class)" if multiclass else f"success (past {config.success_threshold:g})"
    ax.step(curve.budgets, curve.success / n, where="post", color="C3", label=success)
    ax.step(curve.budgets, curve.strong / n, where="post", color="C1", ls="--",
            label=f"strong success ({config.strong_decrease_below:g} / {config.strong_increase_above:g})")
    ax.set_xlabel("colour budget H (max h)")
    ax.set_ylabel(f"share of {curve.n_images} images flipped")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, path)
