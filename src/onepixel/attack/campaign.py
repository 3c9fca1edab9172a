"""A campaign: every image of a dataset attacked in its direction, resumable, into a RUN folder.

Images are scored first (batched); ambiguous ones are recorded as skipped at once; the rest are
attacked ``batch_images`` at a time (the DE's B dimension) and each image's row is appended as
soon as its attack stops. Running the same campaign again on the same RUN continues where it
stopped; because each image's DE stream is seeded by its name, the resumed results equal those
of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import UTC, datetime

import numpy as np

from onepixel.attack.batches import BatchAttacker, BatchExecutor, LocalExecutor, PendingImage
from onepixel.attack.config import AttackConfig, CampaignConfig
from onepixel.attack.methods import make_search
from onepixel.attack.objective import (
    AttackPlan,
    pixels_vector,
    plan_attack,
    plan_multiclass,
    skipped_result,
)
from onepixel.attack.rs import RandomSearchAttack
from onepixel.datasets.images import (
    Dataset,
    LabeledImage,
    count_images,
    is_unlabelled,
    limit_items,
    load_image,
    scan_dataset,
    scan_image_folder,
    scan_unlabelled,
)
from onepixel.defences.wrapper import defence_of
from onepixel.errors import ConfigError, DatasetError, ImageError
from onepixel.fileio import write_json_atomic
from onepixel.models import Classifier
from onepixel.models.base import capabilities_of, declared_input_shape, sized_for
from onepixel.models.options import resolve_device
from onepixel.optimize.rs import REVISION as RS_REVISION
from onepixel.progress import progress_bar
from onepixel.runs import schema
from onepixel.runs.schema import SUMMARY, AttackResult, record_text
from onepixel.runs.store import RunStore
from onepixel.runs.summary import summarize
from onepixel.scoring.policy import call_shape_for, pick_attack_evaluator, pick_evaluator
from onepixel.version import __version__

log = logging.getLogger(__name__)

#: Originals are read and scored this many at a time (at least ``batch_images``): at most this
#: many plus one attack batch of images are in memory, whatever the dataset's size.
SCORE_CHUNK_IMAGES = 256


def _versions() -> dict[str, str]:
    import torch

    out = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return out


def attack_settings(attack: AttackConfig) -> dict:
    """config.json's ``attack``: every DE and attack setting that changes results (and, for
    ``rs``, the search's revision: a RUN begun by another revision refuses to resume)."""
    settings = {**attack.de.__dict__,
                **{k: v for k, v in attack.to_dict().items() if k not in ("de", "memoize")}}
    if attack.method == "rs":
        settings["rs_revision"] = RS_REVISION
    return settings


def run_config(cfg: CampaignConfig, dataset: Dataset, classifier, evaluator=None,
               batch: int | None = None, executor: dict | None = None,
               planned: int | None = None) -> dict:
    """The config.json content of a campaign (``planned``: the images it sets out to attack,
    so a reader can tell an interrupted RUN from a finished one)."""
    return {
        "format": 1,
        "onepixel_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": str(dataset.root.resolve()),
        "positive_label": cfg.positive_label if not dataset.classes else None,
        "negative_label": cfg.negative_label if not dataset.classes else None,
        "classes": list(dataset.classes) or None,
        # "predicted": unlabelled images, each labelled by the model's own prediction.
        "labels": "predicted" if is_unlabelled(cfg.dataset) else "folders",
        "target": cfg.target,
        "model": {"spec": cfg.model, "name": classifier.name,
                  "sha256": capabilities_of(classifier).fingerprint},
        # What the attack queried: the model behind this defence (docs/defences.md).
        "defence": defence_of(classifier),
        "attack": attack_settings(cfg.attack),
        "device": cfg.model_options.device,
        "engine": type(classifier).__name__,
        "evaluator": type(evaluator).__name__ if evaluator is not None else cfg.evaluator,
        "batch_images": batch if batch is not None else cfg.batch_images,
        "executor": executor or {"kind": "local"},
        "limit": cfg.limit,
        "planned": planned,
        "versions": _versions(),
    }


