"""Exact incremental scores of one-pixel candidates on many base images at once.

The attack scores thousands of images that each differ from one of a few base images in one
pixel. As in :mod:`onepixel.confmap.incremental`, every base image goes through the network once and
its layer outputs are kept; a candidate then recomputes only the window of each layer that its
pixel can change, reading the halo around it from the stored base outputs. Unlike the confidence
map engine (which batches many colours of one pixel, grouped by window shape), here every
candidate has its own image, pixel and colour, so the windows are made *uniform*: at each layer
all candidates use the same window size (the largest any pixel needs, clamped inside the map),
at a per-candidate position. One batch then holds any mix of images and pixels, and the
per-candidate placement is an indexed gather from the stored base outputs plus an indexed write
of the changed window into it.

Recomputing a few unchanged positions (the uniform windows are slightly larger than needed)
changes nothing: every output value is computed by the same operations from the same inputs as
in the full network, with batch norms after convolutions folded in as the CPU TorchScript path
does. Scores agree with the full network to about 1e-6 in fp32.

For the MAX model the windows are 2x2 after the stem, grow to 8x8 in the 32x32 stage and to
11x11 in the 16x16 stage; the 8x8 stage runs in full. That is about 6 million multiply-adds per
candidate instead of 16 million.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from onepixel.errors import OnepixelError
from onepixel.models.base import positive_probability
from onepixel.models.keras_h5 import KerasNet, apply_activation
from onepixel.models.torch_backend import TorchClassifier
from onepixel.scoring.evaluators import check_candidates
from onepixel.scoring.keras_steps import (
    Step,
    compile_steps,
    dead_after,
    keras_net_of,
    preprocess_pixels,
    run_full_step,
)

log = logging.getLogger(__name__)

#: Batches are padded to a multiple of this so every candidate's rounding is batch-independent.
BATCH_MULTIPLE = 8


@dataclass(frozen=True, eq=False)
class _Window:
    """Window of one layer's output along one axis: the same length for every pixel coordinate.

    ``start`` has shape (S,) for the S coordinates of the input image along this axis.
    """

    size: int
    length: int
    start: np.ndarray

    @property
    def full(self) -> bool:
        return self.length == self.size


@dataclass(frozen=True, eq=False)
class _Placement:
    """How to build a region of a stored base output with a changed window written into it.

    The base output is stored zero-padded by ``pad`` (before, after). For the pixel coordinate
    ``p`` the region is ``stored[start[p] : start[p] + length]`` and the changed window (of
    ``window`` values) is written at ``overlay[p]`` inside it. An operation then reads
    ``region[keep[0]:keep[1]]``.
    """

    pad: tuple[int, int]
    start: np.ndarray
    length: int
    overlay: np.ndarray
    window: int
    keep: tuple[int, int]


@dataclass(frozen=True, eq=False)
class _Plan:
    """One step of the network for uniform windows: per axis (rows, columns)."""

    out: tuple[_Window, _Window] | None  # None: not a 4-d output
    places: tuple[tuple[_Placement, _Placement] | None, ...]  # per input; None: use as is


def _ceil_div(a: np.ndarray, b: int) -> np.ndarray:
    return -((-a) // b)


def _clamped(o0: np.ndarray, o1: np.ndarray, size: int) -> _Window:
    """The uniform window holding [o0, o1) for every coordinate, kept inside [0, size)."""
    length = int((o1 - o0).max())
    start = np.zeros_like(o0) if length >= size else np.minimum(o0, size - length)
    return _Window(size, min(length, size), start)


def _conv_axis(win: _Window, kernel: int, stride: int, pad: tuple[int, int],
               size_out: int) -> tuple[_Window, _Placement | None]:
    """Output window of a convolution/pooling along one axis and how to gather its input."""
    a, pb = win.start, pad[0]
    o0 = np.maximum(0, _ceil_div(a + pb - kernel + 1, stride))
    o1 = np.minimum(size_out, (a + win.length - 1 + pb) // stride + 1)
    out = _clamped(o0, o1, size_out)
    if win.full:
        return out, None
    n0 = out.start * stride  # where the needed input starts, in coordinates padded by pb
    need = (out.length - 1) * stride + kernel
    d = a + pb - n0  # where the changed input window sits inside the needed input
    if need == win.length and not d.any():
        return out, None  # the changed window is exactly the input needed (1x1 kernels)
    m_lo = max(0, int(-d.min()))
    m_hi = max(0, int((d + win.length - need).max()))
    return out, _Placement((pb + m_lo, pad[1] + m_hi), n0, need + m_lo + m_hi, d + m_lo,
                           win.length, (m_lo, m_lo + need))


def _region_axis(win: _Window, target: _Window) -> _Placement | None:
    """Place a changed window inside a larger uniform window of the same map (None: identical)."""
    if win.length == target.length and np.array_equal(win.start, target.start):
        return None
    overlay = win.start - target.start
    if overlay.min() < 0 or (overlay + win.length).max() > target.length:
        raise AssertionError("window outside its target region")  # a planning bug, not input
    return _Placement((0, 0), target.start, target.length, overlay, win.length,
                      (0, target.length))


def plan_windows(steps: list[Step], input_name: str, input_shape: tuple[int, int, int]
                 ) -> list[_Plan]:
    """Uniform windows for every step, for a one-pixel change at any coordinate."""
    h, w = input_shape[:2]
    wins: dict[str, tuple[_Window, _Window] | None] = {
        input_name: (_Window(h, 1, np.arange(h)), _Window(w, 1, np.arange(w)))}
    plans = []
    for st in steps:
        ins = [wins[n] for n in st.inputs]
        if st.kind in ("conv", "pool"):
            pad = st.pad if st.kind == "conv" else (0, 0, 0, 0)
            rows, prow = _conv_axis(ins[0][0], st.kernel[0], st.stride[0], (pad[2], pad[3]),
                                    st.out_hw[0])
            cols, pcol = _conv_axis(ins[0][1], st.kernel[1], st.stride[1], (pad[0], pad[1]),
                                    st.out_hw[1])
            if prow is None and pcol is None:
                place = None  # no halo to gather: the window (padded if whole) is the input
            else:
                prow = prow or _as_is_axis(ins[0][0], pad[2], pad[3])
                pcol = pcol or _as_is_axis(ins[0][1], pad[0], pad[1])
                place = (prow, pcol)
            out = (rows, cols)
            plans.append(_Plan(out, (place,)))
        elif st.kind in ("affine", "act"):
            out = ins[0]
            plans.append(_Plan(out, (None,)))
        elif st.kind == "add":
            out = tuple(_clamped(np.min([i[ax].start for i in ins], axis=0),
                                 np.max([i[ax].start + i[ax].length for i in ins], axis=0),
                                 ins[0][ax].size) for ax in (0, 1))
            places = []
            for i in ins:
                pr, pc = _region_axis(i[0], out[0]), _region_axis(i[1], out[1])
                places.append(None if pr is None and pc is None else
                              (pr or _identity_axis(i[0]), pc or _identity_axis(i[1])))
            plans.append(_Plan(out, tuple(places)))
        else:  # any other op runs on whole maps: complete each spatial input first
            places = []
            for i in ins:
                if i is None or (i[0].full and i[1].full):
                    places.append(None)
                else:
                    whole = (_Window(i[0].size, i[0].size, np.zeros_like(i[0].start)),
                             _Window(i[1].size, i[1].size, np.zeros_like(i[1].start)))
                    places.append((_region_axis(i[0], whole[0]) or _identity_axis(i[0]),
                                   _region_axis(i[1], whole[1]) or _identity_axis(i[1])))
            out = None if st.out_hw is None else tuple(
                _Window(s, s, np.zeros_like(ins[0][ax].start)) for ax, s in enumerate(st.out_hw))
            plans.append(_Plan(out, tuple(places)))
        wins[st.name] = plans[-1].out
    return plans


def _as_is_axis(win: _Window, pad_before: int, pad_after: int) -> _Placement:
    """Placement along an axis that needs no halo: the whole map padded, or the window itself."""
    if not win.full:
        return _identity_axis(win)
    return _Placement((pad_before, pad_after), np.zeros_like(win.start),
                      win.size + pad_before + pad_after, np.full_like(win.start, pad_before),
                      win.length, (0, win.size + pad_before + pad_after))


def _identity_axis(win: _Window) -> _Placement:
    """Placement along an axis where the window is its own region (no gather needed there)."""
    return _Placement((0, 0), win.start, win.length, np.zeros_like(win.start), win.length,
                      (0, win.length))


@dataclass(frozen=True, eq=False)
class PreparedBatch:
    """Stored base outputs of B images: NHWC copies, zero-padded as the plans need.

    ``stored[(name, (top, bottom, left, right))]`` has shape (B, H + top + bottom,
    W + left + right, C).
    """

    stored: dict[tuple[str, tuple[int, int, int, int]], torch.Tensor]
    n_images: int


class IncrementalScorer:
    """Scores of one-pixel candidates through a KerasNet, recomputing only what changes.

    Parameters
    ----------
    net : KerasNet
        In eval mode on its device; its parameter dtype is the compute dtype.
    io : ModelIO
        Preprocessing and output conventions (NCHW layout).
    input_shape : (H, W, 3)
    """

    def __init__(self, net: KerasNet, io, input_shape: tuple[int, int, int]):
        if io.layout != "nchw":
            raise OnepixelError("incremental scoring needs the KerasNet's NCHW layout")
        self.net, self.io = net, io
        self.input_shape = tuple(int(s) for s in input_shape)
        param = next(net.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.steps = compile_steps(net, self.input_shape, self.device, self.dtype)
        self.output_name = net.output_name
        self.plans = plan_windows(self.steps, net.input_name, self.input_shape)
        self._whole_input = [all(w.full for w in plan_in) if plan_in is not None else True
                             for plan_in in self._input_windows()]
        self._tables = [tuple(None if p is None else tuple(self._axis_tables(a) for a in p)
                              for p in plan.places) for plan in self.plans]
        self._dead_after = dead_after(self.steps, self.output_name)
        self.macs_full, self.macs_window = self._count_macs()
        # From here on no step reads stored base outputs: the tail can run in smaller slices.
        self._tail_start = len(self.steps)
        while self._tail_start > 0 and all(
                p is None for p in self.plans[self._tail_start - 1].places):
            self._tail_start -= 1
        self.tail_batch = 64  # candidates per tail slice: stays in cache on CPU (measured)
        log.debug("incremental scorer: %.1fM of %.1fM multiply-adds per candidate",
                  self.macs_window / 1e6, self.macs_full / 1e6)

    @classmethod
    def from_classifier(cls, classifier: TorchClassifier) -> IncrementalScorer:
        found = keras_net_of(classifier)
        if found is None:
            raise OnepixelError(
                f"{getattr(classifier, 'name', type(classifier).__name__)} has no eager KerasNet "
                "to score incrementally; load Keras/built-in models with "
                "onepixel.models.registry.load_eager_keras")
        return cls(found[0], found[1], classifier.input_shape)

    def _input_windows(self) -> list[tuple[_Window, _Window] | None]:
        """Window of each step's first input."""
        h, w = self.input_shape[:2]
        outs = {self.net.input_name: (_Window(h, 1, np.arange(h)), _Window(w, 1, np.arange(w)))}
        outs.update({st.name: plan.out for st, plan in zip(self.steps, self.plans, strict=True)})
        return [outs[st.inputs[0]] for st in self.steps]

    def _axis_tables(self, p: _Placement) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-coordinate gather rows and overlay rows (S, length) and (S, window) on the device."""
        gather = torch.as_tensor(p.start[:, None] + np.arange(p.length), device=self.device)
        overlay = torch.as_tensor(p.overlay[:, None] + np.arange(p.window), device=self.device)
        return gather, overlay

    def _count_macs(self) -> tuple[float, float]:
        full = window = 0.0
        for st, plan in zip(self.steps, self.plans, strict=True):
            if st.kind == "conv":
                cout, cin, kh, kw = st.weight.shape
                per = cout * cin * kh * kw
                full += per * st.out_hw[0] * st.out_hw[1]
                window += per * plan.out[0].length * plan.out[1].length
        return full, window

    # ---------------------------------------------------------------- base pass
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3) -> preprocessed float in the compute dtype, as ScoringModule does."""
        return preprocess_pixels(images, self.io, self.dtype)

    @torch.inference_mode()
    def prepare(self, images) -> PreparedBatch:
        """Run base images (B, H, W, 3) uint8 through the network and store what candidates read.

        One image at a time: convolution rounding can depend on the batch, and an image's stored
        outputs must not depend on which images share its campaign batch.
        """
        if not isinstance(images, torch.Tensor):
            images = torch.from_numpy(np.array(images))  # a writable copy, as torch wants
        images = images.to(self.device)
        if images.dim() != 4 or tuple(images.shape[1:]) != self.input_shape \
                or images.dtype != torch.uint8:
            raise OnepixelError(
                f"base images must be uint8 of shape (B, {', '.join(map(str, self.input_shape))}),"
                f" got {str(images.dtype).removeprefix('torch.')} {tuple(images.shape)}")
        wanted: dict[str, set[tuple[int, int, int, int]]] = {}
        for st, tables, plan in zip(self.steps, self._tables, self.plans, strict=True):
            for name, place, tab in zip(st.inputs, plan.places, tables, strict=True):
                if tab is not None:
                    pr, pc = place
                    wanted.setdefault(name, set()).add((*pr.pad, *pc.pad))
        parts: dict[tuple, list[torch.Tensor]] = {}
        for s in range(len(images)):
            x = self.preprocess(images[s:s + 1]).permute(0, 3, 1, 2).contiguous()
            values = {self.net.input_name: x}
            for st in self.steps:
                values[st.name] = run_full_step(st, [values[i] for i in st.inputs])
            for name, pads in wanted.items():
                for top, bottom, left, right in pads:
                    v = F.pad(values[name], (left, right, top, bottom))
                    parts.setdefault((name, (top, bottom, left, right)), []).append(
                        v.permute(0, 2, 3, 1).contiguous())
        return PreparedBatch({k: torch.cat(v) for k, v in parts.items()}, len(images))

    # ---------------------------------------------------------------- candidates
    def _place(self, prepared: PreparedBatch, name: str, i: int, j: int, x: torch.Tensor,
               img: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """Region (N, h, w, C) of base output ``name`` with window ``x`` (N, C, a, b) written in."""
        pr, pc = self.plans[i].places[j]
        (g_r, o_r), (g_c, o_c) = self._tables[i][j]
        base = prepared.stored[(name, (*pr.pad, *pc.pad))]
        _, hs, ws, c = base.shape
        n, h, w = len(img), pr.length, pc.length
        # Row-wise copies on flattened (pixels, C) views: far faster than 3-d advanced indexing.
        src = ((img[:, None] * hs + g_r[ys]) * ws)[:, :, None] + g_c[xs][:, None, :]
        region = base.view(-1, c).index_select(0, src.view(-1))
        dst = ((torch.arange(n, device=img.device)[:, None] * h + o_r[ys]) * w)[:, :, None] \
            + o_c[xs][:, None, :]
        region.index_copy_(0, dst.view(-1), x.permute(0, 2, 3, 1).reshape(-1, c))
        return region.view(n, h, w, c)[:, pr.keep[0]:pr.keep[1], pc.keep[0]:pc.keep[1]]

    @torch.inference_mode()
    def logits(self, prepared: PreparedBatch, img: torch.Tensor, pixels: torch.Tensor
               ) -> torch.Tensor:
        """Network outputs (N, K) for base image ``img[n]`` with pixel ``pixels[n]`` set.

        Each candidate's result is the same whatever else shares its batch (bit for bit, as
        measured on CPU), so the DE's per-problem streams stay reproducible.

        Parameters
        ----------
        prepared : PreparedBatch
        img : Tensor (N,) int64, index of each candidate's base image in ``prepared``
        pixels : Tensor (N, 5) int64, ``(x, y, r, g, b)`` per candidate
        """
        n = len(img)
        if n % BATCH_MULTIPLE:
            # oneDNN rounds some rows differently when the batch is not a multiple of a small
            # block (measured: a batch of 1, or 7, on CPU). Results must not depend on the batch
            # (resumed campaigns equal uninterrupted ones): pad with copies of the last one.
            extra = BATCH_MULTIPLE - n % BATCH_MULTIPLE
            img = torch.cat([img, img[-1:].expand(extra)])
            pixels = torch.cat([pixels, pixels[-1:].expand(extra, -1)])
            return self.logits(prepared, img, pixels)[:n]
        xs, ys = pixels[:, 0], pixels[:, 1]
        vals: dict[str, torch.Tensor] = {
            self.net.input_name: self.preprocess(pixels[:, 2:]).reshape(-1, 3, 1, 1)}
        vals = self._run(0, self._tail_start, vals, prepared, img, ys, xs)
        tb = self.tail_batch
        if self._tail_start == len(self.steps) or n <= tb:
            vals = self._run(self._tail_start, len(self.steps), vals, prepared, img, ys, xs)
            return vals[self.output_name].reshape(n, -1)
        # The tail runs on whole maps with no base reads: in slices that stay in cache.
        outs = []
        for s in range(0, n, tb):
            part = {k: v[s:s + tb] for k, v in vals.items()}
            part = self._run(self._tail_start, len(self.steps), part, prepared, img[s:s + tb],
                             ys[s:s + tb], xs[s:s + tb])
            outs.append(part[self.output_name].reshape(len(img[s:s + tb]), -1))
        return torch.cat(outs)

    def _run(self, i0: int, i1: int, vals: dict[str, torch.Tensor], prepared: PreparedBatch,
             img: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Steps ``i0 .. i1 - 1`` on the windows in ``vals``; returns the live values after."""
        for i in range(i0, i1):
            st, plan = self.steps[i], self.plans[i]
            if i:
                for name in self._dead_after[i - 1]:
                    vals.pop(name, None)
            ins = []
            for j, name in enumerate(st.inputs):
                if plan.places[j] is None:
                    ins.append(vals[name])
                else:
                    ins.append(self._place(prepared, name, i, j, vals[name], img, ys, xs)
                               .permute(0, 3, 1, 2))
            # Elementwise steps write into an input no later step reads (fewer big allocations).
            free = [plan.places[j] is not None or name in self._dead_after[i]
                    for j, name in enumerate(st.inputs)]
            if st.kind == "conv":
                whole = plan.places[0] is None and self._whole_input[i]
                x = F.pad(ins[0], st.pad) if whole and any(st.pad) else ins[0]
                out = F.conv2d(x, st.weight, st.bias, st.stride)
                vals[st.name] = torch.relu_(out) if st.activation == "relu" else \
                    apply_activation(out, st.activation)
            elif st.kind == "act" and st.activation == "relu" and free[0]:
                vals[st.name] = torch.relu_(ins[0])
            elif st.kind == "affine" and free[0]:
                vals[st.name] = torch.addcmul(st.bias, ins[0], st.weight, out=ins[0])
            elif st.kind == "add" and any(free):
                k = free.index(True)
                out = ins[k]
                for j, other in enumerate(ins):
                    if j != k:
                        out.add_(other)
                vals[st.name] = out
            else:
                vals[st.name] = run_full_step(st, ins)
        return vals


class IncrementalEvaluator:
    """Evaluator (see :mod:`onepixel.scoring.evaluators`) on an :class:`IncrementalScorer`.

    Parameters
    ----------
    classifier : TorchClassifier
        With an eager KerasNet (``ModelOptions(engine="incremental")``).
    max_batch : int
        Most candidates scored in one pass (bounds memory).
    """

    def __init__(self, classifier: TorchClassifier, max_batch: int = 1024):
        self.classifier = classifier
        self.scorer = IncrementalScorer.from_classifier(classifier)
        self.device = self.scorer.device
        self.max_batch = max_batch
        self.n_evaluations = 0
        self.on_device = False  # scores come back to the host (numpy's sigmoid, see below)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.classifier.input_shape

    def prepare(self, images) -> PreparedBatch:
        """Base outputs of images (B, H, W, 3) uint8, for :meth:`scores_prepared`."""
        return self.scorer.prepare(images)

    @torch.inference_mode()
    def scores_prepared(self, prepared: PreparedBatch, rows, candidates) -> np.ndarray:
        """Scores (R, P) float64 of candidates (R, P, 5) on prepared images ``rows`` (R,)."""
        candidates = np.asarray(candidates).astype(np.int64, copy=False)
        rows = np.asarray(rows, dtype=np.int64)
        check_candidates(candidates, len(rows), self.input_shape)
        if candidates.shape[2] != 5:
            raise OnepixelError("the incremental evaluator scores one RGB pixel per candidate "
                                f"(5 values), got {candidates.shape[2]}; use the full evaluator "
                                "for several pixels (evaluator 'full')")
        if len(rows) and (rows.min() < 0 or rows.max() >= prepared.n_images):
            raise OnepixelError(f"rows must index the {prepared.n_images} prepared images")
        r, p = candidates.shape[:2]
        flat = torch.from_numpy(candidates.reshape(r * p, 5)).to(self.device)
        owner = torch.from_numpy(np.repeat(rows, p)).to(self.device)
        logits = [self.scorer.logits(prepared, owner[s:s + self.max_batch],
                                     flat[s:s + self.max_batch]).cpu()
                  for s in range(0, r * p, self.max_batch)]
        self.n_evaluations += r * p
        if not logits:
            return np.empty((r, p), dtype=np.float64)
        # numpy's sigmoid, as ONNX Runtime classifiers use: element by element the same whatever
        # the batch (torch's vectorised sigmoid differs in the last bit at a batch's tail).
        out = positive_probability(torch.cat(logits).float().numpy(), self.classifier.io,
                                   self.classifier.name)
        return out.reshape(r, p)

    def scores(self, images, candidates) -> np.ndarray:
        """Scores (B, P) float64 for uint8 images (B, H, W, 3) and int candidates (B, P, 5)."""
        images = np.asarray(images)
        return self.scores_prepared(self.prepare(images), np.arange(len(images)), candidates)
