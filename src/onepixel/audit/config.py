"""Audit settings (:class:`AuditConfig`) and the ``--exact-positions`` syntax."""

from __future__ import annotations

import re
from dataclasses import dataclass

from onepixel.confmap.result import check_step
from onepixel.errors import ConfigError, ConfmapError, is_integer

#: Which attacked images of the RUN to audit (``--failed`` / ``--early-converged``).
SELECTIONS = ("all", "failed", "early-converged")


@dataclass(frozen=True)
class ExactPositions:
    """Positions to brute-force over all colours (``--exact-positions``).

    Attributes
    ----------
    positions : tuple of (x, y)
        Fixed pixel positions (column, row), the same for every image.
    top : int
        Also the ``top`` most promising positions of each image's scan (``top:N``).
    de : bool
        Also the position of the RUN's own DE pixel (``de``).
    """

    positions: tuple[tuple[int, int], ...] = ()
    top: int = 0
    de: bool = False

    def __bool__(self) -> bool:
        return bool(self.positions or self.top or self.de)

    def as_text(self) -> str:
        parts = [f"{x},{y}" for x, y in self.positions]
        if self.top:
            parts.append(f"top:{self.top}")
        if self.de:
            parts.append("de")
        return ";".join(parts)


def parse_exact_positions(text: str | None) -> ExactPositions:
    """Parse ``"X,Y;X,Y;top:N;de"`` (any subset, ``;``-separated) into :class:`ExactPositions`.

    Raises
    ------
    ConfigError
        A part that is none of ``X,Y`` (non-negative integers), ``top:N`` (N >= 1) or ``de``.
    """
    if not text or not text.strip():
        return ExactPositions()
    positions: list[tuple[int, int]] = []
    top, de = 0, False
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        if part.lower() == "de":
            de = True
        elif m := re.fullmatch(r"top:(\d+)", part, re.IGNORECASE):
            top = int(m.group(1))
            if top < 1:
                raise ConfigError(f"parse_exact_positions(text): top:N needs N >= 1, got {part!r}",
                                  field="AuditConfig.exact")
        elif m := re.fullmatch(r"(\d+)\s*,\s*(\d+)", part):
            positions.append((int(m.group(1)), int(m.group(2))))
        else:
            raise ConfigError(f"parse_exact_positions(text): cannot read {part!r}; give X,Y pairs, "
                              "top:N and/or de separated by ';' (e.g. '10,12;top:2;de')",
                              field="AuditConfig.exact")
    return ExactPositions(tuple(dict.fromkeys(positions)), top, de)


@dataclass(frozen=True)
class AuditConfig:
    """How hard to search each image (``onepixel audit``).

    Attributes
    ----------
    step : int
        Colour grid step of the exhaustive scan (85: 4 values per channel, 64 colours,
        262,144 evaluations for a 64x64 image).
    top : int
        Refine around this many best scan pixels (plus the RUN's own DE pixel).
    rounds : int
        At most this many refinement rounds (each: the 3x3 positions around, then one
        256-value line per colour channel); a round that improves nothing ends it early.
    exact : ExactPositions
        Positions brute-forced over every colour of the ``exact_step`` grid.
    exact_step : int
        1 (all 16,777,216 colours, exact at integer resolution); coarser only for tests.
    selection : {"all", "failed", "early-converged"}
        Which attacked images of the RUN (when ``images`` is not given).
    images : tuple of str or None
        These images (the ``image`` column, the file name or the stem).
    pixels : tuple of (x, y) or None
        Scan only these pixels (None: all of them); refinement may still step outside them.
    batch_size : int or None
        Evaluations per model call in the scan (None: the confidence map's default).
    progress : bool
        A tqdm bar over the images.
    """

    step: int = 85
    top: int = 8
    rounds: int = 4
    exact: ExactPositions = ExactPositions()
    exact_step: int = 1
    selection: str = "all"
    images: tuple[str, ...] | None = None
    pixels: tuple[tuple[int, int], ...] | None = None
    batch_size: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("step", "exact_step"):
            try:
                check_step(getattr(self, name))
            except (ConfigError, ConfmapError) as exc:
                raise ConfigError(f"AuditConfig.{name}: {exc}", field=f"AuditConfig.{name}") from None
        for name in ("top", "rounds"):
            value = getattr(self, name)
            if not is_integer(value) or value < 0:
                raise ConfigError(f"AuditConfig.{name} must be an integer >= 0, got {value!r}",
                                  field=f"AuditConfig.{name}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"AuditConfig.selection must be one of {', '.join(SELECTIONS)}, "
                              f"got {self.selection!r}", field="AuditConfig.selection")
        if self.images is not None:
            object.__setattr__(self, "images", tuple(str(i) for i in self.images))
        if self.pixels is not None:
            object.__setattr__(self, "pixels", tuple((int(x), int(y)) for x, y in self.pixels))
            if not self.pixels:
                raise ConfigError("AuditConfig.pixels is empty: give at least one (x, y) or None for all",
                                  field="AuditConfig.pixels")

    def settings(self) -> dict:
        """The settings that change results (compared when an audit folder is resumed)."""
        return {"step": self.step, "top": self.top, "rounds": self.rounds,
                "exact_positions": self.exact.as_text(), "exact_step": self.exact_step,
                "pixels": None if self.pixels is None else [list(p) for p in self.pixels]}
