"""tumorseg's metrics against the official BraTS scorer (brats-evaluation 0.0.10 on panoptica 2.1.7),
patient by patient, on real predictions: the shipped model's on real cases, and the same with the
enhancing tumor dropped, with a false lesion added, and against a reference without enhancing tumor.

The scorer runs in its own interpreter (it pins NumPy below tumorseg's): $TUMORSEG_OFFICIAL_PYTHON,
else .venv-official/bin/python, which `make official` (and CI) installs.
"""

import json
import math
import os
import subprocess

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO
from tumorseg.labels import REGIONS, to_internal
from tumorseg.metrics import EMPTY_HD95, distance_scores, lesion_scores

CASES = ("Brats18_2013_20_1", "Brats18_TCIA10_637_1")
SPACING = (1.0, 1.0, 1.0)


def official_python() -> str:
    python = os.environ.get("TUMORSEG_OFFICIAL_PYTHON", str(REPO / ".venv-official/bin/python"))
    if not os.path.isfile(python):
        pytest.skip(f"the official BraTS scorer is not installed ({python}; `make official` installs it)")
    return python


def pairs(real_root, folder) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Real predictions of the shipped model and variants of them, written for the scorer."""
    from tumorseg.inference.predict import predict
    from tumorseg.inference.segmenter import Segmenter

    cases = folder / "cases"
    cases.mkdir()
    for case in CASES:
        (cases / case).symlink_to(real_root / case)
    predict(cases, folder / "predicted", Segmenter, progress=False)
    made = {}
    rng = np.random.default_rng(0)
    for case in CASES:
        image = nib.load(real_root / case / f"{case}_seg.nii.gz")
        reference = np.asarray(image.dataobj).astype(np.uint8)
        predicted = np.asarray(nib.load(folder / "predicted" / f"{case}.nii.gz").dataobj).astype(np.uint8)
        false = predicted.copy()
        z, y, x = np.argwhere(reference == 0)[rng.integers(np.count_nonzero(reference == 0))]
        false[z : z + 4, y : y + 4, x : x + 3] = 4
        variants = {
            "as-predicted": (predicted, reference),
            "no-enhancing": (np.where(predicted == 4, 1, predicted), reference),
            "false-lesion": (false, reference),
            "reference-without-enhancing": (predicted, np.where(reference == 4, 1, reference)),
        }
        for name, (prediction, truth) in variants.items():
            for role, labels in (("pred", prediction), ("ref", truth)):
                nib.save(
                    nib.Nifti1Image(labels.astype(np.uint8), image.affine),
                    folder / f"{case}-{name}__{role}.nii.gz",
                )
            made[f"{case}-{name}"] = (to_internal(prediction), to_internal(truth))
    return made


def test_scores_agree_with_the_official_scorer_patient_by_patient(real_root, tmp_path):
    python = official_python()
    made = pairs(real_root, tmp_path)
    run = subprocess.run([python, str(REPO / "tests/official_scorer.py"), str(tmp_path)], capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    official = json.loads(run.stdout[run.stdout.index("JSON:") + 5 :])
    assert set(official) == set(made)
    for name, (prediction, reference) in made.items():
        for region in ("WT", "TC", "ET"):
            theirs = official[name][region.lower()]
            predicted, truth = np.isin(prediction, REGIONS[region]), np.isin(reference, REGIONS[region])
            ours = distance_scores(predicted, truth, SPACING)
            lesions = lesion_scores(predicted, truth, SPACING)
            where = f"{name} {region}"
            assert (lesions.found, lesions.false, lesions.missed) == (
                theirs["tp"],
                theirs["fp"],
                theirs["fn"],
            ), where
            overlap = np.count_nonzero(predicted & truth)
            dice = 2 * overlap / max(np.count_nonzero(predicted) + np.count_nonzero(truth), 1)
            assert dice == pytest.approx(theirs["global_bin_dsc"], abs=1e-6), where
            if math.isinf(theirs["global_bin_hd95"]):  # one side empty: BraTS scores the largest distance
                assert ours["hd95"] == EMPTY_HD95 and ours["nsd"] == 0, where
                continue
            assert ours["hd95"] == pytest.approx(theirs["global_bin_hd95"], abs=1e-6), where
            assert ours["nsd"] == pytest.approx(theirs["global_bin_nsd"], abs=1e-6), where
            if lesions.found:
                assert np.mean(lesions.matched_dice) == pytest.approx(theirs["sq_dsc"], abs=1e-6), where
                assert np.mean(lesions.matched_hd95) == pytest.approx(theirs["sq_hd95"], abs=1e-6), where
