"""A small model served by KServe's own Python model server, for tests/test_v2_kserve.py.

``logits(images)`` is a fixed linear model on 64x64 RGB patches (weights from a seeded
generator, so the test process and the server process build the same one). The server answers
its raw logits (FP64), as many production models do; the onepixel client is told
``model_output="logit"`` and applies the sigmoid itself, so the test also checks that path.

Run as a script it serves the model with ``kserve.ModelServer`` (KServe parses its own options:
``--http_port PORT --enable_grpc false``); imported, it needs numpy only.
"""

from __future__ import annotations

import numpy as np

NAME = "linear-patch"
SHAPE = (64, 64, 3)


def _weights() -> tuple[np.ndarray, float]:
    rng = np.random.default_rng(2027)
    # Darker patches score high (the mitosis sample is darker than the normal one), plus a
    # seeded per-value term so that each pixel matters a little differently.
    w = -100.0 / np.prod(SHAPE) + rng.normal(0.0, 0.01, SHAPE)
    return w.reshape(-1), 57.5


W, B = _weights()


def logits(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 64, 64, 3) -> float64 (N, 1) logits."""
    x = np.asarray(images, dtype=np.float64).reshape(len(images), -1) / 255.0
    return (x @ W + B).reshape(-1, 1)


def main() -> None:  # pragma: no cover - runs in the KServe process
    import uuid

    import kserve
    from kserve import InferOutput, InferRequest, InferResponse

    class LinearPatch(kserve.Model):
        def __init__(self) -> None:
            super().__init__(NAME)
            self.ready = True

        def get_input_types(self) -> list[dict]:
            return [{"name": "images", "datatype": "UINT8", "shape": [-1, *SHAPE]}]

        def get_output_types(self) -> list[dict]:
            return [{"name": "logits", "datatype": "FP64", "shape": [-1, 1]}]

        def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
            images = payload.inputs[0].as_numpy()
            out = logits(images)
            output = InferOutput(name="logits", shape=list(out.shape), datatype="FP64")
            # Binary outputs where the request asks for them (the binary data extension).
            output.set_data_from_numpy(out, binary_data=payload.use_binary_outputs)
            # KServe's JSON response model needs an id, which a request need not carry.
            return InferResponse(model_name=NAME, infer_outputs=[output],
                                 response_id=payload.id or uuid.uuid4().hex,
                                 use_binary_outputs=payload.use_binary_outputs,
                                 requested_outputs=payload.request_outputs)

    kserve.ModelServer(enable_docs_url=False).start([LinearPatch()])


if __name__ == "__main__":
    main()
