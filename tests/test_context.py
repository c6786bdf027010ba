"""2.5D input: each slice with its neighbours as extra channels, through train, evaluate, predict, ONNX."""

import shutil

import nibabel as nib
import numpy as np
import pytest
from torch import nn

from conftest import TINY_TRAINING
from tumorseg.cli import main
from tumorseg.data.dataset import SliceDataset
from tumorseg.data.preprocess import narrowed, with_context
from tumorseg.data.store import Store
from tumorseg.inference.segmenter import Segmenter
from tumorseg.training.config import TrainConfig
from tumorseg.training.loop import train


def test_each_slice_gets_its_neighbours_and_the_ends_repeat():
    volume = (10 * np.arange(5)[:, None] + np.arange(2)[None, :]).astype(np.float32)[..., None, None]  # z, c
    stacked = with_context(volume, 1)
    assert stacked.shape == (5, 6, 1, 1)
    assert stacked[0, :, 0, 0].tolist() == [0, 1, 0, 1, 10, 11]  # below slice 0: slice 0 again
    assert stacked[2, :, 0, 0].tolist() == [10, 11, 20, 21, 30, 31]
    assert stacked[4, :, 0, 0].tolist() == [30, 31, 40, 41, 40, 41]
    assert with_context(volume, 2, np.array([3]))[0, :, 0, 0].tolist() == [
        10,
        11,
        20,
        21,
        30,
        31,
        40,
        41,
        40,
        41,
    ]
    assert np.array_equal(with_context(volume, 0), volume)


def test_a_stack_of_neighbours_narrows_to_fewer():
    volume = np.random.default_rng(0).normal(size=(6, 4, 3, 3)).astype(np.float32)
    wide = with_context(volume, 2)
    assert np.array_equal(narrowed(wide, 1), with_context(volume, 1))
    assert np.array_equal(narrowed(wide, 0), volume)
    with pytest.raises(ValueError, match="2 neighbours"):
        narrowed(wide, 3)


def test_a_training_slice_is_the_stored_slice_among_its_neighbours(cohort):
    with Store(cohort) as store:
        case_id = store.case_ids[0]
        volume, labels = store.read_volume(case_id)
    flat, deep = (
        SliceDataset(cohort, [case_id], size=None),
        SliceDataset(cohort, [case_id], size=None, context=2),
    )
    for z in (0, 5, len(volume) - 1):
        item = deep[z]
        assert item["image"].shape == (20, *volume.shape[2:])
        np.testing.assert_array_equal(item["image"].numpy(), with_context(volume, 2, np.array([z]))[0])
        np.testing.assert_array_equal(item["image"][8:12].numpy(), flat[z]["image"].numpy())
        np.testing.assert_array_equal(item["label"].numpy(), labels[z])


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.fixture(scope="module")
def context_run(cohort, tmp_path_factory):
    run = tmp_path_factory.mktemp("context") / "run"
    train(cohort, run, TrainConfig.of(**{**TINY_TRAINING, "context": 1}), progress=False)
    return run


def test_an_ensemble_of_a_2d_and_a_2_5d_model_gives_each_its_own_slices(
    context_run, trained_run, cohort, tmp_path
):
    """Through PyTorch and through the two ONNX exports."""
    with Store(cohort) as store:
        volume = store.read_volume(store.case_ids[1])[0]
    flat, deep = (Segmenter(run).probabilities(volume) for run in (trained_run, context_run))
    ensemble = Segmenter([trained_run, context_run])
    np.testing.assert_allclose(ensemble.probabilities(volume), (flat + deep) / 2, atol=1e-6)
    pairs = (("flat", trained_run), ("deep", context_run))
    fresh = shutil.ignore_patterns("*.onnx")  # an export another test left in the run
    runs = [shutil.copytree(run, tmp_path / name, ignore=fresh) for name, run in pairs]
    for run in runs:
        assert main(["export", str(run), "--format", "onnx"]) == 0
    exported = Segmenter(runs, engine="onnx")
    np.testing.assert_allclose(exported.probabilities(volume), (flat + deep) / 2, atol=1e-4)


def test_a_2_5d_model_trains_evaluates_predicts_and_exports(context_run, cohort, tmp_path):
    segmenter = Segmenter(context_run)
    assert segmenter.config.context == 1 and first_conv(segmenter.model).in_channels == 12
    assert main(["evaluate", str(context_run), "--split", "val", "--out", str(tmp_path / "val")]) == 0
    assert (tmp_path / "val" / "overlays.png").is_file()
    case = cohort.parent / "cases" / "Phantom_004"
    for engine in ("torch", "onnx"):
        if engine == "onnx":
            assert main(["export", str(context_run), "--format", "onnx"]) == 0
        out = tmp_path / f"{engine}.nii.gz"
        assert (
            main(["predict", "--model", str(context_run), str(case), "--out", str(out), "--engine", engine])
            == 0
        )
    torch_labels, onnx_labels = (
        np.asarray(nib.load(tmp_path / f"{e}.nii.gz").dataobj) for e in ("torch", "onnx")
    )
    assert torch_labels.shape == nib.load(case / "Phantom_004_flair.nii.gz").shape
    assert (torch_labels == onnx_labels).mean() > 0.999
