"""Classifier backends: the built-in MAX model, Keras HDF5, torch, ONNX, Python callables."""

from onepixel.models.base import Classifier, ModelIO
from onepixel.models.callable_backend import CallableClassifier
from onepixel.models.export import export_onnx
from onepixel.models.http_backend import HttpClassifier
from onepixel.models.keras_h5 import KerasGraph, KerasNet, load_keras_module, read_keras_h5
from onepixel.models.onnx_backend import OnnxClassifier
from onepixel.models.registry import BUILTIN, ModelOptions, load_classifier
from onepixel.models.torch_backend import ScoringModule, TorchClassifier, TorchOptions

__all__ = [
    "BUILTIN",
    "CallableClassifier",
    "Classifier",
    "HttpClassifier",
    "KerasGraph",
    "KerasNet",
    "ModelIO",
    "ModelOptions",
    "OnnxClassifier",
    "ScoringModule",
    "TorchClassifier",
    "TorchOptions",
    "export_onnx",
    "load_classifier",
    "load_keras_module",
    "read_keras_h5",
]
