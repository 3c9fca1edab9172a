"""One-pixel confidence maps: reductions, the exact fast path against brute force, the papers'
checkerboard on true.png, checkpoints, files, attack-run selection and bad input.

Fast-vs-brute tolerance: 1e-5 absolute on min / max / mean scores (observed: below 1e-6 in fp32;
the only differences are summation order and batch norms folded into convolutions).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from keras_files import layer, write_model
from onepixel.confmap import (
    PARTIAL_NAME,
    ConfidenceMap,
    ConfmapConfig,
    ConfmapError,
    colour_grid,
    colour_levels,
    compute_confmap,
    compute_confmaps,
    confmap_run,
    load_confmap,
    load_confmap_classifier,
    save_confmap,
    select_run_images,
)
from onepixel.confmap.engine import _Reducer
from onepixel.confmap.incremental import IncrementalConfmap, incremental_unavailable_reason
from onepixel.errors import ConfigError, ImageError, OnepixelError
from onepixel.models import CallableClassifier, ModelOptions, TorchClassifier, TorchOptions, load_classifier
from onepixel.models.keras_h5 import load_keras_module
from onepixel.models.registry import MAX_IO
from onepixel.runs.schema import ATTACK_COLUMNS, AttackResult

TOL = 1e-5
QUIET = {"progress": False}
# Corners, edges, the centre, and every parity of (x, y).
EDGE_PIXELS = tuple((x, y) for x in (0, 1, 2, 31, 32, 62, 63) for y in (0, 1, 30, 33, 62, 63))


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small per-pixel batches on a shared 2-core machine: one thread is steady, two can stall."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _linear_classifier(shape=(8, 8, 3)):
    """score = mean of all channel values / 255: exact per-pixel extremes are known."""
    return CallableClassifier(lambda im: im.reshape(len(im), -1).mean(axis=1) / 255.0, shape, "linear")


def _image(shape=(8, 8, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ----------------------------------------------------------------------------- grid and options
def test_colour_levels_include_255():
    assert len(colour_levels(5)) == 52 and colour_levels(5)[-1] == 255
    assert colour_levels(7).tolist()[-2:] == [252, 255]
    assert colour_levels(255).tolist() == [0, 255]
    assert colour_levels(85).tolist() == [0, 85, 170, 255]
    grid = colour_grid(128)
    assert grid.shape == (27, 3) and grid.dtype == np.uint8
    assert grid[0].tolist() == [0, 0, 0] and grid[1].tolist() == [0, 0, 128]
    assert grid[-1].tolist() == [255, 255, 255]
    assert ConfmapConfig().n_colours == 140_608


@pytest.mark.parametrize("step", [0, 256, -5, 2.5, True, "5"])
def test_bad_step_is_a_clear_error(step):
    with pytest.raises(ConfigError, match="step must be an integer from 1 to 255"):
        ConfmapConfig(step=step)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"evaluator": "quick"}, "ConfmapConfig.evaluator must be one of"),
    ({"batch_size": 0}, "ConfmapConfig.batch_size"),
    ({"checkpoint_seconds": 0}, "ConfmapConfig.checkpoint_seconds"),
    ({"pixels": ()}, "pixels is empty"),
    ({"workers": 0}, "workers must be"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(OnepixelError, match=match):
        ConfmapConfig(**kwargs)


@pytest.mark.parametrize(("image", "match"), [
    (np.zeros((32, 32, 3), np.uint8), r"32x32 .* takes 8x8"),
    (np.zeros((8, 8, 3), np.float32), "uint8"),
    (np.zeros((8, 8), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((8, 8, 4), np.uint8), r"\(H, W, 3\)"),
])
def test_bad_image_is_a_clear_error(image, match):
    with pytest.raises(ImageError, match=match):
        compute_confmap(image, _linear_classifier(), ConfmapConfig(step=255, **QUIET))


def test_pixel_outside_image_is_an_error():
    with pytest.raises(ConfmapError, match="outside the 8x8 image"):
        compute_confmap(_image(), _linear_classifier(), ConfmapConfig(step=255, pixels=((8, 0),), **QUIET))


def test_fast_method_on_other_classifiers_says_what_to_do():
    clf = _linear_classifier()
    reason = incremental_unavailable_reason(clf)
    assert "not loaded with its layers" in reason and "layers=True" in reason
    assert "KerasNet" not in reason and type(clf).__name__ not in reason  # no internal class names
    with pytest.raises(ConfigError, match="ConfmapConfig.evaluator='full'"):
        compute_confmap(_image(), clf, ConfmapConfig(step=255, evaluator="incremental", **QUIET))


# ----------------------------------------------------------------------------- reductions
@pytest.mark.parametrize("batch_size", [5, 216, 1000])
def test_reductions_are_exact_on_a_linear_model(batch_size):
    """min/max/mean per pixel have closed forms; batch 5 < 216 colours splits pixels into colour
    chunks, 1000 puts several pixels in one batch."""
    image = _image()
    result = compute_confmap(image, _linear_classifier(),
                             ConfmapConfig(step=51, batch_size=batch_size, **QUIET))
    levels = colour_levels(51).astype(np.float64)
    total = image.astype(np.float64).sum()
    own = image.astype(np.float64).sum(axis=2)
    n = image.size * 255.0
    assert result.method == "full" and result.evaluations == 64 * 216
    np.testing.assert_allclose(result.min, (total - own) / n, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.max, (total - own + 3 * 255) / n, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.mean, (total - own + 3 * levels.mean()) / n, rtol=0, atol=1e-12)
    assert (result.argmin_rgb == 0).all() and (result.argmax_rgb == 255).all()
    assert result.original_score == pytest.approx(total / n)


def test_ties_go_to_the_first_colour_across_batches():
    """Score depends on red only: every (0, g, b) ties for the minimum; the first grid colour wins
    whatever the batching."""
    clf = CallableClassifier(lambda im: im[..., 0].reshape(len(im), -1).mean(axis=1) / 255.0,
                             (4, 4, 3), "red")
    for batch in (3, 7, 500):
        result = compute_confmap(_image((4, 4, 3)), clf, ConfmapConfig(step=85, batch_size=batch, **QUIET))
        assert (result.argmin_rgb == [0, 0, 0]).all()
        assert (result.argmax_rgb == [255, 0, 0]).all()


def test_several_images_at_once_match_one_by_one():
    clf, images = _linear_classifier(), np.stack([_image(seed=1), _image(seed=2)])
    both = compute_confmaps(images, clf, ConfmapConfig(step=128, **QUIET))
    for image, res in zip(images, both, strict=True):
        single = compute_confmap(image, clf, ConfmapConfig(step=128, **QUIET))
        np.testing.assert_array_equal(res.min, single.min)
        np.testing.assert_array_equal(res.argmax_rgb, single.argmax_rgb)


def test_parallel_workers_give_identical_maps():
    clf = CallableClassifier(lambda im: im[..., 0].reshape(len(im), -1).mean(axis=1) / 255.0,
                             (8, 8, 3), "red")
    one = compute_confmap(_image(), clf, ConfmapConfig(step=51, batch_size=5, workers=1, **QUIET))
    three = compute_confmap(_image(), clf, ConfmapConfig(step=51, batch_size=5, workers=3, **QUIET))
    for name in ("min", "max", "mean", "argmin_rgb", "argmax_rgb"):
        np.testing.assert_array_equal(getattr(one, name), getattr(three, name))


def test_reducer_keeps_earlier_colour_on_equal_score():
    red = _Reducer(2, 4, torch.device("cpu"))
    red.update(torch.tensor([0, 1]), 0, torch.tensor([[0.5, 0.2], [0.7, 0.7]], dtype=torch.float64))
    red.update(torch.tensor([0, 1]), 2, torch.tensor([[0.2, 0.9], [0.1, 0.7]], dtype=torch.float64))
    assert red.argmin.tolist() == [1, 2] and red.argmax.tolist() == [3, 0]
    assert red.state()["done"].tolist() == [True, True]


# ----------------------------------------------------------------------------- checkpoints
def test_interrupted_map_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    image, clf = _image(), _linear_classifier()
    config = ConfmapConfig(step=51, batch_size=216, checkpoint_seconds=1e-6, **QUIET)
    reference = compute_confmap(image, clf, config)
    calls = {"n": 0}
    original_update = _Reducer.update

    def failing_update(self, *args):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        original_update(self, *args)

    monkeypatch.setattr(_Reducer, "update", failing_update)
    with pytest.raises(KeyboardInterrupt):
        compute_confmap(image, clf, config, checkpoint=tmp_path)
    monkeypatch.setattr(_Reducer, "update", original_update)
    with np.load(tmp_path / PARTIAL_NAME) as saved:
        assert saved["done"].sum() == 19
        assert json.loads(str(saved["config"]))["step"] == 51
    evaluated = {"n": 0}

    def counting(images):
        evaluated["n"] += len(images)
        return images.reshape(len(images), -1).mean(axis=1) / 255.0

    resumed = compute_confmap(image, CallableClassifier(counting, (8, 8, 3), "linear"), config,
                              checkpoint=tmp_path)
    assert evaluated["n"] == 1 + (64 - 19) * 216  # the original image + the missing pixels only
    for name in ("min", "max", "mean", "argmin_rgb", "argmax_rgb"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(reference, name))
    with pytest.raises(ConfmapError, match="another confidence map .*step.*delete it"):
        compute_confmap(image, clf, ConfmapConfig(step=85, **QUIET), checkpoint=tmp_path)
    save_confmap(resumed, tmp_path, figures=False)
    assert not (tmp_path / PARTIAL_NAME).exists()


# ----------------------------------------------------------------------------- the MAX model
@pytest.fixture(scope="module")
def max_fast(max_model_path):
    clf = load_confmap_classifier(str(max_model_path), ModelOptions(device="cpu"))
    assert incremental_unavailable_reason(clf) is None
    return clf


@pytest.fixture(scope="module")
def max_reference(max_model_path):
    """The default CPU classifier (ONNX Runtime when installed): an independent implementation."""
    return load_classifier(str(max_model_path), ModelOptions(device="cpu"))


@pytest.fixture(scope="module")
def true_image(true_png):
    from onepixel.datasets.images import load_image

    return load_image(true_png, (64, 64))


@pytest.fixture(scope="module")
def centre_map(max_fast, true_image):
    pixels = tuple((x, y) for x in range(24, 40) for y in range(24, 40))
    return compute_confmap(true_image, max_fast, ConfmapConfig(step=85, pixels=pixels, **QUIET))


@pytest.mark.slow
def test_true_png_min_map_shows_the_checkerboard(centre_map):
    """The papers' finding: pixels with both coordinates even are the vulnerable ones."""
    assert centre_map.method == "incremental"
    assert centre_map.original_score == pytest.approx(0.9884441494941711, abs=1e-5)
    lo = centre_map.min[24:40, 24:40]
    even = np.zeros_like(lo, dtype=bool)
    even[0::2, 0::2] = True  # 24 is even
    assert lo[even].mean() < lo[~even].mean() - 0.05
    assert np.nanmin(centre_map.min) < 0.5  # some colour flips the label
    x, y, score, rgb = centre_map.extreme("min")
    assert x % 2 == 0 and y % 2 == 0 and score < 0.5 and len(rgb) == 3
    mapped = ~np.isnan(centre_map.min)
    assert mapped.sum() == 256 and centre_map.evaluations == 256 * 64
    assert np.all(centre_map.min[mapped] <= centre_map.mean[mapped] + 1e-12)
    assert np.all(centre_map.mean[mapped] <= centre_map.max[mapped] + 1e-12)


