"""``onepixel audit``: how strong was the attack? A stronger search than DE, image by image.

- :mod:`~onepixel.audit.config`: :class:`AuditConfig`, the ``--exact-positions`` syntax.
- :mod:`~onepixel.audit.search`: the exhaustive coarse scan and the integer refinement (they live in
  :mod:`onepixel.attack.scan`, where campaigns run them as a search method; re-exported here).
- :mod:`~onepixel.audit.exact`: exact optima over every colour at chosen positions.
- :mod:`~onepixel.audit.store`: the audit folder (``audit.csv``, resumable).
- :mod:`~onepixel.audit.runner`: :func:`audit_run`, the command.
- :mod:`~onepixel.audit.method`: :class:`ScanOptions` and :class:`ScanExecutor`, ``onepixel
  attack --method scan`` (locally or on Ray).

Public names load on first use (:func:`onepixel._lazy.lazy_exports`).
"""

from onepixel._lazy import lazy_exports

_EXPORTS = {
    "AUDIT_COLUMNS": "onepixel.audit.store",
    "AuditConfig": "onepixel.audit.config",
    "AuditRow": "onepixel.audit.store",
    "ExactPositions": "onepixel.audit.config",
    "ScanExecutor": "onepixel.audit.method",
    "ScanOptions": "onepixel.audit.method",
    "audit_image": "onepixel.audit.runner",
    "audit_run": "onepixel.audit.runner",
    "parse_exact_positions": "onepixel.audit.config",
    "position_optima": "onepixel.audit.exact",
    "select_targets": "onepixel.audit.runner",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
