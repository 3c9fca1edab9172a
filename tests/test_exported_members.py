"""Every package's lazy exports resolve, and every name in ``__all__`` exists (httpx's
``tests/test_exported_members.py``, for each package and not only the top level)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import onepixel

PACKAGES = sorted(m.name for m in pkgutil.iter_modules(onepixel.__path__, "onepixel.") if m.ispkg)


def test_every_package_is_checked():
    # A package added later is checked too; these are the ones that export names lazily.
    assert {"onepixel.attack", "onepixel.pareto", "onepixel.report", "onepixel.models"} <= set(PACKAGES)
    assert "onepixel.stealth" not in PACKAGES  # one name for the feature: pareto


@pytest.mark.parametrize("name", ["onepixel", *PACKAGES])
def test_exports_resolve(name):
    package = importlib.import_module(name)
    exports = getattr(package, "_EXPORTS", {})
    for public, module in exports.items():
        imported = importlib.import_module(module)
        # A public name that is a subpackage (``onepixel.attack``, callable) is the module itself.
        value = imported if module == f"{name}.{public}" else getattr(imported, public, None)
        assert value is not None, f"{name}._EXPORTS[{public!r}] = {module!r}, which has no {public}"
        assert getattr(package, public) is value, f"{name}.{public} is not {module}.{public}"
    for public in getattr(package, "__all__", ()):
        assert hasattr(package, public), f"{name}.__all__ lists {public!r}, which does not exist"
    if exports:
        assert set(exports) <= set(dir(package))


def test_removed_aliases_stay_removed():
    import onepixel.analysis
    import onepixel.errors
    import onepixel.models.http_backend

    assert not hasattr(onepixel.errors, "AnalysisError")
    assert "Confmap" not in onepixel.analysis.__all__ and not hasattr(onepixel.analysis, "Confmap")
    assert "encode_png" not in onepixel.models.http_backend.__all__


def test_root_helpers_live_in_their_own_modules():
    from onepixel._lazy import lazy_exports
    from onepixel.version import __version__

    assert onepixel.__version__ == __version__
    assert "lazy_exports" not in onepixel.__all__ and callable(lazy_exports)
