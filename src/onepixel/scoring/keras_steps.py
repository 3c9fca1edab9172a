"""A Keras network as a flat list of steps, for engines that recompute only part of it.

The incremental attack evaluator (:mod:`onepixel.scoring.incremental`) and the fast
confidence-map engine (:mod:`onepixel.confmap.incremental`) both run a :class:`~onepixel.models.
keras_h5.KerasNet` step by step: :func:`compile_steps` turns its graph into :class:`Step`
records (batch norms after linear convolutions folded into them), :func:`run_full_step` runs
one step on whole feature maps, and :func:`dead_after` says when a stored value can be freed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from onepixel.models.base import ModelIO, capabilities_of, preprocess
from onepixel.models.keras_h5 import Conv2d, KerasNet, Pool2d, apply_activation, op_key

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Step:
    """One layer of the compiled plan.

    ``kind`` is ``conv``, ``pool`` (no padding), ``affine`` (inference batch norm on a 4-d
    tensor, ``x * scale + shift``), ``act``, ``add`` or ``full`` (anything else: run the
    original op on full tensors).
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # left, right, top, bottom (F.pad order)
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    activation: str = "linear"
    pool: str = ""
    module: torch.nn.Module | None = None
    out_hw: tuple[int, int] | None = None  # spatial size of the output; None when not 4-d

    def pad_before(self, axis: int) -> int:
        return self.pad[2] if axis == 0 else self.pad[0]


def keras_net_of(classifier) -> tuple[KerasNet, ModelIO] | None:
    """The eager :class:`KerasNet` and I/O conventions behind a classifier, if it declares them
    (:attr:`~onepixel.models.base.Capabilities.layers`)."""
    if not capabilities_of(classifier).layers:
        return None
    return classifier.eager_network()


def compile_steps(net: KerasNet, input_shape: tuple[int, int, int], device: torch.device,
                  dtype: torch.dtype, fold_bn: bool = True) -> list[Step]:
    """The network as a list of :class:`Step` (batch norms after linear convolutions folded)."""
    h, w = input_shape[:2]
    consumers: dict[str, list[str]] = {}
    for name, _kind, inputs in net.plan:
        for i in inputs:
            consumers.setdefault(i, []).append(name)
    hw: dict[str, tuple[int, int] | None] = {net.input_name: (h, w)}
    steps: list[Step] = []
    skip: set[str] = set()
    with torch.no_grad():
        probe = {net.input_name: torch.zeros(1, input_shape[2], h, w, device=device,
                                             dtype=dtype)}
        for name, kind, inputs in net.plan:
            if name in skip:
                continue
            op = net.ops[op_key(name)] if op_key(name) in net.ops else None  # noqa: SIM401
            # Shapes by running the op once on zeros (cheap, exact).
            out = sum(probe[i] for i in inputs) if kind == "Add" else op(probe[inputs[0]])
            probe[name] = out
            out_hw = tuple(out.shape[2:]) if out.dim() == 4 else None
            hw[name] = out_hw
            in_4d = all(hw.get(i) is not None for i in inputs)
            if kind == "Conv2D" and isinstance(op, Conv2d) and in_4d \
                    and tuple(op.conv.dilation) == (1, 1) and op.conv.groups == 1:
                dt = dtype
                # Fold in fp32 (or better) and round once to the compute dtype.
                weight = op.conv.weight.detach().to(torch.promote_types(dt, torch.float32))
                bias = op.conv.bias.detach().to(weight.dtype) if op.conv.bias is not None else None
                out_name, activation = name, op.activation
                nxt = consumers.get(name, [])
                if fold_bn and activation == "linear" and len(nxt) == 1:
                    bn_name = nxt[0]
                    bn_kind = next(k for n, k, _ in net.plan if n == bn_name)
                    if bn_kind == "BatchNormalization" and out.dim() == 4:
                        scale, shift = bn_affine(net.ops[op_key(bn_name)])
                        weight = weight * scale[:, None, None, None]
                        bias = shift if bias is None else bias * scale + shift
                        skip.add(bn_name)
                        out_name = bn_name
                        probe[bn_name] = net.ops[op_key(bn_name)](out)
                        hw[bn_name] = out_hw
                steps.append(Step(out_name, "conv", inputs, tuple(op.conv.kernel_size),
                                   tuple(op.conv.stride), tuple(op.pad),
                                   weight.to(dt).contiguous(memory_format=torch.channels_last),
                                   None if bias is None else bias.to(dt), activation,
                                   out_hw=out_hw))
            elif kind in ("AveragePooling2D", "MaxPooling2D") and isinstance(op, Pool2d) \
                    and not any(op.pad) and in_4d:
                steps.append(Step(name, "pool", inputs, tuple(op.kernel), tuple(op.stride),
                                   pool=op.kind, out_hw=out_hw))
            elif kind == "BatchNormalization" and in_4d and out.dim() == 4:
                scale, shift = bn_affine(op)
                steps.append(Step(name, "affine", inputs,
                                   weight=scale.to(dtype).view(1, -1, 1, 1),
                                   bias=shift.to(dtype).view(1, -1, 1, 1), out_hw=out_hw))
            elif kind == "Activation" and in_4d:
                steps.append(Step(name, "act", inputs, activation=op.activation, out_hw=out_hw))
            elif kind == "Add" and in_4d:
                steps.append(Step(name, "add", inputs, out_hw=out_hw))
            else:
                steps.append(Step(name, "full", inputs, module=op, out_hw=out_hw))
    return steps


def preprocess_pixels(images: torch.Tensor, io: ModelIO, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (..., 3) -> preprocessed float in ``dtype``, as ScoringModule does."""
    return preprocess(images.to(dtype), io.preprocess)


def dead_after(steps: list[Step], keep: str) -> list[tuple[str, ...]]:
    """Per step, the values no later step reads (``keep``, the output, excepted)."""
    last: dict[str, int] = {}
    for i, st in enumerate(steps):
        for name in st.inputs:
            last[name] = i
    return [tuple(n for n, j in last.items() if j == i and n != keep) for i in range(len(steps))]


def run_full_step(st: Step, xs: list[torch.Tensor]) -> torch.Tensor:
    """One step on whole feature maps (the base pass)."""
    if st.kind == "conv":
        out = F.conv2d(F.pad(xs[0], st.pad) if any(st.pad) else xs[0], st.weight, st.bias,
                       st.stride)
        return apply_activation(out, st.activation)
    if st.kind == "pool":
        fn = F.avg_pool2d if st.pool == "avg" else F.max_pool2d
        return fn(xs[0], st.kernel, st.stride)
    if st.kind == "affine":
        return torch.addcmul(st.bias, xs[0], st.weight)
    if st.kind == "act":
        return apply_activation(xs[0], st.activation)
    if st.kind == "add":
        out = xs[0]
        for other in xs[1:]:
            out = out + other
        return out
    return st.module(xs[0])


def bn_affine(bn: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference batch norm as ``x * scale + shift`` (per channel), computed in at least fp32."""
    dtype = torch.promote_types(bn.weight.dtype, torch.float32)
    scale = bn.weight.detach().to(dtype) / torch.sqrt(bn.running_var.to(dtype) + bn.eps)
    shift = bn.bias.detach().to(dtype) - bn.running_mean.to(dtype) * scale
    return scale, shift
