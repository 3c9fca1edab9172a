"""The one-pixel attack: skip rule, directions, success criteria, memoisation, scipy agreement."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.optimize import differential_evolution

from onepixel.attack import (
    AttackConfig,
    OnePixelAttack,
    judge,
    plan_attack,
    problem_id_for,
)
from onepixel.errors import OnepixelError
from onepixel.models import CallableClassifier, ModelOptions, load_classifier
from onepixel.optimize.de import DEConfig
from onepixel.scoring.evaluators import HostEvaluator, TorchEvaluator, make_evaluator

PEAK = (40, 12)  # (x, y) where the toy model is most sensitive


def toy_model(images: np.ndarray) -> np.ndarray:
    """Score = 0.5 + brightness change weighted by a Gaussian around PEAK (a smooth landscape)."""
    yy, xx = np.mgrid[0:64, 0:64]
    weight = np.exp(-((xx - PEAK[0]) ** 2 + (yy - PEAK[1]) ** 2) / (2 * 6.0**2))
    delta = images.astype(np.float64).sum(axis=3) / 765.0 - 0.5
    return np.clip(0.5 + 0.45 * (weight * delta).sum(axis=(1, 2)), 0, 1)


@pytest.fixture(scope="module")
def grey_images():
    return np.full((2, 64, 64, 3), 128, np.uint8)


def test_plan_attack_skip_rule_and_directions():
    cfg = AttackConfig()
    assert plan_attack(0.95, True, "mitosis", "normal", cfg).skip_reason == ""
    plan = plan_attack(0.85, True, "mitosis", "normal", cfg)
    assert plan.goal == "decrease" and plan.direction == "mitosis-to-normal"
    assert "0.85 < 0.9" in plan.skip_reason
    plan = plan_attack(0.2, False, "mitosis", "normal", cfg)
    assert plan.goal == "increase" and plan.direction == "normal-to-mitosis"
    assert "> 0.1" in plan.skip_reason
    assert plan_attack(0.1, False, "tumour", "benign", cfg).direction == "benign-to-tumour"
    assert plan_attack(0.1, False, "m", "n", cfg).skip_reason == ""  # 0.1 itself is attacked


def test_judge_thresholds():
    cfg = AttackConfig()
    assert judge("decrease", 0.49, cfg) == (True, False)
    assert judge("decrease", 0.04, cfg) == (True, True)
    assert judge("decrease", 0.5, cfg) == (False, False)
    assert judge("increase", 0.51, cfg) == (True, False)
    assert judge("increase", 0.96, cfg) == (True, True)
    with pytest.raises(OnepixelError, match="within"):
        AttackConfig(success_threshold=1.5)


def test_problem_ids_are_stable_and_distinct():
    assert problem_id_for("a/b.png") == problem_id_for("a/b.png")
    assert problem_id_for("a/b.png") != problem_id_for("a/c.png")
    assert 0 <= problem_id_for("x") < 2**63


def test_attack_moves_the_score_both_ways(grey_images):
    clf = CallableClassifier(toy_model, (64, 64, 3), "toy")
    attack = OnePixelAttack(HostEvaluator(clf), AttackConfig(de=DEConfig(population=40,
                                                                          maxiter=40, tol=0)))
    finished = []
    results = attack.run(grey_images, ["decrease", "increase"], [1, 2],
                         on_finish=lambda i, r, h: finished.append((i, h)))
    down, up = results
    # The optimum is known: black (decrease) or white (increase) at the sensitivity peak.
    assert down.x.tolist() == [*PEAK, 0, 0, 0]
    assert up.x.tolist() == [*PEAK, 255, 255, 255]
    best_down, best_up = grey_images[0].copy(), grey_images[0].copy()
    best_down[PEAK[1], PEAK[0]] = 0
    best_up[PEAK[1], PEAK[0]] = 255
    assert down.fun == pytest.approx(toy_model(best_down[None])[0], abs=1e-12)
    assert 1 - up.fun == pytest.approx(toy_model(best_up[None])[0], abs=1e-12)
    # History is reported in score units: non-increasing for decrease, non-decreasing for increase.
    hist = dict(finished)
    assert np.all(np.diff(hist[0]) <= 0) and np.all(np.diff(hist[1]) >= 0)
    assert hist[1][-1] == pytest.approx(1 - up.fun)


def test_memoisation_changes_nothing_but_the_work(max_model_path, sample_images):
    clf = load_classifier(str(max_model_path), ModelOptions(device="cpu"))
    cfg = DEConfig(population=30, maxiter=15)
    runs = []
    for memoize in (False, True):
        ev = HostEvaluator(clf)
        res = OnePixelAttack(ev, AttackConfig(de=cfg, memoize=memoize)).run(
            sample_images, ["decrease", "increase"], [7, 8])
        runs.append((res, ev.n_evaluations))
    (plain, n_plain), (memo, n_memo) = runs
    for a, b in zip(plain, memo, strict=True):
        assert np.array_equal(a.x, b.x) and a.fun == b.fun and a.nit == b.nit and a.nfev == b.nfev
    assert n_memo <= n_plain == sum(r.nfev for r in plain)


def test_torch_and_host_evaluators_agree(max_model_path, sample_images):
    clf = load_classifier(str(max_model_path), ModelOptions(device="cpu", engine="torch"))
    torch_ev = make_evaluator(clf)
    assert isinstance(torch_ev, TorchEvaluator)
    host_ev = HostEvaluator(clf)
    rng = np.random.default_rng(0)
    cand = np.concatenate([rng.integers(0, 64, (2, 6, 2)), rng.integers(0, 256, (2, 6, 3))], axis=2)
    cand[0, 0] = (63, 63, 255, 255, 0)
    got = torch_ev.scores(sample_images, cand)
    np.testing.assert_allclose(got, host_ev.scores(sample_images, cand), rtol=1e-12)
    # ... and both equal scoring hand-made perturbed images.
    manual = sample_images[0].copy()
    manual[63, 63] = (255, 255, 0)
    assert got[0, 0] == pytest.approx(clf.scores(manual[None])[0], rel=1e-6)
    with pytest.raises(OnepixelError, match="outside"):
        host_ev.scores(sample_images, np.full((2, 1, 5), 64))


def _scipy_one_pixel(clf, image, goal, seed, population, maxiter, vectorized):
    def f(v):
        v = np.atleast_2d(np.asarray(v).T).astype(np.int64)  # (N, 5)
        batch = np.repeat(image[None], len(v), axis=0)
        batch[np.arange(len(v)), v[:, 1], v[:, 0]] = v[:, 2:]
        s = clf.scores(batch)
        e = s if goal == "decrease" else 1 - s
        return e if vectorized else float(e[0])

    return differential_evolution(
        f, [(0, 63), (0, 63), (0, 255), (0, 255), (0, 255)], strategy="best1bin",
        popsize=population // 5, init="latinhypercube", mutation=0.5, recombination=0.7,
        tol=0.01, atol=0, maxiter=maxiter, polish=False, integrality=[True] * 5, seed=seed,
        vectorized=vectorized, updating="deferred" if vectorized else "immediate")


@pytest.mark.parametrize("updating", ["deferred", "immediate"])
@pytest.mark.slow
def test_one_pixel_objective_matches_scipy_in_distribution(max_model_path, true_png, updating):
    """fun / nit / nfev over seeds on the real model agree with scipy (two-sample KS tests)."""
    from onepixel.datasets.images import load_image

    clf = load_classifier(str(max_model_path), ModelOptions(device="cpu"))
    image = load_image(true_png)
    population, maxiter, seeds = 20, 8, 40
    ref = [_scipy_one_pixel(clf, image, "decrease", s, population, maxiter,
                            vectorized=updating == "deferred") for s in range(seeds)]
    ours = OnePixelAttack(HostEvaluator(clf), AttackConfig(de=DEConfig(
        population=population, maxiter=maxiter, updating=updating, seed=123))).run(
        np.repeat(image[None], seeds, axis=0), ["decrease"] * seeds, list(range(seeds)))
    for key in ("fun", "nit", "nfev"):
        a = np.array([getattr(r, key) for r in ref], dtype=float)
        if key == "nfev" and updating == "deferred":
            a *= population  # scipy's vectorized mode counts calls of the whole population
        b = np.array([getattr(r, key) for r in ours], dtype=float)
        if np.ptp(a) == 0 and np.ptp(b) == 0:
            assert a[0] == b[0], key
            continue
        assert stats.ks_2samp(a, b).pvalue > 0.001, (key, a, b)


def test_stop_on_success_stops_each_image_when_its_goal_is_met():
    """A toy landscape where one pixel flips the score: with stop_on_success each problem stops
    in the generation its best crosses 0.5 (fewer queries, a less extreme score); without it
    every generation runs. Binary goals and a 3-class goal (argmax) alike."""
    yy, xx = np.mgrid[0:64, 0:64]
    weight = np.exp(-((xx - PEAK[0]) ** 2 + (yy - PEAK[1]) ** 2) / (2 * 20.0**2))

    def sharp(images):  # 0.9 on the grey image; a dark pixel near PEAK takes it below 0.5
        delta = images.astype(np.float64).sum(axis=3) / 765.0 - 128 / 255
        return np.clip(0.9 + 0.9 * (weight * delta).sum(axis=(1, 2)), 0, 1)

    images = np.full((3, 64, 64, 3), 128, np.uint8)
    clf = CallableClassifier(sharp, (64, 64, 3), "sharp")
    de = DEConfig(population=40, maxiter=60, tol=0)
    full = OnePixelAttack(HostEvaluator(clf), AttackConfig(de=de)).run(images, ["decrease"] * 3, [1, 2, 3])
    stopped = OnePixelAttack(HostEvaluator(clf), AttackConfig(de=de, stop_on_success=True)).run(
        images, ["decrease"] * 3, [1, 2, 3])
    assert all(f.fun < 0.5 and not f.stopped for f in full)
    for f, s in zip(full, stopped, strict=True):
        # Stopped in the generation it first crossed 0.5: fewer queries, a less extreme score.
        assert s.stopped and 0.3 < s.fun < 0.5 and s.nit < f.nit and s.nfev < f.nfev
        assert f.fun < s.fun
        assert not s.converged  # so not "converged early": the attack succeeded

    from onepixel.attack.goals import Untargeted

    def three(images):
        p = sharp(images)
        return np.stack([p, (1 - p) * 0.9, (1 - p) * 0.1], axis=1)

    clf3 = CallableClassifier(three, (64, 64, 3), "three", n_classes=3)
    res = OnePixelAttack(HostEvaluator(clf3), AttackConfig(de=de, stop_on_success=True)).run(
        images[:1], [Untargeted(true_class=0)], [7])
    best = images[:1].copy()
    best[0, int(res[0].x[1]), int(res[0].x[0])] = res[0].x[2:].astype(np.uint8)
    assert res[0].stopped and three(best)[0].argmax() != 0
