"""Shared by the benchmark scripts: what machine ran them, and writing the result table."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from onepixel.scoring.measure import cpu_name  # the one reader of the CPU model


def machine(*extras: str) -> str:
    """One line naming the platform, Python, CPU count and model, plus ``extras``."""
    parts = [platform.platform(), f"Python {platform.python_version()}",
             f"{os.cpu_count()} CPUs ({cpu_name()})", *extras]
    return ", ".join(parts)


def emit(table: str, out: str | None) -> None:
    """Print the result table and, with ``out``, write it there too."""
    print("\n" + table)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(table + "\n")
