"""Reading a RUN folder (see ``docs/run-format.md``) into column arrays.

Nothing here re-runs an attack: every number of the analysis comes from ``config.json``,
``attacks.csv``, ``history.csv`` and, when present, ``confmaps/*/confmap.npz``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onepixel.errors import RunError
from onepixel.runs.config import RunConfig
from onepixel.runs.schema import (
    ATTACK_COLUMNS,
    ATTACKS,
    CONFIG,
    GOALS,
    HISTORY_COLUMNS,
    OPTIONAL_ATTACK_COLUMNS,
    STATUSES,
)

log = logging.getLogger(__name__)

#: attacks.csv rows parsed at a time (bounds the reader's transient memory, ~20 MB).
READ_CHUNK_ROWS = 8192
#: Text columns with few distinct values: each value is stored once, not once per row.
_REPEATED = frozenset({"label", "direction", "goal", "status", "skip_reason", "original_class",
                       "attacked_class"})

#: Columns every attacks.csv has (RUNs of every onepixel version).
REQUIRED_COLUMNS = tuple(c for c in ATTACK_COLUMNS if c not in OPTIONAL_ATTACK_COLUMNS)

@dataclass(frozen=True, eq=False)
class AttackTable:
    """``attacks.csv`` as column arrays, one entry per image (skipped images included).

    Missing values (skipped images) are ``nan`` in float columns and ``-1`` in integer columns.

    Attributes
    ----------
    image, label, direction, goal, status, skip_reason : ndarray, (N,), str (object)
    original_score, attacked_score, seconds : ndarray, (N,), float64
    x, y, r, g, b, nit, nfev : ndarray, (N,), int64
    early_converged, success, strong_success : ndarray, (N,), bool
    original_class, attacked_class, pixels : ndarray, (N,), str (object)
        Empty strings in RUNs written before these columns existed.
    """

    image: np.ndarray
    label: np.ndarray
    direction: np.ndarray
    goal: np.ndarray
    status: np.ndarray
    skip_reason: np.ndarray
    original_score: np.ndarray
    attacked_score: np.ndarray
    x: np.ndarray
    y: np.ndarray
    r: np.ndarray
    g: np.ndarray
    b: np.ndarray
    nit: np.ndarray
    nfev: np.ndarray
    early_converged: np.ndarray
    success: np.ndarray
    strong_success: np.ndarray
    seconds: np.ndarray
    original_class: np.ndarray
    attacked_class: np.ndarray
    pixels: np.ndarray

    def __len__(self) -> int:
        return int(self.image.shape[0])

    @property
    def attacked(self) -> np.ndarray:
        """(N,) bool: rows with ``status == "attacked"``."""
        return self.status == "attacked"

    @property
    def rgb(self) -> np.ndarray:
        """(N, 3) int64 attack colours (``-1`` for skipped rows)."""
        return np.stack([self.r, self.g, self.b], axis=1)

    def select(self, mask: np.ndarray) -> AttackTable:
        """The rows where ``mask`` (N,) bool is true, as a new table."""
        return AttackTable(**{name: getattr(self, name)[mask] for name in ATTACK_COLUMNS})

    def directions(self) -> list[tuple[str, str]]:
        """``(direction, goal)`` pairs present, ``decrease`` first, then by name."""
        pairs = {(str(d), str(g)) for d, g in zip(self.direction, self.goal, strict=True)}
        return sorted(pairs, key=lambda p: (GOALS.index(p[1]), p[0]))

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], source: str = "attacks.csv") -> AttackTable:
        """Build a table from dict rows with the ``attacks.csv`` columns (values as text or numbers).

        Raises
        ------
        RunError
            A missing column, or a value that does not parse; the message names ``source`` and the line.
        """
        rows = list(rows)
        header = tuple(rows[0].keys()) if rows else ATTACK_COLUMNS
        _check_columns(header, REQUIRED_COLUMNS, source)
        records = [[_text(row.get(c, "")) for c in ATTACK_COLUMNS] for row in rows]
        return _parse_attacks(records, source, first_line=2)


def empty_attack_table() -> AttackTable:
    """A table with no rows."""
    return _parse_attacks([], "attacks.csv", first_line=2)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value)


def _check_columns(header: Iterable[str], required: Iterable[str], source: str) -> None:
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise RunError(
            f"{source}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'none'}. "
            f"Expected the columns of docs/run-format.md ({', '.join(required)}): is this a RUN "
            f"folder written by `onepixel attack`?")


def _parse_attacks(records: list[list[str]], source: str, first_line: int) -> AttackTable:
    n = len(records)
    cols = list(zip(*records, strict=True)) if n else [() for _ in ATTACK_COLUMNS]
    by_name = dict(zip(ATTACK_COLUMNS, cols, strict=True))

    def strings(name: str) -> np.ndarray:
        out = np.empty(n, dtype=object)
        if name in _REPEATED:
            seen: dict[str, str] = {}
            out[:] = [seen.setdefault(s, s) for s in (t.strip() for t in by_name[name])]
        else:
            out[:] = [s.strip() for s in by_name[name]]
        return out

    def numbers(name: str, kind: type, optional: bool) -> np.ndarray:
        values = [t.strip() for t in by_name[name]]
        if not optional and not all(values):
            i = values.index("")
            raise RunError(f"{source} line {i + first_line}: column {name!r} is empty; "
                                f"it must hold a number (re-run `onepixel attack` to repair the RUN)")
        try:
            arr = np.array([t or "nan" for t in values], dtype=np.float64).reshape(n)
        except ValueError:
            for i, text in enumerate(values):
                try:
                    float(text or "nan")
                except ValueError:
                    raise RunError(f"{source} line {i + first_line}: column {name!r} holds "
                                        f"{text!r}, not a number") from None
            raise
        if kind is float:
            return arr
        out = np.full(n, -1, dtype=np.int64)
        ok = np.isfinite(arr)
        out[ok] = arr[ok].astype(np.int64)
        return out

    def flags(name: str) -> np.ndarray:
        raw = numbers(name, int, optional=True)
        bad = np.flatnonzero(~np.isin(raw, (-1, 0, 1)))
        if bad.size:
            i = int(bad[0])
            raise RunError(f"{source} line {i + first_line}: column {name!r} must be 0 or 1, "
                                f"got {by_name[name][i]!r}")
        return raw == 1

    status = strings("status")
    goal = strings("goal")
    for name, arr, allowed in (("status", status, STATUSES), ("goal", goal, GOALS)):
        bad = np.flatnonzero(~np.isin(arr.astype(str), allowed)) if n else np.array([], dtype=int)
        if bad.size:
            i = int(bad[0])
            raise RunError(f"{source} line {i + first_line}: column {name!r} must be one of "
                                f"{', '.join(allowed)}, got {arr[i]!r}")
    table = AttackTable(
        image=strings("image"), label=strings("label"), direction=strings("direction"), goal=goal,
        status=status, skip_reason=strings("skip_reason"),
        # Empty for images that could not be read (skipped rows).
        original_score=numbers("original_score", float, optional=True),
        attacked_score=numbers("attacked_score", float, optional=True),
        x=numbers("x", int, optional=True), y=numbers("y", int, optional=True),
        r=numbers("r", int, optional=True), g=numbers("g", int, optional=True),
        b=numbers("b", int, optional=True),
        nit=numbers("nit", int, optional=True), nfev=numbers("nfev", int, optional=True),
        early_converged=flags("early_converged"), success=flags("success"),
        strong_success=flags("strong_success"), seconds=numbers("seconds", float, optional=True),
        original_class=strings("original_class"), attacked_class=strings("attacked_class"),
        pixels=strings("pixels"))
    attacked = table.attacked
    for name in ("attacked_score", "x", "y", "r", "g", "b"):
        arr = getattr(table, name)
        missing = attacked & (np.isnan(arr) if arr.dtype.kind == "f" else arr < 0)
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise RunError(f"{source} line {i + first_line}: attacked image {table.image[i]!r} "
                                f"has no {name}; the row is incomplete (re-run `onepixel attack` "
                                f"to repair the RUN)")
    nit = np.where(table.nit < 0, 0, table.nit)
    object.__setattr__(table, "nit", nit)
    return table


@dataclass(frozen=True)
class RunData:
    """Everything the analysis reads from a RUN folder.

    Attributes
    ----------
    run_dir : Path
    config : RunConfig
        ``config.json``, typed (:class:`~onepixel.runs.config.RunConfig`; the papers' defaults,
        ``config.found`` False, when the file is absent: a warning is logged).
    attacks : AttackTable
    history_path : Path or None
        ``history.csv`` when present (read lazily, see :func:`load_history`).
    confmap_paths : tuple of Path
        ``confmaps/*/confmap.npz`` files, sorted.
    """

    run_dir: Path
    config: RunConfig
    attacks: AttackTable
    history_path: Path | None
    confmap_paths: tuple[Path, ...] = field(default=())


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a RUN folder written by ``onepixel attack``: a folder holding
    ``config.json`` and ``attacks.csv`` (its figures are not a folder of images to score)."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG).is_file() and (path / ATTACKS).is_file()


def load_run(run_dir: str | Path) -> RunData:
    """Read a RUN folder written by ``onepixel attack``.

    Parameters
    ----------
    run_dir : path
        Folder holding ``attacks.csv`` (required), ``config.json`` and ``history.csv``.

    Returns
    -------
    RunData

    Raises
    ------
    RunError
        No such folder, no ``attacks.csv``, wrong columns or unparseable values, or a
        ``config.json`` that is not a JSON object; the message names the file.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"RUN folder not found: {run_dir} (give the folder a campaign wrote)")
    attacks_path = run_dir / "attacks.csv"
    if not attacks_path.is_file():
        raise RunError(f"{attacks_path} not found: {run_dir} is not a RUN folder written by "
                            f"`onepixel attack` (or the campaign has not finished any image yet)")
    config = load_run_config(run_dir)
    attacks = read_attacks_csv(attacks_path)
    history = run_dir / "history.csv"
    confmaps = tuple(sorted((run_dir / "confmaps").glob("*/confmap.npz")))
    log.info("read %d rows from %s", len(attacks), attacks_path)
    return RunData(run_dir=run_dir, config=config, attacks=attacks,
                   history_path=history if history.is_file() else None, confmap_paths=confmaps)


