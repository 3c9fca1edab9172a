"""PyTorch classifier adapter: an ``nn.Module`` or a TorchScript file, on CPU or CUDA."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from onepixel.errors import ModelError
from onepixel.models.base import (
    SIZE_HINT,
    Capabilities,
    ModelIO,
    check_batch,
    class_probabilities,
    n_classes_for,
    output_column,
    positive_probability,
    preprocess,
    probabilities_look_like,
    unsized_error,
    validate_probabilities,
)
from onepixel.models.keras_h5 import KerasNet
from onepixel.models.options import resolve_device

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)}") from None


class ScoringModule(nn.Module):
    """uint8 images (N, H, W, C) -> raw network output or positive probability, in one module.

    Wraps a network with the :class:`ModelIO` preprocessing (and an optional per-channel
    ``(x - mean) / std``) so the whole scoring path can run on a device (and be exported to ONNX
    as one graph).

    Parameters
    ----------
    net : nn.Module
        Takes preprocessed float input in ``io.layout``. Its output may be a tensor, a tuple or
        list (the first element), a dict or an object with ``logits`` (Hugging Face models).
    io : ModelIO
    final : {"raw", "probability"}
        ``raw`` returns the network output as is (N, K); ``probability`` applies the output
        activation and picks the positive column, returning (N, 1).
    mean, std : sequence of float, optional
        One value per channel (or one for all), applied after ``io.preprocess``.
    """

    def __init__(self, net: nn.Module, io: ModelIO, final: str = "raw",
                 mean=None, std=None):
        super().__init__()
        self.net = net
        self.io = io
        self.layout = io.layout
        self.final = final
        self.normalise = mean is not None
        if self.normalise:
            view = (1, -1, 1, 1) if io.layout == "nchw" else (1, 1, 1, -1)
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(view))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(view))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = preprocess(images.to(_compute_dtype(self.net)), self.io.preprocess)
        if self.layout == "nchw":
            x = x.permute(0, 3, 1, 2)
        if self.normalise:
            # torchvision's Normalize: (x - mean) / std, in this order.
            x = (x - self.mean) / self.std
        out = network_output(self.net(x))
        out = out.reshape(out.shape[0], -1)
        if self.final == "raw":
            return out
        return positive_probability(out, self.io, "network", float64=False)[:, None]


def _compute_dtype(net: nn.Module) -> torch.dtype:
    for p in net.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32  # a network without parameters computes in float32


def network_output(out) -> torch.Tensor:
    """The scores tensor in a forward's output: the tensor itself, a tuple's or list's first
    element, or ``logits`` of a dict or an object (the Hugging Face convention)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        if "logits" in out:
            return out["logits"]
    elif isinstance(out, (tuple, list)):
        if out and isinstance(out[0], torch.Tensor):
            return out[0]
    elif isinstance(getattr(out, "logits", None), torch.Tensor):
        return out.logits
    raise ModelError(f"the model's forward returned {type(out).__name__}; onepixel reads a tensor, "
                     "a tuple or list whose first element is one, or a dict or object with "
                     "'logits'")


@dataclass(frozen=True)
class TorchOptions:
    """Where and how a torch model runs."""

    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 512
    optimize: bool = True  # CPU: trace + freeze (folds batch norm); CUDA: channels-last

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ModelError(f"batch size must be >= 1, got {self.batch_size}")
        resolve_dtype(self.dtype)


