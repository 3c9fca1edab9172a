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
    model_output : {"logit", "probability"}, optional
        What the model returns, where the file does not say (docs/models.md has the table of
        what each format says and the defaults): ``logit`` outputs go through a sigmoid (one
        output) or a softmax (several). Every backend checks the resulting scores and names this
        field when they are not probabilities.
    preprocess, layout, positive_index : optional overrides of the model's :class:`ModelIO`
        conventions.
    mean, std : tuple of float, optional
        Per-channel normalisation ``(x - mean) / std`` after ``preprocess`` (for an
        ``nn.Module`` or TorchScript model: ``x`` in [0, 1] by default), what most pretrained
        models expect (torchattacks' ``set_normalization_used``). One value per input channel.
    assets_dir : folder with local assets (else ``$ONEPIXEL_ASSETS``, cache, download)
    input_shape : (H, W, C), optional
        The input size of a model that does not declare one (TorchScript without an
        ``input_shape`` attribute, ``nn.Module``, HTTP services); without it the size is taken
        from the images where onepixel has them.
    threads : int, optional
        CPU threads of an ONNX Runtime session (None: one per core). Set where several models
        share a machine, as the workers of :mod:`onepixel.scaleout` do.
    """

    device: str = "auto"
    dtype: str = "float32"
    batch_size: int | None = None
    engine: str = "auto"
    model_output: str | None = None
    preprocess: str | None = None
    layout: str | None = None
    positive_index: int | None = None
    assets_dir: str | None = None
    input_shape: tuple[int, int, int] | None = None
    threads: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

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
        if self.model_output not in (None, "logit", "probability"):
            raise ModelOptionError(f"ModelOptions.model_output must be 'logit' or 'probability' (or "
                                   f"None: from the model), got {self.model_output!r}",
                                   field="ModelOptions.model_output")
        if self.input_shape is not None:
            shape = tuple(self.input_shape)
            if len(shape) != 3 or not all(is_integer(v) and v > 0 for v in shape) \
                    or shape[2] not in (1, 3):
                raise ModelOptionError(f"ModelOptions.input_shape must be (H, W, C) positive integers "
                                       f"with C 1 or 3, got {self.input_shape!r}",
                                       field="ModelOptions.input_shape")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and (len(value) not in (1, 3) or
                                      (name == "std" and min(value) <= 0)):
                raise ModelOptionError(f"ModelOptions.{name} must hold one value per channel (1 or 3)"
                                       f"{', all > 0' if name == 'std' else ''}, got {value!r}",
                                       field=f"ModelOptions.{name}")
        if (self.mean is None) != (self.std is None):
            raise ModelOptionError("ModelOptions.mean and ModelOptions.std go together: give both",
                                   field="ModelOptions.mean")

    def resolved_batch_size(self) -> int:
        """The batch size to use on this options' device."""
        if self.batch_size is not None:
            return self.batch_size
        return CPU_BATCH if resolve_device(self.device).type == "cpu" else CUDA_BATCH

    def apply(self, io: ModelIO) -> ModelIO:
        """``io`` with the user's overrides applied."""
        changes = {k: getattr(self, k) for k in ("preprocess", "layout", "positive_index")
                   if getattr(self, k) is not None}
        if self.model_output is not None:
            changes["output"] = self.model_output
        return replace(io, **changes) if changes else io

    def declares_io(self) -> bool:
        """Whether any :class:`ModelIO` convention is set here (else the model's own apply)."""
        return any(getattr(self, k) is not None
                   for k in ("model_output", "preprocess", "layout", "positive_index"))
