"""Read a Keras-2 HDF5 model (graph + weights) with h5py and rebuild it in PyTorch.

No TensorFlow or Keras is needed. The file's ``model_config`` gives the layer graph, its
``model_weights`` group the arrays. :func:`read_keras_h5` returns a neutral :class:`KerasGraph`;
:class:`KerasNet` runs it in PyTorch. Exactness matters more than generality: an unsupported
layer or option is an error naming the layer, never a silent approximation.

Keras ``padding="same"`` pads ``total = max((ceil(n/s)-1)*s + (k-1)*d + 1 - n, 0)`` with
``total // 2`` before and the rest after. For the MAX stem (3x3, stride 2, 64 px) that is 0 rows
and columns at the top/left and 1 at the bottom/right, which PyTorch's symmetric ``padding=1``
does not reproduce.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from onepixel.errors import ModelError

log = logging.getLogger(__name__)

SUPPORTED_LAYERS = frozenset({
    "InputLayer", "Conv2D", "BatchNormalization", "Activation", "Add", "AveragePooling2D",
    "MaxPooling2D", "Flatten", "Dense",
})
ACTIVATIONS = frozenset({"linear", "relu", "sigmoid", "tanh", "softmax"})


@dataclass(frozen=True)
class KerasLayer:
    """One layer of the graph: its Keras class, config, input layer names and weights."""

    name: str
    kind: str
    config: dict[str, Any] = field(compare=False)
    inputs: tuple[str, ...]
    weights: dict[str, np.ndarray] = field(compare=False)


@dataclass(frozen=True)
class KerasGraph:
    """A Keras functional/sequential model read from HDF5, layers in topological order.

    ``input_shape`` is (H, W, C) without the batch axis.
    """

    name: str
    input_name: str
    input_shape: tuple[int, int, int]
    output_name: str
    layers: tuple[KerasLayer, ...]
    keras_version: str

    @property
    def n_parameters(self) -> int:
        return int(sum(w.size for layer in self.layers for w in layer.weights.values()))


def read_keras_h5(path: str | Path) -> KerasGraph:
    """Parse a Keras-2 HDF5 model file.

    Raises
    ------
    ModelError
        Not an HDF5 file, no ``model_config`` (weights-only file), more than one input or output,
        or a layer/option this loader does not support (named).
    """
    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot open {path} as a Keras HDF5 model: {exc}") from exc
    with fh:
        if "model_config" not in fh.attrs:
            raise ModelError(f"{path} has no 'model_config': it holds weights only, not a model")
        config = json.loads(_as_str(fh.attrs["model_config"]))
        version = _as_str(fh.attrs.get("keras_version", "unknown"))
        if "model_weights" not in fh:
            raise ModelError(f"{path} has no 'model_weights' group")
        layers_cfg, inputs, outputs = _layer_list(config, path)
        weights_group = fh["model_weights"]
        layers = []
        for spec in layers_cfg:
            name = spec["config"].get("name", spec.get("name"))
            kind = spec["class_name"]
            if kind not in SUPPORTED_LAYERS:
                raise ModelError(
                    f"{path}: layer {name!r} is a {kind}, which onepixel cannot load "
                    f"(supported: {', '.join(sorted(SUPPORTED_LAYERS))})"
                )
            layers.append(KerasLayer(name, kind, spec["config"], tuple(spec["_inputs"]),
                                     _read_weights(weights_group, name)))
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{path}: only models with one input and one output are supported")
    first = next(layer for layer in layers if layer.name == inputs[0])
    shape = first.config.get("batch_input_shape")
    if not shape or len(shape) != 4 or any(s is None for s in shape[1:]):
        raise ModelError(f"{path}: input layer {first.name!r} needs a fixed (H, W, C) shape, got {shape}")
    body = config.get("config")
    model_name = body.get("name", path.stem) if isinstance(body, dict) else path.stem
    graph = KerasGraph(model_name, inputs[0], tuple(int(s) for s in shape[1:]), outputs[0],
                       tuple(layers), version)
    log.info("read %s: %d layers, %d parameters, Keras %s", path.name, len(layers),
             graph.n_parameters, version)
    return graph


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _layer_list(config: dict, path: Path) -> tuple[list[dict], list[str], list[str]]:
    """Normalise functional and sequential configs into layers with ``_inputs``."""
    kind = config.get("class_name")
    body = config.get("config")
    if kind == "Sequential":
        specs = body if isinstance(body, list) else body["layers"]
        specs = [dict(s) for s in specs]
        if specs[0]["class_name"] != "InputLayer":
            shape = specs[0]["config"].get("batch_input_shape")
            specs.insert(0, {"class_name": "InputLayer",
                             "config": {"name": "input", "batch_input_shape": shape}})
        for prev, spec in itertools.pairwise(specs):
            spec["_inputs"] = [prev["config"]["name"]]
        specs[0]["_inputs"] = []
        return specs, [specs[0]["config"]["name"]], [specs[-1]["config"]["name"]]
    if kind not in ("Model", "Functional"):
        raise ModelError(f"{path}: unsupported model class {kind!r} (Model or Sequential expected)")
    specs = []
    for spec in body["layers"]:
        nodes = spec.get("inbound_nodes") or []
        if len(nodes) > 1:
            raise ModelError(f"{path}: layer {spec['name']!r} is shared (called {len(nodes)} times)")
        spec = dict(spec)
        spec["_inputs"] = [n[0] for n in nodes[0]] if nodes else []
        specs.append(spec)
    return specs, [i[0] for i in body["input_layers"]], [o[0] for o in body["output_layers"]]


def _read_weights(group: h5py.Group, name: str) -> dict[str, np.ndarray]:
    if name not in group:
        return {}
    layer_group = group[name]
    weights = {}
    for raw in layer_group.attrs.get("weight_names", []):
        full = _as_str(raw)
        short = full.rsplit("/", 1)[-1].split(":")[0]
        weights[short] = np.asarray(layer_group[full], dtype=np.float32)
    return weights


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2d(nn.Module):
    """Conv2D with Keras padding (possibly asymmetric) and fused activation."""

    def __init__(self, conv: nn.Conv2d, pad: tuple[int, int, int, int], activation: str):
        super().__init__()
        self.conv = conv
        self.pad = pad  # (left, right, top, bottom) as F.pad wants
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad)
        return apply_activation(self.conv(x), self.activation)


class Pool2d(nn.Module):
    def __init__(self, kind: str, kernel: tuple[int, int], stride: tuple[int, int],
                 pad: tuple[int, int, int, int]):
        super().__init__()
        self.kind, self.kernel, self.stride, self.pad = kind, kernel, stride, pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            if any(self.pad):
                x = F.pad(x, self.pad, value=float("-inf"))
            return F.max_pool2d(x, self.kernel, self.stride)
        if any(self.pad):
            # Keras averages over the valid (unpadded) cells only.
            ones = F.pad(torch.ones_like(x[:1, :1]), self.pad)
            total = F.avg_pool2d(F.pad(x, self.pad), self.kernel, self.stride)
            count = F.avg_pool2d(ones, self.kernel, self.stride)
            return total / count
        return F.avg_pool2d(x, self.kernel, self.stride)


class _Dense(nn.Module):
    def __init__(self, linear: nn.Linear, activation: str):
        super().__init__()
        self.linear, self.activation = linear, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_activation(self.linear(x), self.activation)


class _Activation(nn.Module):
    def __init__(self, activation: str):
        super().__init__()
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_activation(x, self.activation)


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Keras flattens channels-last: reorder NCHW -> NHWC first so Dense weights line up.
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        return x.reshape(x.shape[0], -1)


def apply_activation(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "relu":
        return torch.relu(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "softmax":
        return torch.softmax(x, dim=1)
    return x


def _check_activation(layer: KerasLayer, key: str = "activation") -> str:
    name = layer.config.get(key, "linear")
    if name not in ACTIVATIONS:
        raise ModelError(f"layer {layer.name!r}: activation {name!r} is not supported "
                         f"(supported: {', '.join(sorted(ACTIVATIONS))})")
    return name


def _check_channels_last(layer: KerasLayer) -> None:
    fmt = layer.config.get("data_format", "channels_last")
    if fmt != "channels_last":
        raise ModelError(f"layer {layer.name!r}: data_format {fmt!r} is not supported")


class KerasNet(nn.Module):
    """A :class:`KerasGraph` as a PyTorch module.

    ``forward`` takes preprocessed float input of shape (N, C, H, W) and returns the Keras
    model's output of shape (N, K) (for MAX: one logit). BatchNormalization runs in inference
    mode with the file's moving statistics and epsilon.
    """

    def __init__(self, graph: KerasGraph):
        super().__init__()
        self.graph_name = graph.name
        self.input_name = graph.input_name
        self.output_name = graph.output_name
        self.ops = nn.ModuleDict()
        self.plan: list[tuple[str, str, tuple[str, ...]]] = []
        h, w, c = graph.input_shape
        shapes: dict[str, tuple[int, ...]] = {graph.input_name: (c, h, w)}
        for layer in graph.layers:
            if layer.kind == "InputLayer":
                continue
            missing = [i for i in layer.inputs if i not in shapes]
            if missing:
                raise ModelError(f"layer {layer.name!r} uses {missing} before they are defined")
            in_shapes = [shapes[i] for i in layer.inputs]
            op, out_shape = self._build(layer, in_shapes)
            if op is not None:
                self.ops[op_key(layer.name)] = op
            self.plan.append((layer.name, layer.kind, layer.inputs))
            shapes[layer.name] = out_shape
        self.output_shape = shapes[graph.output_name]

    def _build(self, layer: KerasLayer, in_shapes: list[tuple[int, ...]]):
        cfg = layer.config
        kind = layer.kind
        if kind == "Add":
            if len({*in_shapes}) != 1:
                raise ModelError(f"layer {layer.name!r}: Add of different shapes {in_shapes}")
            return None, in_shapes[0]
        (shape,) = in_shapes
        if kind == "Conv2D":
            return self._conv(layer, shape)
        if kind == "BatchNormalization":
            axis = cfg.get("axis", -1)
            axis = axis[0] if isinstance(axis, list) else axis
            if axis not in (-1, len(shape)):
                raise ModelError(f"layer {layer.name!r}: BatchNormalization over axis {axis} "
                                 "is not supported (channels only)")
            channels = shape[0]
            bn = nn.BatchNorm2d(channels, eps=float(cfg.get("epsilon", 1e-3))) if len(shape) == 3 \
                else nn.BatchNorm1d(channels, eps=float(cfg.get("epsilon", 1e-3)))
            wts = layer.weights
            with torch.no_grad():
                bn.weight.copy_(_tensor(wts["gamma"]) if cfg.get("scale", True) else torch.ones(channels))
                bn.bias.copy_(_tensor(wts["beta"]) if cfg.get("center", True) else torch.zeros(channels))
                bn.running_mean.copy_(_tensor(wts["moving_mean"]))
                bn.running_var.copy_(_tensor(wts["moving_variance"]))
            return bn.eval(), shape
        if kind == "Activation":
            return _Activation(_check_activation(layer)), shape
        if kind in ("AveragePooling2D", "MaxPooling2D"):
            _check_channels_last(layer)
            c, h, w = shape
            kh, kw = cfg["pool_size"]
            sh, sw = cfg.get("strides") or cfg["pool_size"]
            if cfg.get("padding", "valid") == "same":
                top, bottom = _same_padding(h, kh, sh, 1)
                left, right = _same_padding(w, kw, sw, 1)
            else:
                top = bottom = left = right = 0
            oh = (h + top + bottom - kh) // sh + 1
            ow = (w + left + right - kw) // sw + 1
            pool = Pool2d("max" if kind == "MaxPooling2D" else "avg", (kh, kw), (sh, sw),
                           (left, right, top, bottom))
            return pool, (c, oh, ow)
        if kind == "Flatten":
            return _Flatten(), (int(np.prod(shape)),)
        if kind == "Dense":
            if len(shape) != 1:
                raise ModelError(f"layer {layer.name!r}: Dense on a {len(shape)}-d input; add Flatten")
            kernel = layer.weights["kernel"]
            units = int(cfg["units"])
            linear = nn.Linear(shape[0], units, bias=cfg.get("use_bias", True))
            with torch.no_grad():
                linear.weight.copy_(_tensor(kernel.T))
                if linear.bias is not None:
                    linear.bias.copy_(_tensor(layer.weights["bias"]))
            return _Dense(linear, _check_activation(layer)), (units,)
        raise ModelError(f"layer {layer.name!r}: {kind} is not supported")

    def _conv(self, layer: KerasLayer, shape: tuple[int, ...]):
        cfg = layer.config
        _check_channels_last(layer)
        if len(shape) != 3:
            raise ModelError(f"layer {layer.name!r}: Conv2D needs a (H, W, C) input, got {shape}")
        c, h, w = shape
        kh, kw = cfg["kernel_size"]
        sh, sw = cfg.get("strides", (1, 1))
        dh, dw = cfg.get("dilation_rate", (1, 1))
        if (dh, dw) != (1, 1) and (sh, sw) != (1, 1):
            raise ModelError(f"layer {layer.name!r}: dilation together with stride is not supported")
        padding = cfg.get("padding", "valid")
        if padding == "same":
            top, bottom = _same_padding(h, kh, sh, dh)
            left, right = _same_padding(w, kw, sw, dw)
        elif padding == "valid":
            top = bottom = left = right = 0
        else:
            raise ModelError(f"layer {layer.name!r}: padding {padding!r} is not supported")
        kernel = layer.weights.get("kernel")
        if kernel is None or kernel.shape[:3] != (kh, kw, c):
            raise ModelError(f"layer {layer.name!r}: kernel weights missing or of wrong shape")
        filters = int(cfg["filters"])
        use_bias = cfg.get("use_bias", True)
        conv = nn.Conv2d(c, filters, (kh, kw), stride=(sh, sw), dilation=(dh, dw), bias=use_bias)
        with torch.no_grad():
            conv.weight.copy_(_tensor(kernel.transpose(3, 2, 0, 1)))
            if use_bias:
                conv.bias.copy_(_tensor(layer.weights["bias"]))
        oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
        ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
        return Conv2d(conv, (left, right, top, bottom), _check_activation(layer)), (filters, oh, ow)

    def forward(self, x: torch.Tensor, until: str | None = None) -> torch.Tensor:
        """Run the graph on (N, C, H, W) input; ``until`` returns that layer's output instead.

        Intermediate 4-d outputs are NCHW.
        """
        values: dict[str, torch.Tensor] = {self.input_name: x}
        for name, kind, inputs in self.plan:
            if kind == "Add":
                out = values[inputs[0]]
                for other in inputs[1:]:
                    out = out + values[other]
            else:
                out = self.ops[op_key(name)](values[inputs[0]])
            values[name] = out
            if name == until:
                return out
        return values[self.output_name]


def op_key(name: str) -> str:
    # ModuleDict keys may not contain dots.
    return name.replace(".", "_")


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def load_keras_module(path: str | Path) -> tuple[KerasNet, KerasGraph]:
    """Read a Keras HDF5 file and return the equivalent module (eval mode) and its graph."""
    graph = read_keras_h5(path)
    return KerasNet(graph).eval(), graph
