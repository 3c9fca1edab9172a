"""A PyTorch ``nn.Module`` in this process, as a Classifier.

torchvision's conventions by default: float NCHW input in [0, 1] (``preprocess="unit"``,
``layout="nchw"``), logits out, optional per-channel ``mean``/``std`` normalisation; every one
of them can be overridden through :class:`~onepixel.models.options.ModelOptions`. The module
runs on its own device (unless ``ModelOptions.device`` names one), in eval mode and without
gradients, and keeps its weights as they are (no dtype conversion, ``requires_grad`` untouched).
Its input size is taken from the images unless ``ModelOptions.input_shape`` gives it.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from onepixel.models.base import ModelIO
from onepixel.models.options import CPU_BATCH, CUDA_BATCH, ModelOptions
from onepixel.models.torch_backend import TorchClassifier, TorchOptions

log = logging.getLogger(__name__)

#: An ``nn.Module``'s conventions unless declared: torchvision's (float NCHW in [0, 1], logits).
MODULE_IO = ModelIO(layout="nchw", preprocess="unit", output="logit")


def module_classifier(module: nn.Module, options: ModelOptions | None = None,
                      name: str | None = None) -> TorchClassifier:
    """Wrap ``module`` as a :class:`~onepixel.models.torch_backend.TorchClassifier`.

    Parameters
    ----------
    module : nn.Module
        ``forward(x)`` with ``x`` float (N, C, H, W) (by default; see ``options``) returning
        (N, K) or (N,) outputs: a tensor, a tuple or list (first element), or a dict or object
        with ``logits``.
    options : ModelOptions, optional
        ``model_output``, ``preprocess``, ``layout``, ``positive_index``, ``mean``/``std``,
        ``input_shape``, ``batch_size``, and ``device`` (``auto``: the module's own device).
    name : str, optional
        Default: the module's class name.

    Returns
    -------
    TorchClassifier
        ``size_from_images`` unless ``options.input_shape`` is given.
    """
    options = options or ModelOptions()
    params = [p for p in module.parameters()] + [b for b in module.buffers()]
    own_device = params[0].device if params else torch.device("cpu")
    device = str(own_device) if options.device == "auto" else options.device
    floats = [p.dtype for p in params if p.is_floating_point()]
    dtype = str(floats[0]).removeprefix("torch.") if floats else "float32"
    batch = options.batch_size or (CPU_BATCH if torch.device(device).type == "cpu" else CUDA_BATCH)
    torch_options = TorchOptions(device=device, dtype=dtype, batch_size=batch,
                                 optimize=False)  # a user's module is run as it is, never traced
    io = options.apply(MODULE_IO)
    return TorchClassifier(module, options.input_shape, name or type(module).__name__, io,
                           torch_options, mean=options.mean, std=options.std, own_weights=False)
