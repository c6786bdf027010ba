"""Broken inputs across the commands: each must fail with one clear line that names the file,
exit non-zero, leave no partial output behind and leave earlier outputs untouched.

Every input is generated here from a good phantom; nothing binary is committed.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import assert_clean_failure, run, tampered, tumorseg, tumorseg_measured
from tumorseg.cli import main
from tumorseg.data.case import MODALITIES
from tumorseg.data.synth import synthesize
from tumorseg.models.config import MAX_WIDTH

CASE = "Phantom_001"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    synthesize(root / "cases", 1, shape=(24, 24, 10), seed=3, progress=False)
    synthesize(root / "kaggle", 1, shape=(24, 24, 10), seed=3, layout="kaggle", progress=False)
    return root


def nifti(folder: Path, name: str, data: np.ndarray, affine=None) -> None:
    reference = nib.load(folder / f"{CASE}_flair.nii.gz")
    nib.save(
        nib.Nifti1Image(data, reference.affine if affine is None else affine),
        folder / f"{CASE}_{name}.nii.gz",
    )


def shifted_affine(folder: Path) -> np.ndarray:
    affine = nib.load(folder / f"{CASE}_flair.nii.gz").affine.copy()
    affine[0, 3] += 3
    return affine


def nan_volume(shape=(24, 24, 10), value=np.nan) -> np.ndarray:
    data = np.ones(shape, np.float32)
    data[3, 3, 3] = value
    return data


class Evil:
    """Unpickling this would create a file; a refused checkpoint must never do so."""

    def __reduce__(self):
        return (os.mkdir, (os.environ["TUMORSEG_EVIL_MARKER"],))


# name, what breaks the good case folder (f = the case folder), file the message must name, words
CASE_BREAKERS = [
    ("missing modality", lambda f: (f / f"{CASE}_t1ce.nii.gz").unlink(), CASE, "missing modality t1ce"),
    (
        "extra modality file",
        lambda f: shutil.copy(f / f"{CASE}_t2.nii.gz", f / f"{CASE}_t2.nii"),
        CASE,
        "two files for t2",
    ),
    (
        "4D volume",
        lambda f: nifti(f, "t1", np.ones((24, 24, 10, 3), np.int16)),
        "t1.nii.gz",
        "expected a 3D volume",
    ),
    ("2D volume", lambda f: nifti(f, "t1", np.ones((24, 24), np.int16)), "t1.nii.gz", "expected a 3D volume"),
    ("shape mismatch", lambda f: nifti(f, "t2", np.ones((24, 24, 9), np.int16)), "t2.nii.gz", "differs from"),
    (
        "affine mismatch",
        lambda f: nifti(f, "t1ce", np.ones((24, 24, 10), np.int16), shifted_affine(f)),
        "t1ce.nii.gz",
        "affine differs",
    ),
    (
        "constant sequence",  # the message named the first sequence's file
        lambda f: nifti(f, "t1ce", np.full((24, 24, 10), 7, np.int16)),
        "t1ce.nii.gz",
        "modality t1ce is empty or constant",
    ),
    ("NaN voxels", lambda f: nifti(f, "flair", nan_volume()), "flair.nii.gz", "NaN or infinite"),
    ("Inf voxels", lambda f: nifti(f, "t2", nan_volume(value=np.inf)), "t2.nii.gz", "NaN or infinite"),
    (
        "label beyond uint16",
        lambda f: nifti(f, "seg", np.full((24, 24, 10), 65540, np.int32)),
        "seg.nii.gz",
        "unknown label values [65540]",
    ),
    (
        "unknown label 3",
        lambda f: nifti(f, "seg", np.full((24, 24, 10), 3, np.uint8)),
        "seg.nii.gz",
        "unknown label values [3]",
    ),
    (
        "truncated gzip",
        lambda f: (f / f"{CASE}_t1.nii.gz").write_bytes((f / f"{CASE}_t1.nii.gz").read_bytes()[:300]),
        "t1.nii.gz",
        "not a readable NIfTI",
    ),
    (
        "zero-byte file",
        lambda f: (f / f"{CASE}_t2.nii.gz").write_bytes(b""),
        "t2.nii.gz",
        "not a readable NIfTI",
    ),
    (
        "gzip of text",
        lambda f: (f / f"{CASE}_flair.nii.gz").write_bytes(gzip.compress(b"hello " * 100)),
        "flair.nii.gz",
        "not a readable NIfTI",
    ),
    (
        "not gzip at all",
        lambda f: (f / f"{CASE}_t1ce.nii.gz").write_bytes(b"\x00\x01" * 500),
        "t1ce.nii.gz",
        "not a readable NIfTI",
    ),
    (
        "all-zero case",
        lambda f: [nifti(f, m, np.zeros((24, 24, 10), np.int16)) for m in ("flair", "t1", "t1ce", "t2")],
        "flair.nii.gz",
        "every voxel",
    ),
]


@pytest.mark.parametrize(
    ("name", "breaker", "names", "words"), CASE_BREAKERS, ids=[b[0] for b in CASE_BREAKERS]
)
def test_prepare_refuses_broken_cases_and_keeps_the_store(
    good, tmp_path, capsys, name, breaker, names, words
):
    store = tmp_path / "store.h5"
    assert main(["prepare", str(good / "kaggle"), "--out", str(store)]) == 0
    before = store.read_bytes()
    folder = tmp_path / "in" / CASE
    shutil.copytree(good / "cases" / CASE, folder)
    breaker(folder)
    capsys.readouterr()
    assert_clean_failure(*run(["prepare", folder, "--out", store], capsys), names, words)
    assert store.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "store.h5"]  # no lock file left


def test_predict_refuses_a_sequence_that_is_not_zero_outside_the_brain(good, trained_run, tmp_path, capsys):
    """A sequence that is not skull-stripped, or whose background is not 0 (shifted by -500 here),
    makes the whole volume brain to the z-scores: a shared case so shifted came out as 913 mL of
    tumor, without a word."""
    folder = tmp_path / CASE
    shutil.copytree(good / "cases" / CASE, folder)
    t2 = np.asarray(nib.load(folder / f"{CASE}_t2.nii.gz").dataobj, np.float32)
    nifti(folder, "t2", t2 - 500)
    out = tmp_path / "s.nii.gz"
    code, err = run(["predict", "--model", trained_run, folder, "--out", out], capsys)
    assert_clean_failure(code, err, "t2.nii.gz", "of its voxels are 0; tumorseg expects skull-stripped")
    assert not out.exists()


def test_predict_refuses_a_head_whose_air_alone_is_0(good, trained_run, tmp_path, capsys):
    """Its sibling: a head with its skull whose air is 0 has enough zeros, but spans far more than a
    brain does (a healthy head's T1 FLASH, 6.5 % zeros, came out as 978 mL of tumor)."""
    folder = tmp_path / CASE
    shutil.copytree(good / "cases" / CASE, folder)
    for modality in MODALITIES:
        data = np.asarray(nib.load(folder / f"{CASE}_{modality}.nii.gz").dataobj, np.float32)
        nifti(folder, modality, data, np.diag([-15.0, -15.0, 15.0, 1.0]))  # 3.4 mL voxels: liters
    out = tmp_path / "s.nii.gz"
    command = ["predict", "--model", trained_run, folder, "--out", out, "--preprocess", "brats"]
    assert_clean_failure(*run(command, capsys), "flair.nii.gz", "mL, more than a brain (2500)")
    assert not out.exists()


def rewrite_slice(folder: Path, **datasets) -> None:
    with h5py.File(folder / "volume_1_slice_4.h5", "w") as handle:
        for key, value in datasets.items():
            handle[key] = value


KAGGLE_BREAKERS = [
    (
        "wrong keys",
        lambda d: rewrite_slice(d, images=np.zeros((24, 24, 4)), masks=np.zeros((24, 24, 3))),
        "expected datasets 'image' and 'mask'",
    ),
    (
        "wrong dtype",
        lambda d: rewrite_slice(d, image=np.array([[b"a"] * 4] * 24), mask=np.zeros((24, 24, 3))),
        "'image'",
    ),
    (
        "wrong shape",
        lambda d: rewrite_slice(d, image=np.zeros((24, 24, 2)), mask=np.zeros((24, 24, 3))),
        "'image' has shape",
    ),
    (
        "corrupt file",
        lambda d: (d / "volume_1_slice_4.h5").write_bytes(b"\x89HDF\r\n" + b"0" * 64),
        "not a readable HDF5",
    ),
    ("missing slice", lambda d: (d / "volume_1_slice_4.h5").unlink(), "missing, first volume_1_slice_4.h5"),
]


@pytest.mark.parametrize(("name", "breaker", "words"), KAGGLE_BREAKERS, ids=[b[0] for b in KAGGLE_BREAKERS])
def test_prepare_refuses_broken_kaggle_files(good, tmp_path, capsys, name, breaker, words):
    folder = tmp_path / "kaggle"
    shutil.copytree(good / "kaggle", folder)
    breaker(folder)
    code, err = run(["prepare", folder, "--out", tmp_path / "s.h5"], capsys)
    assert_clean_failure(code, err, str(folder), words)
    assert not (tmp_path / "s.h5").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_store_from_a_newer_format(good, tmp_path, capsys):
    store = tmp_path / "store.h5"
    assert main(["prepare", str(good / "kaggle"), "--out", str(store)]) == 0
    with h5py.File(store, "a") as handle:
        handle.attrs["format_version"] = 99
    before = store.read_bytes()
    capsys.readouterr()
    for args in (
        ["inspect", store],
        ["prepare", good / "cases", "--out", store],
        ["train", "--data", store, "--out", tmp_path / "r"],
    ):
        assert_clean_failure(*run(args, capsys), "store.h5", "newer than this tumorseg reads")
    assert store.read_bytes() == before
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("args", "names", "words"),
    [
        (["prepare", "{tmp}/nowhere", "--out", "{tmp}/s.h5"], "nowhere", "does not exist"),
        (["prepare", "{tmp}/empty", "--out", "{tmp}/s.h5"], "empty", "no BraTS case folders or Kaggle"),
        (["train", "--data", "{tmp}/fake.h5", "--out", "{tmp}/r"], "fake.h5", "not an HDF5 file"),
        (
            ["train", "--data", "{tmp}/fake.h5", "--out", "{tmp}/r", "--config", "{tmp}/bad.yaml"],
            "bad.yaml",
            "unknown config key 'learning_rate'",
        ),
        (["evaluate", "{tmp}/nowhere"], "nowhere", "checkpoint does not exist"),
        (["export", "{tmp}/empty"], "empty", "no best.pt or last.pt"),
        (["evaluate", "{tmp}/fake.pt"], "fake.pt", "not a readable checkpoint"),
        (
            ["predict", "--model", "{tmp}/fake.pt", "{tmp}/empty", "--out", "{tmp}/o.nii.gz"],
            "empty",
            "no BraTS case folders",
        ),
        (["report", "{tmp}/empty"], "empty", "not a run directory"),
    ],
)
def test_missing_and_wrong_files(tmp_path, capsys, args, names, words):
    (tmp_path / "empty").mkdir()
    (tmp_path / "fake.h5").write_bytes(b"not hdf5")
    (tmp_path / "fake.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "bad.yaml").write_text("learning_rate: 0.1\n")
    code, err = run([a.format(tmp=tmp_path) for a in args], capsys)
    assert_clean_failure(code, err, names, words)
    assert not (tmp_path / "r").exists() and not (tmp_path / "o.nii.gz").exists()


@pytest.fixture
def evil_checkpoint(tmp_path, monkeypatch):
    marker = tmp_path / "EXECUTED"
    monkeypatch.setenv("TUMORSEG_EVIL_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"format": "tumorseg-checkpoint", "model": Evil()}, path)
    with open(tmp_path / "evil.pkl", "wb") as handle:
        pickle.dump({"model": Evil()}, handle)
    return path, marker


@pytest.mark.parametrize("command", ["predict", "export", "evaluate", "resume"])
def test_pickled_objects_in_checkpoints_are_refused_never_run(
    trained_run, good, tmp_path, capsys, evil_checkpoint, command
):
    evil, marker = evil_checkpoint
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    for name in ("best.pt", "last.pt"):
        shutil.copy(evil, run_dir / name)
    args = {
        "predict": ["predict", "--model", run_dir, good / "cases" / CASE, "--out", tmp_path / "o.nii.gz"],
        "export": ["export", run_dir],
        "evaluate": ["evaluate", run_dir],
        "resume": ["train", "--resume", run_dir],
    }[command]
    assert_clean_failure(*run(args, capsys), ".pt", "refused to load")
    assert not marker.exists()
    assert not (tmp_path / "o.nii.gz").exists()


def test_predict_on_mismatched_grids_and_existing_output(trained_run, good, tmp_path, capsys):
    folder = tmp_path / CASE
    shutil.copytree(good / "cases" / CASE, folder)
    out = tmp_path / "seg.nii.gz"
    out.write_bytes(b"earlier result")
    assert_clean_failure(
        *run(["predict", "--model", trained_run, folder, "--out", out], capsys), "seg.nii.gz", "--overwrite"
    )
    nifti(folder, "t2", np.ones((20, 24, 10), np.int16))
    code, err = run(["predict", "--model", trained_run, folder, "--out", out, "--overwrite",
                     "--preprocess", "brats"], capsys)  # fmt: skip
    assert_clean_failure(code, err, "t2.nii.gz", "shape")
    assert out.read_bytes() == b"earlier result"
    # by default, sequences on their own grids are a raw scan: this one holds no head
    code, err = run(["predict", "--model", trained_run, folder, "--out", out, "--overwrite"], capsys)
    assert_clean_failure(code, err, "t2.nii.gz", "skull stripping found no brain")
    assert out.read_bytes() == b"earlier result"
    nifti(folder, "t2", nib.load(folder / f"{CASE}_t1.nii.gz").get_fdata().astype(np.int16))
    deeper = tmp_path / "x" / "y.nii.gz"
    assert run(["predict", "--model", trained_run, folder, "--out", deeper], capsys)[0] == 0
    assert deeper.is_file()  # its folder made, as a batch's is


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_read_only_output_folder(trained_run, good, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, err = run(
            ["predict", "--model", trained_run, good / "cases" / CASE, "--out", locked / "s.nii.gz"], capsys
        )
        assert_clean_failure(code, err, "locked", "cannot write")
    finally:
        locked.chmod(0o700)


def test_paths_with_spaces_and_unicode_work(good, trained_run, tmp_path, capsys):
    folder = tmp_path / "my cases" / "ünïcødé patient"
    shutil.copytree(good / "cases" / CASE, folder / CASE)
    assert main(["prepare", str(folder), "--out", str(tmp_path / "störe ö.h5")]) == 0
    out = tmp_path / "résultats" / "seg ü.nii.gz"
    out.parent.mkdir()
    assert main(["predict", "--model", str(trained_run), str(folder / CASE), "--out", str(out)]) == 0
    assert nib.load(out).shape == (24, 24, 10)


# ---- Hostile inputs, by class of defect: each closed by a general mechanism (see
# ---- docs/reliability.md); a test per class and for the siblings found.

MEMORY_BOUND_MB = 1024  # a command that decodes what a hostile header declares needs several GB


def nifti_header_only(path: Path, shape: tuple[int, ...], dtype=np.int16) -> None:
    """A .nii.gz whose header declares ``shape`` but which holds a few bytes of voxels."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(np.diag([-1, -1, 1, 1]), code=1)
    header["vox_offset"] = 352
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 4096))


def sha(path: Path) -> bytes:
    return path.read_bytes()


# class 1: outputs that overwrite inputs or other outputs


def test_outputs_never_replace_inputs(good, trained_run, tmp_path, capsys):
    store = tmp_path / "store.h5"
    assert main(["prepare", str(good / "kaggle"), "--out", str(store)]) == 0
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir, ignore=shutil.ignore_patterns("*.onnx", "report.html"))
    case = tmp_path / CASE
    shutil.copytree(good / "cases" / CASE, case)
    kept = {p: sha(p) for p in [store, run_dir / "best.pt", run_dir / "last.pt", case / f"{CASE}_t1.nii.gz"]}
    capsys.readouterr()
    for args, names in [
        (["split", store, "--out", store, "--overwrite"], "store.h5"),
        (["export", run_dir, "--out", run_dir / "best.pt", "--overwrite"], "best.pt"),
        (["report", run_dir, "--out", run_dir / "last.pt", "--overwrite"], "last.pt"),
        (
            ["predict", "--model", run_dir, case, "--out", case / f"{CASE}_t1.nii.gz", "--overwrite"],
            "t1.nii.gz",
        ),
    ]:
        assert_clean_failure(*run(args, capsys), names, "is one of this command's inputs")
    assert all(sha(path) == before for path, before in kept.items())


def test_companion_outputs_need_overwrite(good, trained_run, tmp_path, capsys):
    out = tmp_path / "seg.nii.gz"
    (tmp_path / "seg_probabilities.nii.gz").write_bytes(b"earlier probabilities")
    args = ["predict", "--model", trained_run, good / "cases" / CASE, "--out", out, "--probabilities"]
    assert_clean_failure(*run(args, capsys), "seg_probabilities.nii.gz", "--overwrite")
    assert (tmp_path / "seg_probabilities.nii.gz").read_bytes() == b"earlier probabilities"
    assert not out.exists()
    (tmp_path / "split.json").write_text("{}")
    assert_clean_failure(*run(["split", trained_run / "x.h5", "--out", tmp_path / "split.json"], capsys),
                         "split.json", "--overwrite")  # fmt: skip


# class 2: races and identity


def test_an_export_from_another_checkpoint_is_refused(trained_run, tmp_path, capsys):
    from tumorseg.errors import TumorsegError
    from tumorseg.inference.segmenter import Segmenter

    other = tmp_path / "other"
    shutil.copytree(trained_run, other, ignore=shutil.ignore_patterns("*.onnx"))
    state = torch.load(other / "best.pt", weights_only=True)
    state["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(tampered(state), other / "best.pt")  # same epoch, same target, other weights
    original = tmp_path / "original"
    shutil.copytree(trained_run, original, ignore=shutil.ignore_patterns("*.onnx"))
    assert main(["export", str(original)]) == 0
    shutil.copy(original / "best.onnx", other / "best.onnx")
    with pytest.raises(TumorsegError, match="exported from another checkpoint"):
        Segmenter(other, engine="onnx")


def onnx_bomb(kind: str, path: Path, checkpoint: Path, width: int | None = None) -> None:
    """A graph that claims (by its metadata) to be the export of ``checkpoint`` and makes a tensor
    of gigabytes from an input of a slice: scaled up 1000 times a side, or a constant of 10^10. Its
    metadata copies the checkpoint's config, or with ``width`` claims a network that wide."""
    import dataclasses

    import onnx
    from onnx import TensorProto, helper

    from tumorseg.inference.onnx import export_metadata, graph_digest
    from tumorseg.inference.segmenter import Segmenter

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 4, "height", "width"])
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, None)
    if kind == "resize":
        scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 1000, 1000])
        nodes, constants = [helper.make_node("Resize", ["image", "", "scales"], ["probabilities"])], [scales]
    else:
        size = helper.make_tensor("size", TensorProto.INT64, [1], [10**10])
        nodes = [
            helper.make_node("ConstantOfShape", ["size"], ["big"]),
            helper.make_node("ReduceMax", ["big"], ["peak"], keepdims=1),
            helper.make_node("Add", ["image", "peak"], ["probabilities"]),
        ]
        constants = [size]
    graph = helper.make_graph(nodes, "bomb", [image], [out], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    honest = Segmenter(checkpoint)
    config = honest.config if width is None else dataclasses.replace(honest.config, channels=[width] * 5)
    metadata = export_metadata(checkpoint, config, honest.epoch, honest.postprocessing)
    metadata["graph_sha256"] = graph_digest(model)  # a forger computes the digest as easily as tumorseg
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


@pytest.mark.parametrize("kind, width", [("resize", None), ("constant", None), ("resize", MAX_WIDTH)])
def test_an_onnx_graph_that_makes_gigabytes_is_refused_before_it_runs(
    good, trained_run, tmp_path, kind, width
):
    """The ONNX file beside a checkpoint is input too: its digest of the checkpoint and the config it
    records are only metadata, and every tensor's size is the graph's to declare. A few hundred
    bytes asked for tens of GB, and claiming a network as wide as a config may be (a million wide
    is refused as a config) does not make room for it."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("*.onnx"))
    onnx_bomb(kind, run / "best.onnx", run / "best.pt", width)
    code, err, peak = tumorseg_measured(
        "predict", "--model", run, "--engine", "onnx", good / "cases" / CASE, "--out", tmp_path / "s.nii.gz"
    )
    assert peak < MEMORY_BOUND_MB and not (tmp_path / "s.nii.gz").exists(), f"peak RSS {peak:.0f} MB"
    assert_clean_failure(code, err, "best.onnx", "the network its checkpoint describes needs at most")


def exported_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the trained run with a fresh ONNX export of its best.pt."""
    model = tmp_path / "run"
    shutil.copytree(trained_run, model, ignore=shutil.ignore_patterns("*.onnx"))
    assert main(["export", str(model)]) == 0
    return model


def test_the_onnx_graph_that_runs_is_the_one_checked(good, trained_run, tmp_path, capsys, monkeypatch):
    """The export is read once: a file replaced after its graph was checked (here by bytes that are
    no graph at all) is not what ONNX Runtime loads, so no check can be passed by one file and the
    session built from another."""
    from tumorseg.inference import onnx as engine

    model, out = exported_copy(trained_run, tmp_path), tmp_path / "s.nii.gz"
    checked = engine.check_graph

    def check_then_replace(graph, path: Path, *args) -> None:
        checked(graph, path, *args)
        path.write_bytes(b"not a graph" * 100)

    monkeypatch.setattr(engine, "check_graph", check_then_replace)
    command = ["predict", "--model", model, "--engine", "onnx", good / "cases" / CASE, "--out", out]
    code, err = run(command, capsys)
    assert code == 0 and out.is_file(), err


def test_an_onnx_file_larger_than_a_checkpoint_is_refused(good, trained_run, tmp_path, capsys, monkeypatch):
    from tumorseg.inference import onnx as engine

    model, out = exported_copy(trained_run, tmp_path), tmp_path / "s.nii.gz"
    monkeypatch.setattr(engine, "MAX_EXPORT_BYTES", (model / "best.onnx").stat().st_size - 1)
    command = ["predict", "--model", model, "--engine", "onnx", good / "cases" / CASE, "--out", out]
    code, err = run(command, capsys)
    assert_clean_failure(code, err, "best.onnx", "MiB; tumorseg reads ONNX models of up to")
    assert not out.exists()


@pytest.mark.parametrize(
    "metadata, problem",
    [
        ({"model_config": None}, "its metadata lacks the model's config"),
        ({"model_config": "[" * 50_000}, "its metadata lacks the model's config"),
        ({"model_config": "[1, 2]"}, "its model_config is not a mapping"),
        ({"model_config": '{"channels": [16, -1]}'}, "channels"),
        ({"postprocessing": '{"min_island_ml": -4}'}, "post-processing min_island_ml"),
        ({"checkpoint_epoch": "many"}, "its metadata lacks the model's config"),
        ({"checkpoint_epoch": "9" * 10_000}, "its metadata lacks the model's config"),
        ({"postprocessing": '{"min_island_ml": 2' + " " * 70_000 + "}"}, "characters; tumorseg reads"),
    ],
)
def test_an_export_whose_record_of_the_model_is_broken_is_refused(
    good, trained_run, tmp_path, capsys, metadata, problem
):
    """What predict knows of the network when ONNX Runtime runs it comes from the export's metadata:
    missing (an export of an older tumorseg), malformed or out of range, it is named, not used."""
    refuse_altered_export(good, trained_run, tmp_path, capsys, lambda recorded: recorded | metadata, problem)


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"context": 1}, "its input has 4 values on axis 1, where the model config it records needs 12"),
        ({"target": "labels"}, "where the model config it records gives 1 x 4 x"),
        ({"dims": 3, "patch": [16, 16, 16]}, "its input has 4 axes, not 5"),
    ],
)
def test_an_export_that_records_another_network_than_its_graph_is_refused(
    good, trained_run, tmp_path, capsys, change, problem
):
    """A config in an export's metadata that is well formed but not its graph's (more slices of
    context, another target, other axes) would feed the graph what it cannot take, or decode its
    output as what it is not: without a word, 3 region channels read as 4 classes. It is checked
    against the graph's own input and output, before anything runs."""

    def altered(recorded: dict[str, str]) -> dict[str, str]:
        return recorded | {"model_config": json.dumps(json.loads(recorded["model_config"]) | change)}

    refuse_altered_export(good, trained_run, tmp_path, capsys, altered, problem)


