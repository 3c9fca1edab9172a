"""rs against the anchors on the same model and images in one run: success and queries per flip.

Methods, each one pixel, every image stopped at its first success:

- ``rs``: ``AttackConfig(method="rs", max_queries=B, stop_on_success=True)`` with the campaign
  prior (the default) and ``rs-uniform`` without it (``RSConfig(prior=False)``), one campaign
  per budget B (its schedule depends on B);
- ``de``: the papers' DE with population 100 (so B / 100 - 1 generations), ``tol=0`` (no early
  convergence), stop on success, run once at the largest budget: with the same seed and
  population DE's trajectory does not depend on ``maxiter``, so the success at a smaller budget
  is exactly the rows with ``nfev <= B``;
- ``scan``: the audit's exhaustive corner scan (step 255, every pixel x the 8 corners of the
  colour cube) with refinement, once (its cost is fixed: ``H x W x 8`` plus refinement);
- ``sparse-rs``: Sparse-RS itself (Croce et al., AAAI 2022; fra31/sparse-rs ``RSAttack``,
  ``norm='L0'``, ``eps=1``, margin loss), fetched outside the repository and imported from
  there, never copied into it. With ``eps=1`` its schedule changes one pixel every iteration
  whatever ``n_queries`` is, so one run at the largest budget read at ``queries <= B`` is exactly
  the run at budget B. It is given the model as logits of float images in [0, 1] (for the MAX
  model ``[log(1 - p), log p]``); its colours are the cube's corners, so its images are integer.
  Its adversarial images are re-scored by onepixel's classifier to judge success.

Models and images:

- ``max``: the built-in MAX mitosis model (ONNX Runtime on CPU) on the demo's 8 mitosis
  patches (the 8 rotations/flips of true.png, :func:`onepixel.datasets.demo.dihedral_variants`),
  each attacked towards P(mitosis) < 0.5;
- ``digits8``: the 10-class digits CNN of ``tests/digits_models.py`` at the digits' native 8x8
  (RGB, ONNX; ``digits_models.NATIVE``), untargeted, on ``--digits-per-class`` held-out images
  of each class: a fragile K-class model, where one pixel is a sixty-fourth of the image;
- ``digits32``: the same CNN on the digits upscaled to 32x32, which resists every single pixel
  (kept to show it: every method, the full scan included, flips none).

For every model where both ran, the K-class target's numbers: DE's success rate and median
queries per flip at the largest budget, and rs (a campaign at a third of that median) against
them.

``--best-score`` also runs rs and DE (population 200, 50 generations: 10,000 queries) without
stopping on success on the MAX patches and compares each image's best score.

``sparse-rs`` stops each image at its first success (its own early stop: an image leaves the
batch when it is fooled), so its cost is 10,000 iterations only for the images it never fools.

Setup: fetch Sparse-RS somewhere outside the repository's tracked files, e.g.
``git clone https://github.com/fra31/sparse-rs .venv-peers/sparse-rs`` (``.venv-peers/`` is
ignored), and give ``--sparse-rs DIR``. It needs only torch and numpy.

Usage::

    ONEPIXEL_ASSETS=../shared/assets PYTHONPATH=src python bench/bench_rs.py \\
        [--budgets 1000,3000,10000] [--models max,digits8] [--methods rs,rs-uniform,de,scan,sparse-rs] \\
        [--digits-per-class 3] [--best-score] [--sparse-rs .venv-peers/sparse-rs] \\
        [--out bench/results/rs-cpu.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchutil import emit, machine

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # digits_models

DIGITS_OPTIONS = dict(device="cpu", preprocess="unit", layout="nchw", model_output="logit")


@dataclass
class Outcome:
    """One method's result on one image: success and the queries it spent."""

    success: bool
    queries: int
    score: float = float("nan")


