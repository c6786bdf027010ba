import json
import shutil

import numpy as np
import pytest

from tumorseg.cli import main
from tumorseg.data.store import Store
from tumorseg.errors import TumorsegError
from tumorseg.inference.segmenter import Segmenter
from tumorseg.postprocessing import PostProcessing


@pytest.fixture(scope="module")
def volume(cohort):
    with Store(cohort) as store:
        return store.read_volume(store.case_ids[1])[0]


@pytest.mark.parametrize("tta", [False, True])
def test_an_ensemble_averages_its_models_probabilities(trained_run, segmenting_run, volume, tta):
    members = [Segmenter(run, tta=tta).probabilities(volume) for run in (trained_run, segmenting_run)]
    ensemble = Segmenter([trained_run, segmenting_run], tta=tta)
    assert len(ensemble.members.networks) == 2 and "ensemble of 2 models" in ensemble.description
    np.testing.assert_allclose(ensemble.probabilities(volume), (members[0] + members[1]) / 2, atol=1e-6)


def test_a_folder_of_runs_is_the_ensemble_of_its_runs(trained_run, segmenting_run, tmp_path):
    for name, run in (("fold-0", trained_run), ("fold-1", segmenting_run)):
        shutil.copytree(run, tmp_path / "cv" / name)
    ensemble = Segmenter(tmp_path / "cv")
    assert ensemble.paths == [tmp_path / "cv" / f"fold-{i}" / "best.pt" for i in (0, 1)]


def test_members_must_agree_on_post_processing(segmenting_run, tmp_path):
    (tmp_path / "rule.json").write_text(json.dumps({"min_et_ml": 0.5}))
    assert main(["pack", str(segmenting_run), "--out", str(tmp_path / "a.pt")]) == 0
    assert main(["pack", str(segmenting_run), "--out", str(tmp_path / "b.pt"), "--postprocessing",
                 str(tmp_path / "rule.json")]) == 0  # fmt: skip
    with pytest.raises(TumorsegError, match="another post-processing"):
        Segmenter([tmp_path / "a.pt", tmp_path / "b.pt"])
    chosen = PostProcessing(min_island_ml=1.0)
    assert Segmenter([tmp_path / "a.pt", tmp_path / "b.pt"], postprocessing=chosen).postprocessing == chosen


def test_predict_and_evaluate_take_several_models(trained_run, segmenting_run, cohort, tmp_path, capsys):
    case = cohort.parent / "cases" / "Phantom_002"
    models = ["--model", str(trained_run), "--model", str(segmenting_run)]
    assert main(["predict", *models, str(case), "--out", str(tmp_path / "seg.nii.gz")]) == 0
    assert (tmp_path / "seg.nii.gz").is_file()
    assert main(["evaluate", str(segmenting_run), "--models", str(trained_run), str(segmenting_run)]) == 1
    assert "--models needs --out" in capsys.readouterr().err
    out = tmp_path / "scores"
    argv = [
        "evaluate",
        str(segmenting_run),
        "--models",
        str(trained_run),
        str(segmenting_run),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"].startswith("ensemble of 2 models") and summary["cases"] == 1
