"""The RUN folder on disk: config.json, attacks.csv and history.csv, append-only and resumable.

Each finished image is appended with one ``write`` per file (history first, then the attack
row), flushed and fsynced. An image counts as done once its attacks.csv row is complete. On
reopening, a torn last line (a crash mid-write) is cut off and history rows of images without
an attacks.csv row are dropped, so a resumed campaign neither loses nor duplicates rows.
See docs/run-format.md.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from onepixel.errors import RunError
from onepixel.fileio import atomic_open, write_json_atomic
from onepixel.runs.reader import AttackTable, read_attacks_csv
from onepixel.runs.schema import (
    ATTACK_COLUMNS,
    ATTACKS,
    CONFIG,
    HISTORY,
    HISTORY_COLUMNS,
    RESUME_KEYS,
    AttackResult,
)

log = logging.getLogger(__name__)

def _lookup(config: dict, dotted: str):
    value = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _with_defaults(value, default):
    """A dict setting with the keys it lacks taken from ``default``; other values as they are."""
    if isinstance(value, dict) and isinstance(default, dict):
        return {**default, **value}
    return value


def _differences(key: str, here, there) -> list[str]:
    """``"attack.maxiter: 10 here, 20 in RUN"`` for each leaf setting that differs (dicts are
    compared key by key, so a nested setting is named, not its whole group)."""
    if isinstance(here, dict) and isinstance(there, dict):
        out = []
        for k in sorted(set(here) | set(there)):
            out += _differences(f"{key}.{k}", here.get(k), there.get(k))
        return out
    if here == there:
        return []
    def show(v):
        return "(not set)" if v is None else json.dumps(v)
    return [f"{key}: {show(here)} here, {show(there)} in RUN"]


def _cut_torn_line(path: Path, chunk: int = 1 << 16) -> None:
    """Truncate a file after its last newline (drops a line cut short by a crash).

    Reads backwards from the end in ``chunk``-byte blocks: a torn line costs its own length,
    not the file's (history.csv can hold millions of rows).
    """
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        end = size
        keep = 0
        while end > 0:
            start = max(0, end - chunk)
            fh.seek(start)
            at = fh.read(end - start).rfind(b"\n")
            if at >= 0:
                keep = start + at + 1
                break
            end = start
        fh.truncate(keep)
        log.warning("%s: dropped an incomplete last line (interrupted write)", path)


@contextmanager
def _csv_rows(path: Path) -> Iterator[tuple[list[str], Iterator[list[str]]]]:
    """A CSV file's header and an iterator over its non-empty records as text, streamed (the
    store's own repair: no interpretation, memory independent of the file's length)."""

    def records(reader) -> Iterator[list[str]]:
        try:
            for r in reader:
                if r:
                    yield r
        except (UnicodeDecodeError, csv.Error) as exc:
            raise RunError(f"cannot read {path}: {exc}; it is damaged: write the RUN to a new "
                           "folder") from exc

    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, [])
        except (UnicodeDecodeError, csv.Error) as exc:
            raise RunError(f"cannot read {path}: {exc}; it is damaged: write the RUN to a new "
                           "folder") from exc
        yield header, records(reader)


def _rewrite_keeping(path: Path, columns: tuple[str, ...], keep: Callable[[list[str]], bool]) -> None:
    """Atomically rewrite a CSV file with only the records ``keep`` accepts, streamed."""
    with _csv_rows(path) as (_header, records), \
            atomic_open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(r for r in records if keep(r))


def _write_durably(path: Path, text: str) -> None:
    """Write a whole (small) file and fsync it and its folder: a header that survives a crash."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _csv_text(rows: Iterable[Iterable]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


