import csv
import json
import shutil

import pytest

from conftest import TINY_TRAINING
from tumorseg.cli import main
from tumorseg.errors import TumorsegError
from tumorseg.evaluation.crossval import fold_runs
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
    with open(folds / "crossval" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["case_id"] for r in rows) == [f"Phantom_{i:03d}" for i in range(1, 6)]
    for row in rows:
        split = json.loads((folds / f"fold-{row['fold']}" / "split.json").read_text())
        assert row["case_id"] in split["val"] and row["case_id"] not in split["train"]
    summary = json.loads((folds / "crossval" / "summary.json").read_text())["metrics"]["dice_WT"]
    pooled = [float(r["dice_WT"]) for r in rows]
    assert summary["mean"] == pytest.approx(sum(pooled) / len(pooled))
    assert len(summary["fold_means"]) == 2 and summary["fold_std"] >= 0
    before = (folds / "crossval" / "summary.json").read_text()
    stamp = (folds / "fold-0" / "evaluation-val" / "metrics.csv").stat().st_mtime_ns
    assert main(["cv", str(folds)]) == 0  # the folds' evaluations are newer than their models: reused
    assert (folds / "fold-0" / "evaluation-val" / "metrics.csv").stat().st_mtime_ns == stamp
    assert (folds / "crossval" / "summary.json").read_text() == before
    assert main(["cv", str(folds), "--overwrite"]) == 0
    assert (folds / "fold-0" / "evaluation-val" / "metrics.csv").stat().st_mtime_ns > stamp


def test_incomplete_or_mixed_folds_are_refused(folds, tmp_path):
    shutil.copytree(folds / "fold-0", tmp_path / "one" / "fold-0")
    with pytest.raises(TumorsegError, match="holds 1 fold runs"):
        fold_runs(tmp_path / "one")
    shutil.copytree(folds / "fold-0", tmp_path / "twice" / "a")
    shutil.copytree(folds / "fold-0", tmp_path / "twice" / "b")
    with pytest.raises(TumorsegError, match="also validates in"):
        fold_runs(tmp_path / "twice")