@pytest.mark.parametrize(("which", "step"), [("true", 85), ("false", 85), ("false", 128),
                                           ("true-rot90-flip", 128)])
@pytest.mark.slow
def test_fast_path_equals_brute_force(max_fast, max_reference, sample_images, step, which):
    image = {"true": sample_images[0], "false": sample_images[1],
             "true-rot90-flip": np.ascontiguousarray(np.rot90(sample_images[0])[:, ::-1])}[which]
    config = ConfmapConfig(step=step, pixels=EDGE_PIXELS, **QUIET)
    fast = compute_confmap(image, max_fast, config)
    brute = compute_confmap(image, max_reference, ConfmapConfig(step=step, evaluator="full",
                                                                pixels=EDGE_PIXELS, **QUIET))
    assert fast.method == "incremental" and brute.method == "full"
    mapped = ~np.isnan(brute.min)
    assert mapped.sum() == len(EDGE_PIXELS)
    for name in ("min", "max", "mean"):
        np.testing.assert_allclose(getattr(fast, name)[mapped], getattr(brute, name)[mapped],
                                   rtol=0, atol=TOL, err_msg=name)
    # The fast path's arg-extreme colours score (by brute force) as its extremes do.
    ys, xs = np.nonzero(mapped)
    for arg, ext in (("argmin_rgb", "min"), ("argmax_rgb", "max")):
        batch = np.repeat(image[None], len(ys), axis=0)
        batch[np.arange(len(ys)), ys, xs] = getattr(fast, arg)[ys, xs]
        np.testing.assert_allclose(max_reference.scores(batch), getattr(brute, ext)[ys, xs],
                                   rtol=0, atol=TOL)


