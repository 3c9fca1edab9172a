"""The server's defences against the real server process on loopback (127.0.0.1 only).

Stalled and trickling connections are closed on time and do not deny service; bad command-line
values are one-line errors with exit status 2; bodies of very many parts are refused before
they are parsed; a text field named ``image`` and a header claiming a huge image get the
documented 400s.
"""

from __future__ import annotations

import io
import os
import select
import socket
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from onepixel.wire import encode_png
from test_server_process import ServerProcess

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 3.0
#: Slack for a loaded 2-core machine between a deadline and the close being seen.
MARGIN = 4.0
STALLED_HEAD = b"POST /model/predict HTTP/1.1\r\nHost: x\r\n"
TIMEOUTS = ("--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT))


@pytest.fixture(scope="module", params=["per-client cap", "global cap"])
def guarded(request, tmp_path_factory, max_model_path):
    """Short deadlines, and either cap the one that 300 connections from 127.0.0.1 reach."""
    caps = {"per-client cap": ("--max-connections-per-client", "16"),
            "global cap": ("--max-connections", "24", "--max-connections-per-client", "1000")}
    srv = ServerProcess(tmp_path_factory.mktemp("guarded") / "server.log",
                        args=(*TIMEOUTS, *caps[request.param]))
    srv.start()
    yield srv
    srv.stop()


def _connect(srv: ServerProcess, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    if first:
        sock.sendall(first)
    return sock


def _read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (head and Content-Length body) from a blocking socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response head: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in a response body"
        body += chunk
    assert len(body) == length, "more than one response"
    return head + b"\r\n\r\n" + body


class Watch:
    """Sockets whose closing by the server is awaited; what each received before it closed."""

    def __init__(self, socks: list[socket.socket]):
        self.socks = socks
        self.received = {s: b"" for s in socks}
        self.closed_at: dict[socket.socket, float] = {}
        for s in socks:
            s.setblocking(False)

    def poll(self) -> None:
        for s in self.socks:
            if s in self.closed_at:
                continue
            try:
                while True:
                    data = s.recv(65536)
                    if not data:
                        self.closed_at[s] = time.monotonic()
                        break
                    self.received[s] += data
            except BlockingIOError:
                pass
            except OSError:  # reset: closed too
                self.closed_at[s] = time.monotonic()

    def wait_all_closed(self, deadline: float) -> list[socket.socket]:
        """Poll until every socket is closed or ``deadline`` (monotonic); the ones still open."""
        while time.monotonic() < deadline:
            self.poll()
            if len(self.closed_at) == len(self.socks):
                return []
            time.sleep(0.05)
        self.poll()
        return [s for s in self.socks if s not in self.closed_at]


def _health(srv: ServerProcess) -> dict:
    return httpx.get(f"{srv.url}/health", timeout=10).json()


@pytest.mark.slow
def test_stalled_connections_neither_deny_service_nor_stay_open(guarded, sample_images):
    """300 connections that send half a request head and stop (as many as made every request
    a 503, forever, before): a prediction still gets 200, and the server closes them all
    within the header timeout."""
    before = _health(guarded)["connections"]
    socks = []
    try:
        for _ in range(300):
            socks.append(_connect(guarded, STALLED_HEAD))
        opened = time.monotonic()
        watch = Watch(socks)
        with httpx.Client(timeout=10) as client:
            r = client.post(f"{guarded.url}/model/predict",
                            files={"image": ("true.png", encode_png(sample_images[0]))})
            assert r.status_code == 200, r.text
            assert abs(r.json()["predictions"][0]["probability"] - 0.98844) < 1e-4
            assert client.get(f"{guarded.url}/health").status_code == 200
        still_open = watch.wait_all_closed(opened + HEADER_TIMEOUT + MARGIN)
        assert not still_open, f"{len(still_open)} of 300 stalled connections still open"
        after = _health(guarded)["connections"]
        # The cap closed the longest-waiting ones to make room; the deadline closed the rest,
        # with a 408 since part of a head had come.
        assert after["evicted"] - before["evicted"] >= 300 - 24
        assert after["header_timeouts"] - before["header_timeouts"] >= 1
        assert any(data.startswith(b"HTTP/1.1 408 ") for data in watch.received.values())
        assert after["open"] <= 1  # this /health request's own connection
    finally:
        for s in socks:
            s.close()


@pytest.mark.slow
def test_deadlines_run_from_the_start_not_from_the_last_byte(guarded):
    """A head trickled a byte at a time is closed at the header deadline however busy it
    keeps the connection; a silent connection at the header deadline, without an answer; a
    stalled body at the body deadline; the second head of a keep-alive connection at the
    header deadline counted from its first byte, while an idle keep-alive connection stays."""
    before = _health(guarded)["connections"]
    one_request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    keep, idle = _connect(guarded, one_request), _connect(guarded, one_request)
    for sock in (keep, idle):
        assert _read_response(sock).startswith(b"HTTP/1.1 200 ")
    keep.sendall(b"GET /health HTTP/1.1\r\n")
    trickle = _connect(guarded)
    closed = threading.Event()
    stop = threading.Event()

    def drip() -> None:
        for byte in b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
            if stop.wait(0.1):
                return
            try:
                if select.select([trickle], [], [], 0)[0]:  # an answer or the close: done
                    closed.set()
                    return
                trickle.send(bytes([byte]))
            except OSError:
                closed.set()
                return

    silent = _connect(guarded)
    body = _connect(guarded, b"POST /model/predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             b"multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n")
    started = time.monotonic()
    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        watch = Watch([silent, body, keep])
        time.sleep(HEADER_TIMEOUT - 0.7)
        watch.poll()
        assert not watch.closed_at and not closed.is_set(), "closed before the deadline"
        assert not watch.wait_all_closed(started + BODY_TIMEOUT + MARGIN), \
            "a silent, stalled-body or stalled keep-alive connection outlived its deadline"
        assert watch.received[silent] == b""  # nothing came: closed without an answer
        assert watch.received[keep].startswith(b"HTTP/1.1 408 ")
        assert watch.closed_at[body] - started >= BODY_TIMEOUT - 0.5
        assert closed.wait(timeout=1.0), "the trickled head was not closed at its deadline"
        idle.sendall(one_request)  # past both deadlines: idle between requests is not stalled
        assert _read_response(idle).startswith(b"HTTP/1.1 200 ")
        after = _health(guarded)["connections"]
        assert after["header_timeouts"] - before["header_timeouts"] >= 3
        assert after["body_timeouts"] - before["body_timeouts"] >= 1
    finally:
        stop.set()
        dripper.join(timeout=5)
        for s in (trickle, silent, body, keep, idle):
            s.close()


def _multipart(parts: list[bytes]) -> tuple[bytes, dict]:
    return b"".join(parts) + b"--b--\r\n", {"content-type": "multipart/form-data; boundary=b"}


def _server_cpu_seconds(srv: ServerProcess) -> float:
    with open(f"/proc/{srv.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


ONE_SERVER = pytest.mark.parametrize("guarded", ["per-client cap"], indirect=True)


@ONE_SERVER
@pytest.mark.parametrize(("disposition", "needle"), [
    (b'name="image"; filename="a.png"', "1024 image(s) at most per request"),
    (b'name="note"', "more than 1032 parts in one multipart body"),
])
def test_bodies_of_many_parts_are_refused_before_parsing(guarded, disposition, needle):
    """100,000 empty parts (5.5 MB) cost seconds of server CPU and got 200 with one image among
    them; now a 400 after about a thousand."""
    part = b"--b\r\nContent-Disposition: form-data; %s\r\n\r\n\r\n" % disposition
    body, headers = _multipart([part] * 100_000)
    cpu = _server_cpu_seconds(guarded)
    with httpx.Client(timeout=60) as client:
        r = client.post(f"{guarded.url}/model/predict_batch", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"]
    assert _server_cpu_seconds(guarded) - cpu < 5  # a generous bound; bench_http has the figure


@ONE_SERVER
def test_many_files_and_fields_refused_with_the_limit_named(guarded):
    files = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n\r\n'
    other = b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nx\r\n'
    with httpx.Client(timeout=60) as client:
        body, headers = _multipart([other] * 20 + [files])
        r = client.post(f"{guarded.url}/model/predict", content=body, headers=headers)
        assert r.status_code == 400
        assert r.json()["message"].startswith("more than 9 parts in one multipart body")


def _bomb_png(side: int) -> bytes:
    """A valid 64x64 PNG whose header (with a valid checksum) claims side x side."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = side.to_bytes(4, "big") * 2
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


@ONE_SERVER
def test_text_field_and_huge_header_get_the_documented_400s(guarded, sample_images):
    predict = f"{guarded.url}/model/predict"
    png = encode_png(sample_images[0])
    with httpx.Client(timeout=30) as client:
        # The image's very bytes, but as a text field (no filename): a MAX client sends a file.
        body, headers = _multipart([b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\n'
                                    + png + b"\r\n"])
        r = client.post(predict, content=body, headers=headers)
        assert r.status_code == 400 and "'image' is a text field" in r.json()["message"]
        for side in (5000, 100_000):  # the second is past Pillow's decompression-bomb limit
            r = client.post(predict, files={"image": ("big.png", _bomb_png(side))})
            assert r.status_code == 400
            assert f"image is {side}x{side} (WxH) but the model takes 64x64" in r.json()["message"]
        assert client.post(predict, files={"image": ("a.png", png)}).status_code == 200


def _run_server(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onepixel.serving.server", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("args", "needle"), [
    (("--port", "70000"), "argument --port: must be within 0..65535, got 70000"),
    (("--port", "-1"), "argument --port: must be within 0..65535, got -1"),
    (("--port", "http"), "argument --port: not a number: 'http'"),
    (("--header-timeout", "0"), "argument --header-timeout: must be a number of seconds > 0"),
    (("--body-timeout", "nan"), "argument --body-timeout: must be a number of seconds > 0"),
    (("--max-connections-per-client", "0"), "argument --max-connections-per-client: must be >= 1"),
    (("--max-connections", "-3"), "argument --max-connections: must be >= 1"),
    (("--max-batch", "0"), "argument --max-batch: must be >= 1"),
    (("--max-queue", "-1"), "argument --max-queue: must be >= 0"),
    (("--max-request-mb", "0"), "argument --max-request-mb: must be a size in MiB > 0"),
])
def test_bad_arguments_are_one_line_errors_with_status_2(args, needle):
    out = _run_server(*args)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and needle in errors[0], out.stderr


def test_the_option_parser_loads_no_web_stack():
    """The CLI imports the server's options while building its parser: nothing heavy."""
    code = ("import sys, argparse; from onepixel.serving.config import add_server_arguments; "
            "add_server_arguments(argparse.ArgumentParser()); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'numpy', 'PIL', 'fastapi', 'starlette', 'uvicorn', 'httpx', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