def build_max(root: Path):
    from PIL import Image

    from onepixel import assets
    from onepixel.datasets.demo import dihedral_variants
    from onepixel.datasets.images import load_image

    (root / "mitosis").mkdir(parents=True)
    (root / "normal").mkdir()
    image = load_image(assets.ensure("true.png"), (64, 64, 3))
    for key, variant in dihedral_variants(image).items():
        Image.fromarray(variant).save(root / "mitosis" / f"true_{key}.png")
    return root, "max-mitosis", {"device": "cpu"}


def build_digits(root: Path, per_class: int, shape: tuple[int, int, int]):
    from digits_models import train_and_export, write_image_folder

    root.mkdir(parents=True)
    images, labels = train_and_export(root / "digits.onnx", shape)
    dataset = write_image_folder(root / "ds", images, labels, per_class=per_class)
    return dataset, str(root / "digits.onnx"), DIGITS_OPTIONS


def campaign_outcomes(dataset: Path, model: str, options: dict, out: Path, **attack) -> dict:
    """Run one campaign; image -> Outcome for the attacked images."""
    from onepixel.attack import AttackConfig
    from onepixel.attack.campaign import run_campaign
    from onepixel.attack.config import CampaignConfig
    from onepixel.models import ModelOptions
    from onepixel.runs.reader import read_attacks_csv

    cfg = CampaignConfig(dataset=dataset, out=out, model=model, model_options=ModelOptions(**options),
                         attack=AttackConfig(**attack), progress=False)
    run_campaign(cfg)
    t = read_attacks_csv(out / "attacks.csv")
    return {str(t.image[i]): Outcome(bool(t.success[i]), int(t.nfev[i]), float(t.attacked_score[i]))
            for i in range(len(t.image)) if t.status[i] == "attacked"}