def test_fast_path_equals_brute_force_on_the_same_torch_classifier(max_fast, true_image):
    """Brute force through the on-device TorchEvaluator of the very classifier the fast path uses."""
    pixels = EDGE_PIXELS[::3]
    fast = compute_confmap(true_image, max_fast, ConfmapConfig(step=255, pixels=pixels, workers=2,
                                                               **QUIET))
    brute = compute_confmap(true_image, max_fast, ConfmapConfig(step=255, evaluator="full",
                                                                pixels=pixels, **QUIET))
    mapped = ~np.isnan(brute.min)
    for name in ("min", "max", "mean"):
        np.testing.assert_allclose(getattr(fast, name)[mapped], getattr(brute, name)[mapped],
                                   rtol=0, atol=TOL)


def test_save_writes_npz_and_figures(centre_map, true_image, tmp_path):
    pytest.importorskip("matplotlib")
    written = save_confmap(centre_map, tmp_path / "out", image=true_image)
    names = {p.name for p in written}
    assert names == {"confmap.npz", "confmap_min.png", "confmap_max.png", "confmap_mean.png"}
    with np.load(tmp_path / "out" / "confmap.npz", allow_pickle=False) as d:
        assert d["min"].shape == d["max"].shape == d["mean"].shape == (64, 64)
        assert d["argmin_rgb"].shape == d["argmax_rgb"].shape == (64, 64, 3)
        assert d["argmin_rgb"].dtype == np.uint8
        assert int(d["step"]) == 85 and str(d["model"]) == centre_map.model
        assert float(d["original_score"]) == centre_map.original_score
        meta = json.loads(str(d["metadata"]))
        assert meta["evaluations"] == 256 * 64 and meta["levels"] == [0, 85, 170, 255]
    loaded = load_confmap(tmp_path / "out")
    assert isinstance(loaded, ConfidenceMap) and loaded.original.shape == (64, 64, 3)
    np.testing.assert_array_equal(loaded.argmin_rgb, centre_map.argmin_rgb)
    np.testing.assert_array_equal(loaded.min, centre_map.min)
    assert loaded.seconds == centre_map.seconds and loaded.method == "incremental"