def test_a_graph_deeper_than_the_config_it_records_is_refused():
    """A config of fewer stages than the graph's would pad slices to too small a multiple, and the
    graph would fail on them mid-patient: shapes inferred on an odd multiple of the stride show it.
    (The test model has two stages only: the shipped one, five, is cut to four.)"""
    import dataclasses

    from tumorseg.errors import TumorsegError
    from tumorseg.inference.bundle import BUNDLED_MODELS
    from tumorseg.inference.onnx import Export, check_graph, onnx_path, parse_graph

    path = onnx_path(BUNDLED_MODELS[0], int8=True)
    honest = Export.of(BUNDLED_MODELS[0], int8=True).config
    shallower = dataclasses.replace(honest, channels=honest.channels[:-1])
    data = path.read_bytes()
    check_graph(parse_graph(data, path), path, honest, len(data))
    with pytest.raises(TumorsegError, match="shapes cannot be inferred"):
        check_graph(parse_graph(data, path), path, shallower, len(data))


@pytest.mark.parametrize("kind", ["missing", "pipe"])
def test_an_export_beside_no_checkpoint_file_is_refused(good, trained_run, tmp_path, kind):
    """The export is checked against its checkpoint's bytes: a checkpoint that is not there, or a
    named pipe in its place (which would block the read forever), is named at once."""
    model = exported_copy(trained_run, tmp_path)
    (model / "best.pt").unlink()
    if kind == "pipe":
        os.mkfifo(model / "best.pt")
    out = tmp_path / "s.nii.gz"
    result = tumorseg(
        "predict", "--model", model / "best.pt", "--engine", "onnx", good / "cases" / CASE, "--out", out,
        timeout=120,
    )  # fmt: skip
    assert_clean_failure(result.returncode, result.stderr, "best.pt", "checkpoint does not exist")
    assert not out.exists()