def _load_dataset(cfg: CampaignConfig, n_classes: int) -> Dataset:
    """``mitosis``/``normal`` folders for a binary model, class folders for a K-class one; a flat
    folder or one image file: unlabelled images (labelled by the model's predictions)."""
    if is_unlabelled(cfg.dataset):
        if n_classes == 1:
            if cfg.target is not None or cfg.classes is not None:
                raise ConfigError("CampaignConfig.target and CampaignConfig.classes are for "
                                  "multi-class models; this model returns one score",
                                  field="CampaignConfig.classes" if cfg.target is None
                                  else "CampaignConfig.target")
            return scan_unlabelled(cfg.dataset)
        classes = cfg.classes or tuple(str(k) for k in range(n_classes))
        if len(classes) != n_classes:
            raise ConfigError(f"CampaignConfig.classes names {len(classes)} classes but the model "
                              f"returns {n_classes} class probabilities", field="CampaignConfig.classes")
        if cfg.target is not None and cfg.target not in classes:
            raise ConfigError(f"CampaignConfig.target {cfg.target!r} is not a class "
                              f"({', '.join(classes)})", field="CampaignConfig.target")
        return scan_unlabelled(cfg.dataset, classes)
    if n_classes == 1:
        if cfg.target is not None or cfg.classes is not None:
            raise ConfigError("CampaignConfig.target and CampaignConfig.classes are for multi-class "
                              "models; this model returns one score (binary: set "
                              "CampaignConfig.positive_label / negative_label instead)",
                              field="CampaignConfig.classes" if cfg.target is None
                              else "CampaignConfig.target")
        return scan_dataset(cfg.dataset, cfg.positive_label, cfg.negative_label)
    dataset = scan_image_folder(cfg.dataset, cfg.classes)
    if len(dataset.classes) != n_classes:
        raise DatasetError(
            f"the model returns {n_classes} class probabilities but {cfg.dataset} has "
            f"{len(dataset.classes)} class folders ({', '.join(dataset.classes[:12])}); give "
            f"CampaignConfig.classes the {n_classes} class names in the model's output order")
    if cfg.target is not None and cfg.target not in dataset.classes:
        raise ConfigError(f"CampaignConfig.target {cfg.target!r} is not a class of the dataset "
                          f"({', '.join(dataset.classes)})", field="CampaignConfig.target")
    return dataset