# ----------------------------------------------------------------------------- generic KerasNet
def _tiny_keras(path):
    """12x12 input: 3x3/2 'same' stem (asymmetric) + a 1x1/2 shortcut that odd pixels miss, batch
    norms, a 'valid' 3x3 conv with fused relu, max pooling, a padded average pool (run in full),
    Flatten and Dense: every kind of step the fast path compiles."""
    rng = np.random.default_rng(1)

    def conv(name, inp, filters, k, s, pad="same", act="linear"):
        return layer(name, "Conv2D", [inp], filters=filters, kernel_size=[k, k], strides=[s, s],
                     padding=pad, activation=act, use_bias=True, data_format="channels_last",
                     dilation_rate=[1, 1])

    def bn(name, inp):
        return layer(name, "BatchNormalization", [inp], axis=-1, epsilon=1e-3, center=True, scale=True)

    def bn_weights(c):
        return {"gamma": rng.uniform(0.5, 1.5, c), "beta": rng.normal(size=c) * 0.1,
                "moving_mean": rng.normal(size=c) * 0.1, "moving_variance": rng.uniform(0.5, 1.5, c)}

    layers = [
        layer("in", "InputLayer", [], batch_input_shape=[None, 12, 12, 3]),
        conv("c1", "in", 6, 3, 2), conv("sc", "in", 6, 1, 2), layer("add1", "Add", ["c1", "sc"]),
        bn("bn1", "add1"), layer("r1", "Activation", ["bn1"], activation="relu"),
        conv("c2", "r1", 5, 3, 1), bn("bn2", "c2"), layer("r2", "Activation", ["bn2"], activation="relu"),
        conv("c3", "r2", 4, 3, 1, pad="valid", act="relu"),
        layer("mp", "MaxPooling2D", ["c3"], pool_size=[2, 2], strides=[2, 2], padding="valid",
              data_format="channels_last"),
        layer("ap", "AveragePooling2D", ["mp"], pool_size=[3, 3], strides=[1, 1], padding="same",
              data_format="channels_last"),
        layer("flat", "Flatten", ["ap"]),
        layer("dense", "Dense", ["flat"], units=1, activation="linear", use_bias=True),
    ]
    weights = {
        "c1": {"kernel": rng.normal(size=(3, 3, 3, 6)) * 0.5, "bias": rng.normal(size=6) * 0.1},
        "sc": {"kernel": rng.normal(size=(1, 1, 3, 6)) * 0.5, "bias": rng.normal(size=6) * 0.1},
        "bn1": bn_weights(6), "bn2": bn_weights(5),
        "c2": {"kernel": rng.normal(size=(3, 3, 6, 5)) * 0.4, "bias": rng.normal(size=5) * 0.1},
        "c3": {"kernel": rng.normal(size=(3, 3, 5, 4)) * 0.4, "bias": rng.normal(size=4) * 0.1},
        "dense": {"kernel": rng.normal(size=(16, 1)) * 0.05, "bias": np.zeros(1)},
    }
    return write_model(path, layers, weights, "dense")


