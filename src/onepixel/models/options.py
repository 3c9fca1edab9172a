"""How to load and run a model: :class:`ModelOptions` (light: no torch until a device is resolved)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from onepixel.errors import ModelError, ModelOptionError, is_integer
from onepixel.models.base import ModelIO

if TYPE_CHECKING:
    import torch

#: The built-in model: the MAX mitosis detector of both papers.
BUILTIN = "max-mitosis"
#: Engines for Keras and built-in models.
ENGINES = ("auto", "torch", "onnxruntime")
#: Images per model call by default: small batches stay in cache on CPU and run fastest there
#: (bench/results/predict-cpu.md); a GPU wants large ones.
CPU_BATCH = 32
CUDA_BATCH = 2048
#: Devices by name; ``cuda:N`` too.
DEVICES = ("auto", "cpu", "cuda")


def resolve_device_name(device: str) -> str:
    """Check the spelling of a device name (auto, cpu, cuda, cuda:N) without touching a GPU."""
    if device in DEVICES or (device.startswith("cuda:") and device[5:].isdigit()):
        return device
    raise ModelError(f"unknown device {device!r}: use auto, cpu or cuda[:N]")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` means CUDA when available, else CPU; an unavailable CUDA is an error."""
    import torch  # here, not at import time: building the CLI parser must not load torch

    if isinstance(device, torch.device):
        return device
    resolve_device_name(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("ModelOptions.device 'cuda' was asked for but no CUDA GPU is available; "
                         "use 'cpu' or 'auto'")
    return torch.device(device)


@dataclass(frozen=True)
class ModelOptions:
    """How to load and run a model.

    Attributes
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N"}
    dtype : torch dtype name, for torch engines
    batch_size : int, optional
        Images per model call. Default: 32 on CPU, where small batches stay in cache and run
        fastest (bench/results/predict-cpu.md), 2048 on CUDA.
    engine : {"auto", "torch", "onnxruntime"}
        For Keras and built-in models. ``auto`` runs ONNX Runtime on CPU (fastest there, see
        bench/) and torch on CUDA.
    output, preprocess, layout, positive_index : optional overrides of the model's
        :class:`ModelIO` conventions.
    assets_dir : folder with local assets (else ``$ONEPIXEL_ASSETS``, cache, download)
    input_shape : (H, W, 3) for TorchScript models without an ``input_shape`` attribute
    threads : int, optional
        CPU threads of an ONNX Runtime session (None: one per core). Set where several models
        share a machine, as the workers of :mod:`onepixel.scaleout` do.
    """

    device: str = "auto"
    dtype: str = "float32"
    batch_size: int | None = None
    engine: str = "auto"
    output: str | None = None
    preprocess: str | None = None
    layout: str | None = None
    positive_index: int | None = None
    assets_dir: str | None = None
    input_shape: tuple[int, int, int] | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ModelOptionError(f"ModelOptions.engine {self.engine!r} is unknown: use one of "
                              f"{', '.join(ENGINES)}", field="ModelOptions.engine")
        try:
            resolve_device_name(self.device)
        except ModelError as exc:
            raise ModelOptionError(f"ModelOptions.device: {exc}", field="ModelOptions.device") from None
        if self.batch_size is not None and (not is_integer(self.batch_size) or self.batch_size < 1):
            raise ModelOptionError(f"ModelOptions.batch_size must be an integer >= 1 or None, "
                              f"got {self.batch_size!r}", field="ModelOptions.batch_size")
        if self.threads is not None and (not is_integer(self.threads) or self.threads < 1):
            raise ModelOptionError(f"ModelOptions.threads must be an integer >= 1 or None, got "
                                   f"{self.threads!r}", field="ModelOptions.threads")

    def resolved_batch_size(self) -> int:
        """The batch size to use on this options' device."""
        if self.batch_size is not None:
            return self.batch_size
        return CPU_BATCH if resolve_device(self.device).type == "cpu" else CUDA_BATCH

    def apply(self, io: ModelIO) -> ModelIO:
        """``io`` with the user's overrides applied."""
        changes = {k: getattr(self, k) for k in ("output", "preprocess", "layout", "positive_index")
                   if getattr(self, k) is not None}
        return replace(io, **changes) if changes else io
