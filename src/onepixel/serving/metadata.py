"""The ``/model/metadata`` answer: MAX's fields, and what an onepixel client needs to score."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from onepixel import __version__
from onepixel.models.base import capabilities_of
from onepixel.serving.config import ServerLimits
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


def model_metadata(classifier: Classifier, limits: ServerLimits | None = None,
                   overrides: Mapping[str, Any] | None = None) -> dict:
    """The ``/model/metadata`` answer for a classifier.

    The MAX fields (id, name, description, type, license, source) are IBM's for the built-in
    model and generic otherwise; ``overrides`` replaces any of them. The ``onepixel`` entry
    lets :class:`~onepixel.models.http_backend.HttpClassifier` use the batch endpoint, the
    input shape and the model's sha256 (so campaigns resume across in-process and HTTP runs).
    """
    limits = limits or ServerLimits()
    name = classifier.name
    h, w, c = classifier.input_shape
    if name == "max-mitosis":
        meta = dict(MAX_MITOSIS_METADATA)
    else:
        meta = {"id": name, "name": name,
                "description": f"{name}: probability of the positive class of a {w}x{h} RGB image",
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
    }
    return meta
