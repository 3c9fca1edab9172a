"""The audit folder: ``audit.csv`` (one row per image, appended), ``exact.csv``, ``audit.json``
(the settings, compared on resume) and ``summary.json``.

Rows are appended with one write, flushed and fsynced, as each image finishes; a rerun cuts a
torn last line and skips the images already written.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from onepixel.errors import RunError
from onepixel.fileio import write_json_atomic

log = logging.getLogger(__name__)

AUDIT_CSV = "audit.csv"
EXACT_CSV = "exact.csv"
SETTINGS_JSON = "audit.json"
SUMMARY_JSON = "summary.json"

AUDIT_COLUMNS = ("image", "goal", "status", "best_score", "x", "y", "r", "g", "b", "queries",
                 "de_score", "de_success", "de_early_converged")
EXACT_COLUMNS = ("image", "goal", "source", "x", "y", "step", "best_score", "r", "g", "b",
                 "evaluations", "seconds", "de_score", "gap_to_de", "de_colour_distance")
#: ``status`` values: a pixel proven to cross the threshold, or none found at this cost.
VULNERABLE, NOT_FOUND = "vulnerable", "not-found"


@dataclass(frozen=True)
class AuditRow:
    """One ``audit.csv`` row: the best pixel the audit found for one image, and DE's result."""

    image: str
    goal: str
    status: str
    best_score: float
    x: int
    y: int
    rgb: tuple[int, int, int]
    queries: int
    de_score: float
    de_success: bool
    de_early_converged: bool

    def csv_row(self) -> list[str]:
        return [self.image, self.goal, self.status, f"{self.best_score:.10g}", str(self.x),
                str(self.y), *(str(v) for v in self.rgb), str(self.queries),
                f"{self.de_score:.10g}", str(int(self.de_success)), str(int(self.de_early_converged))]

    @classmethod
    def from_csv(cls, row: dict) -> AuditRow:
        return cls(row["image"], row["goal"], row["status"], float(row["best_score"]), int(row["x"]),
                   int(row["y"]), (int(row["r"]), int(row["g"]), int(row["b"])), int(row["queries"]),
                   float(row["de_score"]), row["de_success"] == "1", row["de_early_converged"] == "1")


def _csv_text(rows) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _append_durably(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _cut_torn_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[:data.rfind(b"\n") + 1])
        log.warning("%s: dropped an incomplete last line (interrupted write)", path)


class AuditStore:
    """Reads and appends the files of one audit folder.

    Parameters
    ----------
    out_dir : path
    settings : dict
        What changes results (the RUN, the model's sha256, :meth:`AuditConfig.settings`); an
        existing folder made with other settings is an error.

    Raises
    ------
    RunError
        The folder holds an audit with other settings, or a damaged ``audit.csv``.
    """

    def __init__(self, out_dir: str | Path, settings: dict):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        saved_path = self.dir / SETTINGS_JSON
        if saved_path.is_file():
            saved = json.loads(saved_path.read_text(encoding="utf-8"))
            diff = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
            if diff:
                raise RunError(f"{self.dir} holds an audit with other settings ({', '.join(diff)} "
                               "differ); write to another folder, or use the same settings to resume it")
        else:
            write_json_atomic(saved_path, settings)
        self.rows: dict[str, AuditRow] = {}
        for name, columns in ((AUDIT_CSV, AUDIT_COLUMNS), (EXACT_CSV, EXACT_COLUMNS)):
            path = self.dir / name
            if path.is_file() and path.stat().st_size:
                _cut_torn_line(path)
            if not path.is_file() or not path.read_text(encoding="utf-8").strip():
                path.write_text(_csv_text([columns]), encoding="utf-8")
        with open(self.dir / AUDIT_CSV, newline="", encoding="utf-8") as fh:
            try:
                for row in csv.DictReader(fh):
                    self.rows[row["image"]] = AuditRow.from_csv(row)
            except (KeyError, ValueError, csv.Error) as exc:
                raise RunError(f"{self.dir / AUDIT_CSV} is damaged ({exc}); write the audit to a new "
                               "folder") from exc
        self._drop_orphan_exact_rows()

    def _drop_orphan_exact_rows(self) -> None:
        """Exact rows of an image without its audit row (a crash between the two writes) go:
        the image is audited again."""
        path = self.dir / EXACT_CSV
        with open(path, newline="", encoding="utf-8") as fh:
            records = list(csv.reader(fh))
        keep = [r for r in records[1:] if r and r[0] in self.rows]
        if len(keep) != len(records) - 1:
            log.warning("%s: dropping %d row(s) of images not finished", path,
                        len(records) - 1 - len(keep))
            path.write_text(_csv_text([EXACT_COLUMNS, *keep]), encoding="utf-8")

    def done(self, image: str) -> bool:
        return image in self.rows

    def append(self, row: AuditRow, exact_rows: list[list[str]] = ()) -> None:
        """Write an image's exact-position rows, then its audit row (which marks it done)."""
        if exact_rows:
            _append_durably(self.dir / EXACT_CSV, _csv_text(exact_rows))
        _append_durably(self.dir / AUDIT_CSV, _csv_text([row.csv_row()]))
        self.rows[row.image] = row

    def write_summary(self, summary: dict) -> Path:
        path = self.dir / SUMMARY_JSON
        write_json_atomic(path, summary)
        return path
