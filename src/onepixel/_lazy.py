"""Lazy package exports: the helper every package ``__init__`` uses (PEP 562).

In a module of its own so that the packages need not import the package root ``onepixel``,
which only re-exports (import-linter forbids importing it from below the CLI).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose public names load on first use.

    Each package's ``__init__`` lists its public names and the modules that define them; a
    name is imported when first asked for, so importing one light module of a package (say a
    config dataclass, for the CLI's parser) does not load torch through the package.

    Parameters
    ----------
    package : str
        The package's ``__name__`` (for the AttributeError's message).
    exports : dict of str to str
        Public name -> the module that defines it.
    namespace : dict
        The package's ``globals()``; a loaded name is cached there.
    """

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module hook PEP 562 names
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(module)
        # A name that is a subpackage (``onepixel.attack``) is the module itself.
        value = imported if module == f"{package}.{name}" else getattr(imported, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
