"""K-class models over HTTP: `onepixel serve` answers class probabilities, HttpClassifier reads them.

A real server process on loopback (`onepixel serve`, uvicorn) serves the 10-class digits CNN
(ONNX, trained in the test); the remote class probabilities equal the local backend's, an
untargeted campaign through `http://...` writes the rows the local model writes, binary models
keep the MAX answer byte for byte, and malformed K-class answers are clear HttpErrors.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("onnxruntime")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette >= 1.0 prefers httpx2 for its test client
    from fastapi.testclient import TestClient

from digits_models import model_options, train_and_export, write_image_folder  # noqa: E402
from onepixel.attack import AttackConfig  # noqa: E402
from onepixel.attack.campaign import run_campaign  # noqa: E402
from onepixel.attack.config import CampaignConfig  # noqa: E402
from onepixel.cli.main import main as cli_main  # noqa: E402
from onepixel.datasets.images import load_image, scan_image_folder  # noqa: E402
from onepixel.errors import ServerError  # noqa: E402
from onepixel.models import CallableClassifier, ModelOptions, load_classifier  # noqa: E402
from onepixel.models.base import ClassProbability  # noqa: E402
from onepixel.models.http_backend import HttpClassifier, HttpError  # noqa: E402
from onepixel.optimize.de import DEConfig  # noqa: E402
from onepixel.serving.app import create_app  # noqa: E402
from onepixel.serving.config import add_server_arguments  # noqa: E402
from onepixel.wire import encode_png  # noqa: E402

OPTIONS = model_options()
MODEL_ARGS = ("--device", "cpu", "--preprocess", "unit", "--layout", "nchw", "--output", "logit")
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
URL = "http://127.0.0.1:5999"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits-http")
    images, labels = train_and_export(root / "digits.onnx", (32, 32, 3))
    dataset = write_image_folder(root / "ds", images, labels, per_class=1)
    return root / "digits.onnx", dataset, images


@pytest.fixture(scope="module")
def local(digits):
    return load_classifier(str(digits[0]), OPTIONS)


@pytest.fixture(scope="module")
def server(digits, tmp_path_factory):
    """`onepixel serve` with the digits model and class names, in its own process."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "ONEPIXEL_API_KEY"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "onepixel.cli", "-q", "serve", "--model",
                                 str(digits[0]), *MODEL_ARGS, "--port", str(port),
                                 "--classes", ",".join(NAMES)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}: {log_path.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not up after 120 s: {log_path.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def remote(server):
    with HttpClassifier(server) as model:
        yield model


def _dataset_images(dataset: Path, shape) -> tuple[list[Path], np.ndarray]:
    paths = [item.path for item in scan_image_folder(dataset).items]
    return paths, np.stack([load_image(p, shape) for p in paths])


def test_metadata_states_the_classes(server, remote, local):
    meta = httpx.get(f"{server}/model/metadata").json()
    assert meta["onepixel"]["n_classes"] == 10 and meta["onepixel"]["classes"] == list(NAMES)
    assert "probabilities of 10 classes" in meta["description"]
    assert remote.n_classes == 10 and remote.class_names == NAMES
    assert remote.capabilities.n_classes == 10 and remote.capabilities.device == "remote"
    assert remote.fingerprint == local.fingerprint and remote.input_shape == (32, 32, 3)


def test_remote_class_probabilities_equal_the_local_backend(remote, local, digits):
    _, dataset, held_out = digits
    _, images = _dataset_images(dataset, local.input_shape)
    rng = np.random.default_rng(5)
    images = np.concatenate([images, held_out[:40],
                             rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)])
    over_http = remote.scores(images)
    assert over_http.shape == (len(images), 10) and over_http.dtype == np.float64
    np.testing.assert_allclose(over_http, local.scores(images), rtol=0, atol=1e-6)
    assert np.array_equal(over_http.argmax(axis=1), local.scores(images).argmax(axis=1))
    # One class of the remote model as a binary score, as confidence maps use it.
    np.testing.assert_allclose(ClassProbability(remote, 3).scores(images[:5]), over_http[:5, 3])
    assert remote.scores(images[:0]).shape == (0, 10)
    with HttpClassifier(remote.url, batch=False) as single:  # /model/predict, one image each
        np.testing.assert_array_equal(single.scores(images[:3]), over_http[:3])


def test_answer_is_a_max_answer_with_class_probabilities(server, local, digits):
    """`probability` is the predicted class's (what an old MAX client reads), `label` its name."""
    _, dataset, _ = digits
    _, images = _dataset_images(dataset, local.input_shape)
    files = [("image", (f"{i}.png", encode_png(im), "image/png")) for i, im in enumerate(images[:4])]
    answer = httpx.post(f"{server}/model/predict_batch", files=files).json()
    assert answer["status"] == "ok" and len(answer["predictions"]) == 4
    for pred, want in zip(answer["predictions"], local.scores(images[:4]), strict=True):
        assert set(pred) == {"probability", "label", "probabilities"}
        probs = np.array(pred["probabilities"])
        np.testing.assert_allclose(probs, want, rtol=0, atol=1e-6)
        assert pred["probability"] == probs.max() and pred["label"] == NAMES[int(probs.argmax())]
        assert abs(probs.sum() - 1) < 1e-6


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "attacks.csv", newline="", encoding="utf-8") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def test_untargeted_campaign_over_http_writes_the_local_rows(server, digits, tmp_path):
    model, dataset, _ = digits
    attack = AttackConfig(de=DEConfig(population=20, maxiter=5, seed=7), pixels=3)
    runs = {}
    for name, spec in (("local", str(model)), ("http", server)):
        runs[name] = tmp_path / name
        run_campaign(CampaignConfig(dataset=dataset, out=runs[name], model=spec,
                                    model_options=OPTIONS, attack=attack, progress=False))
    local_rows, http_rows = _rows(runs["local"]), _rows(runs["http"])
    assert len(local_rows) == 10
    assert {r["goal"] for r in local_rows} == {"untargeted"}
    assert any(r["status"] == "attacked" for r in local_rows)
    assert http_rows == local_rows
    history = [(runs[n] / "history.csv").read_text() for n in ("local", "http")]
    assert history[0] == history[1]