def sparse_rs_outcomes(dataset: Path, model: str, options: dict, budget: int, path: Path) -> dict:
    """Sparse-RS (fetched, imported from ``path``) on every image the campaigns attack."""
    sys.path.insert(0, str(path))
    from rs_attacks import RSAttack  # the fetched peer, not a onepixel module

    from onepixel.datasets.images import load_image, scan_dataset, scan_image_folder
    from onepixel.models import ModelOptions
    from onepixel.scoring.policy import load_scoring_classifier

    clf = load_scoring_classifier(model, ModelOptions(**options))
    shape = clf.input_shape
    binary = model == "max-mitosis"
    ds = scan_dataset(dataset, "mitosis", "normal") if binary else scan_image_folder(dataset)
    items = [it for it in ds.items if (it.positive if binary else True)]
    images = np.stack([load_image(it.path, shape) for it in items])
    scores = clf.scores(images)
    if binary:
        labels = np.ones(len(items), dtype=np.int64)  # mitosis: pushed below 0.5
        keep = scores >= 0.9  # the papers' skip rule, as the campaigns apply it
    else:
        labels = np.array([it.class_index for it in items])
        keep = scores.argmax(axis=1) == labels

    from onepixel.scoring.policy import evaluator_for

    # Sparse-RS hands whole images; each differs from its original in at most one pixel, which
    # is scored on the same exact incremental evaluator rs uses (the same scores up to float
    # rounding, at rs's cost per query).
    evaluator = evaluator_for(clf, "auto", updating="deferred")
    originals = images.astype(np.int16)
    prepared = evaluator.prepare(images)

    def predict(x: torch.Tensor) -> torch.Tensor:
        u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        diff = np.abs(u8[:, None].astype(np.int16) - originals[None]).sum(axis=-1)  # (n, N, H, W)
        changed = (diff > 0).reshape(len(u8), len(originals), -1).sum(axis=-1)
        base = changed.argmin(axis=1)
        if np.all(changed[np.arange(len(u8)), base] <= 1):
            flat = diff[np.arange(len(u8)), base].reshape(len(u8), -1).argmax(axis=1)
            yy, xx = np.divmod(flat, shape[1])
            cand = np.concatenate([np.stack([xx, yy], axis=1), u8[np.arange(len(u8)), yy, xx]],
                                  axis=1).astype(np.int64)[:, None, :]
            s = np.asarray(evaluator.scores_prepared(prepared, base, cand), dtype=np.float64)[:, 0]
        else:
            s = np.asarray(clf.scores(u8), dtype=np.float64)
        if binary:
            p = np.clip(s, 1e-12, 1 - 1e-12)
            s = np.stack([1 - p, p], axis=1)
        return torch.from_numpy(np.log(np.clip(s, 1e-30, None))).float()

    x = torch.from_numpy(images[keep]).permute(0, 3, 1, 2).float() / 255.0
    y = torch.from_numpy(labels[keep])
    attack = RSAttack(predict, norm="L0", eps=1, n_queries=budget, verbose=False, seed=0,
                      loss="margin", device="cpu")
    queries, adv = attack.perturb(x, y)
    adv_u8 = (adv.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    final = clf.scores(adv_u8)
    names = [ds.relative_name(it) for it, k in zip(items, keep, strict=True) if k]
    out = {}
    for i, name in enumerate(names):
        ok = bool(final[i] < 0.5) if binary else bool(final[i].argmax() != int(y[i]))
        score = float(final[i]) if binary else float(final[i][int(y[i])])
        out[name] = Outcome(ok, int(queries[i].item()) if ok else budget, score)
    return out


def at_budget(outcomes: dict, budget: int) -> tuple[int, int, float]:
    """(successes within ``budget`` queries, images, median queries of those successes)."""
    wins = [o.queries for o in outcomes.values() if o.success and o.queries <= budget]
    return len(wins), len(outcomes), float(np.median(wins)) if wins else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budgets", default="1000,3000,10000")
    ap.add_argument("--models", default="max,digits8", help="max, digits8, digits32")
    ap.add_argument("--methods", default="rs,rs-uniform,de,scan,sparse-rs")
    ap.add_argument("--digits-per-class", type=int, default=3)
    ap.add_argument("--scan-max-queries", type=int, default=40_000,
                    help="the scan's cap per image (a 64x64 corner scan alone is 32,768)")
    ap.add_argument("--best-score", action="store_true")
    ap.add_argument("--sparse-rs", default=".venv-peers/sparse-rs", metavar="DIR")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    methods = args.methods.split(",")
    top = max(budgets)
    torch.set_num_threads(2)
    from onepixel.optimize.de import DEConfig
    from onepixel.optimize.rs import RSConfig

    lines = ["# rs against DE, the corner scan and Sparse-RS: success and queries per flip", "",
             f"Machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the start "
             "(a shared, busy machine: wall times are indicative only).", ""]
    table = ["| model | method | budget | flipped | median queries per flip | wall (s, whole method) |",
             "|---|---|---:|---:|---:|---:|"]
    best_lines = []
    target_lines = ["", "At least DE's success rate at a third of DE's median queries per flip:", ""]
    per_image: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model_key in args.models.split(","):
            if model_key == "max":
                dataset, model, options = build_max(tmp / "max")
            elif model_key in ("digits8", "digits32"):
                side = 8 if model_key == "digits8" else 32
                dataset, model, options = build_digits(tmp / model_key, args.digits_per_class,
                                                       (side, side, 3))
            else:
                raise SystemExit(f"--models: unknown model {model_key!r} (max, digits8, digits32)")
            for method in methods:
                t0 = time.perf_counter()
                runs: dict[int, dict] = {}
                if method in ("rs", "rs-uniform"):
                    rs = RSConfig(prior=method == "rs")
                    for b in budgets:
                        runs[b] = campaign_outcomes(dataset, model, options,
                                                    tmp / f"{model_key}-{method}-{b}", method="rs",
                                                    max_queries=b, stop_on_success=True, rs=rs)
                elif method == "de":
                    de = DEConfig(population=100, maxiter=top // 100 - 1, tol=0.0)
                    once = campaign_outcomes(dataset, model, options, tmp / f"{model_key}-de",
                                             de=de, stop_on_success=True)
                    runs = dict.fromkeys(budgets, once)
                elif method == "scan":
                    once = campaign_outcomes(dataset, model, options, tmp / f"{model_key}-scan",
                                             method="scan", scan_step=255,
                                             max_queries=args.scan_max_queries)
                    runs = dict.fromkeys(budgets, once)
                elif method == "sparse-rs":
                    once = sparse_rs_outcomes(dataset, model, options, top, Path(args.sparse_rs))
                    runs = dict.fromkeys(budgets, once)
                wall = time.perf_counter() - t0
                per_image[(model_key, method)] = runs[top]
                for b in budgets:
                    k, n, med = at_budget(runs[b], b)
                    extra = ""
                    if method == "scan":
                        full = np.median([o.queries for o in runs[b].values()])
                        flips = sum(o.success for o in runs[b].values())
                        extra = (f" (the full scan: {flips}/{len(runs[b])} flipped, median "
                                 f"{full:,.0f} queries per image)")
                    table.append(f"| {model_key} | {method} | {b:,} | {k}/{n} | "
                                 f"{'-' if np.isnan(med) else f'{med:,.0f}'}{extra} | {wall:.1f} |")
                    print(table[-1], flush=True)
            if "rs" in methods and "de" in methods:
                de_k, de_n, de_med = at_budget(per_image[(model_key, "de")], top)
                if de_k:
                    third = max(1, int(de_med // 3))
                    rs_third = campaign_outcomes(dataset, model, options, tmp / f"{model_key}-third",
                                                 method="rs", max_queries=third,
                                                 stop_on_success=True)
                    k, n, med = at_budget(rs_third, third)
                    verdict = "met" if k / n >= de_k / de_n else "MISSED"
                    target_lines.append(
                        f"- {model_key}: DE flips {de_k}/{de_n} at a median of {de_med:,.0f} queries "
                        f"per flip ({top:,} budget); rs with a budget of a third of that "
                        f"({third:,} queries) flips {k}/{n} (median {med:,.0f}): {verdict}")
                    print(target_lines[-1], flush=True)
            if model_key == "max":
                names = sorted(set().union(*(per_image[("max", m)] for m in methods)))
                best_lines += ["", f"Per patch at {top:,} queries (queries to the flip; - : not "
                               "flipped):", "", "| image | " + " | ".join(methods) + " |",
                               "|---|" + "---:|" * len(methods)]
                for name in names:
                    cells = []
                    for m in methods:
                        o = per_image[("max", m)].get(name)
                        # The scan cannot stop early: its flips are shown at its full cost.
                        cells.append(f"{o.queries:,}" if o is not None and o.success
                                     and (o.queries <= top or m == "scan") else "-")
                    best_lines.append(f"| {name} | " + " | ".join(cells) + " |")
            if args.best_score and model_key == "max":
                rs_best = campaign_outcomes(dataset, model, options, tmp / "best-rs", method="rs",
                                            max_queries=10_000)
                de_best = campaign_outcomes(dataset, model, options, tmp / "best-de",
                                            de=DEConfig(population=200, maxiter=49, tol=0.0))
                best_lines += ["", "Best score after 10,000 queries without stopping on success "
                               "(MAX patches, P(mitosis), lower is better):", "",
                               "| image | rs | DE (pop 200, 50 generations) | rs no worse |",
                               "|---|---:|---:|---|"]
                for name in sorted(rs_best):
                    r, d = rs_best[name].score, de_best[name].score
                    best_lines.append(f"| {name} | {r:.4f} | {d:.4f} | {'yes' if r <= d else 'NO'} |")
                    print(best_lines[-1], flush=True)
    emit("\n".join(lines + table + target_lines + best_lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
