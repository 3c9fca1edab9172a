"""ONNX Runtime classifier adapter, and export of torch classifiers to ONNX.

Files written by :func:`export_onnx` take uint8 images (N, H, W, 3) and hold the preprocessing
inside the graph; their metadata (``onepixel.*`` keys) tells the loader what the output is, so
``onepixel predict --model model.onnx`` needs no options. Other files are read from their graph:
an output computed by Softmax or Sigmoid (through reshapes) is a probability, any other float
output a logit (the default of TorchScript and ``nn.Module`` models too).
"""

from __future__ import annotations

import io as _io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from onepixel.errors import ModelError
from onepixel.models.base import (
    Capabilities,
    ModelIO,
    check_batch,
    class_probabilities,
    n_classes_for,
    output_column,
    preprocess_numpy,
    probabilities_look_like,
    validate_probabilities,
)
from onepixel.models.torch_backend import ScoringModule

log = logging.getLogger(__name__)

META_OUTPUT = "onepixel.output"
META_INPUT = "onepixel.input"
META_NAME = "onepixel.name"


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError("ONNX models need onnxruntime: pip install 'onepixel[onnx]'") from exc
    return onnxruntime


#: Operators that move or reshape values without changing them: the graph is read through them
#: back to the operator that computed the output.
_PASS_THROUGH = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast",
                           "Transpose", "Slice", "Gather", "Dropout"})


