"""``--defence NAME[:ARG][,NAME...]``: parse a defence spec into steps and write it back canonically."""

from __future__ import annotations

from dataclasses import dataclass

from onepixel.errors import ConfigError

#: Default h threshold of ``repair`` (RMSE in [0, 1] against the mean of the 8 neighbours):
#: above the largest h of 95% of the clean H&E tiles (docs/defences.md), well below the h of
#: the demo run's successful attack pixels (about 0.75), so clean tiles are barely touched.
DEFAULT_REPAIR_H = 0.5

#: name -> (argument kind, default argument or None when the argument is required, help).
DEFENCES: dict[str, tuple[str, float | None, str]] = {
    "median3": ("none", None, "3x3 median filter, each channel"),
    "median5": ("none", None, "5x5 median filter, each channel"),
    "blur": ("float", None, "Gaussian blur of standard deviation SIGMA pixels (blur:SIGMA)"),
    "repair": ("float", DEFAULT_REPAIR_H,
               "a pixel whose h against its 8 neighbours exceeds H takes their median (repair[:H])"),
    "jpeg": ("int", None, "JPEG re-encoding at quality Q, 1-95 (jpeg:Q)"),
    "bits": ("int", None, "bit-depth reduction to N bits per channel, 1-7 (bits:N)"),
}

_RANGES = {"blur": (0.0, 20.0), "repair": (0.0, 1.0), "jpeg": (1, 95), "bits": (1, 7)}


@dataclass(frozen=True)
class DefenceStep:
    """One defence of a chain.

    Attributes
    ----------
    name : str
        A key of :data:`DEFENCES`.
    arg : float or int or None
        Its argument (None for ``median3`` / ``median5``).
    """

    name: str
    arg: float | int | None = None

    def __str__(self) -> str:
        if self.arg is None:
            return self.name
        return f"{self.name}:{self.arg:g}" if isinstance(self.arg, float) else f"{self.name}:{self.arg}"


def _usage() -> str:
    return ", ".join(f"{n}" + ("" if k == "none" else (f"[:{'H'}]" if d is not None else ":ARG"))
                     for n, (k, d, _) in DEFENCES.items())


def parse_defence(text: str | None) -> tuple[DefenceStep, ...]:
    """Parse ``NAME[:ARG][,NAME...]`` (applied left to right); ``None``, ``""`` or ``none``: no defence.

    Raises
    ------
    ConfigError
        An unknown name, a missing, extra or out-of-range argument; the message names ``--defence``.
    """
    if text is None or text.strip().lower() in ("", "none"):
        return ()
    steps = []
    for part in text.split(","):
        part = part.strip()
        name, _, raw = part.partition(":")
        name = name.strip().lower()
        if name not in DEFENCES:
            raise ConfigError(f"defence spec: unknown defence {name or part!r} in {text!r}; use "
                              f"{_usage()}, comma-separated", field="defence")
        kind, default, _ = DEFENCES[name]
        raw = raw.strip()
        if kind == "none":
            if raw:
                raise ConfigError(f"defence spec: {name} takes no argument, got {part!r}", field="defence")
            steps.append(DefenceStep(name))
            continue
        if not raw:
            if default is None:
                raise ConfigError(f"defence spec: {name} needs an argument ({DEFENCES[name][2]})",
                                  field="defence")
            steps.append(DefenceStep(name, float(default) if kind == "float" else int(default)))
            continue
        try:
            value: float | int = float(raw) if kind == "float" else int(raw)
        except ValueError:
            raise ConfigError(f"defence spec: {name}'s argument must be "
                              f"{'a number' if kind == 'float' else 'an integer'}, got {raw!r}",
                              field="defence") from None
        lo, hi = _RANGES[name]
        if not lo <= value <= hi or (name == "blur" and value == 0):
            raise ConfigError(f"defence spec: {name}:{raw} is out of range ({lo:g} "
                              f"{'<' if name == 'blur' else '<='} value <= {hi:g})", field="defence")
        steps.append(DefenceStep(name, value))
    return tuple(steps)


def format_defence(steps: tuple[DefenceStep, ...]) -> str:
    """The canonical spec of ``steps`` (``"none"`` for no step): what RUNs and names record."""
    return ",".join(map(str, steps)) or "none"
