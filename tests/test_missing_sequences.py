"""Cases that lack sequences: modality dropout in training, and predict/evaluate without them."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from conftest import TINY_TRAINING, tumorseg
from tumorseg.data.case import MODALITIES
from tumorseg.errors import TumorsegError
from tumorseg.inference.predict import files_from_paths, predict
from tumorseg.inference.segmenter import Segmenter

REAL_CASE = "Brats18_CBICA_AME_1"


@pytest.fixture(scope="module")
def dropout_run(cohort, tmp_path_factory):
    """A tiny model trained with modality dropout (one epoch: these tests check plumbing)."""
    from tumorseg.training.config import TrainConfig
    from tumorseg.training.loop import train

    run = tmp_path_factory.mktemp("dropout") / "run"
    config = TrainConfig.of(**{**TINY_TRAINING, "epochs": 1, "modality_dropout": 0.3})
    train(cohort, run, config, progress=False)
    return run


def without(folder, modality, tmp_path):
    """A copy of a case folder lacking one sequence's file."""
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    (target,) = copy.glob(f"*_{modality}.nii*")
    target.unlink()
    return copy


def test_dropout_is_recorded_in_the_model(dropout_run):
    assert Segmenter(dropout_run).config.modality_dropout == 0.3


@pytest.mark.parametrize("missing", MODALITIES)
def test_predict_without_one_sequence_on_a_real_case(dropout_run, real_root, tmp_path, missing):
    folder = without(real_root / REAL_CASE, missing, tmp_path)
    out = tmp_path / "seg.nii.gz"
    result = predict(folder, out, lambda: Segmenter(dropout_run), progress=False)
    reference = nib.load(real_root / REAL_CASE / f"{REAL_CASE}_t1.nii.gz")
    written = nib.load(out)
    assert written.shape == reference.shape == (240, 240, 155)
    np.testing.assert_array_equal(written.affine, reference.affine)
    assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= {0, 1, 2, 4}
    recorded = json.loads((tmp_path / "seg_volumes.json").read_text())[REAL_CASE]
    assert recorded["missing"] == [missing] == result.volumes[REAL_CASE]["missing"]


def test_a_missing_sequence_enters_as_a_zero_channel(dropout_run, phantoms, tmp_path):
    """Leaving T1ce out gives exactly what zeroing its channel of the full case gives."""
    case = phantoms / "Phantom_003"
    files = {m: case / f"Phantom_003_{m}.nii.gz" for m in MODALITIES}
    lacking = files_from_paths(files["flair"], files["t1"], None, files["t2"])
    assert lacking.absent == ("t1ce",)
    predict(lacking, tmp_path / "lacking.nii.gz", lambda: Segmenter(dropout_run), progress=False)
    zeroed = Segmenter(dropout_run, absent=("t1ce",))
    predict(case, tmp_path / "zeroed.nii.gz", lambda: zeroed, progress=False)
    full = predict(case, tmp_path / "full.nii.gz", lambda: Segmenter(dropout_run), progress=False)
    lacking_labels = np.asarray(nib.load(tmp_path / "lacking.nii.gz").dataobj)
    np.testing.assert_array_equal(lacking_labels, np.asarray(nib.load(tmp_path / "zeroed.nii.gz").dataobj))
    assert "missing" not in full.volumes["Phantom_003"]


def test_a_model_without_dropout_refuses_and_writes_nothing(trained_run, phantoms, tmp_path):
    folder = without(phantoms / "Phantom_001", "t1ce", tmp_path)
    out = tmp_path / "seg.nii.gz"
    with pytest.raises(TumorsegError, match=r"T1CE missing, and .* trained on all four sequences only"):
        predict(folder, out, lambda: Segmenter(trained_run), progress=False)
    assert not out.exists() and not (tmp_path / "seg_volumes.json").exists()
    with pytest.raises(TumorsegError, match="no --modality-dropout"):
        Segmenter(trained_run, absent=("flair",))


@pytest.mark.parametrize(("given", "not_shown"), [(("t1", "t2"), ["TC", "ET"]), (("t1", "t1ce"), ["WT"])])
def test_cli_predict_with_some_files_left_out(dropout_run, phantoms, tmp_path, given, not_shown):
    """The label map is written; a region the sequences given cannot show gets no volume (edema
    shows on FLAIR and T2, the core and the enhancing tumor on T1ce), the others do."""
    case = phantoms / "Phantom_002"
    out = tmp_path / "seg.nii.gz"
    files = [a for m in given for a in (f"--{m}", case / f"Phantom_002_{m}.nii.gz")]
    result = tumorseg("predict", "--model", dropout_run, *files, "--out", out, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    missing = [m for m in MODALITIES if m not in given]
    note = f"(without {', '.join(missing).upper()}; {', '.join(not_shown)} not shown by the sequences given)"
    assert note in result.stdout
    assert nib.load(out).shape == nib.load(case / "Phantom_002_t1.nii.gz").shape
    [row] = [line.split() for line in result.stdout.splitlines() if line.startswith("Phantom_002")]
    for region, cell in zip(("WT", "TC", "ET"), row[1:4], strict=True):
        assert (cell == "-") == (region in not_shown)
    recorded = json.loads((tmp_path / "seg_volumes.json").read_text())["Phantom_002"]
    assert recorded["not_shown"] == not_shown and recorded["missing"] == missing
    assert [recorded[r] is None for r in ("WT", "TC", "ET")] == [r in not_shown for r in ("WT", "TC", "ET")]
    nothing = tumorseg("predict", "--model", dropout_run, "--out", tmp_path / "x.nii.gz")
    assert nothing.returncode != 0 and "give INPUT" in nothing.stderr


def test_evaluate_without_a_sequence_goes_to_its_own_folder(dropout_run, trained_run):
    full = tumorseg("evaluate", dropout_run, "--split", "val", "--device", "cpu")
    lacking = tumorseg("evaluate", dropout_run, "--split", "val", "--missing", "t1ce", "--device", "cpu")
    assert full.returncode == 0 and lacking.returncode == 0, lacking.stderr
    summaries = [
        json.loads((dropout_run / name / "summary.json").read_text())
        for name in ("evaluation-val", "evaluation-val-without-t1ce")
    ]
    assert "without T1CE" in summaries[1]["model"] and "without" not in summaries[0]["model"]
    refused = tumorseg("evaluate", trained_run, "--split", "val", "--missing", "t2", "--device", "cpu")
    assert refused.returncode != 0 and "no --modality-dropout" in refused.stderr
    assert not (trained_run / "evaluation-val-without-t2").exists()


def test_t1_alone_is_refused_by_any_model_and_nothing_is_written(dropout_run, phantoms, tmp_path):
    """No tumor region shows on T1 alone; the file given is named, nothing is written."""
    case = phantoms / "Phantom_001"
    t1 = case / "Phantom_001_t1.nii.gz"
    out = tmp_path / "seg.nii.gz"
    with pytest.raises(TumorsegError, match=r"Phantom_001_t1.nii.gz: only T1 given, on which no tumor"):
        predict(files_from_paths(None, t1, None, None), out, lambda: Segmenter(dropout_run), progress=False)
    assert not list(tmp_path.iterdir())
    with pytest.raises(TumorsegError, match="only T1 given"):
        Segmenter(dropout_run, absent=("flair", "t1ce", "t2"))
