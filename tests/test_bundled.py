"""The model that ships with tumorseg, on a real BraTS patient (skipped without the shared cases).

The patient is one of the model's validation patients: it chose the epoch, never a weight.
"""

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to, resample_to_output

from conftest import tumorseg
from tumorseg.checkpoint import load_checkpoint
from tumorseg.data.case import labels_to_internal
from tumorseg.evaluation.metrics import region_dice
from tumorseg.inference.bundle import BUNDLED_MODEL
from tumorseg.labels import REGION_NAMES

#: Per region, about the 10th percentile of per-patient Dice in the 5-fold cross-validation of
#: the recipe (README): a patient the model did not train on falls below it about one time in
#: ten, and a model broken in a way that matters (orientation, normalization, label order,
#: fp16 weights) falls far below it.
FLOOR = {"WT": 0.65, "TC": 0.5, "ET": 0.5}
#: Per region, the Dice of a prediction at 2 mm against the same model's at 1 mm: the resampling
#: benchmark measured 0.894 / 0.865 / 0.799 over five patients (README); 0.1 below that.
RESAMPLED_FLOOR = {"WT": 0.79, "TC": 0.76, "ET": 0.69}


def test_the_bundled_model_is_small_and_says_what_it_learned_from():
    assert BUNDLED_MODEL.stat().st_size < 10e6
    state = load_checkpoint(BUNDLED_MODEL)
    assert len(state["split"]["train"]) + len(state["split"]["val"]) == 28
    assert state["model_config"]["modality_dropout"] > 0  # it segments cases lacking sequences


@pytest.fixture(scope="module")
def patient(real_root, tmp_path_factory):
    """A validation patient of the bundled model, segmented by `tumorseg predict` without --model."""
    case_id = load_checkpoint(BUNDLED_MODEL)["split"]["val"][0]
    out = tmp_path_factory.mktemp("bundled") / "seg.nii.gz"
    result = tumorseg("predict", real_root / case_id, "--out", out)
    assert result.returncode == 0, result.stderr
    return real_root / case_id, nib.load(out)


def classes(image: nib.Nifti1Image) -> np.ndarray:
    return labels_to_internal(np.asarray(image.dataobj), "brats", image.get_filename() or "labels")


def test_predict_without_a_model_segments_a_real_patient(patient):
    folder, predicted = patient
    reference = nib.load(folder / f"{folder.name}_seg.nii.gz")
    assert predicted.shape == reference.shape and np.allclose(predicted.affine, reference.affine)
    dice = dict(zip(REGION_NAMES, region_dice(classes(predicted), classes(reference)), strict=True))
    assert all(dice[name] >= FLOOR[name] for name in REGION_NAMES), dice


def test_the_patient_at_2_mm_is_segmented_on_its_own_grid_as_at_1_mm(patient, tmp_path):
    folder, at_1mm = patient
    coarse = tmp_path / folder.name
    coarse.mkdir()
    for sequence in ("flair", "t1", "t1ce", "t2"):
        name = f"{folder.name}_{sequence}.nii.gz"
        image = nib.load(folder / name)
        image = nib.Nifti1Image(np.asarray(image.dataobj, dtype=np.float32), image.affine)
        nib.save(resample_to_output(image, (2.0, 2.0, 2.0), order=1), coarse / name)
    result = tumorseg("predict", coarse, "--out", tmp_path / "seg.nii.gz")
    assert result.returncode == 0 and "resampled from 2 x 2 x 2 mm" in result.stdout, result.stderr
    at_2mm = nib.load(tmp_path / "seg.nii.gz")
    grid = nib.load(coarse / f"{folder.name}_flair.nii.gz")
    assert at_2mm.shape == grid.shape and np.allclose(at_2mm.affine, grid.affine)
    expected = resample_from_to(at_1mm, grid, order=0)
    dice = dict(zip(REGION_NAMES, region_dice(classes(at_2mm), classes(expected)), strict=True))
    assert all(dice[name] >= RESAMPLED_FLOOR[name] for name in REGION_NAMES), dice
