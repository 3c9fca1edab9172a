"""``onepixel serve --protocol v2`` for real: a server process on loopback with the MAX model.

A third-party Open Inference Protocol client (tritonclient's) gets the probabilities that
``onepixel predict`` prints; onepixel's own v2 client, in JSON and in binary, gets the
in-process scores bit for bit; a bounded fuzz loop of malformed requests gets only 4xx answers
and leaves the server healthy; the API key guards the model but not the health checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from onepixel.errors import HttpAuthError
from onepixel.models import ModelOptions, load_classifier
from onepixel.models.v2_protocol import V2Classifier

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "v2-test-key-0123456789"
MODEL = "max-mitosis"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ONEPIXEL_API_KEY"}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory, max_model_path):
    """``onepixel serve --protocol v2`` (the CLI), with an API key, small limits for the fuzzing."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("v2-server") / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "onepixel.cli", "-q", "serve", "--protocol", "v2", "--port",
             str(port), "--device", "cpu", "--max-batch", "64", "--max-request-mb", "4"],
            stdout=log, stderr=subprocess.STDOUT, env=_env(ONEPIXEL_API_KEY=KEY))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {log_path.read_text()}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server not up: {log_path.read_text()}")
        time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def local(max_model_path):
    return load_classifier(MODEL, ModelOptions(device="cpu"))


@pytest.mark.slow
def test_tritonclient_gets_what_onepixel_predict_prints(server, true_png, false_png):
    tc = pytest.importorskip("tritonclient.http")
    from onepixel.datasets.images import load_images

    images = load_images([true_png, false_png], (64, 64))
    client = tc.InferenceServerClient(server.removeprefix("http://"))
    meta = client.get_model_metadata(MODEL, headers={"Authorization": f"Bearer {KEY}"})
    assert meta["inputs"][0] == {"name": "images", "datatype": "UINT8", "shape": [-1, 64, 64, 3]}
    got = {}
    for binary in (True, False):
        tensor = tc.InferInput("images", list(images.shape), "UINT8")
        tensor.set_data_from_numpy(images, binary_data=binary)
        # A new dict each time: tritonclient adds its binary header to the one it is given.
        result = client.infer(MODEL, [tensor], headers={"Authorization": f"Bearer {KEY}"},
                              outputs=[tc.InferRequestedOutput("probabilities", binary_data=binary)])
        got[binary] = result.as_numpy("probabilities")
    assert got[True].shape == (2, 1) and np.array_equal(got[True], got[False])

    predict = subprocess.run([sys.executable, "-m", "onepixel.cli", "-q", "predict", str(true_png),
                              str(false_png), "--device", "cpu"], capture_output=True, text=True,
                             env=_env(), timeout=180)
    assert predict.returncode == 0, predict.stderr
    printed = [line.split(",")[1] for line in predict.stdout.splitlines()[1:]]
    assert printed == [f"{p:.10g}" for p in got[True][:, 0]]  # every printed digit


def test_v2_client_json_and_binary_equal_in_process(server, local, sample_images):
    rng = np.random.default_rng(27)
    images = np.concatenate([sample_images, rng.integers(0, 256, (70, 64, 64, 3), dtype=np.uint8)])
    want = local.scores(images)
    url = f"{server}/v2/models/{MODEL}"
    with V2Classifier(url, api_key=KEY, batch_size=24) as auto:
        got = auto.scores(images)
        assert np.array_equal(got, want)  # float64 over both encodings: bit for bit
        assert auto.encoding in ("json", "binary") and set(auto.encoding_seconds) == {"json", "binary"}
        assert (auto.name, auto.fingerprint) == (MODEL, local.fingerprint)
        assert auto.model_output == "probability" and auto.n_classes == 1
    for encoding in ("json", "binary"):
        with V2Classifier(url, api_key=KEY, encoding=encoding, batch_size=30) as model:
            assert np.array_equal(model.scores(images), want)
            assert model.n_queries == 3 and model.n_images == 72
    with pytest.raises(HttpAuthError, match="401.*ONEPIXEL_API_KEY"):
        V2Classifier(url, api_key="wrong")


def _binary(header: dict, raw: bytes, length: str | None = None) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    return head + raw, {"Inference-Header-Content-Length": length or str(len(head)),
                        "content-type": "application/octet-stream"}


