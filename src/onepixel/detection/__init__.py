"""The one-pixel attack detector (``onepixel detect``): an isolated anomalous pixel.

- :mod:`~onepixel.detection.calibration`: the statistic of an image and its threshold,
  calibrated on clean H&E tiles to a stated false-positive rate (held-out tiles kept apart);
- :mod:`~onepixel.detection.scan`: score image files or a RUN's originals and adversarial
  versions; write ``detections.csv``, ``detection.json`` and the ROC figure.

See docs/defences.md. Public names load on first use (:func:`onepixel._lazy.lazy_exports`).
"""

from onepixel._lazy import lazy_exports

_EXPORTS = {
    "Calibration": "onepixel.detection.calibration",
    "calibrate": "onepixel.detection.calibration",
    "clean_tiles": "onepixel.detection.calibration",
    "detect_images": "onepixel.detection.scan",
    "detect_run": "onepixel.detection.scan",
    "image_statistic": "onepixel.detection.calibration",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
