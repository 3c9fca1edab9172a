"""HttpClassifier without a network: PNG exactness, retries, errors, batch detection."""

from __future__ import annotations

import io
import json
import re
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from onepixel.errors import ModelError
from onepixel.models import CallableClassifier
from onepixel.models.http_backend import (
    HttpAuthError,
    HttpClassifier,
    HttpError,
    HttpUnavailableError,
    base_url,
)
from onepixel.serving.app import create_app
from onepixel.wire import decode_image, encode_png

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")


with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette >= 1.0 prefers httpx2 for its test client
    from fastapi.testclient import TestClient

URL = "http://127.0.0.1:5999"


def _toy_scores(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float64).mean(axis=1) / 255.0


def _decode_parts(request) -> list[np.ndarray]:
    boundary = re.search(r"boundary=(\S+)", request.headers["content-type"]).group(1).encode()
    parts = request.content.split(b"--" + boundary)[1:-1]
    return [np.asarray(Image.open(io.BytesIO(p.split(b"\r\n\r\n", 1)[1][:-2]))) for p in parts]


class FakeMax:
    """A MAX-API service in a function: scripted failures first, then answers."""

    def __init__(self, *, batch: bool = True, metadata: dict | None = None,
                 failures: list | None = None, max_images: int | None = None):
        self.batch = batch
        self.metadata = metadata if metadata is not None else {"id": "fake-max", "name": "Fake"}
        self.failures = list(failures or [])
        self.max_images = max_images
        self.calls: list[str] = []

    def __call__(self, request):
        path = request.url.path
        self.calls.append(path)
        if path == "/model/metadata":
            return httpx.Response(200, json=self.metadata)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        if path == "/model/predict_batch" and not self.batch:
            return httpx.Response(404, json={"message": "Not Found"})
        images = np.stack(_decode_parts(request))
        if self.max_images and len(images) > self.max_images:
            return httpx.Response(413, json={"status": "error", "message": "too large"})
        preds = [{"probability": s} for s in _toy_scores(images).tolist()]
        return httpx.Response(200, json={"status": "ok", "predictions": preds})


def _client(service, **kw) -> HttpClassifier:
    kw.setdefault("backoff", 0.0)
    return HttpClassifier(URL, transport=httpx.MockTransport(service), **kw)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)
    imgs[0] = 0
    imgs[1] = 255
    return imgs


@pytest.mark.parametrize("level", [0, 1, 9])
def test_png_is_lossless_for_any_decoder(images, level):
    for img in images:
        data = encode_png(img, level)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), img)
        assert np.array_equal(decode_image(data, (64, 64)), img)
    odd = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(odd, level)))), odd)


def test_base_url():
    assert base_url("http://h:1/") == "http://h:1"
    assert base_url("http://h:1/model/predict") == "http://h:1"
    assert base_url("https://h/prefix/model/metadata/") == "https://h/prefix"
    with pytest.raises(ModelError, match="not an HTTP URL"):
        base_url("ftp://h")


def test_scores_in_order_with_batches_and_concurrency(images):
    service = FakeMax(metadata={"onepixel": {"model": "toy", "sha256": "cd" * 32,
                                             "input_shape": [64, 64, 3],
                                             "predict_batch": "/model/predict_batch",
                                             "max_batch": 3}})
    with _client(service, concurrency=3, batch_size=4) as model:
        assert (model.name, model.fingerprint, model.batch_size) == ("toy", "cd" * 32, 3)
        scores = model.scores(images)
        assert scores.dtype == np.float64
        assert scores.tolist() == _toy_scores(images).tolist()
        assert (model.n_queries, model.n_images, model.n_retries) == (4, 10, 0)
        assert model.scores(images[:0]).shape == (0,)


def test_batch_endpoint_found_once_or_not(images):
    service = FakeMax(batch=False)
    with _client(service, batch_size=4) as model:
        assert model.batch_supported is None
        assert model.scores(images).tolist() == _toy_scores(images).tolist()
        assert model.batch_supported is False
        model.scores(images[:3])
    assert service.calls.count("/model/predict_batch") == 1
    assert service.calls.count("/model/predict") == 13
    service = FakeMax(batch=True)
    with _client(service, batch_size=4) as model:
        model.scores(images)
        assert model.batch_supported is True
    assert service.calls.count("/model/predict_batch") == 3
    service = FakeMax(batch=True)
    with _client(service, batch=False) as model:
        model.scores(images[:2])
    assert service.calls == ["/model/metadata", "/model/predict", "/model/predict"]


def test_metadata_fallbacks():
    with _client(FakeMax(metadata={"id": "max-thing"})) as model:
        assert model.name == "max-thing" and model.input_shape == (64, 64, 3)
        assert len(model.fingerprint) == 64  # sha256 of the metadata: changes with the model

    def no_metadata(request):
        return httpx.Response(404, json={"message": "Not Found"})

    with _client(no_metadata, input_shape=(32, 32, 3)) as model:
        assert model.name == "http-127.0.0.1:5999" and model.input_shape == (32, 32, 3)
        assert model.fingerprint == ""


