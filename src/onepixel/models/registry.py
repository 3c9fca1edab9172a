"""Turn a model spec string into a Classifier.

Specs: ``max-mitosis`` (built-in), ``*.h5`` / ``*.hdf5`` (Keras 2), ``*.onnx``, ``*.pt`` /
``*.ts`` (TorchScript), ``http://HOST:PORT`` (a service with the MAX API) and
``http://HOST:PORT/v2/models/NAME`` (a service with the Open Inference Protocol); see
docs/server.md; in Python also a ``torch.nn.Module`` or an object that already is a Classifier.

What a model returns (logits or probabilities) is read from the file where the format says (an
ONNX graph ending in Softmax/Sigmoid, a Keras output layer's activation, the metadata of files
``onepixel export`` wrote); otherwise it is ``ModelOptions.model_output``, by default ``logit``
for every float-output format (docs/models.md has the table).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import onepixel.assets as assets
from onepixel.errors import ModelError
from onepixel.models.base import Classifier, ModelIO
from onepixel.models.keras_h5 import load_keras_module
from onepixel.models.onnx_backend import OnnxClassifier, onnx_available, scoring_module_to_onnx
from onepixel.models.options import BUILTIN, ModelOptions
from onepixel.models.torch_backend import (
    ScoringModule,
    TorchClassifier,
    TorchOptions,
    load_torchscript,
    resolve_device,
)
from onepixel.models.v2_protocol import is_v2_url

log = logging.getLogger(__name__)

#: Every form of model spec, for messages.
SPEC_FORMS = (f"'{BUILTIN}' (built-in), a Keras file (*.h5, *.hdf5), an ONNX file (*.onnx), a "
              "TorchScript file (*.pt, *.ts), http://HOST:PORT (a MAX-API service) or "
              "http://HOST:PORT/v2/models/NAME[/versions/V] (an Open Inference Protocol service)")

#: The MAX service's conventions: deep-histopath "resnet_custom" scaling, one logit out.
MAX_IO = ModelIO(layout="nchw", preprocess="max", output="logit")


def load_classifier(spec, options: ModelOptions | None = None, *,
                    layers: bool = False) -> Classifier:
    """Load a classifier from a spec string, or wrap a PyTorch module.

    Parameters
    ----------
    spec : str, path, torch.nn.Module or Classifier
        ``max-mitosis``, a Keras ``*.h5``/``*.hdf5``, ``*.onnx`` or TorchScript ``*.pt``/``*.ts``
        file, ``http(s)://HOST:PORT`` (a MAX-API service) or
        ``http(s)://HOST:PORT/v2/models/NAME[/versions/V]`` (an Open Inference Protocol service:
        ``options.model_output`` declares logits, ``options.positive_index`` picks a column)); an
        ``nn.Module`` (:func:`~onepixel.models.module_backend.module_classifier`); a Classifier is returned as
        it is.
    options : ModelOptions
    layers : bool
        Load a Keras or built-in model as an eager torch network that declares its layers
        (:attr:`~onepixel.models.base.Capabilities.layers`), as the incremental engines need,
        whatever ``options.engine`` would pick. Which purpose needs it is decided in
        :mod:`onepixel.scoring.policy`.

    Raises
    ------
    ModelError
        Unknown spec form, missing file, or a file that cannot be loaded; the message names it;
        ``layers`` for a model that is not Keras.
    """
    options = options or ModelOptions()
    if _is_module(spec):
        from onepixel.models.module_backend import module_classifier

        return module_classifier(spec, options)
    if not isinstance(spec, (str, Path)):
        # Duck-typed (a Protocol isinstance would read input_shape, which a model that takes
        # its size from the images does not have yet).
        if callable(getattr(type(spec), "scores", None)) and hasattr(spec, "name"):
            return spec
        raise ModelError(f"cannot load a model from a {type(spec).__name__}: give a spec string "
                         f"('{BUILTIN}', a model file, http://HOST:PORT), a torch.nn.Module or "
                         "a Classifier")
    spec = str(spec)
    if layers:
        return _load_eager_keras(spec, options)
    if options.mean is not None and not spec.lower().endswith((".pt", ".ts", ".onnx")):
        raise ModelError(f"ModelOptions.mean/std normalise the input of nn.Module, TorchScript and "
                         f"ONNX models; {spec!r} holds its own preprocessing (drop mean and std)")
    if spec == BUILTIN:
        path = assets.ensure(BUILTIN, options.assets_dir)
        return keras_classifier(path, options, name=BUILTIN, io=MAX_IO)
    if spec.startswith(("http://", "https://")) and is_v2_url(spec):
        from onepixel.models.v2_protocol import V2Classifier

        return V2Classifier(spec, batch_size=options.batch_size or 128,
                            input_shape=options.input_shape, positive_index=options.positive_index,
                            model_output=_declared_output(options))
    if spec.startswith(("http://", "https://")):
        from onepixel.models.max_protocol import HttpClassifier

        # A MAX-API service; --batch-size is the images per batch request.
        return HttpClassifier(spec, batch_size=options.batch_size or 128,
                              input_shape=options.input_shape)
    path = Path(spec)
    suffix = path.suffix.lower()
    known = {".h5", ".hdf5", ".onnx", ".pt", ".ts"}
    if suffix not in known:
        raise ModelError(
            f"unknown model spec {spec!r}: use {SPEC_FORMS}")
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    fingerprint = assets.sha256_of(path)
    if suffix in (".h5", ".hdf5"):
        return keras_classifier(path, options, name=path.stem, io=None, fingerprint=fingerprint)
    if suffix == ".onnx":
        return OnnxClassifier(path, adjust=options.apply if options.declares_io() else None,
                              input_shape=options.input_shape, mean=options.mean, std=options.std,
                              providers=_providers(options.device),
                              batch_size=options.resolved_batch_size(), fingerprint=fingerprint,
                              threads=options.threads or 0)
    net = load_torchscript(path)
    shape = options.input_shape or _torchscript_input_shape(net, path)
    # A TorchScript file does not say what it returns: logits, as for nn.Module and ONNX.
    io = options.apply(ModelIO(layout="nchw", preprocess="unit", output="logit"))
    return TorchClassifier(net, shape, path.stem, io, _torch_options(options),
                           fingerprint=fingerprint, mean=options.mean, std=options.std)


def keras_classifier(path: str | Path, options: ModelOptions, name: str, io: ModelIO | None,
                     fingerprint: str = "") -> Classifier:
    """A Keras HDF5 model on the chosen engine (see :class:`ModelOptions`).

    ``io`` None: the MAX conventions with the output read from the file's output layer
    (:func:`keras_output`), and the options' overrides applied.
    """
    net, graph = load_keras_module(path)
    if io is None:
        io = options.apply(replace(MAX_IO, output=keras_output(graph)))
    fingerprint = fingerprint or assets.sha256_of(Path(path))
    engine = options.engine
    if engine == "auto":
        on_cpu = resolve_device(options.device).type == "cpu"
        engine = "onnxruntime" if on_cpu and onnx_available() else "torch"
    if engine == "onnxruntime":
        module = ScoringModule(net, io, final="raw")
        payload = scoring_module_to_onnx(module, graph.input_shape, name, "raw")
        # The graph returns raw outputs; sigmoid/softmax happen on the host in float64.
        return OnnxClassifier(payload, name=name, input_shape=graph.input_shape,
                              io=replace(io, preprocess="raw", layout="nhwc"),
                              providers=_providers(options.device),
                              batch_size=options.resolved_batch_size(), fingerprint=fingerprint,
                              threads=options.threads or 0)
    return TorchClassifier(net, graph.input_shape, name, io, _torch_options(options),
                           fingerprint=fingerprint)


def keras_output(graph) -> str:
    """``probability`` when a Keras model's output layer ends in a sigmoid or softmax (its
    ``activation``, or an ``Activation`` / ``Softmax`` layer), else ``logit``."""
    layer = next((la for la in graph.layers if la.name == graph.output_name), None)
    if layer is None:
        return "logit"
    if layer.kind == "Softmax":
        return "probability"
    activation = layer.config.get("activation")
    return "probability" if activation in ("sigmoid", "softmax") else "logit"


def _is_module(spec) -> bool:
    # Without importing torch for string specs.
    if isinstance(spec, (str, Path)):
        return False
    import torch

    return isinstance(spec, torch.nn.Module)


def is_keras_spec(spec: str) -> bool:
    """Whether ``spec`` names the built-in model or a Keras HDF5 file."""
    return spec == BUILTIN or Path(spec).suffix.lower() in (".h5", ".hdf5")


def load_eager_keras(spec: str, options: ModelOptions | None = None) -> TorchClassifier:
    """``load_classifier(spec, options, layers=True)``: a Keras model as an eager torch network."""
    return _load_eager_keras(spec, options or ModelOptions())


def _load_eager_keras(spec: str, options: ModelOptions) -> TorchClassifier:
    if not is_keras_spec(spec):
        raise ModelError(f"{spec!r} is not a Keras model: incremental scoring needs "
                         f"'{BUILTIN}' or a Keras file (*.h5, *.hdf5)")
    if spec == BUILTIN:
        path, name, io = assets.ensure(BUILTIN, options.assets_dir), BUILTIN, MAX_IO
    else:
        path = Path(spec)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        name, io = path.stem, None
    net, graph = load_keras_module(path)
    if io is None:
        io = options.apply(replace(MAX_IO, output=keras_output(graph)))
    device = resolve_device(options.device)
    torch_options = TorchOptions(device=options.device, dtype=options.dtype,
                                 batch_size=options.resolved_batch_size(),
                                 optimize=device.type == "cuda")
    return TorchClassifier(net, graph.input_shape, name, io, torch_options,
                           fingerprint=assets.sha256_of(path))


def _declared_output(options: ModelOptions) -> str | None:
    """What the user declared the model outputs (logits or probabilities), if anything."""
    # The field is ``output`` here and ``model_output`` after the issue-25 rename.
    return getattr(options, "model_output", getattr(options, "output", None))


def _torch_options(options: ModelOptions) -> TorchOptions:
    return TorchOptions(device=options.device, dtype=options.dtype, batch_size=options.resolved_batch_size())


def _providers(device: str) -> str:
    return "auto" if device == "auto" else ("cpu" if device == "cpu" else "cuda")


def _torchscript_input_shape(net, path: Path) -> tuple[int, int, int] | None:
    """The file's ``input_shape`` attribute (scripted modules keep it; tracing drops it), else
    None: the size is taken from the images."""
    shape = getattr(net, "input_shape", None)
    if shape is not None:
        return tuple(int(s) for s in shape)  # type: ignore[return-value]
    log.debug("%s has no input_shape attribute: its size is taken from the images", path)
    return None
