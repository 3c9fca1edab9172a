"""``auto`` picks the evaluator by timing both on the call shape, caches the decision, and a
campaign records it; whichever engine runs, the rows are the same."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from tests.run_files import attack_rows

from onepixel.attack.campaign import run_campaign
from onepixel.attack.config import AttackConfig, CampaignConfig
from onepixel.models.callable_backend import CallableClassifier
from onepixel.models.options import ModelOptions
from onepixel.optimize.de import DEConfig
from onepixel.scoring.evaluators import HostEvaluator
from onepixel.scoring.measure import choose_evaluator, measured_shape
from onepixel.scoring.policy import call_shape_for, pick_evaluator


def _mean_red(images: np.ndarray) -> np.ndarray:
    return images[..., 0].mean(axis=(1, 2)) / 255.0


class Slowed:
    """A real evaluator that also waits ``delay`` seconds per call: a slower engine on demand,
    so that both branches of the decision are exercised on any machine."""

    def __init__(self, evaluator, delay: float):
        self.inner, self.delay, self.calls = evaluator, delay, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def scores(self, images, candidates):
        self.calls += 1
        time.sleep(self.delay)
        return self.inner.scores(images, candidates)

    def scores_prepared(self, prepared, rows, candidates):
        self.calls += 1
        time.sleep(self.delay)
        return self.inner.scores_prepared(prepared, rows, candidates)


def _evaluators(slow: str) -> dict:
    clf = CallableClassifier(_mean_red, (8, 8, 3), name="red")
    fast, slowed = HostEvaluator(clf), Slowed(HostEvaluator(clf), 0.02)
    return {"incremental": slowed if slow == "incremental" else fast,
            "full": slowed if slow == "full" else fast}


@pytest.mark.parametrize("slow, want", [("incremental", "full"), ("full", "incremental")])
def test_auto_keeps_the_faster_evaluator(slow, want, tmp_path):
    choice = choose_evaluator(_evaluators(slow), (16, 3), model="red", budget=0.05,
                              cache=tmp_path / "choices.json")
    assert choice.chosen == want and not choice.cached
    assert choice.seconds_per_candidate[slow] > choice.seconds_per_candidate[want]
    assert choice.call_shape == (16, 3) and choice.measured_shape == (16, 3)


def test_the_decision_is_cached_per_shape_and_not_measured_again(tmp_path):
    cache = tmp_path / "choices.json"
    first = choose_evaluator(_evaluators("full"), (4, 2), model="red", budget=0.05, cache=cache)
    again = _evaluators("incremental")  # would now pick "full" if it measured
    second = choose_evaluator(again, (4, 2), model="red", budget=0.05, cache=cache)
    assert second.cached and second.chosen == first.chosen == "incremental"
    assert again["incremental"].calls == 0  # nothing was timed
    other = choose_evaluator(_evaluators("incremental"), (8, 2), model="red", budget=0.05,
                             cache=cache)
    assert not other.cached and other.chosen == "full"  # another shape is measured
    assert len(json.loads(cache.read_text())) == 2


def test_large_calls_are_timed_on_a_slice_with_every_candidate_per_image():
    assert measured_shape((1024, 200)) == (10, 200)
    assert measured_shape((256, 1)) == (256, 1)
    assert measured_shape((1, 5000)) == (1, 5000)
    assert call_shape_for(256, "deferred", 200) == (256, 200)
    assert call_shape_for(256, "immediate", 200) == (256, 1)
    assert call_shape_for(None, "immediate", 200) is None


def test_a_model_without_layers_gets_the_full_network_unmeasured():
    clf = CallableClassifier(_mean_red, (8, 8, 3), name="red")
    picked = pick_evaluator(clf, "auto", "deferred", 1, (16, 10))
    assert isinstance(picked.evaluator, HostEvaluator) and picked.choice is None


@pytest.mark.slow
def test_campaign_records_the_measured_choice_and_rows_match_the_other_engine(
        tmp_path, monkeypatch, true_png, false_png, max_model_path):
    from PIL import Image

    monkeypatch.setenv("ONEPIXEL_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "ds"
    for label, src in (("mitosis", true_png), ("normal", false_png)):
        (data / label).mkdir(parents=True)
        img = Image.open(src).convert("RGB")
        for k in range(2):
            img.rotate(90 * k).save(data / label / f"{k}.png")
    attack = AttackConfig(de=DEConfig(population=10, maxiter=2, updating="deferred"))

    def campaign(out, evaluator):
        return run_campaign(CampaignConfig(dataset=data, out=tmp_path / out, attack=attack,
                                           evaluator=evaluator, progress=False,
                                           model_options=ModelOptions(device="cpu")))

    campaign("auto", "auto")
    config = json.loads((tmp_path / "auto" / "config.json").read_text())
    choice = config["engine_choice"]
    assert choice["chosen"] in ("incremental", "full") and choice["call_shape"] == [4, 10]
    assert set(choice["seconds_per_candidate"]) == {"incremental", "full"} and not choice["cached"]
    assert config["evaluator"] == ("IncrementalEvaluator" if choice["chosen"] == "incremental"
                                   else "HostEvaluator")
    other = "full" if choice["chosen"] == "incremental" else "incremental"
    campaign("other", other)
    a, b = attack_rows(tmp_path / "auto"), attack_rows(tmp_path / "other")
    assert [[r[k] for k in ("image", "status", "x", "y", "r", "g", "b", "nit", "nfev")] for r in a] == \
        [[r[k] for k in ("image", "status", "x", "y", "r", "g", "b", "nit", "nfev")] for r in b]
    # A resumed (or repeated) campaign reads the decision from the cache.
    campaign("again", "auto")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["engine_choice"]["cached"]


class SlowPrepare(Slowed):
    """Prepares slowly (like the incremental evaluator's base pass) but scores fast."""

    def prepare(self, images):
        time.sleep(self.delay)
        return self.inner.prepare(images)

    def scores_prepared(self, prepared, rows, candidates):
        self.calls += 1
        return self.inner.scores_prepared(prepared, rows, candidates)


def test_the_base_pass_is_not_charged_to_every_candidate(tmp_path):
    """An attack prepares its images once and then scores candidates on them: an evaluator with
    a slow preparation and fast scoring wins at one candidate per image."""
    clf = CallableClassifier(_mean_red, (8, 8, 3), name="red")
    evaluators = {"incremental": SlowPrepare(HostEvaluator(clf), 0.3),
                  "full": Slowed(HostEvaluator(clf), 0.02)}
    choice = choose_evaluator(evaluators, (16, 1), model="red", budget=0.05,
                              cache=tmp_path / "choices.json")
    assert choice.chosen == "incremental"
