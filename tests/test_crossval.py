import csv
import json
import shutil

import pytest

from conftest import TINY_TRAINING
from tumorseg.cli import main
from tumorseg.errors import TumorsegError
from tumorseg.evaluation.crossval import fold_runs
from tumorseg.postprocessing.choice import CORE_PROBABILITY, ENHANCING_ML, ISLAND_ML, RULE_KEYS
from tumorseg.training.config import TrainConfig
from tumorseg.training.loop import train


@pytest.fixture(scope="module")
def folds(cohort, tmp_path_factory):
    """Two fold runs over the five cohort patients (no test set)."""
    root = tmp_path_factory.mktemp("cv") / "cv"
    for fold in (0, 1):
        config = TrainConfig.of(
            **{**TINY_TRAINING, "epochs": 1, "folds": 2, "fold": fold, "test_fraction": 0}
        )
        train(cohort, root / f"fold-{fold}", config, progress=False)
    return root


def test_every_patient_is_scored_once_by_a_model_that_never_saw_it(folds, capsys):
    assert main(["cv", str(folds)]) == 0
    printed = capsys.readouterr().out
    assert "5 patients, 2 folds" in printed and "dice" in printed and "hd95 mm" in printed
    # by default each fold's last.pt: its epoch was not chosen on the patients it is scored on
    assert (
        "last.pt"
        in json.loads((folds / "fold-0" / "evaluation-val-last" / "summary.json").read_text())["model"]
    )
    with open(folds / "crossval-last" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["case_id"] for r in rows) == [f"Phantom_{i:03d}" for i in range(1, 6)]
    for row in rows:
        split = json.loads((folds / f"fold-{row['fold']}" / "split.json").read_text())
        assert row["case_id"] in split["val"] and row["case_id"] not in split["train"]
    summary = json.loads((folds / "crossval-last" / "summary.json").read_text())["metrics"]["dice_WT"]
    pooled = [float(r["dice_WT"]) for r in rows]
    assert summary["mean"] == pytest.approx(sum(pooled) / len(pooled))
    assert len(summary["fold_means"]) == 2 and summary["fold_std"] >= 0
    before = (folds / "crossval-last" / "summary.json").read_text()
    stamp = (folds / "fold-0" / "evaluation-val-last" / "metrics.csv").stat().st_mtime_ns
    assert main(["cv", str(folds)]) == 0  # the folds' evaluations are newer than their models: reused
    assert (folds / "fold-0" / "evaluation-val-last" / "metrics.csv").stat().st_mtime_ns == stamp
    assert (folds / "crossval-last" / "summary.json").read_text() == before
    assert main(["cv", str(folds), "--overwrite"]) == 0
    assert (folds / "fold-0" / "evaluation-val-last" / "metrics.csv").stat().st_mtime_ns > stamp


def test_incomplete_or_mixed_folds_are_refused(folds, tmp_path):
    shutil.copytree(folds / "fold-0", tmp_path / "one" / "fold-0")
    with pytest.raises(TumorsegError, match="holds 1 fold runs"):
        fold_runs(tmp_path / "one")
    shutil.copytree(folds / "fold-0", tmp_path / "twice" / "a")
    shutil.copytree(folds / "fold-0", tmp_path / "twice" / "b")
    with pytest.raises(TumorsegError, match="also validates in"):
        fold_runs(tmp_path / "twice")


def test_folds_trained_on_the_same_splits_are_scored_as_an_ensemble(folds, tmp_path, capsys):
    twin = tmp_path / "twin"  # the same models under swapped names: matched by the patients they validate
    shutil.copytree(folds / "fold-0", twin / "fold-1")
    shutil.copytree(folds / "fold-1", twin / "fold-0")
    assert main(["cv", str(folds), "--best"]) == 0
    assert main(["cv", str(folds), str(twin), "--choose-postprocessing", "--best"]) == 0
    assert "5 patients, 2 folds" in capsys.readouterr().out
    model = json.loads((folds / "fold-0" / "evaluation-val-with-twin" / "summary.json").read_text())["model"]
    assert "ensemble of 2 models" in model and str(twin / "fold-1" / "best.pt") in model
    alone, both = (
        json.loads((folds / name / "summary.json").read_text())["metrics"]
        for name in ("crossval", "crossval-with-twin")
    )
    for key in ("dice_WT", "dice_TC", "dice_ET"):  # a model averaged with itself is that model
        assert both[key]["mean"] == pytest.approx(alone[key]["mean"], abs=1e-6)
    assert (folds / "postprocessing-with-twin.json").is_file()
    assert (folds / "postprocessing-with-twin.csv").is_file()

    first = json.loads((twin / "fold-0" / "split.json").read_text())
    moved = first["train"][0]  # another partition of the same patients: not the same folds
    for name, val in (("fold-0", [*first["val"], moved]), ("fold-1", first["train"][1:])):
        everyone = first["train"] + first["val"]
        split = {"train": [c for c in everyone if c not in val], "val": val, "test": []}
        (twin / name / "split.json").write_text(json.dumps(split))
    assert main(["cv", str(folds), str(twin), "--best"]) == 1
    assert f"{twin}: no fold validates the patients {folds / 'fold-0'} does" in capsys.readouterr().err


