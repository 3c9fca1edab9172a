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
