"""Confidence maps of the images of an attack RUN, into ``RUN/confmaps/<image>/``."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from onepixel.confmap.engine import (
    ConfmapConfig,
    MapExecutor,
    load_confmap_classifier,
    local_map,
    map_key,
    save_confmap,
)
from onepixel.confmap.result import RESULT_NAME, ConfidenceMap, load_confmap
from onepixel.defences.spec import parse_defence
from onepixel.defences.wrapper import defence_of
from onepixel.errors import ConfigError, ConfmapError, RunError
from onepixel.fileio import write_csv_atomic
from onepixel.models.base import Classifier, capabilities_of
from onepixel.models.registry import ModelOptions
from onepixel.runs.reader import AttackTable, load_run
from onepixel.runs.schema import CONFMAPS, image_path, lowers_score

log = logging.getLogger(__name__)

INDEX_COLUMNS = ("image", "direction", "why", "folder", "original_score", "attacked_score",
                 "min_score", "max_score", "step", "method")


@dataclass(frozen=True)
class RunImage:
    """An attacked image of a RUN chosen for a confidence map.

    ``why`` is ``most successful``, ``least successful`` or ``named``; ``change`` the score
    change in the attack's goal direction (positive = the attack helped).
    """

    image: str
    direction: str
    goal: str
    why: str
    original_score: float
    attacked_score: float | None
    change: float | None


def _attacks(run_dir: Path) -> AttackTable:
    try:
        return load_run(run_dir).attacks
    except RunError as exc:
        raise ConfmapError(str(exc)) from exc


def _run_image(table: AttackTable, i: int, why: str) -> RunImage:
    original = float(table.original_score[i])
    attacked = float(table.attacked_score[i])
    attacked_or_none = None if math.isnan(attacked) else attacked
    change = None
    if attacked_or_none is not None:
        change = original - attacked if lowers_score(table.goal[i]) else attacked - original
    return RunImage(str(table.image[i]), str(table.direction[i]), str(table.goal[i]), why,
                    original, attacked_or_none, change)


def select_run_images(run_dir: str | Path, names: Sequence[str] | None = None) -> list[RunImage]:
    """Pick images of an attack run for confidence maps.

    Without ``names``: per direction, the most and the least successful attacked image (by
    score change in the goal direction; ties by name). With ``names``: those images, matched
    against the ``image`` column, its file name or its stem.

    Raises
    ------
    ConfmapError
        No RUN, no attacked image, or a name that matches nothing (or several).
    """
    table = _attacks(Path(run_dir))
    if names:
        chosen = []
        for name in names:
            hits = [i for i, im in enumerate(table.image.tolist())
                    if name in (im, Path(im).name, Path(im).stem)]
            if not hits:
                raise ConfmapError(f"no image {name!r} in {run_dir}/attacks.csv (use the 'image' column)")
            if len(hits) > 1:
                raise ConfmapError(f"{name!r} matches {len(hits)} images in {run_dir}/attacks.csv: "
                                   f"{', '.join(str(table.image[i]) for i in hits[:5])}; give the full path")
            chosen.append(_run_image(table, hits[0], "named"))
        return chosen
    attacked = [i for i in range(len(table))
                if table.status[i] == "attacked" and not np.isnan(table.attacked_score[i])]
    if not attacked:
        raise ConfigError(f"{run_dir}/attacks.csv has no attacked image to map; name the "
                          "images to map (select_run_images(names=...))", field="select_run_images(names)")
    out: list[RunImage] = []
    for direction in sorted({str(table.direction[i]) for i in attacked}):
        ranked = sorted((_run_image(table, i, "") for i in attacked if table.direction[i] == direction),
                        key=lambda ri: (-(ri.change or 0.0), ri.image))
        out.append(replace(ranked[0], why="most successful"))
        if len(ranked) > 1:
            out.append(replace(ranked[-1], why="least successful"))
    return out


def confmap_run(run_dir: str | Path, images: Sequence[str] | None = None,
                config: ConfmapConfig | None = None, classifier: Classifier | None = None,
                model_options: ModelOptions | None = None,
                model: str | None = None,
                mapper: MapExecutor | None = None,
                defence: str | None = None) -> list[tuple[RunImage, Path, ConfidenceMap]]:
    """Confidence maps of selected images of an attack run, into ``RUN/confmaps/<image-stem>/``.

    The model is ``classifier``, else the spec ``model``, else the run's (``config.json``:
    ``model.spec``), loaded with ``model_options``; the images come from the run's dataset
    folder. Each map checkpoints into its own folder, so an interrupted call resumes.
    ``RUN/confmaps/index.csv`` lists what was mapped. ``mapper`` computes each map (default:
    in this process; :mod:`onepixel.scaleout` has one for Ray, which needs the model as a spec).
    A model loaded here is scored through ``defence``, else through the defence the run attacked
    through (``config.json``: ``defence``; ``"none"`` maps the undefended model); a given
    ``classifier`` is mapped as it is.

    Returns
    -------
    list of (RunImage, folder, ConfidenceMap)
    """
    from onepixel.datasets.images import load_image

    run_dir = Path(run_dir)
    config = config or ConfmapConfig()
    try:
        run = load_run(run_dir)
    except RunError as exc:
        raise ConfmapError(str(exc)) from exc
    if not run.config.found:
        raise ConfmapError(f"{run_dir}/config.json not found: is {run_dir} an attack run "
                           "(the folder a campaign wrote)?")
    chosen = select_run_images(run_dir, images)
    spec = model or run.config.model.spec
    options = model_options or ModelOptions(device=config.device, dtype=config.dtype)
    if classifier is None:
        if not spec:
            raise ConfmapError(f"{run_dir}/config.json names no model (model.spec); pass a classifier "
                               "or a model spec")
        if defence is None:
            defence = run.config.defence
            if parse_defence(defence):
                log.info("mapping through the run's defence %s (config.json)", defence)
        classifier = load_confmap_classifier(spec, options, config.evaluator, defence)
    want_sha = run.config.model.sha256
    have_sha = capabilities_of(classifier).fingerprint
    if want_sha and have_sha and want_sha != have_sha:
        log.warning("the model's sha256 differs from the one the run attacked (%s...): maps are of "
                    "the model loaded now", want_sha[:12])
    dataset = run.config.dataset or Path("")
    folders = _folder_names([c.image for c in chosen])
    results = []
    for ri in chosen:
        path = image_path(dataset, ri.image)
        if not path.is_file():
            raise ConfmapError(f"image {ri.image} of {run_dir}/attacks.csv is not under the run's "
                               f"dataset folder {dataset} (moved?)")
        image = load_image(path, classifier.input_shape)
        out_dir = run_dir / CONFMAPS / folders[ri.image]
        key = map_key(image, classifier, config)
        finished = _finished_map(out_dir / RESULT_NAME, key)
        if finished is not None:
            # A rerun (e.g. `onepixel demo` again) does not map a finished image a second time.
            log.info("confmap of %s: already in %s, reused", ri.image, out_dir)
            results.append((ri, out_dir, finished))
            continue
        log.info("confmap of %s (%s, %s) -> %s", ri.image, ri.direction, ri.why, out_dir)
        result = (mapper or local_map)(image, classifier, config, out_dir, spec, options)
        extra = {"image": ri.image, "direction": ri.direction, "goal": ri.goal, "why": ri.why,
                 "map_key": key, "defence": defence_of(classifier)}
        if ri.attacked_score is not None:
            extra["attacked_score"] = ri.attacked_score
        save_confmap(result, out_dir, image=image, metadata=extra)
        results.append((ri, out_dir, result))
    write_csv_atomic(run_dir / CONFMAPS / "index.csv", INDEX_COLUMNS, [
        [ri.image, ri.direction, ri.why, folder.name, f"{res.original_score:.10g}",
         "" if ri.attacked_score is None else f"{ri.attacked_score:.10g}",
         f"{np.nanmin(res.min):.10g}", f"{np.nanmax(res.max):.10g}", res.step, res.method]
        for ri, folder, res in results])
    return results


def _finished_map(path: Path, key: dict) -> ConfidenceMap | None:
    """The map saved at ``path`` when it was made with ``key`` (same image, model, step,
    pixels and dtype); None when there is none, it is unreadable, or it differs."""
    if not path.is_file():
        return None
    try:
        saved = load_confmap(path)
    except (ConfmapError, OSError, ValueError, KeyError) as exc:
        log.warning("%s is unreadable (%s): mapping again", path, exc)
        return None
    return saved if saved.metadata.get("map_key") == key else None


def _folder_names(images: Sequence[str]) -> dict[str, str]:
    """Folder per image: its stem, or its path with '/' -> '__' where stems collide."""
    stems: dict[str, int] = {}
    for im in images:
        stems[Path(im).stem] = stems.get(Path(im).stem, 0) + 1
    return {im: Path(im).stem if stems[Path(im).stem] == 1
            else str(Path(im).with_suffix("").as_posix()).replace("/", "__") for im in images}
