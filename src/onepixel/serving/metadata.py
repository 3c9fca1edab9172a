"""The ``/model/metadata`` answer: MAX's fields, and what an onepixel client needs to score."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from onepixel.errors import ServerError
from onepixel.models.base import capabilities_of
from onepixel.serving.config import ServerLimits, class_names
from onepixel.version import __version__
from onepixel.wire import PREDICT_BATCH

if TYPE_CHECKING:  # pragma: no cover
    from onepixel.models.base import Classifier

#: The metadata of IBM's MAX Breast Cancer Mitosis Detector container (its core/model.py).
MAX_MITOSIS_METADATA = {
    "id": "max breast cancer mitosis detector-keras-model",
    "name": "MAX Breast Cancer Mitosis Detector Keras Model",
    "description": "MAX Breast Cancer Mitosis Detector Keras model trained on TUPAC16 data to detect "
                   "mitosis",
    "type": "image_classification",
    "license": "Custom",
    "source": "https://developer.ibm.com/exchanges/models/all/max-breast-cancer-mitosis-detector/",
}


def served_classes(classifier: Classifier, names: Sequence[str] | None = None) -> tuple[str, ...]:
    """The class names a K-class model is served with; () for a binary model (one score).

    Parameters
    ----------
    classifier : Classifier
        ``capabilities.n_classes`` is K (1: binary).
    names : sequence of str, optional
        K names in the model's output order; default the indices ``"0"`` .. ``"K-1"``.

    Raises
    ------
    ServerError
        Names given for a binary model, or not K of them.
    """
    k = capabilities_of(classifier).n_classes
    names = class_names(names)
    if names is None:
        return tuple(str(i) for i in range(k)) if k > 1 else ()
    if k == 1:
        raise ServerError(f"class names are for a K-class model, but {classifier.name} "
                          "is binary (one score per image); give no class names")
    if len(names) != k:
        raise ServerError(f"ServeOptions.classes gives {len(names)} names but {classifier.name} has "
                          f"{k} classes; give {k} names in the model's output order")
    return names


def model_metadata(classifier: Classifier, limits: ServerLimits | None = None,
                   overrides: Mapping[str, Any] | None = None,
                   classes: Sequence[str] | None = None) -> dict:
    """The ``/model/metadata`` answer for a classifier.

    The MAX fields (id, name, description, type, license, source) are IBM's for the built-in
    model and generic otherwise; ``overrides`` replaces any of them. The ``onepixel`` entry
    lets :class:`~onepixel.models.http_backend.HttpClassifier` use the batch endpoint, the
    input shape and the model's sha256 (so campaigns resume across in-process and HTTP runs),
    and says what a prediction carries: ``n_classes`` (1: one probability per image; K: K class
    probabilities) and, for K classes, ``classes`` (their names, ``classes`` or the indices).
    """
    limits = limits or ServerLimits()
    names = served_classes(classifier, classes)
    name = classifier.name
    h, w, c = classifier.input_shape
    if name == "max-mitosis":
        meta = dict(MAX_MITOSIS_METADATA)
    else:
        what = (f"probabilities of {len(names)} classes" if names
                else "probability of the positive class")
        meta = {"id": name, "name": name, "description": f"{name}: {what} of a {w}x{h} RGB image",
                "type": "image_classification", "license": "unknown", "source": ""}
    meta.update(overrides or {})
    meta["onepixel"] = {
        "version": __version__,
        "model": name,
        "sha256": capabilities_of(classifier).fingerprint,
        "engine": type(classifier).__name__,
        "input_shape": [int(h), int(w), int(c)],
        "predict_batch": PREDICT_BATCH,
        "max_batch": limits.max_batch,
        "max_request_bytes": limits.max_request_bytes,
        "n_classes": len(names) or 1,
    }
    if names:
        meta["onepixel"]["classes"] = list(names)
    return meta
