"""The MAX model over HTTP on loopback: endpoint throughput/latency, and attacks vs in process.

Usage::

    ONEPIXEL_ASSETS=../shared/assets python bench/bench_http.py [--seconds 5] [--maxiter 4]
        [--images 64,16] [--out bench/results/http-cpu.md]

One run does everything on the same machine:

1. starts ``python -m onepixel.serving.server`` (the MAX model, CPU, default limits) on a free loopback
   port, in its own process;
2. load: this process sends requests from N threads (one keep-alive connection each, bodies
   encoded beforehand) for ``--seconds`` per row (and at most ``--max-requests``), and reports
   requests/s, images/s and p50/p99 latency for ``/model/predict`` and ``/model/predict_batch``;
3. attacks: the same one-pixel attack (B mitosis patches at once, B = 64 (the campaign's
   default) and 16, the papers' population 200, ``--maxiter`` generations, immediate updating)
   in process (ONNX Runtime, the CPU default) and through
   :class:`~onepixel.models.http_backend.HttpClassifier` with the batch endpoint, twice each,
   interleaved (the machine may drift), then with one image per request (the plain MAX API,
   one generation). Evaluations/s count every candidate DE scored (``nfev``), as
   scipy would; model images/s count the images actually sent (memoised repeats are not).

Both processes share the machine's cores: the numbers include the client's own CPU time.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import torch

from benchutil import emit, machine
from onepixel import assets
from onepixel.attack import AttackConfig, OnePixelAttack
from onepixel.datasets.demo import dihedral_variants
from onepixel.datasets.images import load_image
from onepixel.models import ModelOptions, load_classifier
from onepixel.models.http_backend import HttpClassifier, _multipart, encode_png
from onepixel.optimize.de import DEConfig
from onepixel.scoring.evaluators import HostEvaluator


def machine_line() -> str:
    load = ""
    if hasattr(os, "getloadavg"):
        load = f"1-min load average {os.getloadavg()[0]:.2f} at the start (shared machine)"
    return machine(f"torch {torch.__version__}", f"httpx {httpx.__version__}", load)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "onepixel.serving.server", "--port", str(port), "--device", "cpu", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start in 120 s")


def load(url: str, body: bytes, ctype: str, threads: int, seconds: float, max_requests: int,
         images_per_request: int) -> dict:
    """Requests from ``threads`` threads for ``seconds`` (at most ``max_requests``)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    count = [0]
    stop_at = time.perf_counter() + seconds

    def worker() -> None:
        with httpx.Client(timeout=60) as client:
            while time.perf_counter() < stop_at:
                with lock:
                    if count[0] >= max_requests:
                        return
                    count[0] += 1
                t0 = time.perf_counter()
                r = client.post(url, content=body, headers={"content-type": ctype})
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if r.status_code != 200:
                        errors[0] += 1

    # Warm-up: connections, the server's first requests.
    with httpx.Client(timeout=60) as client:
        for _ in range(3):
            client.post(url, content=body, headers={"content-type": ctype})
    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"requests": len(lat), "errors": errors[0], "rps": len(lat) / wall,
            "ips": len(lat) * images_per_request / wall,
            "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}


