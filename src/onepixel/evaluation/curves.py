"""Success against queries, per method and for the ensemble, built from the rows.

A method's curve is read from its RUN's attacks.csv: at ``q`` queries, the share of the images
it attacked that it broke with at most ``q`` queries (``nfev``). The ensemble's curve is read
from evaluation.csv: the share of the attacked images broken with at most ``q`` queries in all
(the methods run one after the other, so an image broken by DE counts rs's queries too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: curves.csv's columns.
CURVE_COLUMNS = ("method", "queries", "broken", "attacked", "success_rate")


@dataclass(frozen=True)
class Curve:
    """One method's success against queries.

    Attributes
    ----------
    method : str
    queries : ndarray, (M,) int64
        Each distinct query count at which an image was broken, ascending.
    broken : ndarray, (M,) int64
        Images broken with at most ``queries[i]`` queries.
    attacked : int
        Images the method attacked (the denominator).
    """

    method: str
    queries: np.ndarray
    broken: np.ndarray
    attacked: int

    @property
    def success_rate(self) -> np.ndarray:
        """(M,) float64 in [0, 1]."""
        return self.broken / max(self.attacked, 1)

    def rows(self) -> list[tuple[str, int, int, int, float]]:
        return [(self.method, int(q), int(b), self.attacked, float(b) / max(self.attacked, 1))
                for q, b in zip(self.queries, self.broken, strict=True)]


def success_curve(method: str, queries: Iterable[int], success: Iterable[bool]) -> Curve:
    """The curve of one method from its rows: ``queries`` (N,) spent and ``success`` (N,)
    for every image it attacked."""
    q = np.asarray(list(queries), dtype=np.int64)
    ok = np.asarray(list(success), dtype=bool)
    if q.shape != ok.shape:
        raise ValueError(f"queries {q.shape} and success {ok.shape} must have the same length")
    won = np.sort(q[ok])
    steps, counts = np.unique(won, return_counts=True)
    return Curve(method, steps, np.cumsum(counts), len(q))


def success_curves(rows: dict[str, Sequence[tuple[int, bool]]]) -> list[Curve]:
    """Curves from ``{method: [(queries, success), ...]}`` (one pair per attacked image)."""
    return [success_curve(m, [q for q, _ in r], [s for _, s in r]) for m, r in rows.items()]


def draw_curves(curves: Sequence[Curve], path, title: str = "") -> None:
    """A step plot of the curves (log queries on x, success rate on y) as a PNG at ``path``."""
    from onepixel.plotting import figure, save_png

    with figure(6.4, 4.0) as fig:
        ax = fig.add_subplot()
        for c in curves:
            if c.attacked == 0:
                continue
            x = np.concatenate([[1], c.queries])
            y = np.concatenate([[0.0], c.success_rate]) * 100
            ax.step(x, y, where="post",
                    label=f"{c.method} ({int(c.broken[-1]) if len(c.broken) else 0}/{c.attacked})")
        ax.set_xscale("log")
        ax.set_xlabel("queries per image")
        ax.set_ylabel("images broken (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        if title:
            ax.set_title(title, fontsize=10)
        save_png(fig, path)