def test_postprocessing_is_chosen_on_out_of_fold_predictions_and_measured_apart(folds, capsys):
    assert main(["cv", str(folds), "--choose-postprocessing", "--best"]) == 0
    printed = capsys.readouterr().out
    assert "chosen:" in printed and "each fold: chosen on the other folds" in printed
    rule = json.loads((folds / "postprocessing.json").read_text())
    with open(folds / "postprocessing.csv", newline="") as handle:
        candidates = list(csv.DictReader(handle))
    assert len(candidates) == len(ISLAND_ML) * len(CORE_PROBABILITY) * len(ENHANCING_ML)
    chosen = next(row for row in candidates if all(float(row[key]) == rule[key] for key in RULE_KEYS))
    assert float(chosen["dice_mean"]) == max(float(row["dice_mean"]) for row in candidates)
    assert main(["cv", str(folds), "--postprocessing", str(folds / "postprocessing.json"), "--best"]) == 0
    assert (folds / "fold-1" / "evaluation-val-postprocessed" / "metrics.csv").is_file()
    pooled = json.loads((folds / "crossval-postprocessed" / "summary.json").read_text())["metrics"]
    mean = sum(pooled[f"dice_{region}"]["mean"] for region in ("WT", "TC", "ET")) / 3
    assert mean == pytest.approx(float(chosen["dice_mean"]), abs=1e-6)  # the same maps, scored twice
    (folds / "other.json").write_text(json.dumps({"min_island_ml": 0.5, "min_et_ml": 0.25}))
    assert (
        main(["cv", str(folds), "--postprocessing", str(folds / "other.json"), "--best"]) == 0
    )  # not reused
    model = json.loads((folds / "fold-1" / "evaluation-val-postprocessed" / "summary.json").read_text())[
        "model"
    ]
    assert "tumor islands < 0.5 mL removed; enhancing tumor < 0.25 mL" in model


def test_best_and_last_are_scored_apart(folds, capsys, tmp_path):
    assert main(["cv", str(folds), "--last", "--choose-postprocessing"]) == 0  # --last: the default, named
    assert "5 patients, 2 folds" in capsys.readouterr().out
    for fold in ("fold-0", "fold-1"):
        summary = json.loads((folds / fold / "evaluation-val-last" / "summary.json").read_text())
        assert "last.pt" in summary["model"]
    assert (folds / "crossval-last" / "metrics.csv").is_file()
    assert (folds / "postprocessing-last.json").is_file()
    shutil.copytree(folds, tmp_path / "cv")
    (tmp_path / "cv" / "fold-1" / "last.pt").unlink()
    assert main(["cv", str(tmp_path / "cv")]) != 0
    assert "fold-1: no last.pt to score" in capsys.readouterr().err
    assert main(["cv", str(tmp_path / "cv"), "--best"]) == 0  # best.pt is there
    assert (
        "best.pt"
        in json.loads((tmp_path / "cv" / "fold-1" / "evaluation-val" / "summary.json").read_text())["model"]
    )


def test_a_coarse_search_is_scored_apart_from_every_slice(folds, capsys):
    assert main(["cv", str(folds), "--best"]) == 0
    every_slice = (folds / "crossval" / "summary.json").read_text()
    assert main(["cv", str(folds), "--coarse-step", "2", "--best"]) == 0
    summary = json.loads((folds / "fold-0" / "evaluation-val-coarse-step-2" / "summary.json").read_text())
    assert "slices searched every 2" in summary["model"]
    assert (folds / "crossval-coarse-step-2" / "metrics.csv").is_file()
    assert (folds / "crossval" / "summary.json").read_text() == every_slice  # not overwritten


def test_cv_says_its_folds_are_grouped_by_site_only_when_no_fold_saw_its_sites(tmp_path, capsys):
    from tumorseg.data.prepare import prepare_store
    from tumorseg.data.synth import synthesize

    cases = tmp_path / "cases"
    synthesize(cases, 4, shape=(32, 32, 12), seed=11, progress=False)
    names = ["Brats18_CBICA_AAA_1", "Brats18_CBICA_AAB_1", "Brats18_TCIA01_001_1", "Brats18_2013_1_1"]
    for number, name in enumerate(names, start=1):
        folder = cases / f"Phantom_{number:03d}"
        for path in folder.iterdir():
            path.rename(folder / path.name.replace(folder.name, name))
        folder.rename(cases / name)
    prepare_store([cases], tmp_path / "store.h5", progress=False)
    for grouping in ("site", ""):
        root = tmp_path / f"cv-{grouping or 'shuffled'}"
        for fold in (0, 1):
            config = TrainConfig.of(**TINY_TRAINING, folds=2, fold=fold, test_fraction=0, group_by=grouping)
            train(tmp_path / "store.h5", root / f"fold-{fold}", config, progress=False)
        assert main(["cv", str(root)]) == 0
        printed = capsys.readouterr().out
        assert ("grouped by site" in printed) == (grouping == "site"), printed
        assert ("per site: CBICA (2)" in printed) == (grouping == "site"), printed