def test_cli_predict_over_http_prints_the_local_table(server, digits, capsys):
    model, dataset, _ = digits
    image = str(next(dataset.rglob("*.png")))
    assert cli_main(["-q", "predict", image, "--model", server]) == 0
    over_http = capsys.readouterr().out
    assert cli_main(["-q", "predict", image, "--model", str(model), *MODEL_ARGS]) == 0
    in_process = capsys.readouterr().out
    assert over_http.splitlines()[0] == "image,class," + ",".join(f"p{k}" for k in range(10))
    # Same class; probabilities to 1e-6 (printed with 10 significant digits).
    got, want = (next(csv.reader(out.splitlines()[1:])) for out in (over_http, in_process))
    assert got[:2] == want[:2]
    np.testing.assert_allclose([float(v) for v in got[2:]], [float(v) for v in want[2:]],
                               rtol=0, atol=1e-6)


# -- binary models keep the MAX answer --------------------------------------------------------

def test_binary_models_answer_exactly_the_max_api(digits):
    """The same ONNX model with --positive-index 3 is binary: `{"probability": p}` and no more,
    byte for byte what the server answered before K-class models."""
    model, _, held_out = digits
    binary = load_classifier(str(model), ModelOptions(device="cpu", preprocess="unit",
                                                      layout="nchw", model_output="logit",
                                                      positive_index=3))
    with TestClient(create_app(binary)) as client:
        meta = client.get("/model/metadata").json()
        answer = client.post("/model/predict_batch",
                             files=[("image", (f"{i}.png", encode_png(im), "image/png"))
                                    for i, im in enumerate(held_out[:3])])
    scores = binary.scores(held_out[:3])
    expected = json.dumps({"status": "ok", "predictions": [{"probability": s} for s in scores.tolist()]},
                          separators=(",", ":")).encode()
    assert answer.content == expected
    assert meta["onepixel"]["n_classes"] == 1 and "classes" not in meta["onepixel"]
    with pytest.raises(ServerError, match="is binary"):
        create_app(binary, classes=("no", "yes"))


# -- class names ------------------------------------------------------------------------------

def test_class_names_must_fit_the_model(local):
    with pytest.raises(ServerError, match="gives 3 names but digits has 10 classes"):
        create_app(local, classes=("a", "b", "c"))
    with pytest.raises(ServerError, match="repeated: a"):
        create_app(local, classes=("a",) * 10)
    meta = TestClient(create_app(local)).get("/model/metadata").json()
    assert meta["onepixel"]["classes"] == [str(i) for i in range(10)]  # index names by default
    grey = CallableClassifier(lambda x: np.full((len(x), 3), 1 / 3), (8, 8, 1), name="grey",
                              n_classes=3)
    with pytest.raises(ServerError, match="serves RGB models"):
        create_app(grey)
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    assert parser.parse_args(["--classes", "a, b ,c"]).classes == ("a", "b", "c")
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--classes", "a,,b"])
    assert exc.value.code == 2


