"""The one guard on narrative comparisons: a conclusion only where a test supports it.

Every sentence of the analysis, the report and the terminal that compares two groups, or an
observed rate with an expected one, goes through :class:`Evidence`: it states the sample size and
the test's p-value, and below what the test can support (``p >= ALPHA``, which includes samples
too small for the test ever to reach ``ALPHA``) it says "too few to tell" instead of the
conclusion. The tests are two-sided and exact where that is cheap (binomial, Fisher) and
asymptotic where not (Mann-Whitney U with many values, Spearman); the p-values are printed to
two significant digits, never used as a cut-off for anything but the wording.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Two-sided significance level below which a comparison is stated as a conclusion.
ALPHA = 0.05
#: What a narrative says instead of a conclusion its test cannot support.
TOO_FEW = "too few to tell"


@dataclass(frozen=True)
class Evidence:
    """The sample size and test behind one comparison.

    Attributes
    ----------
    sizes : str
        The sample size(s) in words, e.g. ``"N = 3 vs 2"`` or ``"N = 40"``.
    test : str
        The test's name, e.g. ``"Mann-Whitney U"``.
    p : float
        Its two-sided p-value; ``nan`` when the test cannot be run (an empty group, no spread).
    """

    sizes: str
    test: str
    p: float

    @property
    def supported(self) -> bool:
        """True when the test supports a conclusion (``p < ALPHA``)."""
        return not math.isnan(self.p) and self.p < ALPHA

    @property
    def detail(self) -> str:
        """``"N = 3 vs 2; Mann-Whitney U p = 0.4"`` (or ``"...; no test possible"``)."""
        if math.isnan(self.p):
            return f"{self.sizes}; no test possible"
        return f"{self.sizes}; {self.test} p {_p(self.p)}"

    def claim(self, conclusion: str) -> str:
        """``"<conclusion> (N = ..; test p = ..)"`` when supported, else ``"too few to tell (..)"``."""
        if self.supported:
            return f"{conclusion} ({self.detail})"
        return f"{TOO_FEW} ({self.detail})"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.2g}"


def _clean(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[~np.isnan(v)]


def compare_groups(a, b) -> Evidence:
    """Do two groups of values differ? Two-sided Mann-Whitney U (exact for small samples).

    Parameters
    ----------
    a, b : array_like, (N,) and (M,)
        The values of each group; ``nan`` entries are dropped.
    """
    from scipy.stats import mannwhitneyu

    a, b = _clean(a), _clean(b)
    sizes = f"N = {a.size} vs {b.size}"
    if a.size == 0 or b.size == 0 or np.ptp(np.concatenate([a, b])) == 0:
        return Evidence(sizes, "Mann-Whitney U", float("nan"))
    return Evidence(sizes, "Mann-Whitney U", float(mannwhitneyu(a, b, alternative="two-sided").pvalue))


def correlation(x, y) -> Evidence:
    """Do two paired variables go together? Spearman's rank correlation test.

    Parameters
    ----------
    x, y : array_like, (N,)
        Paired values; pairs with a ``nan`` are dropped.
    """
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    sizes = f"N = {x.size}"
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Evidence(sizes, "Spearman", float("nan"))
    return Evidence(sizes, "Spearman", float(spearmanr(x, y).pvalue))


def compare_rate(count: int, n: int, expected: float) -> Evidence:
    """Is ``count`` of ``n`` another rate than ``expected`` (0..1)? Exact two-sided binomial test."""
    from scipy.stats import binomtest

    sizes = f"N = {n}"
    if n <= 0 or not 0.0 < expected < 1.0:
        return Evidence(sizes, "binomial", float("nan"))
    return Evidence(sizes, "binomial", float(binomtest(int(count), int(n), expected).pvalue))


def compare_rates(count_a: int, n_a: int, count_b: int, n_b: int) -> Evidence:
    """Do two success rates differ (``count_a`` of ``n_a`` against ``count_b`` of ``n_b``)?
    Fisher's exact test, two-sided."""
    from scipy.stats import fisher_exact

    sizes = f"N = {n_a} vs {n_b}"
    if n_a <= 0 or n_b <= 0:
        return Evidence(sizes, "Fisher exact", float("nan"))
    table = [[int(count_a), int(n_a - count_a)], [int(count_b), int(n_b - count_b)]]
    return Evidence(sizes, "Fisher exact", float(fisher_exact(table).pvalue))