def attack_rate(classifier, images: np.ndarray, maxiter: int) -> dict:
    config = AttackConfig(de=DEConfig(population=200, maxiter=maxiter, seed=0))
    evaluator = HostEvaluator(classifier)
    attack = OnePixelAttack(evaluator, config)
    t0 = time.perf_counter()
    results = attack.run(images, ["decrease"] * len(images), list(range(len(images))))
    wall = time.perf_counter() - t0
    nfev = sum(r.nfev for r in results)
    return {"seconds": wall, "nfev": nfev, "eps": nfev / wall,
            "model_ips": evaluator.n_evaluations / wall,
            "x": [r.x.tolist() for r in results], "fun": [r.fun for r in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per load row")
    parser.add_argument("--max-requests", type=int, default=20000, help="requests per load row, at most")
    parser.add_argument("--maxiter", type=int, default=4, help="generations of the attack rows")
    parser.add_argument("--images", default="64,16",
                        help="images attacked at once, comma-separated (default: %(default)s)")
    parser.add_argument("--out", default=None, help="write the markdown tables here")
    args = parser.parse_args()
    where = machine_line()  # before the load starts

    assets.ensure("max-mitosis")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(port)
    try:
        rng = np.random.default_rng(0)
        pngs = [encode_png(im) for im in rng.integers(0, 256, (256, 64, 64, 3), dtype=np.uint8)]
        rows = []
        plan = [("/model/predict", 1, 1), ("/model/predict", 1, 4), ("/model/predict", 1, 16),
                ("/model/predict_batch", 64, 1), ("/model/predict_batch", 64, 4),
                ("/model/predict_batch", 256, 2)]
        for path, n, threads in plan:
            body, ctype = _multipart(pngs[:n])
            r = load(base + path, body, ctype, threads, args.seconds, args.max_requests, n)
            rows.append((path, n, threads, r))
            print(f"{path:<22} {n:>4} img/req {threads:>3} threads: {r['rps']:8.1f} req/s "
                  f"{r['ips']:8.0f} img/s p50 {r['p50']:7.2f} ms p99 {r['p99']:7.2f} ms "
                  f"errors {r['errors']}", flush=True)

        true = load_image(assets.ensure("true.png"))
        variants = list(dihedral_variants(true).values())
        local = load_classifier("max-mitosis", ModelOptions(device="cpu"))
        attacks: dict[int, list] = {}

        def add(n: int, name: str, classifier, maxiter: int) -> None:
            images = np.stack([variants[i % 8] for i in range(n)])
            r = attack_rate(classifier, images, maxiter)
            attacks.setdefault(n, []).append((name, maxiter, r))
            print(f"{n:>3} images, {name:<46} {r['eps']:8.0f} evaluations/s "
                  f"{r['model_ips']:8.0f} model img/s ({r['seconds']:.1f} s)", flush=True)

        sizes = [int(n) for n in args.images.split(",")]
        with HttpClassifier(base) as remote:
            for n in sizes:
                for run in (1, 2):  # interleaved, so that the machine's drift hits both alike
                    add(n, f"in process (ONNX Runtime), run {run}", local, args.maxiter)
                    add(n, f"HTTP, /model/predict_batch, run {run}", remote, args.maxiter)
        with HttpClassifier(base, batch=False) as single:
            add(min(sizes), "HTTP, /model/predict only (plain MAX API)", single, 1)
    finally:
        server.terminate()
        server.wait(timeout=30)

    lines = [f"Machine: {where}",
             f"Server: `python -m onepixel.serving.server --device cpu` (ONNX Runtime, max_concurrency 1); "
             f"client: this process on the same machine, loopback, {args.seconds:.0f} s per row.", "",
             "| endpoint | images/request | client threads | requests/s | images/s | p50 ms | p99 ms "
             "| errors |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for path, n, threads, r in rows:
        lines.append(f"| `{path}` | {n} | {threads} | {r['rps']:,.1f} | {r['ips']:,.0f} | "
                     f"{r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} |")
    lines += ["", "Attack: B mitosis patches (rotations/flips of true.png) attacked at once (the "
              "campaign's --batch-images; 64 by default), population 200, immediate updating (one "
              "model call of B images per population slot), HostEvaluator with memoisation.", "",
              "| B | scorer | generations | evaluations/s | model images/s | vs in process |",
              "|---:|---|---:|---:|---:|---:|"]
    summary = []
    for n, runs in attacks.items():
        local_runs = [r["eps"] for name, _, r in runs if name.startswith("in process")]
        http_runs = [r["eps"] for name, _, r in runs if "predict_batch" in name]
        inproc = sum(local_runs) / len(local_runs)
        same = all(r["x"] == runs[0][2]["x"] and r["fun"] == runs[0][2]["fun"]
                   for name, maxiter, r in runs if maxiter == args.maxiter)
        for name, maxiter, r in runs:
            lines.append(f"| {n} | {name} | {maxiter} | {r['eps']:,.0f} | {r['model_ips']:,.0f} | "
                         f"{r['eps'] / inproc:.2f}x |")
        if http_runs:
            http = sum(http_runs) / len(http_runs)
            summary.append(f"- B = {n}: HTTP with the batch endpoint takes {inproc / http:.2f}x the "
                           f"in-process time (mean of two runs each); same pixels and scores: {same}.")
    lines += ["", *summary]
    table = "\n".join(lines)
    emit(table, args.out)


if __name__ == "__main__":
    main()
