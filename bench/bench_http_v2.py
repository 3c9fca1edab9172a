"""Queries per second: the local model, the MAX client, and the Open Inference Protocol client
(JSON and binary tensors), on the same machine, at the campaign's batch sizes.

Usage::

    ONEPIXEL_ASSETS=../shared/assets python bench/bench_http_v2.py [--seconds 4]
        [--sizes 200,3200] [--out bench/results/http-v2-cpu.md]

Starts ``python -m onepixel.serving.server`` twice on free loopback ports (``--protocol max``
and ``--protocol v2``; the MAX model, CPU, default limits), then times ``scores(images)`` of
each client for ``--seconds`` per row, one row per call size: 200 images is one DE generation
of one image (the papers' population), 3200 is 16 images' generation (the attack batches
images). The clients send 128 images per request (their default), 4 requests in flight; the
server runs one model call at a time. Every client's scores are checked against the local
model's before it is timed (bit for bit). Client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np

from benchutil import emit, machine
from onepixel.models import ModelOptions, load_classifier
from onepixel.models.max_protocol import HttpClassifier
from onepixel.models.v2_protocol import V2Classifier


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(protocol: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "onepixel.serving.server", "--port", str(port),
                             "--device", "cpu", "-q", "--protocol", protocol],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    health = f"{url}/v2/health/ready" if protocol == "v2" else f"{url}/health"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(health, timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{protocol} server did not start")


def rate(model, images: np.ndarray, seconds: float) -> tuple[float, int]:
    """(images per second, calls) of ``model.scores(images)`` repeated for ``seconds``."""
    model.scores(images[:8])  # warm: connections, the encoding measurement
    calls, t0 = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - t0 < seconds:
        model.scores(images)
        calls += 1
    return calls * len(images) / (time.perf_counter() - t0), calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--sizes", default="200,3200")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    load = f"1-min load average {os.getloadavg()[0]:.2f} at the start (shared, busy machine)"
    local = load_classifier("max-mitosis", ModelOptions(device="cpu"))
    servers = {p: start(p) for p in ("max", "v2")}
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (max(sizes), 64, 64, 3), dtype=np.uint8)
    want = local.scores(images[:256])
    try:
        v2 = f"{servers['v2'][1]}/v2/models/max-mitosis"
        clients = {"local (ONNX Runtime, in process)": local,
                   "MAX client (PNG, /model/predict_batch)": HttpClassifier(servers["max"][1]),
                   "v2 client, JSON tensors": V2Classifier(v2, encoding="json"),
                   "v2 client, binary tensors": V2Classifier(v2, encoding="binary")}
        auto = V2Classifier(v2)
        auto.scores(images[:128])
        for name, model in clients.items():
            assert np.array_equal(model.scores(images[:256]), want), name
        rows = []
        for size in sizes:
            for name, model in clients.items():
                per_s, calls = rate(model, images[:size], args.seconds)
                rows.append(f"| {name} | {size:,} | {calls} | {per_s:,.0f} |")
        chosen = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in auto.encoding_seconds.items())
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    table = "\n".join([
        f"Machine: {machine(load)}",
        "Servers: `python -m onepixel.serving.server --device cpu --protocol max|v2` (ONNX Runtime, "
        "max_concurrency 1); clients in this process on the same machine, loopback, 128 images "
        f"per request, 4 in flight, {args.seconds:g} s per row. Scores checked bit for bit first.",
        "",
        "| client | images per scores() call | calls | images/s |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"`encoding=\"auto\"` measured one 128-image request each way ({chosen}) and chose "
        f"**{auto.encoding}**.",
    ])
    emit(table, args.out)


if __name__ == "__main__":
    main()
