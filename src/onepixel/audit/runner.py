"""``onepixel audit RUN --out DIR``: how strong was the attack, image by image.

For each chosen attacked image of a RUN: the exhaustive coarse scan, refinement around the best
scan pixels and around the RUN's own DE pixel, optionally exact optima at some positions, and a
final re-scoring of the best pixels on the whole network. The best proven pixel is the row of
``DIR/audit.csv``: ``vulnerable`` when it crosses the success threshold, else ``not-found``
(none found at this cost: evidence, not proof). Because the DE pixel is among the re-scored
ones, the audit is never worse than DE on the same model.

K-class RUNs (goals ``untargeted`` and ``targeted``) are searched on the goal class's
probability (``p[true]`` pushed down, ``p[target]`` pushed up) with the same engine, through
:class:`~onepixel.models.base.ClassProbability`; the finalists are re-scored on the whole
classifier and judged by the row's :class:`~onepixel.attack.goals.Goal` (the predicted class,
as the campaign judges). Rows of K-class RUNs attacked with several pixels are skipped: the
audit searches one pixel.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onepixel.attack.goals import Goal, Targeted, Untargeted
from onepixel.audit.config import AuditConfig
from onepixel.audit.exact import position_optima
from onepixel.audit.search import (
    Candidate,
    Refiner,
    energy,
    goal_class,
    prove_best,
    scan,
    scan_candidates,
)
from onepixel.audit.store import NOT_FOUND, VULNERABLE, AuditRow, AuditStore
from onepixel.confmap.engine import MapExecutor
from onepixel.defences.spec import parse_defence
from onepixel.defences.wrapper import defence_of
from onepixel.errors import ConfigError, RunError
from onepixel.models.base import (
    Classifier,
    ClassProbability,
    capabilities_of,
    declared_input_shape,
    sized_for,
)
from onepixel.models.registry import ModelOptions
from onepixel.runs.reader import AttackTable, load_run
from onepixel.runs.schema import (
    BINARY_GOALS,
    GOALS,
    image_path,
    judge,
)
from onepixel.scoring.policy import evaluator_for, load_confmap_classifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditTarget:
    """An attacked image of the RUN to audit, with DE's result on it.

    ``objective`` is the row's K-class goal (:class:`~onepixel.attack.goals.Untargeted` /
    :class:`~onepixel.attack.goals.Targeted`, with the class it is about), None for a binary
    goal; ``pixels`` the pixels of the RUN's attack (the ``pixels`` column's groups).
    """

    image: str
    direction: str
    goal: str
    de: Candidate
    de_success: bool
    de_early_converged: bool
    objective: Goal | None = None
    pixels: int = 1


def _objective(goal: str, label: str, classes: Sequence[str], target: str | None,
               strong: dict) -> Goal | None:
    """The K-class goal of a row (None for binary goals).

    Raises
    ------
    RunError
        The RUN's config.json lacks the classes (or the target) the row needs.
    """
    if goal in BINARY_GOALS:
        return None
    name = label if goal == "untargeted" else target
    if name is None or name not in classes:
        what = "its label" if goal == "untargeted" else "the target (config.json 'target')"
        raise RunError(f"a {goal} row's class, {what} {name!r}, is not among the RUN's classes "
                       f"(config.json 'classes': {list(classes)}); audit a RUN folder as `onepixel "
                       "attack` wrote it")
    k = list(classes).index(name)
    if goal == "untargeted":
        return Untargeted(true_class=k, **strong)
    return Targeted(target_class=k, **strong)


def select_targets(table: AttackTable, config: AuditConfig, classes: Sequence[str] = (),
                   target: str | None = None, strong: dict | None = None) -> list[AuditTarget]:
    """The attacked images of ``table`` that ``config`` asks for (``images`` or ``selection``).

    ``classes`` (the K-class model's class names in output order, config.json ``classes``),
    ``target`` (config.json ``target``) and ``strong`` (the strong-success thresholds,
    keyword arguments of the goals) make the goals of K-class rows.

    Raises
    ------
    ConfigError
        A name in ``config.images`` that matches no attacked image, or several.
    RunError
        A K-class row whose class is not among ``classes``.
    """
    attacked = [i for i in range(len(table))
                if table.status[i] == "attacked" and not math.isnan(table.attacked_score[i])]
    if config.images:
        chosen = []
        for name in config.images:
            hits = [i for i in attacked
                    if name in (table.image[i], Path(table.image[i]).name, Path(table.image[i]).stem)]
            if len(hits) != 1:
                what = "no attacked image" if not hits else f"{len(hits)} attacked images"
                raise ConfigError(f"AuditConfig.images: {name!r} matches {what} of the RUN's "
                                  "attacks.csv; give the 'image' column's value", field="AuditConfig.images")
            chosen.append(hits[0])
    elif config.selection == "failed":
        chosen = [i for i in attacked if not table.success[i]]
    elif config.selection == "early-converged":
        chosen = [i for i in attacked if table.early_converged[i]]
    else:
        chosen = attacked
    return [AuditTarget(str(table.image[i]), str(table.direction[i]), str(table.goal[i]),
                        Candidate(int(table.x[i]), int(table.y[i]),
                                  (int(table.r[i]), int(table.g[i]), int(table.b[i])),
                                  float(table.attacked_score[i])),
                        bool(table.success[i]), bool(table.early_converged[i]),
                        _objective(str(table.goal[i]), str(table.label[i]), classes, target,
                                   strong or {}),
                        _pixel_count(table.pixels[i]))
            for i in sorted(set(chosen), key=lambda i: str(table.image[i]))]


def _pixel_count(pixels) -> int:
    """Pixels of an attack from attacks.csv's ``pixels`` (``x,y,r,g,b`` groups joined by
    ``;``; empty in RUNs made before it: one pixel)."""
    text = "" if pixels is None else str(pixels).strip()
    return max(1, len([g for g in text.split(";") if g.strip()])) if text and text != "nan" else 1


def audit_image(image: np.ndarray, target: AuditTarget, classifier: Classifier, evaluator,
                config: AuditConfig, thresholds: dict | None = None,
                checkpoint: Path | None = None, mapper: MapExecutor | None = None,
                spec: str = "", options: ModelOptions | None = None
                ) -> tuple[AuditRow, list[list[str]]]:
    """Audit one image: returns its ``audit.csv`` row and its ``exact.csv`` rows.

    A K-class row (``target.objective``) is searched on the goal class's probability and its
    finalists judged by the goal (:func:`~onepixel.audit.search.pick_best`); ``classifier``
    is the whole K-class model.

    ``evaluator`` (:class:`~onepixel.scoring.evaluators.Evaluator`) scores the refinement's
    candidates. ``thresholds`` are the RUN's success thresholds (keyword arguments of
    :func:`onepixel.runs.schema.judge`). The exact positions checkpoint into ``checkpoint``
    (long at step 1: a rerun resumes them). ``mapper`` computes the scan elsewhere (Ray:
    :class:`onepixel.scaleout.RayMapper`, whose workers load ``spec`` with ``options``).

    Raises
    ------
    ConfigError
        An exact position outside the image.
    """
    goal = target.goal
    k = goal_class(target.objective)
    # A K-class model is searched on the goal class's probability (a binary model's one score).
    searched = classifier if k is None else ClassProbability(classifier, k)
    h, w = image.shape[:2]
    bad = [(x, y) for x, y in config.exact.positions if not (0 <= x < w and 0 <= y < h)]
    if bad:
        raise ConfigError(f"AuditConfig.exact position {bad[0][0]},{bad[0][1]} is outside the {w}x{h} image",
                          field="AuditConfig.exact")
    cmap = scan(image, searched, config.step, config.batch_size, config.pixels, mapper, spec,
                options)
    queries = int(cmap.evaluations)
    starts = [target.de, *scan_candidates(cmap, goal, config.top)]
    refiner = Refiner(evaluator, image, goal, cmap, class_index=k)
    refined = refiner.refine([c.vector for c in starts], config.rounds)
    queries += refiner.evaluations
    exact_rows: list[list[str]] = []
    exact_best: list[Candidate] = []
    # Where each exact position comes from (DE's own position is always "de").
    sources = dict.fromkeys(config.exact.positions, "given")
    if config.exact.top:
        for c in scan_candidates(cmap, goal, config.exact.top):
            sources.setdefault((c.x, c.y), "top")
    if config.exact.de or (target.de.x, target.de.y) in sources:
        sources[(target.de.x, target.de.y)] = "de"
    positions = list(sources)
    if positions:
        for opt in position_optima(image, searched, goal, positions, config.exact_step,
                                   config.batch_size, progress=config.progress,
                                   checkpoint=checkpoint):
            queries += opt.evaluations
            exact_best.append(opt.best)
            b = opt.best
            same_place = (b.x, b.y) == (target.de.x, target.de.y)
            distance = (float(np.max(np.abs(np.subtract(b.rgb, target.de.rgb))))
                        if same_place else float("nan"))
            gap = float(energy(goal, target.de.score) - energy(goal, b.score))
            exact_rows.append([target.image, goal, sources[(b.x, b.y)], b.x, b.y, opt.step, f"{b.score:.10g}",
                               *b.rgb, opt.evaluations, f"{opt.seconds:.3f}",
                               f"{target.de.score:.10g}", f"{gap:.10g}",
                               "" if math.isnan(distance) else f"{distance:g}"])
    # Prove by evaluation: re-score on the whole network, DE's pixel first (it wins ties).
    finalists = list(dict.fromkeys([target.de.vector] + [c.vector for c in refined + exact_best]))
    best, probs = prove_best(classifier, image, finalists, goal, target.objective)
    # Judged as the campaign judges: the threshold rule, or the predicted class of K classes.
    success = (judge(goal, best.score, **(thresholds or {}))[0] if probs is None
               else target.objective.judge(probs)[0])
    queries += len(finalists)
    row = AuditRow(target.image, goal, VULNERABLE if success else NOT_FOUND, best.score, best.x,
                   best.y, best.rgb, queries, target.de.score, target.de_success,
                   target.de_early_converged)
    return row, exact_rows


def audit_run(run_dir: str | Path, out_dir: str | Path, config: AuditConfig | None = None,
              classifier: Classifier | None = None, model_options: ModelOptions | None = None,
              model: str | None = None, defence: str | None = None,
              mapper: MapExecutor | None = None) -> dict:
    """Audit the attacked images of a RUN into ``out_dir`` (resumable); returns the summary.

    Parameters
    ----------
    run_dir : path
        A folder written by ``onepixel attack``.
    out_dir : path
        ``audit.csv``, ``exact.csv``, ``audit.json`` and ``summary.json`` go here; a rerun
        skips the images already in ``audit.csv``.
    config : AuditConfig
    classifier : Classifier, optional
        Else the RUN's model (``config.json``: ``model.spec``, or ``model``), loaded for the
        exact fast confidence-map path with ``model_options``.
    defence : str, optional
        Audit the model behind this defence (``--defence``, docs/defences.md): every query
        goes through it, so the scan is brute force (the fast path would bypass it).
    mapper : MapExecutor, optional
        Where each image's scan runs (``--executor ray``: :class:`onepixel.scaleout.RayMapper`;
        its workers load the model from the spec, so not with a ``defence``). The refinement
        and the re-scoring stay here.

    Raises
    ------
    RunError
        Not a RUN, no model named, an image missing from the RUN's dataset, or an audit folder
        made with other settings.
    ConfigError
        Bad selection (names matching nothing).
    """
    config = config or AuditConfig()
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    spec = model or run.config.model.spec
    if classifier is None:
        if not spec:
            raise RunError(f"{run_dir}/config.json names no model (model.spec); pass audit_run(model=...) "
                           "or a classifier")
        classifier = load_confmap_classifier(spec, model_options or ModelOptions(), defence=defence)
    elif parse_defence(defence):
        raise ConfigError("audit_run: give a defence either in the classifier or as defence=, "
                          "not both")
    if declared_input_shape(classifier) is None and len(run.attacks.image):
        # A model that takes its size from the images: the RUN's first image gives it.
        from onepixel.datasets.images import load_image as _load

        first = image_path(run.config.dataset or Path(""), str(run.attacks.image[0]))
        classifier = sized_for(classifier, _load(first).shape)
    defended = defence_of(classifier)
    if defended != "none":
        log.warning("auditing through --defence %s: the scan is brute force (the exact fast path "
                    "would bypass the defence), many times slower", defended)
    if run.config.defence != defended:
        log.warning("the RUN attacked the model behind defence %r, the audit queries %r",
                    run.config.defence, defended)
    sha = capabilities_of(classifier).fingerprint
    if run.config.model.sha256 and sha and run.config.model.sha256 != sha:
        log.warning("the model's sha256 differs from the one the RUN attacked: the audit is of "
                    "the model loaded now")
    thresholds = run.config.attack.thresholds
    targets = select_targets(run.attacks, config, run.config.classes, run.config.target,
                             {k: v for k, v in thresholds.items() if k.startswith("strong_")})
    several = [t for t in targets if t.objective is not None and t.pixels > 1]
    if several:
        log.warning("%d image(s) attacked with several pixels (--pixels) are not audited: the "
                    "audit searches one pixel (first: %s)", len(several), several[0].image)
        targets = [t for t in targets if not (t.objective is not None and t.pixels > 1)]
    # "defence" only when there is one, so audit folders made before --defence still resume.
    store = AuditStore(out_dir, {"run": str(run_dir.resolve()), "model_sha256": sha,
                                 **({"defence": defended} if defended != "none" else {}),
                                 **config.settings()})
    todo = [t for t in targets if not store.done(t.image)]
    log.info("audit: %d image(s), %d already done", len(targets), len(targets) - len(todo))
    dataset = run.config.dataset or Path("")
    # The incremental evaluator where it applies (each move is scored in one call).
    evaluator = evaluator_for(classifier, "auto", updating="deferred")
    from onepixel.datasets.images import load_image
    from onepixel.progress import progress_bar

    t0 = time.perf_counter()
    with progress_bar(total=len(targets), initial=len(targets) - len(todo), unit="image", desc="audit",
              disable=not config.progress, dynamic_ncols=True) as bar:
        for target in todo:
            path = image_path(dataset, target.image)
            if not path.is_file():
                raise RunError(f"image {target.image} of {run_dir}/attacks.csv is not under the "
                               f"RUN's dataset folder {dataset} (moved?)")
            image = load_image(path, classifier.input_shape)
            partial = store.dir / "exact-partial" / target.image.replace("/", "__")
            row, exact_rows = audit_image(image, target, classifier, evaluator, config, thresholds,
                                          checkpoint=partial, mapper=mapper, spec=spec,
                                          options=model_options)
            store.append(row, exact_rows)
            bar.set_postfix_str(f"{row.status} {row.best_score:.3g}")
            bar.update(1)
    seconds = time.perf_counter() - t0
    with contextlib.suppress(OSError):  # only when empty: other images' checkpoints stay
        (store.dir / "exact-partial").rmdir()
    summary = summarize_audit([store.rows[t.image] for t in targets], seconds, config)
    summary["model"] = {"name": classifier.name, "sha256": sha}
    summary["defence"] = defended
    summary["run"] = str(run_dir.resolve())
    store.write_summary(summary)
    return summary


def _median(values) -> float | None:
    values = [v for v in values if not math.isnan(v)]
    return float(np.median(values)) if values else None


def summarize_audit(rows: Sequence[AuditRow], seconds_this_session: float,
                    config: AuditConfig) -> dict:
    """Counts per goal: audited, vulnerable, DE's successes, the early-converged re-examined."""
    goals = {}
    for goal in GOALS:
        group = [r for r in rows if r.goal == goal]
        if not group:
            continue
        early = [r for r in group if r.de_early_converged]
        goals[goal] = {
            "audited": len(group),
            "vulnerable": sum(r.status == VULNERABLE for r in group),
            "de_success": sum(r.de_success for r in group),
            "vulnerable_where_de_failed": sum(r.status == VULNERABLE and not r.de_success for r in group),
            "early_converged": len(early),
            "early_converged_vulnerable": sum(r.status == VULNERABLE for r in early),
            "median_best_score": _median([r.best_score for r in group]),
            "median_de_score": _median([r.de_score for r in group]),
            "median_queries": _median([float(r.queries) for r in group]),
            "vulnerable_images": [r.image for r in group if r.status == VULNERABLE],
        }
    return {"images": len(rows), "seconds_this_session": round(seconds_this_session, 3),
            "settings": config.settings(), "goals": goals}