@pytest.mark.slow
def test_serve_with_the_wrong_class_count_exits_2(digits):
    out = subprocess.run([sys.executable, "-m", "onepixel.cli", "serve", "--model", str(digits[0]),
                          *MODEL_ARGS, "--port", "0", "--classes", "cat,dog"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "--classes gives 2 names but digits has 10 classes" in out.stderr
    assert "Traceback" not in out.stderr


# -- malformed answers ------------------------------------------------------------------------

class Scripted:
    """A service whose metadata and prediction answers are given; records the paths asked."""

    def __init__(self, metadata: dict, answers: list):
        self.metadata = metadata
        self.answers = list(answers)
        self.calls: list[str] = []

    def __call__(self, request):
        self.calls.append(request.url.path)
        if request.url.path == "/model/metadata":
            return httpx.Response(200, json=self.metadata)
        preds = self.answers.pop(0)
        return httpx.Response(200, json={"status": "ok", "predictions": preds})


def _ours(k: int, **extra) -> dict:
    return {"onepixel": {"model": "toy", "sha256": "ab" * 32, "input_shape": [8, 8, 3],
                         "predict_batch": "/model/predict_batch", "n_classes": k, **extra}}


def _client(service: Scripted) -> HttpClassifier:
    return HttpClassifier(URL, transport=httpx.MockTransport(service), backoff=0.0,
                          input_shape=(8, 8, 3))


def _k(probs: list[float]) -> dict:
    return {"probability": max(probs), "label": str(int(np.argmax(probs))), "probabilities": probs}


IMAGES = np.zeros((2, 8, 8, 3), dtype=np.uint8)
GOOD = [0.2, 0.5, 0.3]


@pytest.mark.parametrize(("answer", "needle"), [
    ([_k(GOOD), _k([0.5, 0.5])], r"'probabilities' of \[2, 3\] lengths"),
    ([_k([0.5, 0.5]), _k([0.4, 0.6])], "answered 2 class probabilities per image, but this model has 3"),
    ([{"probability": 0.5}, {"probability": 0.2}],
     "answered one probability per image, but this model has 3"),
    ([_k(GOOD), {"probability": 0.5}], "some predictions carry 'probabilities' and some do not"),
    ([_k(GOOD), _k([0.2, 0.5, 0.2])], "do not sum to 1"),
    ([_k(GOOD), _k([1.5, -0.2, -0.3])], r"outside \[0, 1\]"),
    ([_k(GOOD), {"probability": 0.5, "probabilities": [0.2, None, 0.3]}],
     "did not answer with the MAX API"),
    ([_k([1.0]), _k([1.0])], "'probabilities' of 1 class"),
])
def test_malformed_class_probabilities_are_http_errors(answer, needle):
    with _client(Scripted(_ours(3), [answer])) as model:
        assert model.capabilities.n_classes == 3
        with pytest.raises(HttpError, match=needle):
            model.scores(IMAGES)


def test_class_count_from_the_first_answer_then_held(caplog):
    """A service whose metadata does not say learns K from its first answer; K may not change."""
    toy = {"id": "other-service"}
    service = Scripted(toy, [[_k(GOOD), _k([0.1, 0.1, 0.8])], [_k([0.5, 0.5])]])
    with _client(service) as model:
        assert model._n_classes is None
        got = model.scores(IMAGES)
        assert got.tolist() == [GOOD, [0.1, 0.1, 0.8]] and model.n_classes == 3
        assert model.class_names == ()
        with pytest.raises(HttpError, match="answered 2 class probabilities per image, but this "
                                            "model has 3 class"):
            model.scores(IMAGES[:1])
    # Asked for its capabilities before any answer: one black image finds out.
    service = Scripted(toy, [[_k(GOOD)], [_k(GOOD), _k(GOOD)]])
    with _client(service) as model:
        assert model.capabilities.n_classes == 3 and model.n_queries == 1
        assert model.scores(IMAGES).shape == (2, 3)
    assert service.calls == ["/model/metadata", "/model/predict_batch", "/model/predict_batch"]
    # A binary service (IBM's container) is found binary the same way.
    service = Scripted(toy, [[{"probability": 0.25}]])
    with _client(service) as model:
        assert model.capabilities.n_classes == 1


@pytest.mark.parametrize(("extra", "needle"), [
    ({"n_classes": 0}, "n_classes must be an integer >= 1, got 0"),
    ({"n_classes": "3"}, "n_classes must be an integer >= 1"),
    ({"n_classes": 3, "classes": ["a", "b"]}, "classes must be a list of 3 names"),
])
def test_malformed_class_metadata_is_an_http_error(extra, needle):
    meta = _ours(1)
    meta["onepixel"].update(extra)
    with pytest.raises(HttpError, match=needle):
        _client(Scripted(meta, []))


def test_a_binary_onepixel_server_of_before_is_binary():
    meta = _ours(1)
    del meta["onepixel"]["n_classes"]  # servers before K-class support did not say
    with _client(Scripted(meta, [[{"probability": 0.25}, {"probability": 0.5}]])) as model:
        assert model.capabilities.n_classes == 1 and model.n_queries == 0
        assert model.scores(IMAGES).tolist() == [0.25, 0.5]


def test_a_k_class_callable_served_in_process_round_trips():
    """Any K-class Classifier (a Python function here) over the real app: exact float64s."""
    def fn(images):
        m = images.reshape(len(images), -1).mean(axis=1) / 255.0
        return np.stack([m / 2, 1 - m, m / 2], axis=1)

    toy = CallableClassifier(fn, (8, 8, 3), name="toy3", n_classes=3)
    images = np.random.default_rng(1).integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
    with TestClient(create_app(toy, classes=("low", "high", "mid"), max_batch=3)) as app_client:
        def bridge(request):
            r = app_client.request(request.method, request.url.path, content=request.content,
                                   headers=dict(request.headers))
            return httpx.Response(r.status_code, content=r.content, headers=r.headers)

        with HttpClassifier(URL, transport=httpx.MockTransport(bridge), concurrency=2) as model:
            assert model.class_names == ("low", "high", "mid") and model.batch_size == 3
            assert model.scores(images).tolist() == fn(images).tolist()  # bit for bit
