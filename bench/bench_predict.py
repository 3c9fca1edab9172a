"""Images/s of the MAX model per backend, all measured in one process on the same images.

Usage::

    ONEPIXEL_ASSETS=../shared/assets python bench/bench_predict.py [--batch 200] [--seconds 5]
        [--device cpu] [--compile] [--out bench/results/predict-cpu.md]

Every row scores uint8 (N, 64, 64, 3) images end to end (preprocessing included), so the
numbers are what ``Classifier.scores`` delivers. The baseline is plain PyTorch eager fp32.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from benchutil import emit, machine
from onepixel import assets
from onepixel.models import ModelOptions, load_classifier
from onepixel.models.keras_h5 import load_keras_module


def images_per_second(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                      seconds: float) -> float:
    fn(images)
    fn(images)  # warm-up: allocator, oneDNN primitive cache, ORT arenas
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(images)
        done += len(images)
    return done / (time.perf_counter() - start)


def eager_scorer(net, device: torch.device, channels_last: bool, dtype=torch.float32):
    net = net.to(device=device, dtype=dtype)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)

    def score(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).to(dtype)
            x = (x / 255.0 - 0.5) * 2.0
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return torch.sigmoid(net(x).double()).cpu().numpy()[:, 0]

    return score


def machine_line() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return machine(f"torch {torch.__version__}", f"{torch.get_num_threads()} torch threads",
                   f"GPU: {gpu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=200, help="images per scores() call")
    parser.add_argument("--small-batch", type=int, default=32, help="the small model batch")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow start)")
    parser.add_argument("--out", default=None, help="write the markdown table here")
    args = parser.parse_args()

    model_path = assets.ensure("max-mitosis")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, 64, 64, 3), dtype=np.uint8)
    device = torch.device(args.device)
    rows: list[tuple[str, float]] = []

    def add(name: str, fn) -> None:
        rate = images_per_second(fn, images, args.seconds)
        rows.append((name, rate))
        print(f"{name:<45} {rate:9.0f} images/s", flush=True)

    net, _ = load_keras_module(model_path)
    add("torch eager fp32 NCHW (baseline)", eager_scorer(net, device, channels_last=False))
    net, _ = load_keras_module(model_path)
    add("torch eager fp32 channels-last", eager_scorer(net, device, channels_last=True))
    if args.compile:
        net, _ = load_keras_module(model_path)
        compiled = torch.compile(net.to(device))
        add("torch.compile fp32", eager_scorer(compiled, device, channels_last=False))
    for internal in (args.batch, args.small_batch):
        for engine in ("torch", "onnxruntime"):
            if engine == "onnxruntime" and device.type == "cuda":
                continue
            clf = load_classifier("max-mitosis", ModelOptions(engine=engine, device=args.device,
                                                              batch_size=internal))
            what = "TorchScript freeze, BN folded" if engine == "torch" and device.type == "cpu" \
                else engine
            add(f"engine={engine} ({what}), model batch {internal}", clf.scores)
    if device.type == "cuda":
        bf16 = load_classifier("max-mitosis", ModelOptions(engine="torch", device=args.device,
                                                           dtype="bfloat16", batch_size=args.batch))
        add("engine=torch bf16 channels-last", bf16.scores)
    default = load_classifier("max-mitosis", ModelOptions(device=args.device))
    add(f"default (engine=auto -> {type(default).__name__}, model batch "
        f"{ModelOptions(device=args.device).resolved_batch_size()})", default.scores)

    base = rows[0][1]
    lines = [f"Machine: {machine_line()}", f"Batch {args.batch}, {args.seconds:.0f} s per row, "
             f"device {args.device}, uint8 images in, probabilities out; 'model batch' is what "
             "one engine call sees (scores() splits its input).", "",
             "| backend | images/s | vs eager |", "|---|---:|---:|"]
    lines += [f"| {name} | {rate:,.0f} | {rate / base:.2f}x |" for name, rate in rows]
    table = "\n".join(lines)
    emit(table, args.out)


if __name__ == "__main__":
    main()
