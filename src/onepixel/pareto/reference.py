"""The unconstrained campaign as the front's reference: its pixels, and the comparison.

A front's lowest-score end should be at least as good as what the papers' attack (a campaign
without a colour budget) found on the same image. ``onepixel pareto --campaign RUN`` reads the
RUN's attack pixel per image and compares; with ``--campaign-seed`` that pixel also joins
NSGA-II's initial population, so the front (built from every pixel scored) is at least as good
by construction, and the rest of the search spends its queries on the lower-h part of the front.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onepixel.attack.budget import budget_h, neighbour_means
from onepixel.errors import ConfigError
from onepixel.pareto.pareto import ImageFront, apply_pixels
from onepixel.runs.reader import RunError, load_run_config, read_attacks_csv
from onepixel.runs.schema import ATTACKS, CONFIG

log = logging.getLogger(__name__)

#: Scores re-computed in different batches may differ in the last bits.
TOLERANCE = 1e-6


@dataclass(frozen=True)
class CampaignPixel:
    """One attacked image of a campaign RUN.

    Attributes
    ----------
    image : str
        The RUN's image name (``attacks.csv``).
    pixel : ndarray, (5,) int64
        ``(x, y, r, g, b)``.
    score : float
        The RUN's ``attacked_score``.
    goal : str
    """

    image: str
    pixel: np.ndarray
    score: float
    goal: str


def campaign_pixels(run: str | Path, fingerprint: str = "") -> dict[str, CampaignPixel]:
    """The attack pixel of every attacked image of a one-pixel binary campaign RUN.

    ``fingerprint`` is the front's model (with its defence); a RUN of another model is compared
    all the same, with a warning.

    Raises
    ------
    OnepixelError
        Not a RUN folder, a multi-class or k-pixel RUN (the front is of one pixel and a binary
        score), or a garbled ``attacks.csv``.
    """
    run = Path(run)
    try:
        if not (run / CONFIG).is_file():
            raise RunError("no such file")
        config = load_run_config(run)
    except RunError as exc:
        raise ConfigError(f"run_pareto(campaign) {run}: cannot read {run / CONFIG} ({exc}); give a "
                            "RUN folder a campaign wrote", field="run_pareto(campaign)") from exc
    pixels = config.attack.pixels
    if pixels != 1 or config.multiclass:
        raise ConfigError(f"run_pareto(campaign) {run}: the front is of one pixel on a binary score; that "
                            f"RUN attacked with {pixels} pixel(s)"
                            + (" on a multi-class model" if config.multiclass else ""),
                          field="run_pareto(campaign)")
    if config.attack.max_colour_diff is not None:
        log.warning("--campaign %s ran with a colour budget: it is not the unconstrained reference",
                    run)
    run_model = config.model.sha256
    if fingerprint and run_model and run_model != fingerprint:
        log.warning("--campaign %s attacked another model (sha256 %s..., this one %s...): the "
                    "comparison is across models", run, run_model[:12], fingerprint[:12])
    try:
        table = read_attacks_csv(run / ATTACKS)
    except RunError as exc:
        raise ConfigError(f"run_pareto(campaign) {run}: {exc}", field="run_pareto(campaign)") from exc
    out = {}
    for i in range(len(table)):
        if table.status[i] != "attacked":
            continue
        pixel = np.array([table.x[i], table.y[i], table.r[i], table.g[i], table.b[i]], np.int64)
        out[str(table.image[i])] = CampaignPixel(str(table.image[i]), pixel,
                                                 float(table.attacked_score[i]), str(table.goal[i]))
    return out


def match(names: Sequence[str], pixels: dict[str, CampaignPixel]) -> dict[str, CampaignPixel]:
    """The campaign pixel of each front image: by the same name (a dataset's relative path), or
    else by the same file name when exactly one RUN image has it (plain IMAGE paths)."""
    by_file: dict[str, list[CampaignPixel]] = {}
    for p in pixels.values():
        by_file.setdefault(Path(p.image).name, []).append(p)
    out = {}
    for name in names:
        hit = pixels.get(name)
        if hit is None:
            same = by_file.get(Path(name).name, [])
            hit = same[0] if len(same) == 1 else None
        if hit is not None:
            out[name] = hit
    return out


def compare(fronts: Sequence[ImageFront], originals: dict[str, np.ndarray],
            reference: dict[str, CampaignPixel], classifier, run: str | Path,
            seeded: bool) -> dict:
    """Per image, the campaign's pixel (re-scored on ``classifier``, with its h) against the
    front's lowest-energy point, and how many fronts are at least as good.

    Returns
    -------
    dict
        ``{"run", "seeded", "images": [...], "compared", "front_at_least_as_good"}``; each image
        entry has the campaign pixel, ``campaign_score`` (re-scored now), ``campaign_run_score``
        (attacks.csv), ``campaign_h``, ``front_best_score``, ``front_best_h``, ``gap`` (how much
        further towards the goal the front got; >= 0 when at least as good) and
        ``front_at_least_as_good``.
    """
    rows = [(f, reference[f.name]) for f in fronts if f.name in reference and len(f.score)]
    entries = []
    if rows:
        adv = np.concatenate([apply_pixels(originals[f.name], p.pixel[None]) for f, p in rows])
        rescored = np.asarray(classifier.scores(adv), dtype=np.float64)
        for (f, p), score in zip(rows, rescored, strict=True):
            if p.goal != f.goal:
                log.warning("%s: the campaign's goal is %s, the front's %s; compared on the "
                            "front's", f.name, p.goal, f.goal)
            x, y = int(p.pixel[0]), int(p.pixel[1])
            image = originals[f.name]
            if not (0 <= x < image.shape[1] and 0 <= y < image.shape[0]):
                raise ConfigError(f"run_pareto(campaign) {run}: pixel ({x}, {y}) of {p.image} lies "
                                    f"outside the {image.shape[1]}x{image.shape[0]} image",
                                  field="run_pareto(campaign)")
            h = float(budget_h(p.pixel[None, 2:], neighbour_means(image[None])[0][y, x][None])[0])
            energy = f.energy()
            best = int(np.argmin(energy))
            gap = float(f.energy(np.array([score]))[0] - energy[best])
            entries.append({"image": f.name, "campaign_image": p.image,
                            "campaign_pixel": [int(v) for v in p.pixel],
                            "campaign_score": float(score), "campaign_run_score": p.score,
                            "campaign_h": h, "front_best_score": float(f.score[best]),
                            "front_best_h": float(f.h[best]), "gap": gap,
                            "front_at_least_as_good": gap >= -TOLERANCE})
    missing = [f.name for f in fronts if f.name not in reference]
    if missing:
        log.warning("--campaign %s has no attacked row for %d image(s) (first: %s)", run,
                    len(missing), missing[0])
    return {"run": str(Path(run).resolve()), "seeded": seeded, "images": entries,
            "compared": len(entries),
            "front_at_least_as_good": sum(e["front_at_least_as_good"] for e in entries),
            "not_in_campaign": missing}
