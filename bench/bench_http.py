"""The MAX model over HTTP on loopback: endpoint throughput/latency, and attacks vs in process.

Usage::

    ONEPIXEL_ASSETS=../shared/assets python bench/bench_http.py [--seconds 5] [--maxiter 4]
        [--images 64,16] [--fuzz 3000] [--stalled 300] [--out bench/results/http-cpu.md]

One run does everything on the same machine:

1. starts ``python -m onepixel.serving.server`` (the MAX model, CPU, default limits and
   timeouts) on a free loopback port, in its own process;
2. load: this process sends requests from N threads (one keep-alive connection each, bodies
   encoded beforehand) for ``--seconds`` per row (and at most ``--max-requests``), and reports
   requests/s, images/s and p50/p99 latency for ``/model/predict`` and ``/model/predict_batch``;
3. fuzz: ``--fuzz`` malformed requests (valid multipart bodies of valid PNGs with one random
   mutation each: bit flips, cuts, spliced or repeated slices, a wrong boundary or content
   type, a damaged PNG, a text field, random bytes) and two bodies of 100,000 empty parts;
   reports the statuses (any 5xx is a bug) and the server's time for the big bodies;
4. stalled connections: ``--stalled`` connections send half a request head and stop; while
   they are open, ``/health`` and a prediction are timed, then the time until the server has
   closed every one (the default 10 s header timeout, 32 connections per client);
5. attacks: the same one-pixel attack (B mitosis patches at once, B = 64 (the campaign's
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
import select
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
from onepixel.models.http_backend import HttpClassifier
from onepixel.optimize.de import DEConfig
from onepixel.scoring.evaluators import HostEvaluator
from onepixel.wire import encode_png


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


def multipart(pngs: list[bytes]) -> tuple[bytes, str]:
    """A multipart body with the field ``image`` once per PNG, as httpx builds it, and its type."""
    request = httpx.Request("POST", "http://127.0.0.1/", files=[
        ("image", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs)])
    return request.read(), request.headers["content-type"]


def mutate(rng: np.random.Generator, body: bytes, ctype: str) -> tuple[bytes, str, str]:
    """One random defect in a valid request: (body, content type, what was done)."""
    b = bytearray(body)
    kind = rng.integers(9)
    if kind == 0:
        for i in rng.integers(0, len(b), rng.integers(1, 9)):
            b[i] ^= 1 << int(rng.integers(8))
        return bytes(b), ctype, "bit flips"
    if kind == 1:
        return bytes(b[: rng.integers(0, len(b))]), ctype, "cut short"
    if kind == 2:
        i, j = sorted(rng.integers(0, len(b), 2))
        return bytes(b[:i] + b[j:]), ctype, "slice removed"
    if kind == 3:
        i, j = sorted(rng.integers(0, len(b), 2))
        return bytes(b[:j] + b[i:j] * int(rng.integers(2, 5)) + b[j:]), ctype, "slice repeated"
    if kind == 4:
        return body, rng.choice(["multipart/form-data", "multipart/form-data; boundary=zz",
                                 "application/json", "text/plain", ""]), "content type"
    if kind == 5:  # damage the first PNG only, keeping the multipart framing intact
        start = body.index(b"\x89PNG")
        for i in start + rng.integers(0, 200, rng.integers(1, 5)):
            b[i] ^= 0xFF
        return bytes(b), ctype, "PNG damaged"
    if kind == 6:
        return bytes(b).replace(b'; filename="0.png"', b"", 1), ctype, "text field"
    if kind == 7:
        return rng.bytes(int(rng.integers(0, 20000))), ctype, "random bytes"
    head = b"--%s\r\n" % ctype.split("boundary=")[1].encode()
    return bytes(b).replace(head, head + b"X-Junk: " + rng.bytes(40).hex().encode() + b"\r\n", 1), \
        ctype, "junk part header"


def fuzz(base: str, pngs: list[bytes], n: int) -> dict:
    """``n`` mutated requests; statuses by kind, 5xx counted; and two 100,000-part bodies."""
    rng = np.random.default_rng(1)
    statuses: dict[int, int] = {}
    kinds: dict[str, int] = {}
    t0 = time.perf_counter()
    with httpx.Client(timeout=60) as client:
        for _ in range(n):
            k = int(rng.integers(1, 5))
            body, ctype, kind = mutate(rng, *multipart(pngs[:k]))
            path = "/model/predict" if k == 1 else "/model/predict_batch"
            headers = {"content-type": ctype} if ctype else {}
            try:
                status = client.post(base + path, content=body, headers=headers).status_code
            except httpx.TransportError:
                status = -1  # the server dropped the connection: counted, never expected
            statuses[status] = statuses.get(status, 0) + 1
            kinds[kind] = kinds.get(kind, 0) + 1
        seconds = time.perf_counter() - t0
        many = {}
        for what, disposition in (("image files", b'name="image"; filename="a.png"'),
                                  ("text fields", b'name="note"')):
            body = b"--b\r\nContent-Disposition: form-data; %s\r\n\r\n\r\n" % disposition
            body = body * 100_000 + b"--b--\r\n"
            t = time.perf_counter()
            r = client.post(base + "/model/predict_batch", content=body,
                            headers={"content-type": "multipart/form-data; boundary=b"})
            many[what] = (r.status_code, (time.perf_counter() - t) * 1000, len(body))
    return {"n": n, "seconds": seconds, "statuses": statuses, "kinds": kinds,
            "server_errors": sum(c for s, c in statuses.items() if s >= 500 or s < 0), "many": many}


def stalled(base: str, port: int, n: int, png: bytes, wait: float = 30.0) -> dict:
    """``n`` connections stalled in their request head; service while they are open; closing."""
    socks = []
    t_open = time.monotonic()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /model/predict HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    opened = time.monotonic() - t_open
    timings = {}
    with httpx.Client(timeout=30) as client:
        for what in ("health", "predict"):
            t = time.perf_counter()
            if what == "health":
                r = client.get(base + "/health")
            else:
                r = client.post(base + "/model/predict", files={"image": ("a.png", png)})
            timings[what] = (r.status_code, (time.perf_counter() - t) * 1000)
    closed: dict[int, float] = {}
    while len(closed) < n and time.monotonic() - t_open < wait:
        readable, _, _ = select.select([s for i, s in enumerate(socks) if i not in closed], [], [], 0.05)
        for s in readable:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                closed[socks.index(s)] = time.monotonic() - t_open
    for s in socks:
        s.close()
    times = sorted(closed.values())
    stats = httpx.get(base + "/health", timeout=30).json().get("connections", {})
    return {"n": n, "opened_s": opened, "timings": timings, "closed": len(closed),
            "first_closed_s": times[0] if times else None,
            "all_closed_s": times[-1] if len(times) == n else None, "stats": stats}


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
    parser.add_argument("--fuzz", type=int, default=3000, help="malformed requests to send")
    parser.add_argument("--stalled", type=int, default=300, help="stalled connections to open")
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
            body, ctype = multipart(pngs[:n])
            r = load(base + path, body, ctype, threads, args.seconds, args.max_requests, n)
            rows.append((path, n, threads, r))
            print(f"{path:<22} {n:>4} img/req {threads:>3} threads: {r['rps']:8.1f} req/s "
                  f"{r['ips']:8.0f} img/s p50 {r['p50']:7.2f} ms p99 {r['p99']:7.2f} ms "
                  f"errors {r['errors']}", flush=True)

        fuzzed = fuzz(base, pngs, args.fuzz)
        print(f"fuzz: {fuzzed['n']} requests in {fuzzed['seconds']:.1f} s, statuses "
              f"{fuzzed['statuses']}, 100,000 parts: {fuzzed['many']}", flush=True)
        stall = stalled(base, port, args.stalled, pngs[0])
        print(f"stalled: {stall}", flush=True)

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
    statuses = ", ".join(f"{code}: {count:,}" for code, count in sorted(fuzzed["statuses"].items()))
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(fuzzed["kinds"].items()))
    lines += ["", f"Fuzz: {fuzzed['n']:,} malformed requests (one random defect each in a valid "
              f"multipart body of 1-4 PNGs: {kinds}) in {fuzzed['seconds']:.1f} s. Statuses: "
              f"{statuses}; 5xx or dropped connections: {fuzzed['server_errors']}.", "",
              "| body of 100,000 empty parts | bytes | status | ms |", "|---|---:|---:|---:|"]
    for what, (code, ms, size) in fuzzed["many"].items():
        lines.append(f"| {what} | {size:,} | {code} | {ms:,.0f} |")
    t = stall["timings"]
    all_closed = (f"{stall['all_closed_s']:.2f} s" if stall["all_closed_s"] is not None
                  else f"not all: {stall['closed']} of {stall['n']} after 30 s")
    first = f"{stall['first_closed_s']:.2f} s" if stall["first_closed_s"] is not None else "none"
    lines += ["", f"Stalled connections: {stall['n']} connections from this process send "
              "`POST /model/predict HTTP/1.1\\r\\nHost: x\\r\\n` and stop (default settings: "
              "header timeout 10 s, 256 connections, 32 per client).", "",
              "| while they are open | status | ms |", "|---|---:|---:|",
              f"| `GET /health` | {t['health'][0]} | {t['health'][1]:.1f} |",
              f"| `POST /model/predict` | {t['predict'][0]} | {t['predict'][1]:.1f} |", "",
              f"Opened in {stall['opened_s']:.2f} s; the first closed by the server after {first}, "
              f"all after {all_closed}. Server counters: {stall['stats']}."]
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
    if hasattr(os, "getloadavg"):  # the machine is shared: say if others ran meanwhile
        lines += ["", f"1-min load average at the end: {os.getloadavg()[0]:.2f}."]
    table = "\n".join(lines)
    emit(table, args.out)


if __name__ == "__main__":
    main()
