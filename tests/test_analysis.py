"""A whole RUN analysed from its files: tables against hand-computed values, edge cases, errors."""

from __future__ import annotations

import csv
import logging
import math

import numpy as np
import pytest

from onepixel.analysis import RunError, compute_analysis, load_history, load_run
from onepixel.errors import OnepixelError
from onepixel.report import analyze_run, format_main_tables, is_stale
from test_analysis_runs import (
    M2N,
    N2M,
    attack_row,
    skipped_row,
    small_run,
    write_confmap,
    write_png,
    write_run,
)

approx = pytest.approx


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small")
    run_dir, dataset = small_run(tmp)
    return run_dir, dataset, analyze_run(run_dir, figures=False)


def _rows(result, name):
    t = result.table(name)
    return [dict(zip(t.columns, row, strict=True)) for row in t.rows]


def test_scores_tables_match_hand_computation(small):
    _, _, result = small
    rows = {r["Statistic"]: r for r in _rows(result, f"scores_{M2N}")}
    # Excluding the early-converged m3: before 0.99, 0.97, 0.95; after 0.02, 0.30, 0.60.
    assert rows["Maximum"]["Before (excl. early)"] == 0.99 and rows["Minimum"]["After (excl. early)"] == 0.02
    assert rows["Mean"]["Before (excl. early)"] == approx(0.97)
    assert rows["Standard deviation"]["Before (excl. early)"] == approx(0.02)
    assert rows["Mean"]["After (excl. early)"] == approx(0.92 / 3)
    assert rows["Median"]["After (excl. early)"] == approx(0.30)
    assert rows["Standard deviation"]["After (excl. early)"] == approx(0.29006, abs=1e-5)
    # All four attacks: after 0.02, 0.30, 0.60, 0.92.
    assert rows["Median"]["After (all)"] == approx(0.45) and rows["Maximum"]["After (all)"] == 0.92
    assert rows["N"]["Before (all)"] == 4 and rows["N"]["Before (excl. early)"] == 3


def test_success_and_early_convergence_counts(small):
    _, _, result = small
    success = {(r["Direction"], r["Subset"]): r for r in _rows(result, "success")}
    m_all = success[(M2N, "all attacked")]
    assert (m_all["Attacks"], m_all["Success"], m_all["Strong"]) == (4, 2, 1)
    assert m_all["Success %"] == approx(50.0) and m_all["Strong %"] == approx(25.0)
    m_rest = success[(M2N, "excluding early-converged")]
    assert (m_rest["Attacks"], m_rest["Success"]) == (3, 2) and m_rest["Success %"] == approx(200 / 3)
    n_all = success[(N2M, "all attacked")]
    assert (n_all["Attacks"], n_all["Success"], n_all["Strong"]) == (3, 1, 0)
    early = {r["Direction"]: r for r in _rows(result, "early_convergence")}
    assert early[M2N]["Early-converged"] == 1 and early[M2N]["%"] == approx(25.0)
    assert early[M2N]["Mean change (early)"] == approx(0.93 - 0.92)
    assert early[M2N]["Median change (others)"] == approx(0.97 - 0.30)
    nit = {r["Direction"]: r for r in _rows(result, "nit")}
    assert nit[M2N]["Mean"] == approx((40 + 25 + 60 + 1) / 4) and nit[N2M]["Median"] == 12
    summary = {r["Direction"]: r for r in _rows(result, "summary")}
    assert (summary[M2N]["Images"], summary[M2N]["Attacked"], summary[M2N]["Skipped"]) == (5, 4, 1)
    assert summary["all directions"]["Images"] == 9


