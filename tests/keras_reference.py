"""An independent float64 numpy interpreter for Keras-2 HDF5 models, for tests only.

It reads the file with h5py directly (not through onepixel's parser) and computes every layer
with plain numpy loops over the kernel taps, so it shares no code with the PyTorch port.
"""

from __future__ import annotations

import json
import math

import h5py
import numpy as np


def _same_pad(n: int, k: int, s: int) -> tuple[int, int]:
    total = max((math.ceil(n / s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _conv(x: np.ndarray, kernel: np.ndarray, bias, strides, padding) -> np.ndarray:
    # x: (N, H, W, C); kernel: (kh, kw, C, F)
    kh, kw = kernel.shape[:2]
    sh, sw = strides
    if padding == "same":
        t, b = _same_pad(x.shape[1], kh, sh)
        left, r = _same_pad(x.shape[2], kw, sw)
        x = np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)))
    oh = (x.shape[1] - kh) // sh + 1
    ow = (x.shape[2] - kw) // sw + 1
    out = np.zeros((x.shape[0], oh, ow, kernel.shape[3]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]
            out += patch @ kernel[i, j]
    return out + (bias if bias is not None else 0.0)


def _pool(x, size, strides, kind):
    ph, pw = size
    sh, sw = strides
    oh = (x.shape[1] - ph) // sh + 1
    ow = (x.shape[2] - pw) // sw + 1
    windows = np.stack([x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
                        for i in range(ph) for j in range(pw)])
    return windows.max(0) if kind == "max" else windows.mean(0)


def _act(x, name):
    return {"linear": lambda v: v, "relu": lambda v: np.maximum(v, 0),
            "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[name](x)


def run_keras_h5(path, x: np.ndarray, until: str | None = None) -> np.ndarray:
    """Run the model on preprocessed NHWC float input; return the output (or layer ``until``)."""
    with h5py.File(path, "r") as fh:
        cfg = json.loads(fh.attrs["model_config"])
        weights = {}
        for name in fh["model_weights"]:
            g = fh["model_weights"][name]
            weights[name] = {n.decode().rsplit("/", 1)[-1].split(":")[0]: np.asarray(g[n.decode()],
                             dtype=np.float64) for n in g.attrs["weight_names"]}
    layers = cfg["config"]["layers"]
    values = {}
    for layer in layers:
        name, kind, c = layer["name"], layer["class_name"], layer["config"]
        ins = [values[n[0]] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        w = weights.get(name, {})
        if kind == "InputLayer":
            out = x.astype(np.float64)
        elif kind == "Conv2D":
            out = _act(_conv(ins[0], w["kernel"], w.get("bias"), c["strides"], c["padding"]),
                       c["activation"])
        elif kind == "BatchNormalization":
            out = (ins[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + c["epsilon"])
            out = out * w.get("gamma", 1.0) + w.get("beta", 0.0)
        elif kind == "Activation":
            out = _act(ins[0], c["activation"])
        elif kind == "Add":
            out = sum(ins)
        elif kind in ("AveragePooling2D", "MaxPooling2D"):
            out = _pool(ins[0], c["pool_size"], c["strides"], "max" if kind[0] == "M" else "avg")
        elif kind == "Flatten":
            out = ins[0].reshape(len(ins[0]), -1)
        elif kind == "Dense":
            out = _act(ins[0] @ w["kernel"] + w.get("bias", 0.0), c["activation"])
        else:
            raise NotImplementedError(kind)
        values[name] = out
        if name == until:
            return out
    return values[cfg["config"]["output_layers"][0][0]]
