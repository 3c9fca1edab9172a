"""The MAX-API app in process (Starlette's TestClient, a toy model): answers, errors, limits, key."""

from __future__ import annotations

import io
import logging
import threading
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():
    # Starlette >= 1.0 prefers the httpx2 package for its test client; httpx still works.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from onepixel.errors import ImageError, ServerError
from onepixel.models import CallableClassifier
from onepixel.serving.app import InferenceGate, create_app
from onepixel.serving.config import ServeOptions, ServerLimits
from onepixel.serving.metadata import MAX_MITOSIS_METADATA
from onepixel.serving.run import bind
from onepixel.wire import RequestError, _decode_plain_png, decode_image, encode_png


def _toy_scores(images: np.ndarray) -> np.ndarray:
    # A deterministic "model" whose float64 scores have many significant digits.
    return images.reshape(len(images), -1).astype(np.float64).mean(axis=1) / 255.0


def _toy(name: str = "toy") -> CallableClassifier:
    toy = CallableClassifier(_toy_scores, (64, 64, 3), name=name)
    toy.fingerprint = "ab" * 32
    return toy


def _png(image: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(image)
    if mode:
        img = img.convert(mode)
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(_toy())) as c:
        yield c


def _files(*blobs: bytes) -> list:
    return [("image", (f"{i}.png", b, "image/png")) for i, b in enumerate(blobs)]


def test_predict_speaks_the_max_api(client, images):
    r = client.post("/model/predict", files=_files(_png(images[0])))
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "predictions": [{"probability": _toy_scores(images[:1])[0]}]}


def test_predict_batch_keeps_order_and_exact_floats(client, images):
    r = client.post("/model/predict_batch", files=_files(*[_png(im) for im in images]))
    assert r.status_code == 200
    got = [p["probability"] for p in r.json()["predictions"]]
    assert got == _toy_scores(images).tolist()  # bit-exact through JSON


def test_rgba_and_grey_are_converted_like_files(client, images):
    r = client.post("/model/predict_batch",
                    files=_files(_png(images[0], "RGBA"), _png(images[0], "L")))
    assert r.status_code == 200
    grey = np.asarray(Image.fromarray(images[0]).convert("L").convert("RGB"))
    got = [p["probability"] for p in r.json()["predictions"]]
    assert got == [_toy_scores(images[:1])[0], _toy_scores(grey[None])[0]]


