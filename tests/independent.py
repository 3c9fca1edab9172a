"""Checks written out in the tests, independently of the code under test: the chromatic h, the
Pareto dominance, and reading the files and the report's HTML as a user would."""

from __future__ import annotations

import csv
import html
import re
from pathlib import Path

import numpy as np


def own_h(image: np.ndarray, x: int, y: int, colour) -> float:
    """h: RMSE over the C channels on [0, 1] between ``colour`` and the mean of the existing
    8 neighbours of (x, y) in ``image`` (H, W, C)."""
    height, width = image.shape[:2]
    around = [image[y + dy, x + dx].astype(float) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
              if (dx or dy) and 0 <= y + dy < height and 0 <= x + dx < width]
    return float(np.sqrt(np.mean(((np.asarray(colour, float) - np.mean(around, axis=0)) / 255.0) ** 2)))


def dominated(points: np.ndarray) -> list[int]:
    """Rows of (N, 2) minimised objectives that another row dominates (brute force)."""
    return [i for i, p in enumerate(points)
            if any(np.all(q <= p) and np.any(q < p) for j, q in enumerate(points) if j != i)]


def csv_dicts(path: str | Path) -> list[dict[str, str]]:
    """A CSV file's rows as dicts (the csv module only)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def report_section(text: str, key: str) -> str:
    """The HTML of the report's ``<section id="key">``."""
    start = text.index(f'<section id="{key}">')
    return text[start:text.index("</section>", start)]


def table_cells(section: str, table: str) -> list[list[str]]:
    """The body cells of the report table ``table-<table>``, as text."""
    block = section[section.index(f'id="table-{table}"'):]
    block = block[:block.index("</table>")]
    body = block[block.index("<tbody>"):]
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)]
