"""Scale-out: campaigns and confidence maps on a Ray cluster (``--executor ray``).

Ray is optional (``pip install 'onepixel[ray]'``); nothing here imports it until it is used.
Public names load on first use (:func:`onepixel._lazy.lazy_exports`).
"""

from onepixel._lazy import lazy_exports

_EXPORTS = {
    "EXECUTORS": "onepixel.scaleout.config",
    "ExecutorConfig": "onepixel.scaleout.config",
    "RayExecutor": "onepixel.scaleout.campaign",
    "RayMapper": "onepixel.scaleout.confmap",
    "ScaleOutError": "onepixel.errors",
    "merge_maps": "onepixel.scaleout.confmap",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