def graph_output_kind(model: str | Path | bytes) -> str | None:
    """``probability`` when the graph's first output is computed by Softmax or Sigmoid (through
    :data:`_PASS_THROUGH` operators), ``logit`` otherwise; None when the ``onnx`` package that
    reads graphs is missing."""
    try:
        import onnx
    except ImportError:
        return None
    if isinstance(model, bytes):
        proto = onnx.load_model_from_string(model)
    else:
        proto = onnx.load(str(model), load_external_data=False)
    graph = proto.graph
    producer = {out: node for node in graph.node for out in node.output}
    name = graph.output[0].name
    seen = 0
    while name in producer and seen < len(graph.node):
        node = producer[name]
        if node.op_type in ("Softmax", "Sigmoid"):
            return "probability"
        if node.op_type not in _PASS_THROUGH or not node.input:
            return "logit"
        name, seen = node.input[0], seen + 1
    return "logit"


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxClassifier:
    """Classifier over an ONNX model run by ONNX Runtime.

    Parameters
    ----------
    model : path or bytes
        An ``.onnx`` file or its serialised bytes.
    input_shape : (H, W, 3), optional
        Taken from the model's input when it is static.
    io : ModelIO, optional
        The conventions, whole. By default: the file's ``onepixel.*`` metadata for uint8 inputs
        (files :func:`export_onnx` wrote), else ``ModelIO(layout="nchw", preprocess="unit")``
        for float inputs; the output kind from the metadata, else from the graph
        (:func:`graph_output_kind`).
    adjust : callable, optional
        Applied to the default conventions (``ModelOptions.apply``: the user's declarations).
    mean, std : sequence of float, optional
        Per-channel ``(x - mean) / std`` after preprocessing, for float-input graphs.
    providers : {"auto", "cpu", "cuda"}
    """

    def __init__(self, model: str | Path | bytes, *, name: str | None = None,
                 input_shape: tuple[int, int, int] | None = None, io: ModelIO | None = None,
                 adjust: Callable[[ModelIO], ModelIO] | None = None, mean=None, std=None,
                 providers: str = "auto", batch_size: int = 512, threads: int = 0,
                 fingerprint: str = ""):
        ort = _ort()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        available = ort.get_available_providers()
        wanted = {"cpu": ["CPUExecutionProvider"],
                  "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                  "auto": [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                           if p in available]}.get(providers)
        if wanted is None:
            raise ModelError(f"unknown ONNX providers {providers!r}: use auto, cpu or cuda")
        if providers == "cuda" and "CUDAExecutionProvider" not in available:
            raise ModelError("CUDA was asked for but onnxruntime has no CUDAExecutionProvider "
                             "(install onnxruntime-gpu)")
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, sess_options=options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own exception types
            where = "in-memory model" if isinstance(model, bytes) else str(model)
            raise ModelError(f"cannot load ONNX model {where}: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.uint8_input = inp.type == "tensor(uint8)"
        self.name = name or meta.get(META_NAME) or (
            Path(model).stem if not isinstance(model, bytes) else "onnx-model")
        self.fingerprint = fingerprint
        self.batch_size = batch_size
        if io is None:
            output = meta.get(META_OUTPUT) or self._graph_output(model, adjust)
            if self.uint8_input:
                io = ModelIO(layout="nhwc", preprocess="raw", output=output)  # type: ignore[arg-type]
            else:
                io = ModelIO(layout="nchw", preprocess="unit", output=output)  # type: ignore[arg-type]
            io = adjust(io) if adjust is not None else io
        self.io = io
        if mean is not None and self.uint8_input:
            raise ModelError(f"{self.name} takes uint8 images and holds its own preprocessing: drop "
                             "ModelOptions.mean and ModelOptions.std")
        self._norm = None if mean is None else (np.asarray(mean, dtype=np.float32),
                                                np.asarray(std, dtype=np.float32))
        self._input_shape = input_shape or self._static_shape(inp.shape)
        on_gpu = self.session.get_providers()[0] == "CUDAExecutionProvider"
        # One zero image through the graph: how many outputs (dynamic shapes say nothing).
        probe = self.raw_outputs(np.zeros((1, *self._input_shape), dtype=np.uint8))
        k = probe.shape[1]
        if k > 1 and self.io.positive_index is not None:
            output_column(k, self.io, self.name)
        if self.io.output == "logit" and probabilities_look_like(probe):
            log.warning("%s is read as giving logits, but its %d outputs for a black image are in "
                        "[0, 1] and sum to 1: if it ends in a softmax the graph does not show, "
                        "set ModelOptions.model_output='probability' (CLI: --model-output "
                        "probability)", self.name, k)
        self.n_classes = n_classes_for(k, self.io)
        self.capabilities = Capabilities(fingerprint=fingerprint, device="cuda:0" if on_gpu else "cpu",
                                         n_classes=self.n_classes)

    def _graph_output(self, model, adjust) -> str:
        kind = graph_output_kind(model)
        if kind is None:
            declared = adjust is not None and \
                adjust(ModelIO(output="logit")).output == adjust(ModelIO(output="probability")).output
            if not declared:
                log.warning("%s: the onnx package is missing, so onepixel cannot read whether the "
                            "graph ends in a softmax; reading its output as logits (pip install "
                            "'onepixel[onnx]', or set ModelOptions.model_output)", self.name)
            return "logit"
        return kind

    def _static_shape(self, shape: list) -> tuple[int, int, int]:
        dims = shape[1:]
        if len(dims) != 3 or not all(isinstance(d, int) for d in dims):
            raise ModelError(f"{self.name}: input shape {shape} is not static; give "
                             "ModelOptions.input_shape (H, W, C)")
        if self.io.layout == "nchw":
            c, h, w = dims
        else:
            h, w, c = dims
        return (h, w, c)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self._input_shape

    def raw_outputs(self, images: np.ndarray) -> np.ndarray:
        """Network outputs (N, K) for uint8 images (N, H, W, 3)."""
        images = check_batch(images, self.input_shape, self.name)
        outs = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            if self.uint8_input:
                x = np.ascontiguousarray(chunk)
            else:
                x = preprocess_numpy(chunk, self.io.preprocess)
                if self._norm is not None:
                    x = (x - self._norm[0]) / self._norm[1]
            if self.io.layout == "nchw":
                x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
            out = self.session.run(None, {self.input_name: x})[0]
            outs.append(np.asarray(out).reshape(len(chunk), -1))
        return np.concatenate(outs)

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Scores (N,) of a binary model or class probabilities (N, K), float64 (checked:
        :func:`~onepixel.models.base.validate_probabilities`)."""
        return validate_probabilities(class_probabilities(self.raw_outputs(images), self.io,
                                                          self.name), self.n_classes, self.name)


def scoring_module_to_onnx(module: ScoringModule, input_shape: tuple[int, int, int],
                           name: str, output: str) -> bytes:
    """Serialise a :class:`ScoringModule` (uint8 NHWC input, dynamic batch) to ONNX bytes."""
    try:
        import onnx
    except ImportError as exc:
        raise ModelError("ONNX export needs onnx: pip install 'onepixel[onnx]'") from exc
    example = torch.zeros((2, *input_shape), dtype=torch.uint8)
    buffer = _io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation chatter
        torch.onnx.export(module.cpu().float().eval(), (example,), buffer, dynamo=False,
                          input_names=["image"], output_names=["output"],
                          dynamic_axes={"image": {0: "batch"}, "output": {0: "batch"}},
                          opset_version=17)
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in ((META_OUTPUT, output), (META_INPUT, "uint8-nhwc"), (META_NAME, name)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()