def test_fuzzed_bad_requests_get_4xx_and_the_server_stays_up(server, sample_images):
    """A bounded loop of malformed requests: every answer 4xx with an error message."""
    auth = {"Authorization": f"Bearer {KEY}"}
    infer = f"{server}/v2/models/{MODEL}/infer"
    good = {"name": "images", "datatype": "UINT8", "shape": [1, 64, 64, 3]}
    flat = sample_images[:1].reshape(-1).tolist()
    raw = sample_images[:1].tobytes()
    cases: list[tuple[str, dict]] = [
        ("not json", {"content": b"{not json"}),
        ("not an object", {"json": [1, 2, 3]}),
        ("no inputs", {"json": {"outputs": []}}),
        ("inputs not a list", {"json": {"inputs": "images"}}),
        ("two inputs", {"json": {"inputs": [dict(good, data=flat)] * 2}}),
        ("wrong name", {"json": {"inputs": [dict(good, name="x", data=flat)]}}),
        ("wrong datatype", {"json": {"inputs": [dict(good, datatype="FP32", data=flat)]}}),
        ("BYTES datatype", {"json": {"inputs": [dict(good, datatype="BYTES", data=["a"])]}}),
        ("wrong shape", {"json": {"inputs": [dict(good, shape=[1, 32, 32, 3], data=flat)]}}),
        ("shape not ints", {"json": {"inputs": [dict(good, shape=[1, 64, "64", 3], data=flat)]}}),
        ("huge shape", {"json": {"inputs": [dict(good, shape=[10**15, 64, 64, 3], data=flat)]}}),
        ("negative shape", {"json": {"inputs": [dict(good, shape=[-1, 64, 64, 3], data=flat)]}}),
        ("too many images", {"json": {"inputs": [dict(good, shape=[65, 64, 64, 3], data=[])]}}),
        ("short data", {"json": {"inputs": [dict(good, data=flat[:-1])]}}),
        ("data out of range", {"json": {"inputs": [dict(good, data=[256] * len(flat))]}}),
        ("float data", {"json": {"inputs": [dict(good, data=[0.5] * len(flat))]}}),
        ("ragged data", {"json": {"inputs": [dict(good, data=[[1, 2], [3]])]}}),
        ("no data", {"json": {"inputs": [good]}}),
        ("unknown output", {"json": {"inputs": [dict(good, data=flat)], "outputs": [{"name": "y"}]}}),
        ("bad header length", dict(zip(("content", "headers"), _binary(
            {"inputs": [dict(good, parameters={"binary_data_size": len(raw)})]}, raw, "abc"),
            strict=True))),
        ("header length past the body", dict(zip(("content", "headers"), _binary(
            {"inputs": [dict(good, parameters={"binary_data_size": len(raw)})]}, raw, "99999999"),
            strict=True))),
        ("header length zero", dict(zip(("content", "headers"), _binary(
            {"inputs": [dict(good, parameters={"binary_data_size": len(raw)})]}, raw, "0"),
            strict=True))),
        ("binary size too small", dict(zip(("content", "headers"), _binary(
            {"inputs": [dict(good, parameters={"binary_data_size": 10})]}, raw), strict=True))),
        ("binary body short", dict(zip(("content", "headers"), _binary(
            {"inputs": [dict(good, parameters={"binary_data_size": len(raw)})]}, raw[:-5]),
            strict=True))),
        ("binary without the header", {"json": {"inputs": [dict(good, parameters={
            "binary_data_size": len(raw)})]}}),
        ("bytes after JSON", dict(zip(("content", "headers"), _binary(
            {"inputs": [dict(good, data=flat)]}, b"extra"), strict=True))),
    ]
    with httpx.Client(headers=auth, timeout=30) as client:
        for what, kwargs in cases:
            r = client.post(infer, **kwargs)
            assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:200])
            assert r.json()["error"], what
        assert client.post(f"{server}/v2/models/other/infer", json={}).status_code == 404
        assert client.get(f"{server}/v2/models/{MODEL}/versions/7").status_code == 404
        big = b"0" * (5 << 20)  # over --max-request-mb 4
        assert client.post(infer, content=big,
                           headers={"content-type": "application/json"}).status_code == 413
        rng = np.random.default_rng(5)
        for _ in range(60):  # random bytes and random truncations of a good request
            good_body = json.dumps({"inputs": [dict(good, data=flat)]}).encode()
            cut = good_body[: int(rng.integers(0, len(good_body)))]
            noise = rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
            for body in (cut, noise):
                r = client.post(infer, content=body, headers={"content-type": "application/json"})
                assert 400 <= r.status_code < 500, (body[:40], r.status_code)
        # Still healthy and still right.
        ok = client.post(infer, json={"inputs": [dict(good, data=flat)]})
        assert ok.status_code == 200 and len(ok.json()["outputs"][0]["data"]) == 1
    assert httpx.get(f"{server}/v2/health/live").json() == {"live": True}  # no key needed
    assert httpx.post(infer, json={"inputs": [dict(good, data=flat)]}).status_code == 401