def refuse_altered_export(good, trained_run, tmp_path, capsys, alter, problem) -> None:
    """A fresh export of the trained run with its metadata altered by ``alter`` (None: a key left
    out) fails predict with ``problem``, writing nothing."""
    import onnx

    model, out = exported_copy(trained_run, tmp_path), tmp_path / "s.nii.gz"
    graph = onnx.load(str(model / "best.onnx"))
    kept = alter({entry.key: entry.value for entry in graph.metadata_props})
    del graph.metadata_props[:]
    for key, value in kept.items():
        if value is not None:
            graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(model / "best.onnx"))
    command = ["predict", "--model", model, "--engine", "onnx", good / "cases" / CASE, "--out", out]
    code, err = run(command, capsys)
    assert_clean_failure(code, err, "best.onnx", problem)
    assert not out.exists()


def test_batch_predict_refuses_two_cases_with_one_id(good, trained_run, tmp_path, capsys):
    for folder in ("a", "b"):
        shutil.copytree(good / "cases" / CASE, tmp_path / "cases" / folder)
    code, err = run(
        ["predict", "--model", trained_run, tmp_path / "cases", "--out", tmp_path / "out"], capsys
    )
    assert_clean_failure(code, err, "cases/b", f"case {CASE} also found at")
    assert not (tmp_path / "out").exists()


