"""Shared by the benchmark scripts: what machine ran them, and writing the result table."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
