"""``onepixel export``: write a model as a self-contained ONNX file."""

from __future__ import annotations

import logging
from pathlib import Path

import onepixel.assets as assets
from onepixel.errors import ModelError
from onepixel.fileio import atomic_open
from onepixel.models.keras_h5 import load_keras_module
from onepixel.models.onnx_backend import scoring_module_to_onnx
from onepixel.models.registry import BUILTIN, MAX_IO, ModelOptions
from onepixel.models.torch_backend import ScoringModule

log = logging.getLogger(__name__)


def export_onnx(spec: str, out: str | Path, options: ModelOptions | None = None) -> Path:
    """Export a Keras (or the built-in) model to ONNX: uint8 (N, H, W, 3) in, probability out.

    The preprocessing and the output activation are inside the graph, so the file scores
    exactly like ``onepixel predict`` with any ONNX runtime.
    """
    options = options or ModelOptions()
    if spec == BUILTIN:
        path, name = assets.ensure(BUILTIN, options.assets_dir), BUILTIN
    else:
        path, name = Path(spec), Path(spec).stem
        if path.suffix.lower() not in (".h5", ".hdf5"):
            raise ModelError(f"export supports '{BUILTIN}' and Keras files (*.h5, *.hdf5), got {spec!r}")
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
    net, graph = load_keras_module(path)
    io = options.apply(MAX_IO)
    payload = scoring_module_to_onnx(ScoringModule(net, io, final="probability"),
                                     graph.input_shape, name, "probability")
    out = Path(out)
    # Write-then-rename so an interrupted export never leaves a truncated model behind.
    with atomic_open(out, "wb") as fh:
        fh.write(payload)
    log.info("wrote %s (%d bytes)", out, len(payload))
    return out
