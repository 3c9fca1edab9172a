"""Write small Keras-2-format HDF5 model files by hand (h5py only), for tests."""

from __future__ import annotations

import json

import h5py
import numpy as np


def layer(name, kind, inputs, **config):
    return {"name": name, "class_name": kind, "config": {"name": name, **config},
            "inbound_nodes": [[[i, 0, 0, {}] for i in inputs]] if inputs else []}


def write_model(path, layers, weights, output):
    """``weights``: {layer name: {short weight name: array}}."""
    config = {"class_name": "Model", "config": {"name": "tiny", "layers": layers,
              "input_layers": [[layers[0]["name"], 0, 0]], "output_layers": [[output, 0, 0]]}}
    with h5py.File(path, "w") as fh:
        fh.attrs["model_config"] = json.dumps(config).encode()
        fh.attrs["keras_version"] = b"2.1.2"
        group = fh.create_group("model_weights")
        group.attrs["layer_names"] = np.array([x["name"].encode() for x in layers])
        for spec in layers:
            g = group.create_group(spec["name"])
            names = [f"{spec['name']}/{k}:0".encode() for k in weights.get(spec["name"], {})]
            g.attrs["weight_names"] = np.array(names, dtype="S64")
            for k, v in weights.get(spec["name"], {}).items():
                g.create_dataset(f"{spec['name']}/{k}:0", data=np.asarray(v, np.float32))
    return path


def tiny_classifier_file(path, units=3, seed=0, extra_layer=None):
    """Input 8x8x3 -> Conv2D same/stride 2 -> MaxPooling 2x2 -> Flatten -> Dense(units)."""
    rng = np.random.default_rng(seed)
    layers = [
        layer("in", "InputLayer", [], batch_input_shape=[None, 8, 8, 3]),
        layer("conv", "Conv2D", ["in"], filters=4, kernel_size=[3, 3], strides=[2, 2],
              padding="same", activation="relu", use_bias=True, data_format="channels_last",
              dilation_rate=[1, 1]),
        layer("pool", "MaxPooling2D", ["conv"], pool_size=[2, 2], strides=[2, 2], padding="valid",
              data_format="channels_last"),
        layer("flat", "Flatten", ["pool"]),
        layer("dense", "Dense", ["flat"], units=units, activation="linear", use_bias=True),
    ]
    weights = {"conv": {"kernel": rng.normal(size=(3, 3, 3, 4)), "bias": rng.normal(size=4)},
               "dense": {"kernel": rng.normal(size=(16, units)), "bias": rng.normal(size=units)}}
    if extra_layer is not None:
        layers.append(layer("odd", extra_layer, ["dense"]))
        return write_model(path, layers, weights, "odd")
    return write_model(path, layers, weights, "dense")


def residual_classifier_file(path, size=18, seed=0):
    """A small residual network with the structures the incremental engine handles.

    Input size x size x 3 -> Conv 3x3/2 same -> BatchNorm -> ReLU -> [Conv 3x3 relu -> Conv
    3x3] + shortcut (Add) -> Conv 1x1/2 -> Conv 3x3 relu -> AveragePooling 2x2 -> Flatten ->
    Dense(1) logit. An odd ``size`` gives odd feature-map sizes (Keras' asymmetric padding).
    """
    rng = np.random.default_rng(seed)

    def conv(name, inputs, filters, k, s, activation="linear"):
        return layer(name, "Conv2D", inputs, filters=filters, kernel_size=[k, k], strides=[s, s],
                     padding="same", activation=activation, use_bias=True,
                     data_format="channels_last", dilation_rate=[1, 1])

    c = 6
    layers = [
        layer("in", "InputLayer", [], batch_input_shape=[None, size, size, 3]),
        conv("c1", ["in"], c, 3, 2),
        layer("bn1", "BatchNormalization", ["c1"], axis=-1, epsilon=1e-3),
        layer("a1", "Activation", ["bn1"], activation="relu"),
        conv("c2", ["a1"], c, 3, 1, "relu"),
        conv("c3", ["c2"], c, 3, 1),
        layer("add1", "Add", ["a1", "c3"]),
        conv("c4", ["add1"], c, 1, 2),
        conv("c5", ["c4"], c, 3, 1, "relu"),
        layer("pool", "AveragePooling2D", ["c5"], pool_size=[2, 2], strides=[2, 2],
              padding="valid", data_format="channels_last"),
        layer("flat", "Flatten", ["pool"]),
        layer("dense", "Dense", ["flat"], units=1, activation="linear", use_bias=True),
    ]
    half = -(-size // 2)
    pooled = (-(-half // 2)) // 2
    weights = {name: {"kernel": rng.normal(scale=0.4, size=(k, k, cin, c)),
                      "bias": rng.normal(scale=0.1, size=c)}
               for name, k, cin in (("c1", 3, 3), ("c2", 3, c), ("c3", 3, c), ("c4", 1, c),
                                    ("c5", 3, c))}
    weights["bn1"] = {"gamma": rng.uniform(0.5, 1.5, c), "beta": rng.normal(scale=0.1, size=c),
                      "moving_mean": rng.normal(scale=0.1, size=c),
                      "moving_variance": rng.uniform(0.5, 1.5, c)}
    weights["dense"] = {"kernel": rng.normal(scale=0.3, size=(pooled * pooled * c, 1)),
                        "bias": np.zeros(1)}
    return write_model(path, layers, weights, "dense")