def test_colours_spatial_periodicity(small):
    _, _, result = small
    colours = [r for r in _rows(result, "colours") if r["Direction"] == M2N]
    assert (colours[0]["RGB"], colours[0]["Count"], colours[0]["Name"]) == ("255, 255, 0", 2, "pure yellow")
    assert colours[0]["%"] == approx(50.0)
    assert "pure yellow (255, 255, 0)" in result.table("colours").reading
    spatial = {(r["Subset"], r["Statistic"]): r for r in _rows(result, f"spatial_{M2N}")}
    # Paper filter (ended below 0.9): m0 (32, 30), m1 (30, 32), m2 (33, 31); B = 0, 0, 255.
    mean, median, sd = (spatial[("paper filter", s)] for s in ("Mean", "Median", "SD"))
    assert (mean["X"], mean["Y"], mean["B"]) == (approx(95 / 3), approx(31.0), approx(85.0))
    assert (median["X"], median["B"]) == (32, 0)
    assert sd["X"] == approx(math.sqrt(7 / 3)) and sd["Y"] == approx(1.0)
    assert mean["N"] == 3 and spatial[("all attacks", "Mean")]["N"] == 4
    par = {(r["Direction"], r["Subset"], r["Coordinates"]): r for r in _rows(result, "periodicity")}
    both_even = par[(M2N, "all attacks", "both coordinates even")]
    assert both_even["Count"] == 3 and both_even["%"] == approx(75.0)
    assert both_even["Expected %"] == approx(25.0) and both_even["Ratio"] == approx(3.0)
    assert par[(N2M, "all attacks", "both coordinates odd")]["Count"] == 2
    # 3 of 4 both-even against 25% expected: the binomial test (p = 0.051) cannot support "3.0x".
    assert "75.0% of 4 attacks" in result.table("periodicity").reading
    assert "too few to tell (N = 4; binomial p = 0.051)" in result.table("periodicity").reading
    grid = np.loadtxt(result.table_paths[f"locations_{M2N}"][0], delimiter=",", skiprows=1)[:, 1:]
    assert grid.shape == (64, 64) and grid.sum() == 4 and grid[30, 32] == 1 and grid[0, 0] == 1


def test_files_written_as_csv_and_markdown(small):
    run_dir, _, result = small
    for name, paths in result.table_paths.items():
        for path in paths:
            assert path.is_file(), path
        if not name.startswith("locations_"):
            assert paths[1].read_text().startswith(f"## {result.table(name).title}")
    with result.table_paths["success"][0].open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["Success %"] == "50.0" and rows[0]["Direction"] == M2N
    assert (run_dir / "analysis" / "tables.md").is_file()
    assert (run_dir / "analysis" / "analysis.json").is_file()
    text = format_main_tables(result)
    for needle in ("Attacks per direction", f"Confidence scores, {M2N}", "0.2901", "Success counts",
                   "Spatial statistics", "Periodicity:"):
        assert needle in text


def test_chromatic_h_from_the_original_images(tmp_path):
    dataset = tmp_path / "ds"
    yy, xx = np.mgrid[0:64, 0:64]
    ramp = np.stack([xx * 4, yy * 4, np.zeros_like(xx)], axis=-1).astype(np.uint8)  # R = 4x, G = 4y
    write_png(dataset / "mitosis/corner.png", ramp)
    flat = np.zeros((64, 64, 3), dtype=np.uint8)
    flat[...] = (100, 150, 200)
    write_png(dataset / "normal/flat.png", flat)
    run_dir = write_run(tmp_path / "run", [
        attack_row("mitosis/corner.png", "decrease", 0.99, 0.2, 63, 0, (255, 255, 0), 20),
        attack_row("normal/flat.png", "increase", 0.01, 0.6, 17, 40, (255, 255, 0), 20)], dataset)
    analysis = compute_analysis(load_run(run_dir))
    # Corner (x=63, y=0): neighbours (62,0), (62,1), (63,1): R 248, 248, 252; G 0, 4, 4; B 0.
    r_mu, g_mu = (248 + 248 + 252) / 3, (0 + 4 + 4) / 3
    h_corner = math.sqrt(((255 - r_mu) ** 2 + (255 - g_mu) ** 2 + 0) / 3) / 255
    assert analysis.direction(M2N).h[0] == approx(h_corner)
    h_flat = math.sqrt((155 ** 2 + 105 ** 2 + 200 ** 2) / 3) / 255
    assert analysis.direction(N2M).h[0] == approx(h_flat)
    assert analysis.dataset_available and analysis.image_shape == (64, 64)