class TorchClassifier:
    """Classifier over a torch module.

    Parameters
    ----------
    net : nn.Module
        Maps preprocessed float input (layout per ``io``) to outputs (N, K).
    input_shape : (H, W, C) or None
        None: the size is taken from the images (:func:`~onepixel.models.base.sized_for` gives
        a copy of this classifier for one size; until then ``input_shape`` and
        ``capabilities`` raise a :class:`ModelError` that says so).
    name : str
    io : ModelIO
    options : TorchOptions
    fingerprint : str
        sha256 of the model file, for provenance.
    mean, std : sequence of float, optional
        Per-channel normalisation after ``io.preprocess`` (:class:`ScoringModule`).
    own_weights : bool
        The classifier may freeze the network's parameters (``requires_grad`` off) and convert
        it to ``options.dtype``; False for a user's ``nn.Module``, which stays as it is (it is
        only put in eval mode).
    """

    def __init__(self, net: nn.Module, input_shape: tuple[int, int, int] | None, name: str,
                 io: ModelIO, options: TorchOptions | None = None, fingerprint: str = "",
                 mean=None, std=None, own_weights: bool = True):
        self.options = options or TorchOptions()
        self.name = name
        self.io = io
        self.fingerprint = fingerprint
        self.net = net
        self.mean, self.std = mean, std
        self.own_weights = own_weights
        self.size_from_images = input_shape is None
        self._input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.device = resolve_device(self.options.device)
        self.dtype = resolve_dtype(self.options.dtype)
        module = ScoringModule(net, io, mean=mean, std=std).eval()
        module = module.to(device=self.device, dtype=self.dtype) if own_weights else \
            module.to(device=self.device)
        if own_weights:
            for p in module.parameters():
                p.requires_grad_(False)
        # Kept un-optimised: the exact fast confidence-map path walks its layers.
        self.scoring_module = module
        self.module = module
        self.n_classes = 0
        if self._input_shape is None:
            return
        with torch.inference_mode():  # one image through the network: how many outputs
            try:
                probe = module(torch.zeros((1, *self._input_shape), dtype=torch.uint8,
                                           device=self.device))
            except RuntimeError as exc:
                raise ModelError(f"{name} cannot score a {self._input_shape[1]}x"
                                 f"{self._input_shape[0]}x{self._input_shape[2]} (WxHxC) image: "
                                 f"{str(exc).splitlines()[0]}{SIZE_HINT}") from exc
        # Optimised once the size is known to work (a wrong size fails clearly above).
        self.module = self._optimize(module) if self.options.optimize else module
        k = int(probe.reshape(1, -1).shape[1])
        if k > 1 and io.positive_index is not None:
            output_column(k, io, name)  # an index out of range is an error now, not mid-campaign
        self.n_classes = n_classes_for(k, io)
        if io.output == "logit" and probabilities_look_like(probe.float().cpu().numpy()):
            log.warning("%s is read as giving logits, but its %d outputs for a black image are in "
                        "[0, 1] and sum to 1: if it ends in a softmax, set "
                        "ModelOptions.model_output='probability' (CLI: --model-output "
                        "probability)", name, k)

    def with_input_shape(self, input_shape: tuple[int, int, int]) -> TorchClassifier:
        """This classifier for images of ``input_shape`` (H, W, C) (the same network)."""
        return TorchClassifier(self.net, input_shape, self.name, self.io, self.options,
                               self.fingerprint, self.mean, self.std, self.own_weights)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        if self._input_shape is None:
            raise unsized_error(self.name)
        return self._input_shape  # type: ignore[return-value]

    @property
    def capabilities(self) -> Capabilities:
        if self._input_shape is None:
            raise unsized_error(self.name)
        return Capabilities(fingerprint=self.fingerprint, device=str(self.device),
                            tensor_scoring=True, layers=self.eager_network() is not None,
                            n_classes=self.n_classes)

    def eager_network(self) -> tuple[KerasNet, ModelIO] | None:
        """The eager :class:`KerasNet` and I/O conventions this classifier runs, if it is one.

        The incremental engines walk its layers; a TorchScript-compiled copy (what CPU loading
        runs by default) hides them, so only the kept eager module counts.
        """
        module = self.scoring_module
        if isinstance(module, ScoringModule) and isinstance(module.net, KerasNet) \
                and not module.normalise:
            return module.net, self.io
        return None

    def _optimize(self, module: nn.Module) -> nn.Module:
        if self.device.type == "cuda":
            return module.to(memory_format=torch.channels_last)
        example = torch.zeros((2, *self.input_shape), dtype=torch.uint8, device=self.device)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # TorchScript is deprecated in favour of torch.compile, but it folds batch norm
                # with no compiler toolchain and no warm-up cost; see bench/ for the numbers.
                warnings.simplefilter("ignore", DeprecationWarning)
                traced = torch.jit.trace(module, example, check_trace=False)
                return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        except (RuntimeError, torch.jit.Error) as exc:  # pragma: no cover - model dependent
            log.warning("%s: TorchScript optimisation failed (%s); running eager", self.name, exc)
            return module

    def score_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Score uint8 images already on the device.

        Parameters
        ----------
        images : Tensor, shape (N, H, W, C), uint8, on ``self.device``

        Returns
        -------
        Tensor, shape (N,) or (N, K), float64, on ``self.device``

        Raises
        ------
        ModelError
            Outputs declared as probabilities that are not (:func:`validate_probabilities`).
        """
        out = self.scores_from_outputs(self.module(images))
        if self.io.output == "probability":
            # Logits become probabilities by construction; declared probabilities are checked
            # (on the device: one flag comes back to the host).
            bad = ~torch.isfinite(out).all() | (out < 0).any() | (out > 1).any()
            if out.ndim == 2:
                bad = bad | ((out.sum(dim=1) - 1.0).abs() > 1e-3).any()
            if bool(bad):
                validate_probabilities(out.cpu().numpy(), self.n_classes, self.name)
        return out

    def scores_from_outputs(self, out: torch.Tensor) -> torch.Tensor:
        """Raw network outputs (N, K) -> scores (N,) or (N, K) float64 (:func:`class_probabilities`)."""
        return class_probabilities(out, self.io, self.name)

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Scores (N,) or class probabilities (N, K), float64, for uint8 (N, H, W, C)."""
        images = check_batch(images, self.input_shape, self.name)
        extra = (self.n_classes,) if self.n_classes > 1 else ()
        out = np.empty((len(images), *extra), dtype=np.float64)
        bs = self.options.batch_size
        with torch.inference_mode():
            for start in range(0, len(images), bs):
                # Images decoded by PIL are read-only; torch warns on those, so copy only then.
                chunk = torch.from_numpy(np.require(images[start : start + bs], requirements=("C", "W")))
                raw = self.module(chunk.to(self.device))
                out[start : start + bs] = self.scores_from_outputs(raw).cpu().numpy()
        return validate_probabilities(out, self.n_classes, self.name)


def load_torchscript(path: str | Path) -> nn.Module:
    """Load a TorchScript archive (never a pickled arbitrary object)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError) as exc:
        raise ModelError(
            f"cannot load {path} as TorchScript ({exc}). Save your model with "
            "torch.jit.script(model).save(path) or torch.jit.trace(...).save(path); pickled "
            "modules (torch.save(model)) are not loaded because unpickling runs arbitrary code"
        ) from exc
