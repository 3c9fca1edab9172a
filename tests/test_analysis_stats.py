"""The papers' statistics against values computed by hand on small tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onepixel.analysis import (
    chromatic_h,
    chromatic_stats,
    colour_name,
    early_convergence,
    expected_parity,
    gain,
    generalise_reason,
    location_map,
    neighbour_mean,
    nit_distribution,
    nit_stats,
    paper_filter,
    parity_counts,
    score_stats,
    spatial_stats,
    spearman,
    success_counts,
    top_colours,
)
from onepixel.errors import OnepixelError

approx = pytest.approx


# --------------------------------------------------------------------------- scores (Tables 1-2)


def test_score_stats_by_hand():
    s = score_stats([0.1, 0.2, 0.6])
    # mean 0.3; deviations -0.2, -0.1, 0.3; SD = sqrt((0.04 + 0.01 + 0.09) / 2) = sqrt(0.07)
    assert (s.n, s.max, s.min, s.median) == (3, 0.6, 0.1, 0.2)
    assert s.mean == approx(0.3)
    assert s.sd == approx(math.sqrt(0.07))


def test_score_stats_even_count_median_and_nan_ignored():
    s = score_stats([0.9, 0.1, np.nan, 0.3, 0.5])
    assert s.n == 4 and s.median == approx(0.4) and s.mean == approx(0.45)


def test_score_stats_empty_and_single():
    empty = score_stats([])
    assert empty.n == 0
    assert all(math.isnan(v) for v in (empty.max, empty.mean, empty.median, empty.sd, empty.min))
    one = score_stats([0.7])
    assert (one.n, one.max, one.mean, one.median, one.min) == (1, 0.7, 0.7, 0.7, 0.7)
    assert math.isnan(one.sd)  # ddof=1 needs two values


def test_gain_sign_follows_the_goal():
    assert gain("decrease", np.array([0.9]), np.array([0.2]))[0] == approx(0.7)
    assert gain("increase", np.array([0.1]), np.array([0.6]))[0] == approx(0.5)


def test_success_counts_decrease_strict_thresholds():
    s = success_counts("decrease", np.array([0.01, 0.3, 0.5, 0.7, 0.05]))
    # below 0.5: 0.01, 0.3, 0.05 (0.5 itself is not a success); below 0.05: 0.01 only
    assert (s.n, s.success, s.strong) == (5, 3, 1)
    assert s.success_percent == approx(60.0) and s.strong_percent == approx(20.0)
    assert s.criterion == "< 0.5 / < 0.05"


def test_success_counts_increase():
    s = success_counts("increase", np.array([0.99, 0.6, 0.5, 0.2]))
    assert (s.success, s.strong) == (2, 1)
    assert s.strong_threshold == 0.95 and s.criterion == "> 0.5 / > 0.95"


def test_success_counts_empty_gives_nan_percent():
    s = success_counts("decrease", np.array([]))
    assert s.n == 0 and math.isnan(s.success_percent)


def test_early_convergence_by_hand():
    before = np.array([0.99, 0.98, 0.97, 0.96])
    after = np.array([0.93, 0.10, 0.20, 0.95])
    e = early_convergence("decrease", before, after, np.array([True, False, False, True]))
    assert (e.n, e.early) == (4, 2) and e.percent == approx(50.0)
    assert e.mean_gain_early == approx((0.06 + 0.01) / 2)  # the paper's "only 0.06 on mean"
    assert e.median_gain_rest == approx((0.88 + 0.77) / 2)


def test_nit_stats_and_distribution():
    n = nit_stats(np.array([1, 1, 40, 100]), maxiter=100)
    assert n.mean == approx(35.5) and n.median == approx(20.5) and n.at_limit == 1
    assert (n.min, n.max) == (1, 100)
    assert nit_distribution(np.array([1, 1, 2, 10, 11, 50, 99, 100]), 100) == [
        ("1", 2), ("2-10", 2), ("11-25", 1), ("26-50", 1), ("51-99", 1), ("100", 1)]
    assert nit_distribution(np.array([1, 2, 10]), 10) == [("1", 1), ("2-9", 1), ("10", 1)]


# --------------------------------------------------------------------------- colours


def test_top_colours_counts_and_tie_order():
    rgb = np.array([(255, 255, 0)] * 3 + [(255, 255, 255)] * 2 + [(0, 0, 0)] * 2 + [(1, 2, 3)])
    top = top_colours(rgb, k=3)
    assert [c.rgb for c in top] == [(255, 255, 0), (0, 0, 0), (255, 255, 255)]  # tie: smaller value first
    assert [c.count for c in top] == [3, 2, 2]
    assert top[0].percent == approx(37.5) and top[0].hex == "#ffff00"
    assert colour_name(top[0].rgb) == "pure yellow" and colour_name((1, 2, 3)) == ""
    assert top_colours(np.zeros((0, 3))) == ()


# --------------------------------------------------------------------------- chromatic


# A 3x3 image: R = 10..90 row by row, G = 2R, B = 255 - R.
R = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]])
IMAGE = np.stack([R, 2 * R, 255 - R], axis=-1).astype(np.uint8)


@pytest.mark.parametrize(("x", "y", "red_mean", "count"), [
    (1, 1, (10 + 20 + 30 + 40 + 60 + 70 + 80 + 90) / 8, 8),  # centre: 8 neighbours
    (0, 0, (20 + 40 + 50) / 3, 3),                            # top-left corner
    (2, 2, (50 + 60 + 80) / 3, 3),                            # bottom-right corner
    (2, 0, (20 + 50 + 60) / 3, 3),                            # top-right corner
    (1, 0, (10 + 30 + 40 + 50 + 60) / 5, 5),                  # top edge
    (0, 1, (10 + 20 + 50 + 70 + 80) / 5, 5),                  # left edge
    (1, 2, (40 + 50 + 60 + 70 + 90) / 5, 5),                  # bottom edge
])
def test_neighbour_mean_corners_and_edges(x, y, red_mean, count):
    mu = neighbour_mean(IMAGE, x, y)
    assert mu == approx(np.array([red_mean, 2 * red_mean, 255 - red_mean]) / 255)


def test_neighbour_mean_excludes_the_pixel_itself_and_checks_bounds():
    img = np.zeros((5, 5, 3), dtype=np.uint8)
    img[2, 2] = 255  # only the centre is bright: its neighbours average 0
    assert neighbour_mean(img, 2, 2) == approx(np.zeros(3))
    assert neighbour_mean(img, 1, 1) == approx(np.full(3, 255 / 8 / 255))
    with pytest.raises(OnepixelError, match="outside"):
        neighbour_mean(img, 5, 0)


def test_chromatic_h_by_hand():
    # pure yellow on black: sqrt((1 + 1 + 0) / 3)
    assert chromatic_h(np.array([[255, 255, 0]]), np.zeros((1, 3)))[0] == approx(math.sqrt(2 / 3))
    # yellow at the top-left corner of IMAGE: mu = (110/3, 220/3, 655/3) / 255
    mu = neighbour_mean(IMAGE, 0, 0)
    expected = math.sqrt(((255 - 110 / 3) ** 2 + (255 - 220 / 3) ** 2 + (0 - 655 / 3) ** 2) / 3) / 255
    assert chromatic_h(np.array([[255, 255, 0]]), mu[None])[0] == approx(expected)
    assert expected == approx(0.81111, abs=1e-5)
    # identical colour: 0
    assert chromatic_h(np.array([[40, 80, 120]]), np.array([[40, 80, 120]]) / 255)[0] == approx(0.0)


def test_paper_filter():
    goal = np.array(["decrease", "decrease", "increase", "increase", "decrease"])
    score = np.array([0.89, 0.9, 0.11, 0.1, np.nan])
    assert paper_filter(goal, score).tolist() == [True, False, True, False, False]


def test_chromatic_stats_halves_and_rank_correlation():
    h = np.array([0.1, 0.2, 0.3, 0.4])
    before = np.full(4, 0.99)
    after = np.array([0.9, 0.8, 0.3, 0.1])  # bigger h, bigger drop
    c = chromatic_stats(h, "decrease", before, after)
    assert c.n == 4 and c.median == approx(0.25) and c.mean == approx(0.25)
    assert c.gain_high == approx(((0.99 - 0.3) + (0.99 - 0.1)) / 2)
    assert c.gain_low == approx(((0.99 - 0.9) + (0.99 - 0.8)) / 2)
    assert c.rho == approx(1.0)


def test_spearman_matches_hand_and_scipy():
    assert spearman(np.array([1, 2, 3]), np.array([3, 2, 1])) == approx(-1.0)
    assert math.isnan(spearman(np.array([1, 2]), np.array([1, 2])))
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 50).astype(float), rng.normal(size=50)  # ties in a
    assert spearman(a, b) == approx(stats.spearmanr(a, b).statistic)


# --------------------------------------------------------------------------- spatial (Tables 1-2)


def test_spatial_stats_by_hand():
    v = np.array([[0, 0, 0, 0, 0], [2, 4, 6, 8, 10], [4, 8, 12, 16, 20]])
    s = spatial_stats(v)
    assert s.n == 3
    assert s.mean == approx((2, 4, 6, 8, 10)) and s.median == approx((2, 4, 6, 8, 10))
    assert s.sd == approx((2, 4, 6, 8, 10))  # sqrt(((-k)^2 + 0 + k^2) / 2) = k
    assert spatial_stats(np.zeros((0, 5))).n == 0


# --------------------------------------------------------------------------- periodicity


def test_parity_counts_by_hand():
    # (0,0) even-even, (1,0) one odd, (2,1) one odd, (3,1) both odd, (4,2) even-even
    p = parity_counts(np.array([0, 1, 2, 3, 4]), np.array([0, 0, 1, 1, 2]))
    assert (p.n, p.both_even, p.one_odd, p.both_odd) == (5, 2, 2, 1)
    assert (p.x_even, p.x_odd, p.y_even, p.y_odd) == (3, 2, 3, 2)
    assert p.percent("both_even") == approx(40.0)


def test_expected_parity():
    e = expected_parity(64, 64)
    assert e["both_even"] == approx(0.25) and e["one_odd"] == approx(0.5) and e["both_odd"] == approx(0.25)
    e3 = expected_parity(3, 3)  # columns 0 and 2 are even: 2/3 per axis
    assert e3["both_even"] == approx(4 / 9) and e3["x_odd"] == approx(1 / 3)


def test_location_map_counts_rows_and_columns():
    m = location_map(np.array([1, 1, 3, 9]), np.array([0, 0, 2, 0]), shape=(4, 5))
    assert m.shape == (4, 5) and m.sum() == 3  # x=9 is outside and ignored
    assert m[0, 1] == 2 and m[2, 3] == 1


def test_generalise_reason_groups_skip_reasons():
    assert generalise_reason("positive scored 0.85 < 0.9") == "positive scored < 0.9"
    assert generalise_reason("negative scored 1.2e-05 > 0.1") == "negative scored > 0.1"
    assert generalise_reason("") == "(no reason given)"
