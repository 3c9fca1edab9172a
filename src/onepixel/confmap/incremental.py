"""Exact, faster one-pixel confidence maps for :class:`~onepixel.models.keras_h5.KerasNet` models.

A one-pixel change alters only a small window of the early feature maps. This module runs the
network *incrementally*: the base image goes through the network once and every layer's output
is kept; for a perturbed image only the window of each layer that can differ from the base is
recomputed, reading the unchanged surroundings (the halo a 3x3 convolution needs) from the
stored base activations. As in incremental CNN inference, windows grow with every 3x3
convolution and shrink with every stride, and once a window covers its whole feature map the
layer simply runs in full.

For the MAX model (3x3 stride-2 stem with Keras' asymmetric ``'same'`` padding, 9 bottleneck
blocks at 32x32, 16x16 and 8x8) a pixel with both coordinates even touches 2x2 stem outputs and
an odd one 1x1 (the papers' checkerboard); at 32x32 the window grows to at most 8x8, at 16x16 to
10x10, and only the 8x8 stage runs in full. The arithmetic per evaluation falls from about 16
to at most about 5.8 million multiply-adds.

Everything is exact up to floating-point summation order: every output value is computed with
the same operations as the full network on the same inputs, except that batch norms that follow
a convolution are folded into it (as the CPU TorchScript path of
:class:`~onepixel.models.TorchClassifier` does too). Scores agree with brute force to about
1e-6 in fp32 (the tests hold them to 1e-5 absolute).

Window geometry is separable: it is traced per axis and per coordinate once per input size.
Pixels whose row traces and column traces have the same shape (same window sizes and relative
offsets at every layer) form a *group* and are evaluated together in one batch, each with its
own absolute offsets into the base activations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from onepixel.models.base import ModelIO
from onepixel.models.keras_h5 import KerasNet, apply_activation
from onepixel.models.torch_backend import TorchClassifier
from onepixel.scoring.keras_steps import (
    Step,
    compile_steps,
    dead_after,
    keras_net_of,
    preprocess_pixels,
    run_full_step,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Ax:
    """Window geometry of one step along one axis for one pixel coordinate.

    ``a:b`` is the output window (``a == b``: the output equals the base). For ``conv`` and
    ``pool``: ``n0`` is where the needed input starts in padded coordinates, ``need`` its
    length, ``ov0``/``ovlen`` the part of it covered by the changed input window, ``crop0`` where
    that part starts inside the input window, ``mode`` how the rest is filled (``crop``: nothing
    to fill; ``zeropad``: only padding; ``base``: gather from the base activations). For ``add``:
    ``offs`` is (offset in the hull, length) per input, (-1, 0) for an unchanged input.
    """

    a: int
    b: int
    n0: int = 0
    need: int = 0
    ov0: int = 0
    ovlen: int = 0
    crop0: int = 0
    mode: str = ""
    offs: tuple[tuple[int, int], ...] = ()

    @property
    def changed(self) -> bool:
        return self.b > self.a

    def key(self) -> tuple:
        """Everything but the absolute position: equal keys mean equal tensor shapes."""
        return (self.b - self.a, self.need, self.ov0, self.ovlen, self.crop0, self.mode, self.offs)


@dataclass
class PixelGroup:
    """Pixels whose windows have the same shapes at every layer; evaluated in one batch.

    Attributes
    ----------
    ys, xs : ndarray, shape (G,), int64
        Row and column of each pixel.
    rows, cols : tuple of _Ax per step
        The traces of the first pixel (shapes shared by all).
    row_abs, col_abs : Tensor, shape (S, G), int64, on the device
        Absolute start per step and pixel (``n0`` for conv/pool gathers, ``a`` for add hulls).
    row_same, col_same : ndarray, shape (S,), bool
        Whether that start is the same for every pixel of the group (a slice suffices).
    """

    ys: np.ndarray
    xs: np.ndarray
    rows: tuple[_Ax, ...]
    cols: tuple[_Ax, ...]
    row_abs: torch.Tensor
    col_abs: torch.Tensor
    row_same: np.ndarray
    col_same: np.ndarray

    def __len__(self) -> int:
        return len(self.ys)


@dataclass
class PreparedImage:
    """Base activations of one image: every layer output (1, C, h, w) or (1, K).

    ``padded`` caches NHWC zero-padded copies used for halo gathers.
    """

    values: dict[str, torch.Tensor]
    logits: torch.Tensor
    padded: dict[tuple[str, tuple[int, int, int, int]], torch.Tensor] = field(default_factory=dict)


def incremental_unavailable_reason(classifier) -> str | None:
    """None when :class:`IncrementalConfmap` applies to ``classifier``, else why not (for logs/errors)."""
    found = keras_net_of(classifier)
    if found is None:
        name = getattr(classifier, "name", "this model")
        return (f"{name} was not loaded with its layers (the incremental evaluator recomputes only "
                "the part of the network a pixel changes); for a Keras .h5 or built-in model, give "
                "it as a spec (e.g. max-mitosis) or load it with load_classifier(..., layers=True) "
                "to make maps faster; other models are always scored whole")
    if found[1].layout != "nchw":
        return "the incremental evaluator needs the network in NCHW layout (the default of the torch port)"
    return None


class IncrementalConfmap:
    """Incremental evaluation of one-pixel changes through a KerasNet.

    Parameters
    ----------
    net : KerasNet
        In eval mode, on ``device``; its parameter dtype is the compute dtype.
    io : ModelIO
        Preprocessing and output conventions (layout must be ``nchw``).
    input_shape : (H, W, 3)
    fold_bn : bool
        Fold batch norms that only follow a linear convolution into it (fewer operations).
    """

    def __init__(self, net: KerasNet, io: ModelIO, input_shape: tuple[int, int, int],
                 fold_bn: bool = True):
        self.net = net
        self.io = io
        self.input_shape = tuple(int(s) for s in input_shape)
        param = next(net.parameters())
        self.device = param.device
        self.dtype = param.dtype
        self.steps = compile_steps(net, self.input_shape, self.device, self.dtype, fold_bn)
        self.output_name = net.output_name
        # Free each windowed value after its last consumer: bounds memory to a few tensors.
        self._dead_after = dead_after(self.steps, self.output_name)
        self._groups: list[PixelGroup] | None = None
        self.macs_full, self.macs_window = self._count_macs()

    @classmethod
    def from_classifier(cls, classifier: TorchClassifier) -> IncrementalConfmap:
        found = keras_net_of(classifier)
        if found is None:
            raise ValueError(incremental_unavailable_reason(classifier))
        net, io = found
        return cls(net, io, classifier.input_shape)

    def _count_macs(self) -> tuple[float, float]:
        """Multiply-adds of the convolutions per evaluation: full network, mean over pixels."""
        full = 0.0
        for st in self.steps:
            if st.kind == "conv":
                cout, cin, kh, kw = st.weight.shape
                full += cout * cin * kh * kw * st.out_hw[0] * st.out_hw[1]
        total = 0.0
        for group in self.groups():
            for i, st in enumerate(self.steps):
                if st.kind == "conv" and group.rows[i].changed and group.cols[i].changed:
                    cout, cin, kh, kw = st.weight.shape
                    total += len(group) * cout * cin * kh * kw * (
                        (group.rows[i].b - group.rows[i].a) * (group.cols[i].b - group.cols[i].a))
        h, w = self.input_shape[:2]
        return full, total / (h * w)

    # ------------------------------------------------------------------ geometry
    def _trace(self, axis: int, p: int) -> tuple[_Ax, ...]:
        size = self.input_shape[axis]
        win: dict[str, tuple[int, int] | None] = {self.net.input_name: (p, p + 1)}
        sizes: dict[str, int | None] = {self.net.input_name: size}
        out: list[_Ax] = []
        for st in self.steps:
            ins = [win[i] for i in st.inputs]
            sizes[st.name] = st.out_hw[axis] if st.out_hw is not None else None
            if all(w_ is not None and w_[0] == w_[1] for w_ in ins):  # nothing changed upstream
                win[st.name] = (0, 0)
                out.append(_Ax(0, 0))
                continue
            if st.kind in ("conv", "pool"):
                a, b = ins[0]
                k, s, pb = st.kernel[axis], st.stride[axis], st.pad_before(axis)
                o0 = max(0, -(-(a + pb - k + 1) // s))
                o1 = min(st.out_hw[axis], (b - 1 + pb) // s + 1)
                if o0 >= o1:
                    win[st.name] = (0, 0)
                    out.append(_Ax(0, 0))
                    continue
                n0, need = o0 * s, (o1 - o0 - 1) * s + k
                lo, hi = max(a + pb, n0), min(b + pb, n0 + need)
                if lo == n0 and hi == n0 + need:
                    mode = "crop"
                elif a == 0 and b == sizes[st.inputs[0]]:
                    mode = "zeropad"
                else:
                    mode = "base"
                win[st.name] = (o0, o1)
                out.append(_Ax(o0, o1, n0, need, lo - n0, hi - lo, lo - (a + pb), mode))
            elif st.kind in ("affine", "act"):
                win[st.name] = ins[0]
                out.append(_Ax(*ins[0]))
            elif st.kind == "add":
                changed = [w_ for w_ in ins if w_[1] > w_[0]]
                h0, h1 = min(w_[0] for w_ in changed), max(w_[1] for w_ in changed)
                offs = tuple((w_[0] - h0, w_[1] - w_[0]) if w_[1] > w_[0] else (-1, 0) for w_ in ins)
                win[st.name] = (h0, h1)
                out.append(_Ax(h0, h1, offs=offs))
            else:  # full: output not windowed; record where spatial inputs' windows sit
                fixed = tuple(w_[0] if w_ is not None else -1 for w_ in ins)
                win[st.name] = None if st.out_hw is None else (0, st.out_hw[axis])
                full_size = st.out_hw[axis] if st.out_hw is not None else 1
                out.append(_Ax(0, full_size, offs=tuple((f, 0) for f in fixed)))
        return tuple(out)

    def groups(self) -> list[PixelGroup]:
        """All pixels of the input, grouped by window shapes (computed once, cached)."""
        if self._groups is not None:
            return self._groups
        h, w = self.input_shape[:2]
        rows = [self._trace(0, y) for y in range(h)]
        cols = [self._trace(1, x) for x in range(w)]
        row_keys: dict[tuple, list[int]] = {}
        for y, tr in enumerate(rows):
            row_keys.setdefault(tuple(a.key() for a in tr), []).append(y)
        col_keys: dict[tuple, list[int]] = {}
        for x, tr in enumerate(cols):
            col_keys.setdefault(tuple(a.key() for a in tr), []).append(x)
        row_start, col_start = _starts(self.steps, rows), _starts(self.steps, cols)
        groups = []
        for ys in row_keys.values():
            for xs in col_keys.values():
                yy, xx = np.meshgrid(np.asarray(ys), np.asarray(xs), indexing="ij")
                gy, gx = yy.ravel().astype(np.int64), xx.ravel().astype(np.int64)
                r_abs, c_abs = row_start[:, gy], col_start[:, gx]
                groups.append(PixelGroup(
                    gy, gx, rows[ys[0]], cols[xs[0]],
                    torch.from_numpy(r_abs).to(self.device), torch.from_numpy(c_abs).to(self.device),
                    (r_abs == r_abs[:, :1]).all(axis=1), (c_abs == c_abs[:, :1]).all(axis=1)))
        log.debug("fast confmap: %d row shapes x %d column shapes = %d pixel groups",
                  len(row_keys), len(col_keys), len(groups))
        self._groups = groups
        return groups

    # ------------------------------------------------------------------ execution
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3) -> preprocessed float in the compute dtype, as ScoringModule does."""
        return preprocess_pixels(images, self.io, self.dtype)

    @torch.inference_mode()
    def prepare(self, image: torch.Tensor) -> PreparedImage:
        """Run the base image (H, W, 3) uint8 on the device through every step, keep each output."""
        x = self.preprocess(image.to(self.device)).permute(2, 0, 1)[None]
        values = {self.net.input_name: x.contiguous()}
        for st in self.steps:
            values[st.name] = self._full_op(st, [values[i] for i in st.inputs])
        return PreparedImage(values, values[self.output_name])

    def _full_op(self, st: Step, xs: list[torch.Tensor]) -> torch.Tensor:
        return run_full_step(st, xs)

    def _base_padded(self, prep: PreparedImage, name: str, pad: tuple[int, int, int, int]):
        key = (name, pad)
        if key not in prep.padded:
            prep.padded[key] = F.pad(prep.values[name], pad).permute(0, 2, 3, 1).contiguous()
        return prep.padded[key]

    def _gather(self, base_nhwc: torch.Tensor, group: PixelGroup, i: int, sel: slice, nh: int,
                nw: int, n: int) -> torch.Tensor:
        """Base patches (k*n, C, nh, nw), channels-last, for the k pixels ``group[sel]``."""
        r0, c0 = group.row_abs[i, sel], group.col_abs[i, sel]
        k = len(r0)
        if group.row_same[i] and group.col_same[i]:
            r, c = int(group.rows[i].n0 if self.steps[i].kind != "add" else group.rows[i].a), \
                int(group.cols[i].n0 if self.steps[i].kind != "add" else group.cols[i].a)
            patch = base_nhwc[:, r:r + nh, c:c + nw].expand(k * n, nh, nw, base_nhwc.shape[3])
        else:
            rows = r0[:, None] + torch.arange(nh, device=r0.device)
            cols = c0[:, None] + torch.arange(nw, device=c0.device)
            patch = base_nhwc[0][rows[:, :, None], cols[:, None, :]]  # (k, nh, nw, C)
            patch = patch[:, None].expand(k, n, nh, nw, patch.shape[3]).reshape(k * n, nh, nw, -1)
        return patch.permute(0, 3, 1, 2).clone(memory_format=torch.channels_last)

    @torch.inference_mode()
    def logits(self, prep: PreparedImage, group: PixelGroup, sel: slice,
               colours: torch.Tensor) -> torch.Tensor:
        """Network outputs for pixels ``group[sel]`` each set to each of ``colours``.

        Parameters
        ----------
        prep : PreparedImage
        group : PixelGroup
        sel : slice into the group's pixels (k of them)
        colours : Tensor (n, 3) uint8 on the device

        Returns
        -------
        Tensor, shape (k * n, K), pixel-major (sample ``i * n + j`` is pixel i, colour j)
        """
        k = len(range(*sel.indices(len(group))))
        n = len(colours)
        N = k * n
        pix = self.preprocess(colours)  # (n, 3)
        vals: dict[str, torch.Tensor | None] = {
            self.net.input_name: pix[None].expand(k, n, 3).reshape(N, 3, 1, 1)}
        for i, st in enumerate(self.steps):
            for name in self._dead_after[i - 1] if i else ():
                del vals[name]
            rx, cx = group.rows[i], group.cols[i]
            ins = [vals[name] for name in st.inputs]
            if all(v is None for v in ins):
                vals[st.name] = None
                continue
            if st.kind in ("conv", "pool"):
                if not (rx.changed and cx.changed):
                    vals[st.name] = None
                    continue
                x = ins[0]
                crop = x[:, :, rx.crop0:rx.crop0 + rx.ovlen, cx.crop0:cx.crop0 + cx.ovlen]
                if rx.mode != "base" and cx.mode != "base":
                    left, top = cx.ov0, rx.ov0
                    right, bottom = cx.need - cx.ov0 - cx.ovlen, rx.need - rx.ov0 - rx.ovlen
                    patch = F.pad(crop, (left, right, top, bottom)) if (left or right or top or bottom) \
                        else crop
                else:
                    pad = st.pad if st.kind == "conv" else (0, 0, 0, 0)
                    base = self._base_padded(prep, st.inputs[0], pad)
                    patch = self._gather(base, group, i, sel, rx.need, cx.need, n)
                    patch[:, :, rx.ov0:rx.ov0 + rx.ovlen, cx.ov0:cx.ov0 + cx.ovlen] = crop
                if st.kind == "conv":
                    out = F.conv2d(patch, st.weight, st.bias, st.stride)
                    vals[st.name] = apply_activation(out, st.activation)
                else:
                    fn = F.avg_pool2d if st.pool == "avg" else F.max_pool2d
                    vals[st.name] = fn(patch, st.kernel, st.stride)
            elif st.kind == "affine":
                vals[st.name] = torch.addcmul(st.bias, ins[0], st.weight)
            elif st.kind == "act":
                vals[st.name] = apply_activation(ins[0], st.activation)
            elif st.kind == "add":
                hr, hc = rx.b - rx.a, cx.b - cx.a
                out = None
                for j, (name, v) in enumerate(zip(st.inputs, ins, strict=True)):
                    (orr, lr), (oc, lc) = rx.offs[j], cx.offs[j]
                    if v is not None and lr == hr and lc == hc:
                        term = v
                    else:
                        base = self._base_padded(prep, name, (0, 0, 0, 0))
                        term = self._gather(base, group, i, sel, hr, hc, n)
                        if v is not None:
                            term[:, :, orr:orr + lr, oc:oc + lc] = v
                    out = term if out is None else out + term
                vals[st.name] = out
            else:
                full_ins = []
                for j, (name, v) in enumerate(zip(st.inputs, ins, strict=True)):
                    base = prep.values[name]
                    if v is None:
                        full_ins.append(base.expand(N, *base.shape[1:]))
                    elif base.dim() != 4 or tuple(v.shape[2:]) == tuple(base.shape[2:]):
                        full_ins.append(v)
                    else:
                        r0, c0 = rx.offs[j][0], cx.offs[j][0]
                        full = base.expand(N, *base.shape[1:]).clone(
                            memory_format=torch.channels_last)
                        full[:, :, r0:r0 + v.shape[2], c0:c0 + v.shape[3]] = v
                        full_ins.append(full)
                if len(full_ins) == 1:
                    vals[st.name] = st.module(full_ins[0])
                else:  # an Add of non-spatial tensors
                    out = full_ins[0]
                    for other in full_ins[1:]:
                        out = out + other
                    vals[st.name] = out
        out = vals[self.output_name]
        if out is None:
            out = prep.logits.expand(N, *prep.logits.shape[1:])
        return out.reshape(N, -1)


def _starts(steps: list[Step], traces: list[tuple[_Ax, ...]]) -> np.ndarray:
    """Absolute window starts (S, n_coords): ``n0`` for conv/pool, ``a`` for the rest."""
    out = np.zeros((len(steps), len(traces)), dtype=np.int64)
    for i, st in enumerate(steps):
        attr = "n0" if st.kind in ("conv", "pool") else "a"
        out[i] = [getattr(tr[i], attr) for tr in traces]
    return out
