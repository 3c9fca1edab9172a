"""Memory that does not grow with the dataset (issue 29): a campaign reads its images a chunk at
a time, the RUN reader parses attacks.csv in chunks, and the store's resume scan keeps a few
bytes per image (not per history row)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("sklearn")
pytest.importorskip("onnxruntime")

from digits_models import model_options, train_and_export
from onepixel.attack import campaign as campaign_module
from onepixel.attack.campaign import run_campaign
from onepixel.attack.config import AttackConfig, CampaignConfig
from onepixel.errors import RunError
from onepixel.optimize.de import DEConfig
from onepixel.runs import reader as reader_module
from onepixel.runs.reader import read_attacks_csv
from onepixel.runs.schema import ATTACK_COLUMNS
from onepixel.runs.store import RunStore

OPTIONS = model_options()


def test_campaign_reads_images_a_chunk_at_a_time(tmp_path, monkeypatch):
    """80 images, chunks of 16, attack batches of 4: never more than 20 images read and not
    yet stored, every image stored once (all at once would be 80). The ONNX net is exported
    untrained: what is measured is the reading, not the model's accuracy."""
    images, labels = train_and_export(tmp_path / "digits.onnx", (32, 32, 3), epochs=0)
    for i in range(80):
        folder = tmp_path / "ds" / str(int(labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
    monkeypatch.setattr(campaign_module, "SCORE_CHUNK_IMAGES", 16)
    loaded, stored, in_flight = [0], [0], []
    real_load = campaign_module.load_image

    def counting_load(*args, **kwargs):
        loaded[0] += 1
        in_flight.append(loaded[0] - stored[0])
        return real_load(*args, **kwargs)

    def on_result(_result) -> None:
        stored[0] += 1

    monkeypatch.setattr(campaign_module, "load_image", counting_load)
    cfg = CampaignConfig(dataset=tmp_path / "ds", out=tmp_path / "run",
                         model=str(tmp_path / "digits.onnx"), model_options=OPTIONS, batch_images=4,
                         evaluator="full", progress=False,
                         attack=AttackConfig(de=DEConfig(population=10, maxiter=1)))
    summary = run_campaign(cfg, on_result=on_result)
    assert loaded[0] == stored[0] == summary["images"] == 80
    assert max(in_flight) <= 16 + 4
    assert len(read_attacks_csv(tmp_path / "run" / "attacks.csv")) == 80


def _attacks_csv(path: Path, n: int) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(ATTACK_COLUMNS)
        for i in range(n):
            attacked = i % 3 != 0
            w.writerow([f"normal/t{i}.png", "normal", "normal-to-mitosis", "increase",
                        "attacked" if attacked else "skipped", "" if attacked else "ambiguous",
                        0.01 * (i % 7), 0.1 * (i % 5) if attacked else "",
                        *((i % 64, (2 * i) % 64, i % 256, 0, 255) if attacked else ("",) * 5),
                        1 if attacked else "", 20 if attacked else "", 1, i % 2, 0, 0.5,
                        "normal", "mitosis" if i % 2 else "normal",
                        f"{i % 64},{(2 * i) % 64},{i % 256},0,255" if attacked else ""])


def test_chunked_reader_equals_one_pass_and_names_the_line(tmp_path, monkeypatch):
    path = tmp_path / "attacks.csv"
    _attacks_csv(path, 50)
    whole = read_attacks_csv(path)
    monkeypatch.setattr(reader_module, "READ_CHUNK_ROWS", 7)
    chunked = read_attacks_csv(path)
    for name in ATTACK_COLUMNS:
        a, b = getattr(whole, name), getattr(chunked, name)
        assert a.dtype == b.dtype and (np.array_equal(a, b, equal_nan=True) if a.dtype.kind == "f"
                                       else (a == b).all()), name
    # A bad value in a later chunk is reported at its own line.
    lines = path.read_text().splitlines()
    lines[40] = lines[40].replace("normal-to-mitosis,increase", "normal-to-mitosis,sideways")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RunError, match="line 41: column 'goal'"):
        read_attacks_csv(path)


def test_resume_scan_redoes_only_images_with_incomplete_history(tmp_path):
    store = RunStore(tmp_path / "run")
    store.open({"attack": {}})
    _attacks_csv(store.attacks_path, 6)  # t1, t2, t4, t5 attacked with nit 1; t0, t3 skipped
    with open(store.history_path, "a") as fh:
        fh.write("normal/t1.png,0,0.1\nnormal/t1.png,1,0.2\n"  # complete
                 "normal/t2.png,0,0.1\n"  # generation 1 missing
                 "normal/t4.png,1,0.2\nnormal/t4.png,0,0.1\n"  # out of order: redone
                 "normal/t5.png,0,0.1\nnormal/t5.png,1,0.2\n"
                 "normal/t9.png,0,0.3\n")  # an image without a row
    done = store.open({"attack": {}})
    assert done == {"normal/t0.png", "normal/t1.png", "normal/t3.png", "normal/t5.png"}
    assert list(read_attacks_csv(store.attacks_path).image) == sorted(done)
    assert store.history_path.read_text().splitlines() == [
        "image,generation,best_score", "normal/t1.png,0,0.1", "normal/t1.png,1,0.2",
        "normal/t5.png,0,0.1", "normal/t5.png,1,0.2"]
    assert store.open({"attack": {}}) == done  # consistent now: nothing more to repair