class RunStore:
    """Reads and appends the files of one RUN folder."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)

    @property
    def attacks_path(self) -> Path:
        return self.dir / ATTACKS

    @property
    def history_path(self) -> Path:
        return self.dir / HISTORY

    def open(self, config: dict, defaults: dict | None = None) -> set[str]:
        """Create or reopen the RUN; return the names of images already done.

        ``config`` is compared with the RUN's config.json on :data:`RESUME_KEYS` as JSON (so
        tuples equal lists); ``defaults`` fills settings an older RUN lacks (e.g.
        ``{"attack": {...}}``).

        Raises
        ------
        RunError
            The RUN was made with other settings (names the differing keys), or its files are
            not onepixel's.
        """
        if self.dir.exists() and not self.dir.is_dir():
            raise RunError(f"{self.dir} is a file; give a folder for the RUN")
        self.dir.mkdir(parents=True, exist_ok=True)
        config_path = self.dir / CONFIG
        if config_path.exists():
            try:
                old = json.loads(config_path.read_text())
            except json.JSONDecodeError as exc:
                raise RunError(f"{config_path} is not valid JSON ({exc}); write the RUN to a "
                               "new folder") from exc
            config = json.loads(json.dumps(config))
            defaults = json.loads(json.dumps(defaults or {}))
            differ = [d for k in RESUME_KEYS for d in _differences(
                k, _lookup(config, k), _with_defaults(_lookup(old, k), _lookup(defaults, k)))]
            if differ:
                raise RunError(
                    f"{self.dir} holds a run with other settings ({'; '.join(differ)}); "
                    "use the same settings to resume it, or a new folder")
            if "planned" in config and old.get("planned") != config["planned"]:
                # The plan of this session (e.g. another limit): what "unfinished" is judged by.
                write_json_atomic(config_path, {**old, "planned": config["planned"],
                                                "limit": config.get("limit")})
            log.info("resuming %s", self.dir)
        else:
            write_json_atomic(config_path, config)
        done = self._repair()
        return done

    def _repair(self) -> set[str]:
        """Make the RUN's CSV files consistent; return the images whose results are complete.

        A missing or empty file (a crash before its header was durable) gets its header; a torn
        last line is cut; history rows of unfinished images are dropped; and a finished image
        whose history is incomplete (a damaged history.csv) is taken back out of attacks.csv, so
        the campaign attacks it again and writes the same rows (its random stream depends only on
        its name). Nothing durably written and complete is lost.
        """
        for path, columns in ((self.attacks_path, ATTACK_COLUMNS), (self.history_path, HISTORY_COLUMNS)):
            if path.exists():
                _cut_torn_line(path)
            if not path.exists() or path.stat().st_size == 0:
                _write_durably(path, _csv_text([columns]))
        # Streamed, keeping a few bytes per image (not per row): history.csv has up to
        # maxiter + 1 rows per image, millions at the papers' settings.
        status, nit = ATTACK_COLUMNS.index("status"), ATTACK_COLUMNS.index("nit")
        names: set[str] = set()
        last_generation: dict[str, int] = {}  # attacked image -> its nit
        with _csv_rows(self.attacks_path) as (header, records):
            if tuple(header) != ATTACK_COLUMNS:
                raise RunError(f"{self.attacks_path} has columns {header}, expected "
                               f"{list(ATTACK_COLUMNS)}: it is not a RUN file of this onepixel "
                               "version")
            for r in records:
                if r[0] in names:
                    raise RunError(f"{self.attacks_path} has duplicate image rows; it was not "
                                   "written by this version of onepixel or was edited")
                names.add(r[0])
                if r[status] == "attacked":
                    last_generation[r[0]] = int(r[nit] or 0)
        # An image's history is complete when its rows are generations 0..nit in order (the
        # store writes them so, in one write); anything else is redone (same rows again).
        next_generation: dict[str, int] = {}
        orphans = 0
        with _csv_rows(self.history_path) as (h_header, history):
            if tuple(h_header) != HISTORY_COLUMNS:
                raise RunError(f"{self.history_path} has columns {h_header}, expected "
                               f"{HISTORY_COLUMNS}")
            for r in history:
                if r[0] not in names:
                    orphans += 1
                    continue
                if len(r) == len(HISTORY_COLUMNS) and r[1].isdigit():
                    expected = next_generation.get(r[0], 0)
                    next_generation[r[0]] = expected + 1 if int(r[1]) == expected else -(1 << 30)
        broken = {name for name, g in last_generation.items() if next_generation.get(name) != g + 1}
        del next_generation, last_generation
        if broken:
            log.warning("%s: the history of %d finished image(s) is incomplete (%s); they will be "
                        "attacked again, with the same result", self.history_path, len(broken),
                        ", ".join(sorted(broken)[:3]))
            _rewrite_keeping(self.attacks_path, ATTACK_COLUMNS, lambda r: r[0] not in broken)
        done = names - broken
        if orphans or broken:
            log.info("%s: dropping the history rows of unfinished images", self.history_path)
            _rewrite_keeping(self.history_path, HISTORY_COLUMNS, lambda r: r[0] in done)
        return done

    def read_attacks(self) -> AttackTable:
        """attacks.csv as column arrays (:func:`onepixel.runs.reader.read_attacks_csv`)."""
        return read_attacks_csv(self.attacks_path)

    def append(self, results: Iterable[AttackResult]) -> None:
        """Append finished images: their history rows, then their attacks.csv rows."""
        results = list(results)
        history = [row for r in results for row in r.history_rows()]
        if history:
            self._append(self.history_path, _csv_text(history))
        self._append(self.attacks_path, _csv_text(r.csv_row() for r in results))

    @staticmethod
    def _append(path: Path, text: str) -> None:
        data = text.encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            written = os.write(fd, data)
            while written < len(data):  # pragma: no cover - short writes on odd filesystems
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