@pytest.mark.parametrize("fold_bn", [True, False])
def test_fast_path_is_exact_on_a_generic_keras_graph(tmp_path, fold_bn):
    net, graph = load_keras_module(_tiny_keras(tmp_path / "tiny.h5"))
    clf = TorchClassifier(net, graph.input_shape, "tiny", MAX_IO, TorchOptions(device="cpu", optimize=False))
    engine = IncrementalConfmap(net, MAX_IO, graph.input_shape, fold_bn=fold_bn)
    kinds = {st.kind for st in engine.steps}
    assert kinds == {"conv", "add", "affine", "act", "pool", "full"}
    assert engine.macs_window < engine.macs_full
    image = _image((12, 12, 3), seed=3)
    brute = compute_confmap(image, clf, ConfmapConfig(step=51, evaluator="full", **QUIET))
    fast = compute_confmap(image, clf, ConfmapConfig(step=51, evaluator="incremental", **QUIET))
    for name in ("min", "max", "mean"):
        np.testing.assert_allclose(getattr(fast, name), getattr(brute, name), rtol=0, atol=TOL)
    prep = engine.prepare(torch.from_numpy(image))
    colours = torch.from_numpy(colour_grid(128))
    for group in engine.groups()[::7]:
        out = engine.logits(prep, group, slice(0, len(group)), colours)
        batch = np.repeat(image[None], len(group) * 27, axis=0)
        colours_np = np.tile(colour_grid(128), (len(group), 1))
        batch[np.arange(len(batch)), np.repeat(group.ys, 27), np.repeat(group.xs, 27)] = colours_np
        np.testing.assert_allclose(torch.sigmoid(out[:, 0].double()).numpy(), clf.scores(batch),
                                   rtol=0, atol=TOL)