def test_retries_connection_errors_and_5xx(images):
    request = httpx.Request("POST", URL)
    service = FakeMax(failures=[httpx.ConnectError("refused", request=request),
                                httpx.ReadError("reset", request=request),
                                httpx.Response(503, json={"message": "busy"}, headers={"Retry-After": "0"}),
                                httpx.Response(500, text="oops")])
    with _client(service, retries=4) as model:
        assert model.scores(images[:2]).tolist() == _toy_scores(images[:2]).tolist()
        assert model.n_retries == 4 and model.n_queries == 1


def test_backoff_is_exponential_capped_and_honours_retry_after(images, monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    request = httpx.Request("POST", URL)
    service = FakeMax(failures=[httpx.ConnectError("refused", request=request)] * 5 + [
        httpx.Response(429, json={"message": "slow down"}, headers={"Retry-After": "3"}),
        httpx.Response(503, json={"message": "busy"}, headers={"Retry-After": "60"})])
    with _client(service, retries=7, backoff=0.5, max_backoff=4.0) as model:
        assert model.scores(images[:1]).tolist() == _toy_scores(images[:1]).tolist()
        assert model.n_retries == 7
    for k, seconds in enumerate(slept[:5]):  # 0.5, 1, 2, 4, 4 (capped), each jittered down
        base = min(4.0, 0.5 * 2**k)
        assert base / 2 <= seconds <= base
    assert slept[5:] == [3.0, 4.0]  # Retry-After, capped at max_backoff


def test_a_server_back_with_another_model_is_refused(images):
    request = httpx.Request("POST", URL)
    service = FakeMax(metadata={"onepixel": {"sha256": "aa" * 32}},
                      failures=[httpx.ConnectError("refused", request=request)])
    with _client(service) as model:
        assert model.scores(images[:2]).tolist() == _toy_scores(images[:2]).tolist()  # same model
        service.failures = [httpx.ConnectError("refused", request=request)]
        service.metadata = {"onepixel": {"sha256": "bb" * 32}}
        with pytest.raises(HttpError, match="another model"):
            model.scores(images[:2])
    assert service.calls.count("/model/metadata") == 3


def test_gives_up_after_the_retries(images):
    service = FakeMax(failures=[httpx.Response(502, text="bad gateway")] * 10)
    with _client(service, retries=2) as model, \
            pytest.raises(HttpUnavailableError, match=r"3 tries \(last: HTTP 502: bad gateway\)"):
        model.scores(images[:1])
    assert len(service.calls) == 1 + 3


def test_unreachable_server_is_a_clear_error():
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(HttpUnavailableError, match="is the server running"):
        _client(refuse, retries=1)


def test_4xx_is_an_error_at_once(images):
    service = FakeMax(failures=[httpx.Response(400, json={"status": "error", "message": "bad png"})])
    with _client(service) as model, pytest.raises(HttpError, match="400: bad png") as info:
        model.scores(images[:1])
    assert info.value.status == 400 and isinstance(info.value, ModelError)
    assert len(service.calls) == 2

    def locked(request):
        return httpx.Response(401, json={"status": "error", "message": "missing API key"})

    with pytest.raises(HttpAuthError, match="ONEPIXEL_API_KEY"):
        _client(locked)


def test_too_large_batches_are_split(images):
    service = FakeMax(metadata={"onepixel": {"predict_batch": "/model/predict_batch"}}, max_images=3)
    with _client(service, batch_size=8, concurrency=1) as model:
        assert model.scores(images).tolist() == _toy_scores(images).tolist()
        assert model.batch_size == 2


def test_answers_that_are_not_the_max_api(images):
    def wrong(request):
        if request.url.path == "/model/metadata":
            return httpx.Response(200, json={})
        return httpx.Response(200, json={"status": "ok", "predictions": []})

    with _client(wrong) as model, pytest.raises(HttpError, match="0 predictions for 1 images"):
        model.scores(images[:1])


def test_bad_arguments_say_what_to_do():
    for kw, needle in (({"retries": -1}, "retries"), ({"concurrency": 0}, "concurrency"),
                       ({"batch_size": 0}, "batch size"), ({"timeout": 0}, "timeout"),
                       ({"png_level": 10}, "png_level")):
        with pytest.raises(ModelError, match=needle):
            HttpClassifier(URL, **kw)


def test_against_the_real_app_in_process(images, monkeypatch):
    """The real ASGI app behind a mock transport: exact scores, the key from the environment."""
    toy = CallableClassifier(_toy_scores, (64, 64, 3), name="toy")
    toy.fingerprint = "ef" * 32

    def bridge(request):
        r = app_client.request(request.method, request.url.path, content=request.content,
                               headers=dict(request.headers))
        return httpx.Response(r.status_code, content=r.content, headers=r.headers)

    # As a context manager the test client keeps one event loop, as a real server does: the
    # app's inference gate belongs to one loop.
    with TestClient(create_app(toy, api_key="k3y", max_batch=4)) as app_client:
        monkeypatch.setenv("ONEPIXEL_API_KEY", "k3y")
        with HttpClassifier(URL, transport=httpx.MockTransport(bridge), concurrency=2) as model:
            assert (model.name, model.fingerprint, model.batch_size) == ("toy", "ef" * 32, 4)
            assert model.scores(images).tolist() == _toy_scores(images).tolist()
        monkeypatch.setenv("ONEPIXEL_API_KEY", "wrong")
        with pytest.raises(HttpAuthError, match="refused"):
            HttpClassifier(URL, transport=httpx.MockTransport(bridge))
        assert json.loads(app_client.get("/health").content)["images"] == 10