def test_dataset_not_reachable_skips_chromatic_with_a_warning(tmp_path, caplog):
    run_dir, _ = small_run(tmp_path, with_dataset=False)
    with caplog.at_level(logging.WARNING):
        result = analyze_run(run_dir, figures=False)
    assert not result.has_table("chromatic")
    notes = [n.text for n in result.notes if n.section == "chromatic"]
    assert notes and "not reachable" in notes[0] and "/nonexistent/dataset" in notes[0]
    assert any("Chromatic analysis" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert result.has_table(f"spatial_{M2N}")  # the rest of the analysis is still there


def test_some_originals_missing_are_left_out_with_a_note(tmp_path):
    run_dir, dataset = small_run(tmp_path)
    (dataset / "mitosis/m1.png").unlink()
    analysis = compute_analysis(load_run(run_dir))
    h = analysis.direction(M2N).h
    assert np.isnan(h[1]) and not np.isnan(h[0])
    assert any("1 of 7 original images could not be read" in n.text for n in analysis.notes)


def test_one_direction_only(tmp_path):
    run_dir = write_run(tmp_path / "run", [
        attack_row("mitosis/a.png", "decrease", 0.99, 0.2, 10, 12, (255, 255, 0), 30),
        attack_row("mitosis/b.png", "decrease", 0.95, 0.7, 11, 12, (255, 255, 255), 5)], dataset=None)
    result = analyze_run(run_dir, figures=False)
    assert [r[0] for r in result.table("summary").rows] == [M2N]
    assert not result.has_table(f"scores_{N2M}")
    assert result.table(f"scores_{M2N}").rows[-1][1:] == (2, 2, 2, 2)


def test_no_successful_attack(tmp_path):
    run_dir = write_run(tmp_path / "run", [
        attack_row("mitosis/a.png", "decrease", 0.99, 0.98, 10, 12, (255, 255, 0), 1),
        attack_row("normal/b.png", "increase", 0.01, 0.02, 11, 12, (0, 0, 0), 1)], dataset=None)
    result = analyze_run(run_dir, figures=False)
    assert [r[4] for r in result.table("success").rows] == [0, 0, 0, 0]
    assert result.table("colours_success").rows == ()
    assert f"no {N2M} attack succeeded" in result.table("colours_success").reading
    assert "0.0% of the 1" in result.table("summary").reading
    scores = dict((r[0], r[1:]) for r in result.table(f"scores_{M2N}").rows)
    assert scores["N"] == (0, 0, 1, 1)  # every attack converged early
    assert "converged early" in result.table(f"scores_{M2N}").reading


def test_every_image_skipped(tmp_path):
    run_dir = write_run(tmp_path / "run", [skipped_row("mitosis/a.png", "decrease", 0.5),
                                           skipped_row("normal/b.png", "increase", 0.4),
                                           skipped_row("normal/c.png", "increase", 0.3)], dataset=None)
    result = analyze_run(run_dir)
    assert result.figures == ()
    assert "All 3 images were skipped" in result.table("summary").reading
    assert {r[1] for r in result.table("skipped").rows} == {"positive scored < 0.9", "negative scored > 0.1"}
    texts = " ".join(n.text for n in result.notes)
    assert "Every one of the 3 images was skipped" in texts and "No box plot" in texts
    assert result.facts.attacked == 0


def test_header_only_attacks_csv(tmp_path):
    run_dir = write_run(tmp_path / "run", [], dataset=None)
    result = analyze_run(run_dir)
    assert result.facts.images == 0 and result.figures == ()
    assert any("no rows" in n.text for n in result.notes)


def test_confmaps_are_read_and_bad_ones_noted(tmp_path):
    run_dir, _ = small_run(tmp_path)
    write_confmap(run_dir, "m0", image="mitosis/m0.png", original_score=0.99)
    bad = run_dir / "confmaps" / "broken" / "confmap.npz"
    bad.parent.mkdir(parents=True)
    np.savez(bad, min=np.zeros((4, 4)))
    result = analyze_run(run_dir, figures=False)
    row = dict(zip(result.table("confmaps").columns, result.table("confmaps").rows[0], strict=True))
    assert row["Map"] == "m0" and row["Original score"] == approx(0.99)
    assert row["Lowest at (x, y)"] == "32, 32" and row["RGB at lowest"] == "255, 255, 0"
    assert row["Min map, even-even pixels"] < row["Min map, other pixels"]  # the checkerboard
    assert any("broken" in n.text and "max, mean" in n.text for n in result.notes)


def test_staleness_follows_the_run_files(tmp_path):
    run_dir, _ = small_run(tmp_path)
    assert is_stale(run_dir)
    analyze_run(run_dir, figures=False)
    assert not is_stale(run_dir)
    with (run_dir / "attacks.csv").open("a", newline="") as fh:
        csv.writer(fh).writerow(["normal/new.png", "normal", N2M, "increase", "skipped",
                                 "negative scored 0.3 > 0.1", "0.3", "", "", "", "", "", "", "0", "0", "0",
                                 "0", "0", "0.0", "normal", "", ""])
    assert is_stale(run_dir)
    assert analyze_run(run_dir, figures=False).facts.images == 10
    assert not is_stale(run_dir)


# --------------------------------------------------------------------------- malformed RUNs


def test_missing_run_folder_and_attacks_csv(tmp_path):
    with pytest.raises(RunError, match="RUN folder not found"):
        analyze_run(tmp_path / "nope")
    (tmp_path / "run").mkdir()
    with pytest.raises(RunError, match=r"attacks\.csv not found"):
        analyze_run(tmp_path / "run")
    assert issubclass(RunError, OnepixelError)


def test_wrong_columns_name_the_file_and_columns(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "attacks.csv").write_text("image,score\na.png,0.9\n")
    with pytest.raises(RunError) as err:
        load_run(run)
    message = str(err.value)
    assert "attacks.csv" in message and "missing column(s)" in message and "direction" in message


def test_garbled_rows_name_the_line(tmp_path):
    run_dir, _ = small_run(tmp_path)
    lines = (run_dir / "attacks.csv").read_text().splitlines()
    (run_dir / "attacks.csv").write_text("\n".join([*lines[:3], "mitosis/x.png,mitosis,cut"]) + "\n")
    with pytest.raises(RunError, match=r"attacks\.csv line 4: 3 fields"):
        load_run(run_dir)
    bad = lines[1].split(",")
    bad[6] = "high"  # original_score
    (run_dir / "attacks.csv").write_text("\n".join([lines[0], ",".join(bad)]) + "\n")
    with pytest.raises(RunError, match=r"line 2: column 'original_score' holds 'high'"):
        load_run(run_dir)
    bad = lines[1].split(",")
    bad[4] = "done"  # status
    (run_dir / "attacks.csv").write_text("\n".join([lines[0], ",".join(bad)]) + "\n")
    with pytest.raises(RunError, match="status"):
        load_run(run_dir)
    bad = lines[1].split(",")
    bad[8] = ""  # x of an attacked row
    (run_dir / "attacks.csv").write_text("\n".join([lines[0], ",".join(bad)]) + "\n")
    with pytest.raises(RunError, match="has no x"):
        load_run(run_dir)


def test_bad_config_and_history(tmp_path):
    run_dir, _ = small_run(tmp_path)
    (run_dir / "config.json").write_text("{not json")
    with pytest.raises(RunError, match=r"config\.json: not valid JSON"):
        load_run(run_dir)
    (run_dir / "config.json").write_text("{}")
    (run_dir / "history.csv").write_text("image,gen,score\n")
    with pytest.raises(RunError, match=r"history\.csv: missing column\(s\) generation, best_score"):
        load_history(run_dir / "history.csv", ["mitosis/m0.png"])
    with pytest.raises(RunError, match=r"history\.csv"):
        analyze_run(run_dir)


def test_history_with_quoted_image_names(tmp_path):
    path = tmp_path / "history.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "generation", "best_score"])
        w.writerows([["a,b.png", 1, 0.5], ["a,b.png", 0, 0.9], ["a.png", 0, 0.1], ["ab.png", 0, 0.3]])
    curves = load_history(path, ["a,b.png", "a.png"])
    assert curves["a,b.png"].tolist() == [0.9, 0.5]  # sorted by generation
    assert curves["a.png"].tolist() == [0.1]


@pytest.mark.slow
def test_worker_processes_give_the_same_neighbours(tmp_path, monkeypatch):
    from onepixel.analysis import chromatic

    run_dir, dataset = small_run(tmp_path)
    (dataset / "normal/n2.png").unlink()
    att = load_run(run_dir).attacks
    att = att.select(att.attacked)
    inline = chromatic.read_original_pixels(dataset, att.image, att.x, att.y, workers=1)
    monkeypatch.setattr(chromatic, "PROCESS_THRESHOLD", 0)
    pooled = chromatic.read_original_pixels(dataset, att.image, att.x, att.y, workers=2)
    np.testing.assert_array_equal(inline.neighbours, pooled.neighbours)
    assert pooled.missing == inline.missing == ("normal/n2.png",)
    assert pooled.image_shape == (64, 64)


def test_read_rgb_matches_load_image_for_every_mode(tmp_path):
    from PIL import Image

    from onepixel.analysis.chromatic import read_rgb
    from onepixel.datasets.images import load_image
    from onepixel.errors import ImageError

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for mode in ("RGB", "L", "RGBA", "P"):
        path = tmp_path / f"{mode}.png"
        Image.fromarray(rgb).convert(mode).save(path)
        np.testing.assert_array_equal(read_rgb(path), load_image(path))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match="bad.png"):
        read_rgb(tmp_path / "bad.png")
    with pytest.raises(ImageError, match="not found"):
        read_rgb(tmp_path / "missing.png")


def test_direction_with_only_skipped_images(tmp_path):
    run_dir = write_run(tmp_path / "run", [
        attack_row("mitosis/a.png", "decrease", 0.99, 0.2, 10, 12, (255, 255, 0), 30),
        skipped_row("normal/b.png", "increase", 0.4)], dataset=None)
    result = analyze_run(run_dir, figures=False)
    assert result.has_table(f"scores_{M2N}") and not result.has_table(f"scores_{N2M}")
    success = {(r[0], r[1]): r for r in result.table("success").rows}
    assert success[(N2M, "all attacked")][2] == 0
    assert f"no {N2M} image was attacked (1 skipped)" in result.table("summary").reading
