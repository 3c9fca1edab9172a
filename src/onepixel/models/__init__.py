"""Classifier backends: the built-in MAX model, Keras HDF5, torch, ONNX, Python callables.

Public names load on first use (:func:`onepixel._lazy.lazy_exports`).
"""

from onepixel._lazy import lazy_exports

_EXPORTS = {
    "BUILTIN": "onepixel.models.options",
    "CallableClassifier": "onepixel.models.callable_backend",
    "Classifier": "onepixel.models.base",
    "export_onnx": "onepixel.models.export",
    "HttpClassifier": "onepixel.models.max_protocol",
    "KerasGraph": "onepixel.models.keras_h5",
    "KerasNet": "onepixel.models.keras_h5",
    "load_classifier": "onepixel.models.registry",
    "load_keras_module": "onepixel.models.keras_h5",
    "ModelIO": "onepixel.models.base",
    "ModelOptions": "onepixel.models.options",
    "OnnxClassifier": "onepixel.models.onnx_backend",
    "read_keras_h5": "onepixel.models.keras_h5",
    "ScoringModule": "onepixel.models.torch_backend",
    "TorchClassifier": "onepixel.models.torch_backend",
    "TorchOptions": "onepixel.models.torch_backend",
    "V2Classifier": "onepixel.models.v2_protocol",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
