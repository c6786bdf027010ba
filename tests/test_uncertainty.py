"""Uncertainty: a voxel-wise map from predict, and evaluate's check that it means something."""

import json

import nibabel as nib
import numpy as np
import pytest

from tumorseg.evaluation.evaluate import evaluate_run
from tumorseg.evaluation.report import build_report
from tumorseg.inference.predict import predict
from tumorseg.inference.segmenter import Segmenter
from tumorseg.labels import Target
from tumorseg.rundir import RunDir


def test_uncertainty_is_one_bit_at_a_coin_flip_and_none_when_sure():
    regions = Target("regions").uncertainty(np.array([[[0.5], [0.0], [1.0]], [[0.0], [1.0], [0.0]]]))
    np.testing.assert_allclose(regions, [[1.0], [0.0]], atol=1e-5)
    labels = Target("labels").uncertainty(np.array([[[0.25], [0.25], [0.25], [0.25]]]))
    np.testing.assert_allclose(labels, [[1.0]], atol=1e-5)


def test_predicted_map_lies_on_the_input_grid_and_is_higher_where_wrong(segmenting_run, cohort, tmp_path):
    cases = cohort.parent / "cases"
    wrong, right = [], []
    for folder in sorted(cases.iterdir()):
        case_id = folder.name
        out = tmp_path / f"{case_id}.nii.gz"
        result = predict(folder, out, lambda: Segmenter(segmenting_run), uncertainty=True, progress=False)
        source = nib.load(folder / f"{case_id}_flair.nii.gz")
        uncertainty = nib.load(tmp_path / f"{case_id}_uncertainty.nii.gz")
        assert uncertainty.shape == source.shape
        np.testing.assert_array_equal(uncertainty.affine, source.affine)
        values = np.asarray(uncertainty.dataobj)
        assert values.min() >= 0 and values.max() <= 1
        predicted = np.asarray(nib.load(out).dataobj)
        reference = np.asarray(nib.load(folder / f"{case_id}_seg.nii.gz").dataobj)
        errors = predicted != reference
        wrong.append(values[errors])
        right.append(values[~errors])
        recorded = json.loads((tmp_path / f"{case_id}_volumes.json").read_text())[case_id]
        assert recorded["uncertain_mL"] == pytest.approx(result.volumes[case_id]["uncertain_mL"])
    assert np.concatenate(wrong).mean() > 3 * np.concatenate(right).mean()


def test_evaluate_checks_the_uncertainty(segmenting_run, cohort, tmp_path):
    out = tmp_path / "evaluation"
    evaluate_run(
        RunDir(segmenting_run), Segmenter(segmenting_run), cohort, split="train", out=out, progress=False
    )
    check = json.loads((out / "uncertainty.json").read_text())
    rates = [r for r in check["error_rate"] if r is not None]
    assert rates[-1] > rates[0]  # the most uncertain voxels are wrong more often than the surest
    assert sum(check["voxels"]) > 0 and (out / "uncertainty.png").stat().st_size > 0
    assert len(check["patients"]) == 3 and check["pearson_r"] is None or -1 <= check["pearson_r"] <= 1
    page = build_report(segmenting_run, out, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<h2>Uncertainty</h2>" in page