# class 3: memory before checks


def test_a_small_nifti_declaring_a_huge_grid_is_refused_from_its_header(good, tmp_path):
    case = tmp_path / CASE
    shutil.copytree(good / "cases" / CASE, case)
    nifti_header_only(case / f"{CASE}_t2.nii.gz", (1700, 1700, 1000))
    code, err, peak = tumorseg_measured("prepare", case, "--out", tmp_path / "s.h5")
    assert code == 1 and "Traceback" not in err, err
    assert_clean_failure(code, err, "t2.nii.gz", "declares a grid of 1700 x 1700 x 1000 voxels")
    assert peak < MEMORY_BOUND_MB, f"peak RSS {peak:.0f} MB"


@pytest.mark.parametrize(
    ("vox_offset", "words"),
    [
        (352 + 2**30, "bytes of header extensions; tumorseg reads up to 16,777,216"),
        (0, "puts its voxels at offset 0"),
    ],
)
def test_header_extensions_are_bounded_before_they_are_read(good, tmp_path, capsys, vox_offset, words):
    """nibabel reads a NIfTI file's header extensions whole, each of the size it declares (or all
    to the end of the file when vox_offset lies before them): a gzip of zeros declaring
    gigabytes is a few MB. Here the header alone declares them."""
    case = tmp_path / CASE
    shutil.copytree(good / "cases" / CASE, case)
    header = nib.Nifti1Header()
    header.set_data_shape((24, 24, 10))
    header["vox_offset"] = vox_offset
    extension = (1).to_bytes(4, "little") + (2**30).to_bytes(4, "little") + bytes(4)
    (case / f"{CASE}_t2.nii.gz").write_bytes(gzip.compress(header.binaryblock + extension + bytes(4096)))
    code, err = run(["prepare", case, "--out", tmp_path / "s.h5"], capsys)
    assert_clean_failure(code, err, "t2.nii.gz", words)


