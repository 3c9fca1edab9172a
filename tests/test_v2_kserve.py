"""The Open Inference Protocol client against a server no one here wrote: KServe's.

KServe's Python model server (``kserve.ModelServer``, the ``kserve`` package of the dev extra)
serves tests/v2_peer_model.py's linear model, which answers raw logits; the client is told
``model_output="logit"``. A campaign through it equals the same campaign on the local model,
row for row. Also: the client's errors for what is not a v2 service, a refused connection that
fails fast, and the registry's list of spec forms.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import v2_peer_model as peer
from onepixel.attack import AttackConfig
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.errors import HttpUnavailableError, ModelError
from onepixel.models import CallableClassifier, load_classifier
from onepixel.models.base import ModelIO, class_probabilities
from onepixel.models.v2_protocol import V2Classifier
from onepixel.optimize.de import DEConfig
from run_files import attack_rows, history_rows, write_patch_dataset

httpx = pytest.importorskip("httpx")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def kserve_url(tmp_path_factory):
    pytest.importorskip("kserve", reason="KServe's model server is in the dev extra: "
                                         "pip install -e '.[dev]'")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("kserve") / "kserve.log"
    script = Path(peer.__file__)
    env = {k: v for k, v in os.environ.items() if k != "ONEPIXEL_API_KEY"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(script), "--http_port", str(port),
                                 "--enable_grpc", "false", "--workers", "1"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"KServe exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v2/models/{peer.NAME}/ready", timeout=1.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"KServe not up: {log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    yield f"{url}/v2/models/{peer.NAME}"
    proc.terminate()
    proc.wait(timeout=30)


def _local() -> CallableClassifier:
    io = ModelIO("nhwc", "raw", "logit")
    return CallableClassifier(lambda x: class_probabilities(peer.logits(x), io, peer.NAME),
                              peer.SHAPE, name=peer.NAME)


@pytest.mark.slow
def test_campaign_through_kserve_equals_the_local_one(kserve_url, tmp_path, true_png, false_png):
    dataset = write_patch_dataset(tmp_path / "data", true_png, false_png)
    local = _local()
    with V2Classifier(kserve_url, model_output="logit", batch_size=16) as remote:
        images = np.random.default_rng(3).integers(0, 256, (40, *peer.SHAPE), dtype=np.uint8)
        assert np.array_equal(remote.scores(images), local.scores(images))  # FP64 logits, exact
        assert remote.encoding in ("json", "binary") and len(remote.encoding_seconds) == 2
        runs = {}
        for name, model in (("local", local), ("kserve", remote)):
            config = CampaignConfig(dataset=dataset, out=tmp_path / name, batch_images=4,
                                    progress=False,
                                    attack=AttackConfig(de=DEConfig(population=20, maxiter=3, seed=9)))
            runs[name] = run_campaign(config, classifier=model)
        assert remote.n_queries > 10
    assert attack_rows(tmp_path / "kserve") == attack_rows(tmp_path / "local")
    assert len(attack_rows(tmp_path / "local")) == 10
    assert history_rows(tmp_path / "kserve") == history_rows(tmp_path / "local")
    assert runs["kserve"]["directions"] == runs["local"]["directions"]


@pytest.mark.slow
def test_logits_undeclared_are_refused_by_name(kserve_url):
    with V2Classifier(kserve_url, encoding="json") as remote, \
            pytest.raises(ModelError, match="model_output"):
        remote.scores(np.zeros((2, *peer.SHAPE), dtype=np.uint8))  # logits ~4 are no probabilities


def test_refused_connection_fails_fast_with_the_good_message():
    port = _free_port()  # nothing listens there
    for spec, hint in ((f"http://127.0.0.1:{port}", "onepixel serve --port"),
                       (f"http://127.0.0.1:{port}/v2/models/m", "onepixel serve --protocol v2")):
        t0 = time.monotonic()
        with pytest.raises(HttpUnavailableError, match="is the server running") as caught:
            load_classifier(spec)
        assert time.monotonic() - t0 < 5.0, spec
        assert hint in str(caught.value)


def test_unknown_spec_lists_every_form():
    with pytest.raises(ModelError) as caught:
        load_classifier("model.pkl")
    message = str(caught.value)
    for form in ("max-mitosis", "*.h5", "*.hdf5", "*.onnx", "*.pt", "*.ts", "http://HOST:PORT",
                 "http://HOST:PORT/v2/models/NAME"):
        assert form in message, form


def _mock(metadata: dict, outputs: dict | None = None):
    def handle(request):
        if request.method == "GET":
            return httpx.Response(200, json=metadata)
        return httpx.Response(200, json=outputs)
    return httpx.MockTransport(handle)


def test_metadata_that_is_not_an_image_model_is_refused_by_name():
    base = {"name": "m", "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]}
    for inputs, needle in (([], "exactly one input"),
                           ([{"name": "x", "datatype": "BYTES", "shape": [-1, 8, 8, 3]}], "datatype"),
                           ([{"name": "x", "datatype": "FP32", "shape": [-1, 8]}], "image batch"),
                           ([{"name": "x", "datatype": "FP32", "shape": [-1, -1, -1, 3]}],
                            "input_shape")):
        with pytest.raises(ModelError, match=needle):
            V2Classifier("http://127.0.0.1:9/v2/models/m", transport=_mock(dict(base, inputs=inputs)))
    nchw = dict(base, inputs=[{"name": "x", "datatype": "FP32", "shape": [-1, 3, 8, 8]}])
    answer = {"outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [3.0, 1.0]}]}
    with V2Classifier("http://127.0.0.1:9/v2/models/m", transport=_mock(nchw, answer),
                      model_output="logit", encoding="json") as model:
        assert model.input_shape == (8, 8, 3) and model.n_classes == 2
        p = model.scores(np.zeros((1, 8, 8, 3), dtype=np.uint8))
        assert p.shape == (1, 2) and abs(p[0, 0] - 1 / (1 + np.exp(-2.0))) < 1e-12
    with pytest.raises(ModelError, match="V2Classifier.encoding"):
        V2Classifier("http://127.0.0.1:9/v2/models/m", encoding="xml")
