"""The HTML report in a real headless Chromium, driven over the DevTools protocol.

Why the DevTools protocol (CDP) and not ``--dump-dom``/``--screenshot``: CDP reports console
errors, uncaught exceptions, log entries and every network request as structured events, and
reads ``naturalWidth`` of each ``<img>`` from the live page, so the checks do not depend on
parsing Chromium's stderr. Neither ``websockets`` nor ``websocket-client`` is a dependency of the
project, so the few lines of RFC 6455 a local CDP session needs (masked text frames out,
unmasked frames in, ping/pong, fragmentation) are written here with the standard library.

Chromium: Debian's ``chromium`` package (``apt-get install -y chromium``), or the binary in
``$ONEPIXEL_CHROMIUM``. The tests skip with that reason when none is installed. Set
``ONEPIXEL_SCREENSHOT_DIR`` to keep the screenshots.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from onepixel.analysis import SECTIONS
from onepixel.report import load_analysis, write_report
from test_analysis_runs import M2N, N2M, attack_row, skipped_row, small_run, write_confmap, write_run

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
                  "--remote-allow-origins=*", "--remote-debugging-port=0",
                  "--remote-debugging-address=127.0.0.1")
VIEWPORT = (1366, 900)  # a common laptop screen


def chromium_binary() -> str | None:
    for cand in (os.environ.get("ONEPIXEL_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium",
                 shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


pytestmark = pytest.mark.skipif(
    chromium_binary() is None,
    reason="headless Chromium not installed: apt-get install -y chromium (or set ONEPIXEL_CHROMIUM)")


class WebSocket:
    """A minimal client side of RFC 6455 over a plain TCP socket (enough for local CDP)."""

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url: str, timeout: float = 30.0):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise ConnectionError(f"websocket handshake refused: {lines[0]}")
        accept = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()
        pairs = (ln.split(":", 1) for ln in lines[1:] if ":" in ln)
        headers = {k.strip().lower(): v.strip() for k, v in pairs}
        if headers.get("sec-websocket-accept") != accept:
            raise ConnectionError("bad Sec-WebSocket-Accept in the handshake")

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("DevTools connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._exact(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            mask = self._exact(4) if b1 & 0x80 else None
            payload = self._exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the websocket")
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if b0 & 0x80:
                    return message.decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_frame(0x8, b"")
        self.sock.close()


class Browser:
    """One headless Chromium with one page, spoken to over CDP."""

    def __init__(self, binary: str, profile: Path):
        self.proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited: {self.proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port within 60 s")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        targets = []
        while not targets and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                targets = [t for t in json.load(resp) if t.get("type") == "page"]
            time.sleep(0.05)
        self.ws = WebSocket(targets[0]["webSocketDebuggerUrl"])
        self.next_id = 0
        self.events: list[dict] = []
        for method in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
            self.call(method)
        self.call("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0], height=VIEWPORT[1],
                  deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        for i, ev in enumerate(self.events):
            if ev["method"] == method:
                return self.events.pop(i)
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == method:
                return msg
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(f"no {method} within {timeout} s")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def load(self, path: Path) -> dict:
        """Open ``path`` and return what a reader would notice: errors, images, requests."""
        self.events.clear()
        self.call("Page.navigate", url=path.resolve().as_uri())
        self.wait_event("Page.loadEventFired")
        # Let decoding of the data-URI images finish before reading their sizes.
        self.evaluate("Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))")
        self.call("Runtime.evaluate", expression="1")  # flush pending events
        errors = []
        for ev in self.events:
            p = ev.get("params", {})
            if ev["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                     for a in p.get("args", [])))
            elif ev["method"] == "Runtime.exceptionThrown":
                errors.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
            elif ev["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                errors.append("log: " + p["entry"].get("text", ""))
            elif ev["method"] == "Network.loadingFailed":
                errors.append("network: " + p.get("errorText", ""))
        requests = [ev["params"]["request"]["url"] for ev in self.events
                    if ev["method"] == "Network.requestWillBeSent"]
        images = self.evaluate("Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, "
                               "w: i.naturalWidth, h: i.naturalHeight}))")
        clipped = self.evaluate("Array.from(document.querySelectorAll('.tablewrap'))"
                                ".filter(e => e.scrollWidth > e.clientWidth + 1)"
                                ".map(e => e.parentElement.id)")
        return {"errors": errors, "requests": requests, "images": images, "clipped_tables": clipped,
                "title": self.evaluate("document.title"),
                "text": self.evaluate("document.body.innerText"),
                "height": self.evaluate("document.documentElement.scrollHeight"),
                "overflow_x": self.evaluate("document.documentElement.scrollWidth > window.innerWidth")}

    def screenshot(self, path: Path, full_page: bool = False) -> bytes:
        params: dict = {"format": "png"}
        if full_page:
            metrics = self.call("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": VIEWPORT[0], "height": min(size["height"], 16000),
                                "scale": 1})
        data = base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])
        path.write_bytes(data)
        return data

    def pdf(self) -> bytes:
        result = self.call("Page.printToPDF", printBackground=True, preferCSSPageSize=True)
        return base64.b64decode(result["data"])

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(chromium_binary(), tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def figures_in_report_order(figures):
    keys = [k for k, _ in SECTIONS]
    return sorted(figures, key=lambda f: keys.index(f.section))


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _keep(path: Path) -> None:
    keep = os.environ.get("ONEPIXEL_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


@pytest.mark.slow
def test_full_report_in_chromium(browser, tmp_path):
    run_dir, _ = small_run(tmp_path)
    write_confmap(run_dir, "m0", image="mitosis/m0.png", original_score=0.99)
    report = write_report(run_dir)
    page = browser.load(report)

    assert page["errors"] == []
    # Self-contained: the page itself is the only request (no file, http or font fetched).
    assert [u for u in page["requests"] if not u.startswith("data:")] == [report.resolve().as_uri()]
    figures = load_analysis(run_dir).figures
    assert len(figures) >= 9
    assert [img["alt"] for img in page["images"]] == [f.title for f in figures_in_report_order(figures)]
    for img in page["images"]:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, img
    assert page["title"].startswith("One-pixel attack report")
    assert "Summary" in page["text"] and "Periodicity" in page["text"]
    assert "expected under uniform placement" in page["text"]
    assert not page["overflow_x"], "the report is wider than a laptop screen"
    assert page["clipped_tables"] == [], "tables that need horizontal scrolling on a laptop screen"

    top = browser.screenshot(tmp_path / "report-top.png")
    assert _png_size(top) == VIEWPORT
    full = browser.screenshot(tmp_path / "report-full.png", full_page=True)
    w, h = _png_size(full)
    assert w == VIEWPORT[0] and h > 2 * VIEWPORT[1]
    assert browser.pdf()[:5] == b"%PDF-"  # print style sheet lays out without errors
    _keep(tmp_path / "report-top.png")
    _keep(tmp_path / "report-full.png")


def _edge_runs(tmp: Path) -> dict[str, Path]:
    one = write_run(tmp / "one-direction", [
        attack_row("mitosis/a.png", "decrease", 0.99, 0.2, 10, 12, (255, 255, 0), 30),
        attack_row("mitosis/b.png", "decrease", 0.95, 0.7, 11, 12, (255, 255, 255), 5)], dataset=None)
    none = write_run(tmp / "no-success", [
        attack_row("mitosis/a.png", "decrease", 0.99, 0.98, 10, 12, (255, 255, 0), 1),
        attack_row("normal/b.png", "increase", 0.01, 0.02, 11, 12, (0, 0, 0), 1)], dataset=None)
    skipped = write_run(tmp / "all-skipped", [skipped_row("mitosis/a.png", "decrease", 0.5),
                                              skipped_row("normal/b.png", "increase", 0.4)], dataset=None)
    return {"one-direction": one, "no-success": none, "all-skipped": skipped}


@pytest.mark.slow
def test_edge_case_reports_in_chromium(browser, tmp_path):
    for name, run_dir in _edge_runs(tmp_path).items():
        page = browser.load(write_report(run_dir))
        assert page["errors"] == [], name
        for img in page["images"]:
            assert img["complete"] and img["w"] > 0, (name, img)
        text = page["text"]
        if name == "one-direction":
            assert M2N in text and N2M not in text
            assert "not reachable" in text  # the dataset is missing: chromatic skipped with a note
        elif name == "no-success":
            assert "0.0% of the" in text
        else:
            assert page["images"] == []
            assert "Every one of the 2 images was skipped" in text
            assert "Nothing to show" in text
        browser.screenshot(tmp_path / f"report-{name}.png")
        _keep(tmp_path / f"report-{name}.png")
