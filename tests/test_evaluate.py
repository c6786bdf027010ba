import csv
import json
import shutil
import subprocess

import numpy as np
import pytest

from tumorseg.cli import main
from tumorseg.data.store import Store
from tumorseg.errors import TumorsegError
from tumorseg.evaluation.evaluate import evaluate_run
from tumorseg.evaluation.report import build_report
from tumorseg.inference.segmenter import Segmenter
from tumorseg.rundir import RunDir


@pytest.fixture(scope="module")
def evaluated(trained_run, cohort):
    evaluate_run(RunDir(trained_run), Segmenter(trained_run), cohort, split="val", progress=False)
    return trained_run / "evaluation-val"


def test_metrics_match_an_independent_computation(evaluated, trained_run, cohort):
    with open(evaluated / "metrics.csv", newline="") as handle:
        rows = {row["case_id"]: row for row in csv.DictReader(handle)}
    val = json.loads((trained_run / "split.json").read_text())["val"]
    assert sorted(rows) == sorted(val)
    segmenter = Segmenter(trained_run)
    with Store(cohort) as store:
        for case_id in val:
            image, reference = store.read_volume(case_id)
            prediction = segmenter.classes(segmenter.probabilities(image))
            for region, members in {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}.items():
                p, r = np.isin(prediction, members), np.isin(reference, members)
                expected = 1.0 if not (p.any() or r.any()) else 2 * (p & r).sum() / (p.sum() + r.sum())
                assert float(rows[case_id][f"dice_{region}"]) == pytest.approx(expected)


def test_summary_report_and_figures(evaluated):
    summary = json.loads((evaluated / "summary.json").read_text())
    assert summary["split"] == "val" and summary["cases"] == 1
    stats = summary["metrics"]["dice_WT"]
    assert stats["q1"] <= stats["median"] <= stats["q3"]
    text = (evaluated / "classification_report.txt").read_text()
    for word in (
        "precision",
        "recall",
        "f1",
        "support",
        "background",
        "NCR/NET",
        "edema",
        "enhancing",
        "macro avg",
    ):
        assert word in text
    with open(evaluated / "confusion_matrix.csv", newline="") as handle:
        confusion = [[int(v) for v in list(row.values())[1:]] for row in csv.DictReader(handle)]
    with open(evaluated / "classification_report.csv", newline="") as handle:
        support = {row["class"]: int(row["support"]) for row in csv.DictReader(handle)}
    assert [sum(row) for row in confusion] == [
        support[n] for n in ("background", "NCR/NET", "edema", "enhancing")
    ]
    for name in ("boxplots.png", "overlays.png", "confusion_matrix.png"):
        assert (evaluated / name).stat().st_size > 10_000


def test_html_report_renders_in_headless_chromium(evaluated, trained_run, tmp_path):
    report = build_report(trained_run, evaluated)
    page = report.read_text()
    assert page.count("data:image/png;base64,") == 6  # curves 2, box plots, confusion, overlays, uncertainty
    assert "Per-voxel classification report" in page and "hd95 (mm)" in page and "Confusion matrix" in page
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (.ci/run installs it)")
    shot = tmp_path / "report.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1200,3000", report.as_uri()],
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (3000, 1200)
    # the page drew text and figures: far from a blank white screen
    assert (pixels[..., :3] < 0.5).mean() > 0.01 and pixels[..., :3].std() > 0.1


def test_evaluate_cli_and_errors(trained_run, cohort, tmp_path, capsys):
    assert (
        main(
            [
                "evaluate",
                str(trained_run),
                "--data",
                str(cohort),
                "--split",
                "test",
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "1 test patients" in out and "hd95 mm" in out and "dice" in out
    with pytest.raises(TumorsegError, match="not a run directory"):
        build_report(tmp_path)
    (tmp_path / "run").mkdir()
    shutil.copy(trained_run / "best.pt", tmp_path / "run" / "best.pt")
    with pytest.raises(TumorsegError, match="no split.json"):
        evaluate_run(RunDir(tmp_path / "run"), Segmenter(tmp_path / "run"), cohort)


def test_validation_dice_of_best_pt_is_what_evaluate_reports(segmenting_run, cohort, tmp_path):
    """Training validates through the same whole-volume segmentation that evaluation uses (here
    with another batch size), so best.pt's recorded validation Dice is what evaluate reports."""
    import torch

    run = segmenting_run
    recorded = torch.load(run / "best.pt", weights_only=True)["metrics"]
    assert recorded["val_dice_WT"] > 0.5  # a model that segments, so the comparison means something
    result = evaluate_run(
        RunDir(run), Segmenter(run, batch_size=32), cohort, split="val", out=tmp_path / "e", progress=False
    )
    for region in ("WT", "TC", "ET"):
        assert result.summary[f"dice_{region}"]["mean"] == pytest.approx(
            recorded[f"val_dice_{region}"], abs=1e-12
        )
        assert result.summary[f"iou_{region}"]["mean"] == pytest.approx(
            recorded[f"val_iou_{region}"], abs=1e-12
        )


def test_report_rough_edges(evaluated, trained_run, tmp_path):
    """Counts print as counts, wide tables scroll, the model evaluated is named, and the
    environment names the device used."""
    page = build_report(trained_run, evaluated, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "0.0000</td>" not in page.split("Confusion matrix")[1].split("<img")[0]
    assert page.count('<div class="scroll">') == 3
    assert "Model evaluated: " in page and "best.pt (epoch " in page
    environment = json.loads((trained_run / "environment.json").read_text())
    assert environment["device"] == "cpu" and environment["processor"]


def test_best_median_and_worst_are_distinct_patients():
    from tumorseg.evaluation.evaluate import overlay_choices

    def rows(*dices):
        return [{"case_id": f"c{i}", "dice_WT": d, "dice_TC": d, "dice_ET": d} for i, d in enumerate(dices)]

    assert [c for c, _ in overlay_choices(rows(0.5))] == ["c0"]
    assert [c for c, _ in overlay_choices(rows(0.2, 0.9))] == ["c1", "c0"]
    chosen = overlay_choices(rows(0.2, 0.9, 0.5, 0.7))
    assert [c for c, _ in chosen] == ["c1", "c3", "c0"]
    assert all("mean Dice of WT, TC, ET" in title for _, title in chosen)


def test_json_files_hold_no_float_noise(tmp_path):
    from tumorseg.files import write_json

    write_json(tmp_path / "v.json", {"WT": 14.963000000000001, "all": [0.1 + 0.2], "n": 3})
    assert json.loads((tmp_path / "v.json").read_text()) == {"WT": 14.963, "all": [0.3], "n": 3}
