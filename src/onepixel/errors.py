"""Every error type of onepixel; each carries a message meant for the user.

The CLI prints a :class:`OnepixelError` without a traceback and exits with status 2; any other
exception is a bug. Errors that also are programming errors in library use (a bad argument to a
function) subclass ``ValueError`` too, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping

#: ``Class.field`` at the start of a message (a config dataclass's field).
_LEADING_FIELD = re.compile(r"([A-Z][A-Za-z]*\.[a-z_][a-z0-9_]*)\b")


class OnepixelError(Exception):
    """Base class: something the user can fix (bad input, missing file, bad option)."""


class ConfigError(OnepixelError, ValueError):
    """A setting or argument is out of range or inconsistent; the message says how to fix it.

    Parameters
    ----------
    message : str
        What is wrong and how to fix it, in the library's words (field and argument names,
        never command-line flags).
    field : str or None
        The setting at fault: a dataclass field (``"AttackConfig.pixels"``) or a function
        argument (``"run_pareto(dataset)"``). A front end (the CLI) maps it to its own option
        name; None when no single setting is at fault. When not given, a message that starts
        with ``Class.field`` (``"DEConfig.population must be ..."``) names it.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        if field is None:
            found = _LEADING_FIELD.match(message)
            field = found.group(1) if found else None
        self.field = field

    def __reduce__(self):
        # Keep ``field`` when the error crosses a process boundary (Ray workers pickle it).
        return type(self), (str(self), self.field)


class AssetError(OnepixelError):
    """An asset is missing, cannot be downloaded, or fails its checksum."""


class ChecksumError(AssetError):
    """A file's sha256 differs from the expected one; the file is never loaded."""


class ImageError(OnepixelError):
    """An image cannot be read, or has the wrong size."""


class DatasetError(OnepixelError):
    """A dataset folder is missing, empty or malformed."""


class ModelError(OnepixelError):
    """A model cannot be loaded: unknown spec, unsupported layer, bad file."""


class ModelOptionError(ConfigError, ModelError):
    """A model-loading option is out of range (:class:`~onepixel.models.options.ModelOptions`):
    both a :class:`ConfigError` (a ``ValueError``) and a :class:`ModelError`."""


class HttpError(ModelError):
    """The model service answered with an error, or not at all.

    Attributes
    ----------
    status : int or None
        The HTTP status; None when no answer came.
    url : str
    """

    def __init__(self, message: str, status: int | None = None, url: str = ""):
        super().__init__(message)
        self.status = status
        self.url = url


class HttpAuthError(HttpError):
    """401 / 403: the service wants an API key, or another one."""


class HttpUnavailableError(HttpError):
    """No usable answer after every retry (connection refused, timeouts, 5xx)."""


class RunError(OnepixelError):
    """A RUN folder cannot be used: missing, damaged, or made with other settings.

    The one error of every RUN reader and writer (campaign store, analysis, confidence maps,
    report); the message names the file.
    """


class ConfmapError(OnepixelError):
    """A confidence map cannot be computed as asked (bad option, image, or checkpoint)."""


class ServerError(OnepixelError):
    """The server cannot start: missing dependencies, a bad limit, a port in use."""


class SolverStateError(OnepixelError, RuntimeError):
    """A solver method was called in the wrong state (e.g. ``step()`` after every problem stopped)."""


def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer (Python or numpy) and not a bool: the check every config
    dataclass makes before raising :class:`ConfigError` or a more specific error."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """Whether ``value`` is a real number (Python or numpy) and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class RequestError(OnepixelError):
    """A request the server refuses; it answers ``status`` with ``message`` (and ``headers``).

    Raised by :func:`onepixel.wire.parse_multipart` (400) and by the server's own checks (400,
    413, 503).
    """

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class ScaleOutError(OnepixelError):
    """``--executor ray``: Ray is missing or unreachable, or a worker failed beyond its retries."""