def test_a_small_kaggle_slice_declaring_a_huge_image_is_refused(good, tmp_path):
    folder = tmp_path / "kaggle"
    shutil.copytree(good / "kaggle", folder)
    with h5py.File(folder / "volume_1_slice_4.h5", "w") as handle:  # chunked and empty: a few kB on disk
        handle.create_dataset(
            "image", shape=(20000, 20000, 4), dtype="f8", chunks=(64, 64, 4), compression="gzip"
        )
        handle["mask"] = np.zeros((24, 24, 3), np.uint8)
    assert (folder / "volume_1_slice_4.h5").stat().st_size < 100_000
    code, err, peak = tumorseg_measured("prepare", folder, "--out", tmp_path / "s.h5")
    assert_clean_failure(code, err, "volume_1_slice_4.h5", "'image' has shape (20000, 20000, 4)")
    assert peak < MEMORY_BOUND_MB, f"peak RSS {peak:.0f} MB"


def test_a_case_whose_voxels_would_grow_past_the_limit_when_resampled_is_refused(trained_run, tmp_path):
    """64^3 voxels of 20 mm (1.6 MB of files) whose brain's box is 64 x 64 x 32 of them (a lattice
    of 128 voxels, 1 L: no more than a brain spans), resampled to the model's 1 mm would be 1280 x
    1280 x 640, 4 GB a sequence."""
    case = tmp_path / CASE
    case.mkdir()
    values = np.zeros((64, 64, 64), np.int16)  # a background of 0, as a skull-stripped image has
    values[::9, ::9, :32:31] = np.random.default_rng(0).integers(100, 1000, (8, 8, 2))
    for name in ("flair", "t1", "t1ce", "t2"):
        nib.save(nib.Nifti1Image(values, np.diag([20.0, 20.0, 20.0, 1.0])), case / f"{CASE}_{name}.nii.gz")
    code, err, peak = tumorseg_measured(
        "predict", "--model", trained_run, case, "--out", tmp_path / "s.nii.gz"
    )
    words = "resampled to the model's 1 x 1 x 1 mm voxels, makes a grid of 1280 x 1280 x 640 voxels"
    assert_clean_failure(code, err, "flair.nii.gz", words)
    assert peak < MEMORY_BOUND_MB and not (tmp_path / "s.nii.gz").exists(), f"peak RSS {peak:.0f} MB"


def test_a_model_config_declaring_a_huge_network_is_refused_before_it_is_built(good, trained_run, tmp_path):
    """The config in a model file says how wide the network is: its bottom stage widened to 12,000
    channels (the file still 23 kB) asks for a network of gigabytes before any weight is read."""
    state = torch.load(trained_run / "best.pt", weights_only=True)
    state["model_config"]["channels"][-1] = 12_000
    torch.save(tampered(state), tmp_path / "wide.pt")
    code, err, peak = tumorseg_measured(
        "predict", "--model", tmp_path / "wide.pt", good / "cases" / CASE, "--out", tmp_path / "s.nii.gz"
    )
    assert peak < MEMORY_BOUND_MB and not (tmp_path / "s.nii.gz").exists(), f"peak RSS {peak:.0f} MB"
    assert_clean_failure(code, err, "wide.pt", "weights do not fit the model its config describes")
    assert "in the file" in err and "12000" in err