def load_run_config(run_dir: str | Path) -> RunConfig:
    """A RUN folder's ``config.json``, typed (:meth:`RunConfig.from_json`); without the file,
    the papers' defaults (``found`` False) and a warning.

    Raises
    ------
    RunError
        The file is not valid JSON, not an object, or holds a value of the wrong type; the
        message names the file.
    """
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        log.warning("%s not found: using the papers' default settings and no dataset", path)
        return RunConfig()
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: not valid JSON ({exc}); restore it from the campaign or "
                            f"delete it to use default settings") from exc
    return RunConfig.from_json(config, str(path))


def read_attacks_csv(path: str | Path) -> AttackTable:
    """Parse ``attacks.csv``.

    Raises
    ------
    RunError
        Empty file, missing columns or bad values; the message names the file and line.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise RunError(f"{path} is empty: expected a header line with the columns "
                                    f"{', '.join(ATTACK_COLUMNS)}")
            header = [h.strip() for h in header]
            _check_columns(header, REQUIRED_COLUMNS, str(path))
            # Columns added later (OPTIONAL_ATTACK_COLUMNS) read as empty from older RUNs.
            index = [header.index(c) if c in header else -1 for c in ATTACK_COLUMNS]
            same_order = index == list(range(len(ATTACK_COLUMNS)))
            width = len(header)
            # Parsed in chunks into column arrays: the text of the whole file is never held at
            # once (a 100k-row RUN would need ~200 MB of Python strings).
            chunks: list[AttackTable] = []
            records: list[list[str]] = []
            first = 2
            for line, row in enumerate(reader, start=2):
                if len(row) != width:
                    if not row:
                        continue
                    raise RunError(f"{path} line {line}: {len(row)} fields, the header has "
                                        f"{width}; the file is garbled or was cut off")
                if not records:
                    first = line
                records.append(row if same_order and width == len(index)
                               else [row[i] if i >= 0 else "" for i in index])
                if len(records) == READ_CHUNK_ROWS:
                    chunks.append(_parse_attacks(records, str(path), first_line=first))
                    records = []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RunError(f"cannot read {path}: {exc}") from exc
    if records or not chunks:
        chunks.append(_parse_attacks(records, str(path), first_line=first))
    return chunks[0] if len(chunks) == 1 else _concat(chunks)


def _concat(tables: list[AttackTable]) -> AttackTable:
    """One table of several tables' rows, in order."""
    return AttackTable(**{name: np.concatenate([getattr(t, name) for t in tables])
                          for name in ATTACK_COLUMNS})


