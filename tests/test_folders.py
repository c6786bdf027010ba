"""evaluate on label maps on disk: a folder of predictions against a folder of references."""

import csv
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from conftest import tumorseg
from tumorseg.errors import TumorsegError
from tumorseg.evaluation.evaluate import evaluate_run
from tumorseg.evaluation.folders import evaluate_folders
from tumorseg.inference.predict import predict
from tumorseg.inference.segmenter import Segmenter
from tumorseg.rundir import RunDir


@pytest.fixture(scope="module")
def scored(segmenting_run, cohort, tmp_path_factory):
    """A model that segments, its run evaluation on the validation patients, their predictions
    written by predict, and a folder of their reference label maps."""
    root, run = tmp_path_factory.mktemp("folders"), segmenting_run
    evaluate_run(
        RunDir(run), Segmenter(run), cohort, split="val", out=root / "evaluation-val", progress=False
    )
    val = json.loads((run / "split.json").read_text())["val"]
    cases, references = cohort.parent / "cases", root / "references"
    references.mkdir()
    (root / "predictions").mkdir()
    for case_id in val:
        shutil.copy(cases / case_id / f"{case_id}_seg.nii.gz", references / f"{case_id}_seg.nii.gz")
        predict(
            cases / case_id,
            root / "predictions" / f"{case_id}.nii.gz",
            lambda: Segmenter(run),
            progress=False,
        )
    return run, root / "predictions", references


def rows(path):
    with open(path, newline="") as handle:
        return {row["case_id"]: row for row in csv.DictReader(handle)}


def test_folder_scores_reproduce_the_run_evaluation(scored, tmp_path):
    run, predictions, references = scored
    result = evaluate_folders(predictions, references, tmp_path / "scores", progress=False)
    by_run, by_folder = (
        rows(predictions.parent / "evaluation-val" / "metrics.csv"),
        rows(tmp_path / "scores" / "metrics.csv"),
    )
    assert sorted(by_run) == sorted(by_folder)
    assert any(float(row["dice_WT"]) > 0.5 for row in by_run.values())  # a model that segments
    for case_id, row in by_run.items():
        for key, value in row.items():
            if key != "case_id":
                assert float(by_folder[case_id][key]) == pytest.approx(float(value), rel=1e-9, abs=1e-12), key
    for name in ("classification_report.txt", "confusion_matrix.csv"):
        assert (tmp_path / "scores" / name).read_text() == (
            predictions.parent / "evaluation-val" / name
        ).read_text()
    assert (tmp_path / "scores" / "overlays.png").stat().st_size > 0 and result.summary["dice_WT"][
        "n"
    ] == len(by_run)


def test_case_folders_as_references_and_2023_labels(scored, cohort, tmp_path):
    run, predictions, _ = scored
    val = json.loads((run / "split.json").read_text())["val"]
    references = tmp_path / "references"
    for case_id in val:
        shutil.copytree(cohort.parent / "cases" / case_id, references / case_id)
    relabeled = tmp_path / "predictions"
    relabeled.mkdir()
    for path in predictions.glob("*.nii.gz"):  # the same maps written with BraTS 2023 values
        image = nib.load(path)
        values = np.asarray(image.dataobj)
        nib.save(
            nib.Nifti1Image(np.where(values == 4, 3, values).astype(np.uint8), image.affine),
            relabeled / path.name,
        )
    (relabeled / f"{val[0]}_probabilities.nii.gz").write_bytes(b"ignored: a companion")
    evaluate_folders(relabeled, references, tmp_path / "a", labels="auto", progress=False)
    evaluate_folders(predictions, references, tmp_path / "b", labels="auto", progress=False)
    assert rows(tmp_path / "a" / "metrics.csv") == rows(tmp_path / "b" / "metrics.csv")


def test_unmatched_cases_and_other_grids_are_named(scored, tmp_path):
    _, predictions, references = scored
    extra = tmp_path / "extra"
    shutil.copytree(predictions, extra)
    shutil.copy(sorted(extra.glob("*.nii.gz"))[0], extra / "Another_1.nii.gz")
    with pytest.raises(
        TumorsegError, match="extra: 1 cases have no counterpart in the other folder, e.g. Another_1"
    ):
        evaluate_folders(extra, references, tmp_path / "out", progress=False)
    shifted = tmp_path / "shifted"
    shutil.copytree(predictions, shifted)
    path = sorted(shifted.glob("*.nii.gz"))[0]
    image = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine @ np.diag([2, 1, 1, 1])), path)
    with pytest.raises(TumorsegError, match="affine differs"):
        evaluate_folders(shifted, references, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "metrics.csv").exists()


def test_cli_folder_evaluation(scored, tmp_path):
    _, predictions, references = scored
    half = tumorseg("evaluate", "--predictions", predictions, "--out", tmp_path / "x")
    assert half.returncode != 0 and "--references DIR" in half.stderr
    done = tumorseg(
        "evaluate", "--predictions", predictions, "--references", references, "--out", tmp_path / "s"
    )
    assert done.returncode == 0, done.stderr
    assert (
        f"{len(list(references.iterdir()))} cases, mean ± std over patients" in done.stdout
        and (tmp_path / "s" / "metrics.csv").exists()
    )