@pytest.mark.parametrize(
    ("declared", "words"),
    [
        ({"channels": [2] * 16}, "channels = [2, 2, 2, 2, ...] is out of range"),  # pads to 32768^2
        (
            {"dims": 3, "channels": [2, 2], "patch": [1024, 1024, 1024]},
            "patch = [1024, 1024, 1024] is out of range",
        ),
    ],
    ids=["sixteen-stages", "patch-of-a-gigavoxel"],
)
def test_a_model_whose_inputs_would_be_padded_to_gigabytes_is_refused(
    good, trained_run, tmp_path, declared, words
):
    """A network's depth sets the stride slices are padded to, a 3D network's patch the box it
    slides; both are the model file's to declare, with weights of a few kB that fit them."""
    from tumorseg.models import ModelConfig
    from tumorseg.models.network import create_network

    state = torch.load(trained_run / "best.pt", weights_only=True)
    state["model_config"] |= {**declared, "deep_supervision": False}
    state["model"] = create_network(ModelConfig(**state["model_config"])).state_dict()
    torch.save(tampered(state), tmp_path / "padded.pt")
    code, err, peak = tumorseg_measured(
        "predict", "--model", tmp_path / "padded.pt", good / "cases" / CASE, "--out", tmp_path / "s.nii.gz"
    )
    assert peak < MEMORY_BOUND_MB and not (tmp_path / "s.nii.gz").exists(), f"peak RSS {peak:.0f} MB"
    assert_clean_failure(code, err, "padded.pt", words)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        (lambda w: w.to(torch.complex64), "holds complex values (complex64) where the network has real"),
        (lambda w: w > 0, "holds boolean values (bool) where the network has real floating-point ones"),
        (lambda w: (w * 100).to(torch.int32), "holds integer values (int32) where the network has real"),
        (lambda w: w.clone().index_fill_(0, torch.tensor([0]), float("nan")), "holds NaN or infinite values"),
    ],
    ids=["complex", "boolean", "integer", "nan"],
)
def test_weights_of_another_kind_of_number_are_refused(good, trained_run, tmp_path, capsys, values, words):
    """Copied into the network, complex weights lose their imaginary part, booleans and integers
    become floats, and one NaN turns every voxel to background: each was a segmentation written
    without a word."""
    state = torch.load(trained_run / "best.pt", weights_only=True)
    name = next(name for name, weight in state["model"].items() if weight.ndim == 4)
    state["model"][name] = values(state["model"][name])
    torch.save(tampered(state), tmp_path / "odd.pt")
    out = tmp_path / "s.nii.gz"
    code, err = run(["predict", "--model", tmp_path / "odd.pt", good / "cases" / CASE, "--out", out], capsys)
    assert_clean_failure(code, err, f"odd.pt: weight {name!r}", words)
    assert not out.exists()


def test_values_declaring_their_own_huge_size_are_refused_from_the_metadata(good, tmp_path):
    """A grid of the right shape whose values are text of a megabyte each: a few kB on disk,
    gigabytes once read (and then no numbers to compute with)."""
    text = {"dtype": "S1000000", "chunks": True, "compression": "gzip"}
    folder = tmp_path / "kaggle"
    shutil.copytree(good / "kaggle", folder)
    with h5py.File(folder / "volume_1_slice_4.h5", "w") as handle:
        handle.create_dataset("image", shape=(24, 24, 4), **text)
        handle["mask"] = np.zeros((24, 24, 3), np.uint8)
    code, err, peak = tumorseg_measured("prepare", folder, "--out", tmp_path / "k.h5")
    words = "'image': values of type |S1000000 are not supported"
    assert_clean_failure(code, err, "volume_1_slice_4.h5", words)
    assert peak < MEMORY_BOUND_MB, f"peak RSS {peak:.0f} MB"

    store = tmp_path / "s.h5"
    assert main(["prepare", str(good / "kaggle"), "--out", str(store)]) == 0
    with h5py.File(store, "a") as handle:
        case = handle["cases/volume_1"]
        shape = case["image"].shape
        del case["image"]
        case.create_dataset("image", shape=shape, **text)
    tiny = ["--channels", 4, 8, "--size", 32, 32, "--workers", 0]
    code, err, peak = tumorseg_measured("train", "--data", store, "--out", tmp_path / "r", *tiny)
    assert_clean_failure(code, err, "s.h5", "case 'volume_1' is damaged (image holds |S1000000, not int16)")
    assert peak < MEMORY_BOUND_MB and not (tmp_path / "r").exists(), f"peak RSS {peak:.0f} MB"


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefgh":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [" + ",".join([f"*{previous}"] * 9) + "]")
    lines.append("channels: [" + ",".join(["*h"] * 9) + "]")
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    assert (tmp_path / "bomb.yaml").stat().st_size < 1000
    code, err, peak = tumorseg_measured(
        "train", "--data", tmp_path / "s.h5", "--out", tmp_path / "r", "--config", tmp_path / "bomb.yaml"
    )
    assert_clean_failure(code, err, "bomb.yaml", "anchors and aliases are not allowed")
    assert len(err) < 300 and peak < MEMORY_BOUND_MB and not (tmp_path / "r").exists()


# class 5: inputs dropped or altered silently