def load_history(path: str | Path, images: Iterable[str]) -> dict[str, np.ndarray]:
    """Best score per generation for a few images, streamed from ``history.csv``.

    Only lines starting with one of the wanted images are parsed, so picking a handful of
    curves out of millions of rows stays fast.

    Parameters
    ----------
    path : path
        ``history.csv``.
    images : iterable of str
        Image ids (the ``image`` column).

    Returns
    -------
    dict
        image -> ndarray (G,) float64, the best score after generation 0..G-1 (sorted by
        generation). Images without rows are absent.

    Raises
    ------
    RunError
        Wrong columns or unparseable values; the message names the file and line.
    """
    path = Path(path)
    wanted = list(dict.fromkeys(images))
    if not wanted:
        return {}
    prefixes = tuple(_csv_field(name) + "," for name in wanted)
    found: dict[str, list[tuple[int, float]]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            header = next(csv.reader([fh.readline()]), None)
            if not header:
                raise RunError(f"{path} is empty: expected the columns {', '.join(HISTORY_COLUMNS)}")
            header = [h.strip() for h in header]
            _check_columns(header, HISTORY_COLUMNS, str(path))
            ii, gi, si = (header.index(c) for c in HISTORY_COLUMNS)
            for line_no, line in enumerate(fh, start=2):
                if not line.startswith(prefixes):
                    continue
                row = next(csv.reader([line]))
                try:
                    found.setdefault(row[ii], []).append((int(row[gi]), float(row[si])))
                except (ValueError, IndexError):
                    raise RunError(f"{path} line {line_no}: expected image,generation,best_score "
                                        f"with numbers, got {line.strip()!r}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RunError(f"cannot read {path}: {exc}") from exc
    out = {}
    for name, pairs in found.items():
        pairs.sort()
        out[name] = np.array([s for _, s in pairs], dtype=np.float64)
    return out


def _csv_field(text: str) -> str:
    """``text`` as the csv module writes it as a field (quoted when needed)."""
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text