# ----------------------------------------------------------------------------- attack runs
def _fake_run(tmp_path, shape=(8, 8, 3), spec="linear"):
    from PIL import Image

    dataset = tmp_path / "data"
    rows = []
    specs = [("mitosis", "a", 0.99, 0.2), ("mitosis", "b", 0.95, 0.9), ("mitosis", "c", 0.97, 0.5),
             ("normal", "a", 0.01, 0.6), ("normal", "d", 0.2, 0.25)]
    for i, (label, stem, before, after) in enumerate(specs):
        folder = dataset / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image(shape, seed=i)).save(folder / f"{stem}.png")
        positive = label == "mitosis"
        rows.append(AttackResult(
            image=f"{label}/{stem}.png", label=label,
            direction="mitosis-to-normal" if positive else "normal-to-mitosis",
            goal="decrease" if positive else "increase", status="attacked", skip_reason="",
            original_score=before, attacked_score=after, x=1, y=2, r=3, g=4, b=5, nit=3, nfev=60))
    rows.append(AttackResult(image="normal/e.png", label="normal", direction="normal-to-mitosis",
                             goal="increase", status="skipped", skip_reason="ambiguous",
                             original_score=0.5))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format": 1, "dataset": str(dataset),
                                                  "model": {"spec": spec, "sha256": ""}}))
    with (run / "attacks.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(ATTACK_COLUMNS)
        writer.writerows(r.csv_row() for r in rows)
    return run


def test_run_selection_picks_most_and_least_successful_per_direction(tmp_path):
    run = _fake_run(tmp_path)
    picked = [(r.image, r.why) for r in select_run_images(run)]
    assert picked == [("mitosis/a.png", "most successful"), ("mitosis/b.png", "least successful"),
                      ("normal/a.png", "most successful"), ("normal/d.png", "least successful")]
    assert [r.image for r in select_run_images(run, ["c", "normal/d.png"])] == ["mitosis/c.png",
                                                                                "normal/d.png"]
    with pytest.raises(ConfmapError, match="matches 2 images"):
        select_run_images(run, ["a"])
    with pytest.raises(ConfmapError, match="no image 'zzz'"):
        select_run_images(run, ["zzz"])
    with pytest.raises(ConfmapError, match="attacks.csv not found"):
        select_run_images(tmp_path)


@pytest.mark.slow
def test_confmap_run_writes_one_folder_per_image(tmp_path):
    run = _fake_run(tmp_path)
    results = confmap_run(run, config=ConfmapConfig(step=255, **QUIET), classifier=_linear_classifier())
    folders = sorted(p.name for p in (run / "confmaps").iterdir() if p.is_dir())
    assert folders == ["b", "d", "mitosis__a", "normal__a"]  # stems collide for a.png
    for ri, folder, res in results:
        assert (folder / "confmap.npz").is_file() and res.min.shape == (8, 8)
        with np.load(folder / "confmap.npz", allow_pickle=False) as d:
            assert str(d["image"]) == ri.image and str(d["why"]) == ri.why
            assert d["original"].shape == (8, 8, 3)
    with (run / "confmaps" / "index.csv").open() as fh:
        index = list(csv.DictReader(fh))
    assert [r["why"] for r in index] == ["most successful", "least successful"] * 2
    # The analysis/report side reads these files.
    analysis = pytest.importorskip("onepixel.analysis.confmaps")
    ri, folder, res = results[0]
    cm = analysis.load_confmap(folder / "confmap.npz")
    assert cm.original is not None and cm.metadata["image"] == ri.image
    assert cm.original_score == res.original_score and cm.metadata["step"] == 255


@pytest.mark.slow
def test_confmap_run_reuses_finished_maps_and_remaps_changed_settings(tmp_path):
    run = _fake_run(tmp_path)
    config = ConfmapConfig(step=255, **QUIET)
    first = confmap_run(run, config=config, classifier=_linear_classifier())
    files = sorted((run / "confmaps").glob("*/confmap.npz"))
    stamps = [p.stat().st_mtime_ns for p in files]
    again = confmap_run(run, config=config, classifier=_linear_classifier())
    assert [p.stat().st_mtime_ns for p in files] == stamps  # not mapped (nor written) again
    for (_, _, a), (_, _, b) in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.min, b.min)
        assert a.original_score == b.original_score and a.evaluations == b.evaluations
    assert (run / "confmaps" / "index.csv").is_file()
    # Another step is another map: mapped again, never mixed with the finished one.
    coarser = confmap_run(run, config=ConfmapConfig(step=128, **QUIET),
                          classifier=_linear_classifier())
    assert all(res.step == 128 for _, _, res in coarser)
    assert all(p.stat().st_mtime_ns != t for p, t in zip(files, stamps, strict=True))


@pytest.mark.slow
def test_confmap_run_loads_the_runs_model(tmp_path):
    spec = str(_tiny_keras(tmp_path / "tiny.h5"))
    run = _fake_run(tmp_path, shape=(12, 12, 3), spec=spec)
    (ri, folder, result), = confmap_run(run, images=["c"], config=ConfmapConfig(step=255, **QUIET),
                                        model_options=ModelOptions(device="cpu"))
    assert ri.why == "named" and folder.name == "c"
    assert result.model == "tiny" and result.method == "incremental" and result.min.shape == (12, 12)


@pytest.mark.slow
def test_confmap_image_file_for_the_cli(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from onepixel.confmap import confmap_image_file

    model = str(_tiny_keras(tmp_path / "tiny.h5"))
    Image.fromarray(_image((12, 12, 3), seed=4)).save(tmp_path / "patch.png")
    result, written = confmap_image_file(tmp_path / "patch.png", tmp_path / "out", model,
                                         ModelOptions(device="cpu"), ConfmapConfig(step=128, **QUIET))
    assert result.method == "incremental" and result.model == "tiny" and result.min.shape == (12, 12)
    assert {p.name for p in written} >= {"confmap.npz", "confmap_min.png"}
    Image.fromarray(_image((16, 16, 3))).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="16x16"):
        confmap_image_file(tmp_path / "big.png", tmp_path / "out2", model, ModelOptions(device="cpu"),
                           ConfmapConfig(step=128, **QUIET))