def test_complex_and_rgb_voxels_are_refused(good, tmp_path, capsys):
    rgb = np.zeros((24, 24, 10), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    for name, data in [("complex", np.ones((24, 24, 10), np.complex64)), ("rgb", rgb)]:
        case = tmp_path / name / CASE
        shutil.copytree(good / "cases" / CASE, case)
        nifti(case, "t1", data)
        code, err = run(["prepare", case, "--out", tmp_path / f"{name}.h5"], capsys)
        assert_clean_failure(code, err, "t1.nii.gz", "are not supported (expected real numbers)")


def test_two_names_for_one_kaggle_slice_are_refused(good, tmp_path, capsys):
    folder = tmp_path / "kaggle"
    shutil.copytree(good / "kaggle", folder)
    shutil.copy(folder / "volume_1_slice_3.h5", folder / "volume_01_slice_3.h5")
    code, err = run(["prepare", folder, "--out", tmp_path / "s.h5"], capsys)
    assert_clean_failure(code, err, "volume_1_slice_3.h5", "slice 3 of volume 1 again")


def test_macos_companion_files_are_ignored(good, tmp_path, capsys):
    case = tmp_path / "cases" / CASE
    shutil.copytree(good / "cases" / CASE, case)
    (case / f"._{CASE}_flair.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "cases" / "._Phantom_009").write_bytes(b"\x00\x05\x16\x07")
    assert main(["prepare", str(tmp_path / "cases"), "--out", str(tmp_path / "s.h5")]) == 0
    assert "added 1 cases" in capsys.readouterr().out


def test_a_stray_nifti_beside_case_folders_is_named(good, tmp_path, capsys):
    shutil.copytree(good / "cases" / CASE, tmp_path / "cases" / CASE)
    shutil.copy(good / "cases" / CASE / f"{CASE}_t1.nii.gz", tmp_path / "cases" / "stray.nii.gz")
    code, err = run(["prepare", tmp_path / "cases", "--out", tmp_path / "s.h5"], capsys)
    assert_clean_failure(code, err, "stray.nii.gz", "holds case folders and also NIfTI files")


# class 6: tracebacks instead of one clear line


def test_kaggle_image_that_is_a_group(good, tmp_path, capsys):
    folder = tmp_path / "kaggle"
    shutil.copytree(good / "kaggle", folder)
    with h5py.File(folder / "volume_1_slice_4.h5", "w") as handle:
        handle.create_group("image")
        handle["mask"] = np.zeros((24, 24, 3), np.uint8)
    code, err = run(["prepare", folder, "--out", tmp_path / "s.h5"], capsys)
    assert_clean_failure(code, err, "volume_1_slice_4.h5", "'image' is not a dataset")


def test_damaged_stores(good, trained_run, tmp_path, capsys):
    store = tmp_path / "store.h5"
    assert main(["prepare", str(good / "kaggle"), "--out", str(store)]) == 0
    capsys.readouterr()
    with h5py.File(store, "a") as handle:
        del handle.attrs["format_version"]
    assert_clean_failure(*run(["inspect", store], capsys), "store.h5", "damaged store (no format_version)")
    assert main(["prepare", str(good / "kaggle"), "--out", str(tmp_path / "nan.h5")]) == 0
    with h5py.File(tmp_path / "nan.h5", "a") as handle:
        handle["cases/volume_1"].attrs["spacing"] = np.array([np.nan, 1.0, 1.0])
    capsys.readouterr()
    assert_clean_failure(*run(["inspect", tmp_path / "nan.h5"], capsys), "nan.h5", "is damaged (spacing [nan")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("channels: [wide, deep]\n", "channels must be a list of int, not ['wide', 'deep']"),
        ("warmup_epochs: .inf\n", "warmup_epochs must be a finite float, not inf"),
        ("lr: '12' \nseed: -1\n", "seed = -1 is out of range"),
        (
            "size: " + "[" + ",".join(["64"] * 1000) + "]\n",
            "size must be a list of int, not [64, 64, 64, 64, ...]",
        ),
    ],
)
def test_bad_config_values_leave_no_run_directory(cohort, tmp_path, capsys, text, words):
    (tmp_path / "c.yaml").write_text(text)
    code, err = run(
        ["train", "--data", cohort, "--out", tmp_path / "r", "--config", tmp_path / "c.yaml"], capsys
    )
    assert_clean_failure(code, err, "c.yaml", words)
    assert len(err) < 300 and not (tmp_path / "r").exists()


def test_json_nested_deeper_than_python_parses_is_named(cohort, trained_run, tmp_path, capsys):
    """json.loads raises RecursionError on "[" * 100000, which no reader of a JSON file caught."""
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "split.json").write_text(deep)
    args = ["train", "--data", cohort, "--out", tmp_path / "r", "--split", tmp_path / "split.json"]
    assert_clean_failure(*run(args, capsys), "split.json", "nested too deeply")
    (tmp_path / "rule.json").write_text(deep)
    args = ["pack", trained_run, "--out", tmp_path / "m.pt", "--postprocessing", tmp_path / "rule.json"]
    assert_clean_failure(*run(args, capsys), "rule.json", "nested too deeply")
    resumed = tmp_path / "resumed"
    shutil.copytree(trained_run, resumed)
    (resumed / "run.json").write_text(deep)
    args = ["train", "--resume", resumed, "--epochs", 3]
    assert_clean_failure(*run(args, capsys), "run.json", "nested too deeply")


def test_split_with_a_negative_seed(good, tmp_path, capsys):
    assert main(["prepare", str(good / "kaggle"), "--out", str(tmp_path / "s.h5")]) == 0
    capsys.readouterr()
    code, err = run(["split", tmp_path / "s.h5", "--out", tmp_path / "x.json", "--seed", -1], capsys)
    assert_clean_failure(code, err, "split", "seed must be 0 or more")


def test_resume_from_a_last_pt_that_does_not_fit(trained_run, tmp_path, capsys):
    for name, change, words in [
        ("shapes", lambda s: s["model"].update({"head.weight": torch.zeros(3, 9, 1, 1)}), "does not fit"),
        ("best", None, "holds no training state"),
        (
            "nan",  # a run that diverged, or a file that says so: resumed, every step would be NaN
            lambda s: s["model"]["head.weight"].view(-1)[:1].fill_(float("nan")),
            "weight 'head.weight' holds NaN or infinite values",
        ),
        (
            "integer",
            lambda s: s["model"].update({"head.weight": s["model"]["head.weight"].int()}),
            "weight 'head.weight' holds integer values (int32) where the network has real floating-point",
        ),
    ]:
        run_dir = tmp_path / name
        shutil.copytree(trained_run, run_dir)
        if change is None:
            shutil.copy(run_dir / "best.pt", run_dir / "last.pt")
        else:
            state = torch.load(run_dir / "last.pt", weights_only=True)
            change(state)
            torch.save(tampered(state), run_dir / "last.pt")
        assert_clean_failure(*run(["train", "--resume", run_dir], capsys), "last.pt", words)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_predict_and_evaluate_on_cuda_without_one(good, trained_run, tmp_path, capsys):
    args = ["predict", "--model", trained_run, good / "cases" / CASE, "--out", tmp_path / "s.nii.gz"]
    assert_clean_failure(*run([*args, "--device", "cuda"], capsys), "cuda", "no CUDA device")
    assert_clean_failure(
        *run(["evaluate", trained_run, "--device", "cuda"], capsys), "cuda", "no CUDA device"
    )