def _truncated(images) -> bytes:
    data = _png(images[0])
    return data[: len(data) // 2]


@pytest.mark.parametrize(("kind", "needle"), [
    ("small", "32x32"),
    ("random", "not an image"),
    ("truncated", "corrupt"),
    ("empty", "empty"),
    ("missing", "missing file field 'image'"),
    ("text", "'image' is a text field"),
    ("json", "multipart/form-data"),
    ("cut", "incomplete multipart body"),
    ("noboundary", "no boundary"),
    ("two", "/model/predict_batch"),
    ("headers", "header"),  # python-multipart's own limit, or ours on older versions
])
def test_bad_requests_are_400_with_a_reason(client, images, kind, needle):
    small = _png(np.zeros((32, 32, 3), np.uint8))
    rnd = np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    kwargs = {
        "small": {"files": _files(small)},
        "random": {"files": _files(rnd)},
        "truncated": {"files": _files(_truncated(images))},
        "empty": {"files": _files(b"")},
        "missing": {"files": [("picture", ("a.png", _png(images[0]), "image/png"))]},
        "text": {"data": {"image": "x"}, "files": [("other", ("o.txt", b"x"))]},
        "cut": {"content": b"--b\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc",
                "headers": {"content-type": "multipart/form-data; boundary=b"}},
        "noboundary": {"content": b"x", "headers": {"content-type": "multipart/form-data"}},
        "json": {"json": {"image": "x"}},
        "two": {"files": _files(_png(images[0]), _png(images[1]))},
        "headers": {"content": b"--b\r\n" + b"X-A: 1\r\n" * 20 + b"\r\nabc\r\n--b--\r\n",
                    "headers": {"content-type": "multipart/form-data; boundary=b"}},
    }[kind]
    r = client.post("/model/predict", **kwargs)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["status"] == "error" and needle in body["message"]


def test_batch_names_the_bad_image(client, images):
    small = _png(np.zeros((32, 32, 3), np.uint8))
    r = client.post("/model/predict_batch", files=_files(_png(images[0]), small))
    assert r.status_code == 400 and r.json()["message"].startswith("image 1 '1.png': image is 32x32")


def test_batch_limit(images):
    with TestClient(create_app(_toy(), max_batch=2)) as c:
        r = c.post("/model/predict_batch", files=_files(*[_png(im) for im in images[:3]]))
    assert r.status_code == 400 and "2 image(s) at most per request" in r.json()["message"]


def test_request_size_limit_with_and_without_content_length(images):
    blob = _png(images[0])
    with TestClient(create_app(_toy(), max_request_bytes=4096)) as c:
        r = c.post("/model/predict", files=_files(blob))
        assert r.status_code == 413 and "limit of 4096" in r.json()["message"]
        body = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n" \
            + blob + b"\r\n--b--\r\n"
        r = c.post("/model/predict", content=iter([body[:3000], body[3000:]]),
                   headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413 and "limit of 4096" in r.json()["message"]
        assert c.get("/health").status_code == 200


def test_api_key_is_required_on_the_model_endpoints(images):
    blob = _png(images[0])
    with TestClient(create_app(_toy(), api_key="s3cret")) as c:
        r = c.post("/model/predict", files=_files(blob))
        assert r.status_code == 401 and "missing API key" in r.json()["message"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = c.get("/model/metadata", headers={"x-api-key": "s3cret!"})
        assert r.status_code == 401 and "wrong API key" in r.json()["message"]
        r = c.post("/model/predict", files=_files(blob), headers={"x-api-key": "s3cret"})
        assert r.status_code == 200
        assert c.get("/model/metadata", headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200
        assert c.get("/openapi.json").status_code == 200


def test_metadata_has_the_max_fields_and_ours():
    with TestClient(create_app(_toy("max-mitosis"), max_batch=77)) as c:
        meta = c.get("/model/metadata").json()
    for key, value in MAX_MITOSIS_METADATA.items():
        assert meta[key] == value
    assert meta["onepixel"]["sha256"] == "ab" * 32
    assert meta["onepixel"]["input_shape"] == [64, 64, 3]
    assert meta["onepixel"]["max_batch"] == 77
    with TestClient(create_app(_toy(), metadata={"license": "MIT"})) as c:
        meta = c.get("/model/metadata").json()
    assert meta["id"] == "toy" and meta["license"] == "MIT"
    assert set(meta) >= {"id", "name", "description", "type", "license", "source"}


def test_openapi_documents_the_endpoints(client):
    spec = client.get("/openapi.json").json()
    for path in ("/model/predict", "/model/predict_batch"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        assert "image" in body["schema"]["properties"]
        assert {"200", "400", "401", "413", "503"} <= set(spec["paths"][path]["post"]["responses"])
    assert "/model/metadata" in spec["paths"] and "/health" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_a_failing_model_is_a_json_500(images):
    def broken(batch):
        raise RuntimeError("boom")

    app = create_app(CallableClassifier(broken, (64, 64, 3), name="broken"))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/model/predict", files=_files(_png(images[0])))
    assert r.status_code == 500 and "boom" in r.json()["message"]


def test_access_log_is_structured(client, images, caplog):
    with caplog.at_level(logging.INFO, logger="onepixel.serving.access"):
        client.post("/model/predict_batch", files=_files(_png(images[0]), _png(images[1])))
    (record,) = [r for r in caplog.records if r.name == "onepixel.serving.access"]
    assert record.http["path"] == "/model/predict_batch" and record.http["status"] == 200
    assert record.http["images"] == 2 and record.http["bytes_in"] > 0 and record.http["duration_ms"] > 0


def test_decode_image_checks_size_before_decoding():
    # Valid PNG headers claiming huge images: refused from the header, no pixel decoded.
    img = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(img, "PNG")
    # 100000x100000 is past Pillow's decompression-bomb limit: still the size message.
    for side, needle in ((5000, "image is 5000x5000"), (100000, "image is 100000x100000")):
        data = bytearray(img.getvalue())
        data[16:24] = side.to_bytes(4, "big") * 2
        data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # a valid IHDR checksum
        with pytest.raises(ImageError, match=needle):
            decode_image(bytes(data), (64, 64, 3))


def test_plain_png_fast_path_is_exact_and_falls_back(images):
    for level in (0, 6):
        data = encode_png(images[0], level)
        assert np.array_equal(_decode_plain_png(data, 64, 64), images[0])
    pil = _png(images[1])  # PIL uses adaptive row filters: PIL decodes it
    assert _decode_plain_png(pil, 64, 64) is None
    assert np.array_equal(decode_image(pil, (64, 64)), images[1])
    bad = bytearray(encode_png(images[0]))
    bad[-20] ^= 1  # one bit of the pixel data: the IDAT checksum no longer matches
    assert _decode_plain_png(bytes(bad), 64, 64) is None
    with pytest.raises(ImageError, match="corrupt"):
        decode_image(bytes(bad), (64, 64))


def test_inference_gate_queues_then_refuses():
    import anyio

    release = threading.Event()
    results: list[str] = []

    async def main() -> None:
        gate = InferenceGate(max_concurrency=1, max_queue=1)

        async def call() -> None:
            try:
                await gate.run(release.wait, 5)
                results.append("ok")
            except RequestError as exc:
                results.append(str(exc.status))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(call)
            await anyio.sleep(0.2)
            assert gate.active == 1 and gate.queued == 1
            release.set()

    anyio.run(main)
    assert sorted(results) == ["503", "ok", "ok"]


def test_limits_and_port_errors_say_what_to_do():
    with pytest.raises(ServerError, match="max_concurrency"):
        ServerLimits(max_concurrency=0)
    with pytest.raises(ServerError, match="--port 0..65535"):
        bind("127.0.0.1", 70000)
    holder = bind("127.0.0.1", 0)
    holder.listen()
    try:
        with pytest.raises(ServerError, match="another --port"):
            bind("127.0.0.1", holder.getsockname()[1])
    finally:
        holder.close()


@pytest.mark.parametrize(("settings", "needle"), [
    ({"port": 70000}, "port must be within 0..65535, got 70000"),
    ({"port": -1}, "port must be within 0..65535, got -1"),
    ({"port": "5000"}, "port must be an integer"),
    ({"header_timeout": 0}, "header_timeout must be a number of seconds > 0"),
    ({"body_timeout": float("inf")}, "body_timeout must be a number of seconds > 0"),
    ({"max_connections": 0}, "max_connections must be >= 1"),
    ({"max_connections_per_client": 0}, "max_connections_per_client must be >= 1"),
    ({"host": ""}, "host must be an address"),
    ({"max_batch": 0}, "max_batch must be >= 1"),
    ({"prot": 1}, "unknown server setting"),
])
def test_serve_options_refuse_bad_values_by_name(settings, needle):
    with pytest.raises(ServerError, match=needle):
        ServeOptions.build(**settings)


def test_command_line_defaults_are_the_dataclass_defaults():
    import argparse

    from onepixel.serving.config import add_server_arguments, server_options

    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    assert ServeOptions.build(**server_options(parser.parse_args([]))) == ServeOptions()
    args = parser.parse_args(["--port", "0", "--max-batch", "8", "--header-timeout", "1.5",
                              "--max-connections-per-client", "3", "--max-request-mb", "0.5"])
    options = ServeOptions.build(**server_options(args))
    assert (options.port, options.header_timeout, options.max_connections_per_client) == (0, 1.5, 3)
    assert (options.limits.max_batch, options.limits.max_request_bytes) == (8, 512 * 1024)
    assert options.limits.max_queue == ServerLimits().max_queue