def run_campaign(cfg: CampaignConfig, classifier: Classifier | None = None,
                 on_result: Callable[[AttackResult], None] | None = None,
                 executor: BatchExecutor | None = None,
                 only: Collection[str] | None = None,
                 labels: Mapping[str, str] | None = None) -> dict:
    """Run (or resume) a campaign; return the summary (also written to RUN/summary.json).

    Binary models (one score) attack ``mitosis``/``normal`` folders in the direction that flips
    the label, with the papers' skip rule; K-class models attack class folders, untargeted or
    towards ``cfg.target``, skipping images the model already gets wrong.

    Parameters
    ----------
    classifier : Classifier, optional
        Use this model instead of loading ``cfg.model`` (``cfg.model`` is still recorded).
    on_result : callable, optional
        Called with each image's :class:`AttackResult` after it has been stored.
    executor : BatchExecutor, optional
        Where the batches are attacked (:class:`~onepixel.attack.batches.LocalExecutor`, the
        default, or :class:`onepixel.scaleout.RayExecutor`). Whatever the executor, this
        process alone writes the RUN, and the rows are the same. The search that attacks
        them is ``cfg.attack.method``'s (:func:`onepixel.attack.methods.make_search`).
    only : collection of str, optional
        Attack only these images (names as attacks.csv writes them, relative to the dataset);
        ``onepixel evaluate`` passes the images still robust.
    labels : mapping of str to str, optional
        Unlabelled datasets only: attack each image named here away from this label (a class
        name, or ``positive_label`` / ``negative_label``) instead of the model's prediction on
        it; ``onepixel evaluate`` pins every method to the first method's predicted labels.
    """
    pixels = cfg.attack.pixels
    executor = executor if executor is not None else LocalExecutor()
    # An executor made for one method (ScanExecutor) must not run another.
    if executor.describe().get("method", cfg.attack.method) != cfg.attack.method:
        raise ConfigError(f"AttackConfig.method is {cfg.attack.method!r} but this executor runs "
                          f"{executor.describe()['method']!r}; use LocalExecutor or RayExecutor",
                          field="run_campaign(executor)")
    if classifier is None and cfg.attack.method == "scan":
        from onepixel.scoring.policy import load_confmap_classifier

        # The scan's exact fast path needs the model loaded for confidence maps.
        classifier = load_confmap_classifier(cfg.model, cfg.model_options)
    batch = cfg.batch_images
    if batch is None:
        # All images at once up to a device-sized cap: the evaluator is chosen for that size.
        n_files = count_images(cfg.dataset)
        on_cpu = (resolve_device(cfg.model_options.device).type == "cpu" if classifier is None
                  else capabilities_of(classifier).on_cpu)
        batch = executor.batch_images(min(n_files, cfg.limit or n_files), on_cpu)
    if classifier is not None and declared_input_shape(classifier) is None:
        classifier = sized_for(classifier, _first_image_shape(cfg.dataset))
    # auto times the eligible evaluators on the calls this campaign will make (cached per machine).
    shape = call_shape_for(batch, cfg.attack.de.updating, cfg.attack.de.effective_population)
    if classifier is None:
        # A model that takes its size from the images gets the dataset's first image's.
        picked = pick_attack_evaluator(cfg.model, cfg.model_options, cfg.evaluator,
                                       cfg.attack.de.updating, pixels, shape,
                                       image_shape=lambda: _first_image_shape(cfg.dataset))
    else:
        picked = pick_evaluator(classifier, cfg.evaluator, cfg.attack.de.updating, pixels, shape)
    evaluator = picked.evaluator
    classifier = evaluator.classifier
    n_classes = capabilities_of(classifier).n_classes
    dataset = _load_dataset(cfg, n_classes)
    items = limit_items(dataset.items, cfg.limit)
    if only is not None:
        wanted = set(only)
        items = [it for it in items if record_text(dataset.relative_name(it)) in wanted]
    target = None if cfg.target is None else dataset.classes.index(cfg.target)
    if labels is not None:
        allowed = dataset.classes or (cfg.positive_label, cfg.negative_label)
        bad = sorted({v for v in labels.values() if v not in allowed})
        if not is_unlabelled(cfg.dataset) or bad:
            raise ConfigError(f"run_campaign(labels) pins the labels of an unlabelled dataset to "
                              f"its classes ({', '.join(allowed)}); got "
                              + (f"{', '.join(bad)}" if bad else f"labelled {cfg.dataset}"),
                              field="run_campaign(labels)")
    store = RunStore(cfg.out)
    # Settings a RUN made by an older onepixel lacks take their defaults when it is resumed.
    config = run_config(cfg, dataset, classifier, evaluator, batch, executor.describe(), len(items))
    if picked.choice is not None:
        config["engine_choice"] = picked.choice.to_dict()
    done = store.open(config,
                      defaults={"attack": attack_settings(AttackConfig())})
    todo = [it for it in items if record_text(dataset.relative_name(it)) not in done]
    log.info("%s: %d images, %d already done, %d to go", cfg.out, len(items),
             len(items) - len(todo), len(todo))
    # An executor made for one search (ScanExecutor: its pixels, top, rounds) builds it itself.
    build = getattr(executor, "make_search", make_search)
    attack = build(evaluator, cfg.attack, classifier)
    if isinstance(attack, RandomSearchAttack) and attack.prior is not None:
        # A resumed campaign's prior starts from what its finished rows found.
        table = store.read_attacks()
        for status, success, text in zip(table.status, table.success, table.pixels, strict=True):
            if status == "attacked" and success and text:
                attack.prior.add(pixels_vector(text, int(classifier.input_shape[2])))
    bar = progress_bar(total=len(items), initial=len(items) - len(todo), unit="img",
               disable=not cfg.progress, desc="attacking", dynamic_ncols=True)
    started = time.perf_counter()

    def store_result(result: AttackResult) -> None:
        store.append([result])
        bar.update(1)
        if on_result is not None:
            on_result(result)

    def progress(active: int, evaluations: int) -> None:
        rate = evaluations / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(active=active, evals_per_s=f"{rate:,.0f}", refresh=False)

    predicted = is_unlabelled(cfg.dataset)

    def labelled(it: LabeledImage, scores: np.ndarray, name: str) -> LabeledImage:
        """An unlabelled image with the model's prediction (or its pinned label) as its label."""
        if not predicted:
            return it
        pinned = (labels or {}).get(name)
        if pinned is not None:
            if n_classes == 1:
                return dataclasses.replace(it, positive=pinned == cfg.positive_label, label=pinned)
            return dataclasses.replace(it, class_index=dataset.classes.index(pinned), label=pinned)
        if n_classes == 1:
            positive = bool(scores > schema.SUCCESS_THRESHOLD)
            return dataclasses.replace(it, positive=positive, label=cfg.positive_label if positive
                                       else cfg.negative_label)
        k = int(np.argmax(scores))
        return dataclasses.replace(it, class_index=k, label=dataset.classes[k])

    def plan_for(it: LabeledImage, scores: np.ndarray) -> tuple[AttackPlan, float, str]:
        """The plan, the recorded original score and the original class of one image."""
        if n_classes == 1:
            plan = plan_attack(float(scores), it.positive, cfg.positive_label, cfg.negative_label,
                               cfg.attack)
            label = cfg.positive_label if scores > schema.SUCCESS_THRESHOLD else cfg.negative_label
            return plan, float(scores), label
        plan = plan_multiclass(scores, it.class_index, dataset.classes, target, cfg.attack)
        return plan, float(plan.objective.score(scores)), dataset.classes[int(np.argmax(scores))]

    attacker = BatchAttacker(attack, cfg, dataset.classes)

    def batches() -> Iterator[list[PendingImage]]:
        """The batches to attack; skipped and unreadable images are stored on the way."""
        queue: list[PendingImage] = []
        # Originals are scored a chunk at a time (cheap), attacks run batch_images at once.
        score_chunk = max(batch, SCORE_CHUNK_IMAGES)
        for start in range(0, len(todo), score_chunk):
            chunk, images = [], []
            for it in todo[start : start + score_chunk]:
                try:
                    images.append(load_image(it.path, classifier.input_shape))
                    chunk.append(it)
                except ImageError as exc:
                    # One bad file must not stop a campaign over thousands: record and go on.
                    log.warning("skipping %s", exc)
                    store_result(unreadable_result(record_text(dataset.relative_name(it)), it, cfg,
                                                    record_text(str(exc)), dataset.classes))
            if not chunk:
                continue
            originals = classifier.scores(np.stack(images))
            for it, image, scores in zip(chunk, images, originals, strict=True):
                name = record_text(dataset.relative_name(it))
                it = labelled(it, scores, name)
                plan, original, original_class = plan_for(it, scores)
                if plan.skip_reason:
                    store_result(skipped_result(name, it.label, plan, original, original_class))
                else:
                    queue.append(PendingImage(it, name, plan, original, original_class, image))
            while len(queue) >= batch:
                yield queue[:batch]
                del queue[:batch]
        if queue:
            yield queue

    try:
        executor.run(batches(), attacker, store_result, progress)
    finally:
        bar.close()
    # The dataset listing (~0.8 KB per image) is freed before the summary reads the RUN back
    # (about as much per row), so the two never add up: the peak stays the attack's. (Rebound,
    # not deleted: the finished closures above still name them.)
    planned = len(items)
    items = todo = dataset = None
    summary = summarize(store.read_attacks(), cfg.attack.to_dict(), planned=planned)
    summary["evaluations_this_session"] = executor.n_evaluations
    write_json_atomic(store.dir / SUMMARY, summary)
    return summary


def _first_image_shape(root) -> tuple[int, int, int]:
    """The (H, W, 3) of the first image under ``root`` (sorted), for a model that takes its size
    from the images."""
    from pathlib import Path

    from onepixel.datasets.images import expand_image_paths

    first = expand_image_paths([Path(root)])[0]
    return load_image(first).shape  # type: ignore[return-value]


def unreadable_result(name: str, item: LabeledImage, cfg: CampaignConfig, error: str,
                      classes: tuple[str, ...] = ()) -> AttackResult:
    """The skipped row of an image that cannot be read (or has the wrong size)."""
    if classes:
        goal = "untargeted" if cfg.target is None else "targeted"
        direction = f"{item.label}-to-{'other' if cfg.target is None else cfg.target}"
    else:
        plan = plan_attack(0.5, item.positive, cfg.positive_label, cfg.negative_label, cfg.attack)
        goal, direction = plan.goal, plan.direction
    if not item.label:  # an unlabelled image that could not be read has no prediction either
        direction = "unlabelled"
    return AttackResult(image=name, label=item.label, direction=direction, goal=goal,
                        status="skipped", skip_reason=f"unreadable image: {error}",
                        original_score=None)
