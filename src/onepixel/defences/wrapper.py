"""``DefendedClassifier``: any classifier behind a chain of defences, itself a classifier.

The defended pipeline is the black box: attacks, confidence maps, predictions and the server all
score through it (an adaptive black-box attack). It declares no layers and no tensor scoring, so
the incremental and on-device engines never bypass the defence; its name and fingerprint carry
the defence, so a RUN made through one defence is not resumed through another.
"""

from __future__ import annotations

import numpy as np

from onepixel.defences import filters
from onepixel.defences.spec import DefenceStep, format_defence, parse_defence
from onepixel.models.base import Capabilities, Classifier, capabilities_of, check_batch


def apply_defence(images: np.ndarray, steps: tuple[DefenceStep, ...] | str) -> np.ndarray:
    """Apply the defence chain ``steps`` (or a spec string) left to right.

    Parameters
    ----------
    images : ndarray, uint8, (N, H, W, C)

    Returns
    -------
    ndarray, uint8, (N, H, W, C)
    """
    if isinstance(steps, str):
        steps = parse_defence(steps)
    out = np.asarray(images)
    for step in steps:
        if step.name == "median3":
            out = filters.median(out, 3)
        elif step.name == "median5":
            out = filters.median(out, 5)
        elif step.name == "blur":
            out = filters.blur(out, float(step.arg))
        elif step.name == "repair":
            out = filters.repair(out, float(step.arg))
        elif step.name == "jpeg":
            out = filters.jpeg(out, int(step.arg))
        elif step.name == "bits":
            out = filters.bits(out, int(step.arg))
        else:  # parse_defence admits only the names above
            raise AssertionError(step.name)
    return out


class DefendedClassifier:
    """``classifier`` scoring images only after ``defence`` has been applied to them.

    Parameters
    ----------
    classifier : Classifier
        Any classifier (binary or K-class); its scores are returned as they are.
    defence : str or tuple of DefenceStep
        A ``--defence`` spec (:func:`~onepixel.defences.spec.parse_defence`); at least one step.
    """

    def __init__(self, classifier: Classifier, defence: str | tuple[DefenceStep, ...]):
        steps = parse_defence(defence) if isinstance(defence, str) else tuple(defence)
        if not steps:
            raise ValueError("DefendedClassifier needs at least one defence step")
        self.classifier = classifier
        self.steps = steps
        self.defence = format_defence(steps)
        self.name = f"{classifier.name}+{self.defence}"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.classifier.input_shape

    @property
    def capabilities(self) -> Capabilities:
        inner = capabilities_of(self.classifier)
        # Not the model file's hash alone: a RUN through another defence must not resume here.
        return Capabilities(fingerprint=f"{inner.fingerprint}+defence:{self.defence}",
                            device=inner.device, n_classes=inner.n_classes)

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Scores of the defended images: (N,) or (N, K) float64 as the wrapped classifier's."""
        images = check_batch(images, self.input_shape, self.name)
        return self.classifier.scores(apply_defence(images, self.steps))


def defend(classifier: Classifier, defence: str | None) -> Classifier:
    """``classifier`` behind ``defence``; the classifier itself when the spec is empty or ``none``."""
    steps = parse_defence(defence)
    return DefendedClassifier(classifier, steps) if steps else classifier


def defence_of(classifier: object) -> str:
    """The canonical defence a classifier scores through (``"none"`` for a plain classifier)."""
    return classifier.defence if isinstance(classifier, DefendedClassifier) else "none"