def test_export_without_the_onnx_package(trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    code, err = run(["export", trained_run, "--out", tmp_path / "m.onnx"], capsys)
    assert_clean_failure(code, err, "onnx", "pip install onnx")


def test_pack_of_a_run_whose_config_is_damaged(trained_run, tmp_path, capsys):
    """pack keeps the run's config.yaml in the file, read as every config is: a damaged one is one
    line naming it, and nothing is written."""
    run_copy = tmp_path / "run"
    shutil.copytree(trained_run, run_copy)
    (run_copy / "config.yaml").write_text("epochs: [1, 2\n")
    out = tmp_path / "m.pt"
    assert_clean_failure(*run(["pack", run_copy, "--out", out], capsys), "config.yaml", "not valid YAML")
    assert not out.exists()


def test_batch_rerun_with_damaged_earlier_outputs(good, trained_run, tmp_path, capsys):
    shutil.copytree(good / "cases" / CASE, tmp_path / "cases" / CASE)
    out = tmp_path / "out"
    args = ["predict", "--model", trained_run, tmp_path / "cases", "--out", out]
    assert main([str(a) for a in args]) == 0
    (out / "volumes.json").write_text("{not json")
    capsys.readouterr()
    assert_clean_failure(*run(args, capsys), "volumes.json", "not a volumes file")
    (out / "volumes.json").unlink()
    raw = gzip.decompress((out / f"{CASE}.nii.gz").read_bytes())
    for damaged in (b"", gzip.compress(raw[: len(raw) // 2])):  # e.g. a full disk mid-write, in another tool
        (out / f"{CASE}.nii.gz").write_bytes(damaged)
        (out / "volumes.json").unlink(missing_ok=True)
        assert main([str(a) for a in args]) == 0  # the cut one has its header: still redone
        assert "wrote" in capsys.readouterr().out
        assert np.asarray(nib.load(out / f"{CASE}.nii.gz").dataobj).shape == (24, 24, 10)


def test_case_ids_that_cannot_name_files_and_titles_with_dollars(tmp_path):
    from tumorseg.data.case import check_case_id
    from tumorseg.errors import TumorsegError
    from tumorseg.evaluation.figures import plot_overlays

    for bad in (".", "..", "", "a/b", ".hidden"):
        with pytest.raises(TumorsegError, match="cannot be a case id"):
            check_case_id(bad, "here")
    slice_ = np.zeros((8, 8))
    sample = {"title": "best: Case$1$^{x (Dice 0.5)", "flair": slice_, "t1ce": slice_,
              "reference": slice_.astype(int), "prediction": slice_.astype(int)}  # fmt: skip
    assert plot_overlays([sample], tmp_path / "o.png").stat().st_size > 1000


# class 7: runs that cannot be continued or replaced


def test_a_run_that_never_finished_an_epoch_restarts(cohort, tmp_path, capsys):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(f'{{"store": "{cohort}"}}')  # as an interrupted first epoch left it
    (run_dir / "config.yaml").write_text("epochs: 3\n")
    (run_dir / "split.json").write_text("{}")
    code, err = run(["train", "--resume", run_dir], capsys)
    assert_clean_failure(code, err, str(run_dir), "never finished an epoch; start it again with")
    args = ["train", "--data", cohort, "--out", run_dir, "--channels", 4, 8, "--size", 32, 32, "--epochs", 1,
            "--batch-size", 4, "--workers", 0]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    assert "never finished an epoch; starting it again" in capsys.readouterr().out
    assert (run_dir / "last.pt").exists()


def test_a_folder_of_someone_elses_files_is_no_run_to_restart(cohort, tmp_path, capsys):
    """Files named as a run's (a config.yaml, a history.csv) in a folder without run.json were
    taken for a run that never finished an epoch, and removed, the --config given included."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "config.yaml").write_text(
        "epochs: 1\nchannels: [4, 8]\nsize: [32, 32]\nworkers: 0\n# my notes\n"
    )
    (folder / "history.csv").write_text("my results\n")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    args = ["train", "--config", folder / "config.yaml", "--data", cohort, "--out", folder]
    assert_clean_failure(
        *run(args, capsys), "config.yaml", "a run would write over this file, which no run wrote"
    )
    assert_clean_failure(
        *run(["train", "--resume", folder], capsys), str(folder), "no last.pt to resume from"
    )
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


# class 8: leftovers


def test_sigterm_during_prepare_leaves_nothing(tmp_path):
    import signal
    import subprocess
    import time

    cases = tmp_path / "cases"
    synthesize(cases, 6, shape=(96, 96, 48), seed=3, progress=False)
    command = [sys.executable, "-m", "tumorseg", "prepare", str(cases), "--out", str(tmp_path / "s.h5")]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".s.h5.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGTERM)
    code, stderr = child.wait(timeout=60), child.stderr.read()
    assert code == 143, stderr
    assert "tumorseg: terminated" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases"]  # no store, no temp file, no lock


def test_an_interrupt_a_library_reports_as_its_own_error_still_ends_the_command_as_interrupted():
    """SIGTERM inside h5py's type conversion, as the store's first attributes were written, came
    out as a TypeError carrying the interrupt as its context: prepare ended with a traceback and
    exit code 1 instead of 143."""
    from tumorseg.interrupts import Terminated, handled

    def write_attributes():
        try:
            raise Terminated()
        except Terminated:
            raise TypeError("Operation not defined for data type class") from None

    with pytest.raises(Terminated), handled():
        write_attributes()
    with pytest.raises(TypeError), handled():  # an error without an interrupt behind it stays itself
        raise TypeError("Operation not defined for data type class")


def test_an_interrupt_a_library_swallows_still_ends_the_command_as_interrupted():
    """Ctrl-C inside code that catches every error (or clears it in C) never reaches the command;
    a command that returns after it ends as interrupted, and a loop's next step raises it again."""
    import contextlib
    import signal

    from tumorseg.interrupts import check, handled

    def swallowing_library():
        with contextlib.suppress(BaseException):
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt), handled():
        swallowing_library()
    steps = []
    with pytest.raises(KeyboardInterrupt), handled():
        for step in range(3):
            check()
            steps.append(step)
            swallowing_library()
    assert steps == [0]
    with handled():  # what one command recorded is gone with it
        check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # started in the background: Ctrl-C stays ignored
    try:
        with handled():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_a_batch_where_every_case_fails_leaves_no_folder(good, trained_run, tmp_path, capsys):
    case = tmp_path / "cases" / CASE
    shutil.copytree(good / "cases" / CASE, case)
    (case / f"{CASE}_t1.nii.gz").write_bytes(b"")
    shutil.copytree(case, tmp_path / "cases" / "Other_1")
    for path in (tmp_path / "cases" / "Other_1").iterdir():
        path.rename(path.with_name(path.name.replace(CASE, "Other_1")))
    code = main(
        ["predict", "--model", str(trained_run), str(tmp_path / "cases"), "--out", str(tmp_path / "out")]
    )
    assert code == 1 and not (tmp_path / "out").exists()


def test_damaged_run_records_and_checkpoint_fields(trained_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir, ignore=shutil.ignore_patterns("report.html", "*.onnx"))
    (run_dir / "environment.json").write_text("[1, 2")
    assert_clean_failure(*run(["report", run_dir], capsys), "environment.json", "not valid JSON")
    state = torch.load(run_dir / "best.pt", weights_only=True)
    state["model_config"] = ["not", "a", "mapping"]
    torch.save(tampered(state), run_dir / "best.pt")
    assert_clean_failure(*run(["export", run_dir], capsys), "best.pt", "lacks model weights or config")
