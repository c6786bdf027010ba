"""3D: patches from the store, a 3D Attention U-Net through train, resume, evaluate, predict, ONNX."""

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import TINY_TRAINING
from tumorseg.checkpoint import load_checkpoint
from tumorseg.cli import main
from tumorseg.data.patches import PatchDataset
from tumorseg.data.store import Store
from tumorseg.errors import TumorsegError
from tumorseg.inference.sliding_window import segment_patches
from tumorseg.training.config import TrainConfig
from tumorseg.training.loop import train

PATCH = [8, 16, 16]
TINY_3D = {**TINY_TRAINING, "dims": 3, "patch": PATCH, "batch_size": 2, "samples_per_epoch": 6}


def test_patches_have_the_patch_size_and_lie_on_tumor_when_asked(cohort):
    with Store(cohort) as store:
        ids = store.labeled_case_ids
        label = store.read_label(ids[0])
    on_tumor = PatchDataset(cohort, ids, PATCH, tumor_fraction=1.0)
    for draw in range(10):
        item = on_tumor[(0, draw)]
        assert item["image"].shape == (4, *PATCH) and item["label"].shape == tuple(PATCH)
        assert item["label"].dtype == torch.int64 and (item["label"] > 0).any()
    assert torch.equal(on_tumor[(0, 3)]["image"], on_tumor[(0, 3)]["image"])  # a draw is its key's
    assert not torch.equal(on_tumor[(0, 3)]["image"], on_tumor[(0, 4)]["image"])
    # a patch larger than the volume holds all of it, zero-padded around
    whole = PatchDataset(cohort, ids, [32, 64, 64], tumor_fraction=0.0)[(0, 0)]
    assert int((whole["label"] > 0).sum()) == int((label > 0).sum())


@pytest.fixture(scope="module")
def volumetric_run(cohort, tmp_path_factory):
    run = tmp_path_factory.mktemp("volumetric") / "run"
    train(cohort, run, TrainConfig.of(**TINY_3D), progress=False)
    return run


def test_a_3d_model_trains_and_resumes_exactly(volumetric_run, cohort, tmp_path, capsys):
    state = load_checkpoint(volumetric_run / "last.pt")
    assert state["model_config"]["dims"] == 3 and state["model_config"]["patch"] == PATCH
    assert any(value.ndim == 5 for value in state["model"].values())  # 3D convolutions
    assert len(state["history"]) == 2 and all(np.isfinite(r["val_dice"]) for r in state["history"])
    train(cohort, tmp_path / "split", TrainConfig.of(**TINY_3D), stop_after=1, progress=False)
    assert "; 6 patches per epoch;" in capsys.readouterr().out
    train(None, tmp_path / "split", resume=True, progress=False)
    resumed = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    for key, value in state["model"].items():
        assert torch.equal(value, resumed[key]), key


def test_a_3d_model_evaluates_predicts_and_exports(volumetric_run, cohort, tmp_path):
    assert main(["evaluate", str(volumetric_run), "--split", "val", "--out", str(tmp_path / "val")]) == 0
    assert (tmp_path / "val" / "overlays.png").is_file()
    case = cohort.parent / "cases" / "Phantom_004"
    assert main(["export", str(volumetric_run)]) == 0
    assert main(["export", str(volumetric_run), "--int8", str(cohort)]) == 0
    labels = {}
    for engine in ("torch", "onnx", "onnx-int8"):
        out = tmp_path / f"{engine}.nii.gz"
        assert (
            main(
                ["predict", "--model", str(volumetric_run), str(case), "--out", str(out), "--engine", engine]
            )
            == 0
        )
        labels[engine] = np.asarray(nib.load(out).dataobj)
    assert labels["torch"].shape == nib.load(case / "Phantom_004_flair.nii.gz").shape
    assert (labels["torch"] == labels["onnx"]).mean() > 0.999
    assert (labels["torch"] == labels["onnx-int8"]).mean() > 0.97


def test_the_sliding_window_covers_the_volume_and_weights_patches_alike():
    volume = np.random.default_rng(0).normal(size=(11, 4, 20, 27)).astype(np.float32)
    identity = segment_patches(lambda batch: batch[:, :3], volume, patch=[8, 16, 16])
    assert identity.shape == (11, 3, 20, 27)
    np.testing.assert_allclose(identity, volume[:, :3], atol=1e-5, rtol=1e-5)
    flipped = segment_patches(lambda batch: batch[:, :3], volume, patch=[8, 16, 16], flips=((), (-1,)))
    np.testing.assert_allclose(flipped, identity, atol=1e-5, rtol=1e-5)


def test_3d_settings_are_checked():
    with pytest.raises(TumorsegError, match="patch"):
        TrainConfig.of(**{**TINY_3D, "patch": [8, 15, 16]})
    with pytest.raises(TumorsegError, match="context"):
        TrainConfig.of(**{**TINY_3D, "context": 1})
    with pytest.raises(TumorsegError, match="dims"):
        TrainConfig.of(**{**TINY_3D, "dims": 4})
