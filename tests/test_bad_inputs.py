"""Broken inputs across the commands: each must fail with one clear line that names the file,
exit non-zero, leave no partial output behind and leave earlier outputs untouched.

Every input is generated here from a good phantom; nothing binary is committed.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from tumorseg.cli import main
from tumorseg.data.synth import synthesize

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


def run(args: list, capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def assert_clean_failure(code: int, err: str, names: str, words: str) -> None:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tumorseg: error: "), err
    assert names in lines[0] and words in lines[0], lines[0]


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
    code, err = run(["predict", "--model", trained_run, folder, "--out", out, "--overwrite"], capsys)
    assert_clean_failure(code, err, "t2.nii.gz", "shape")
    assert out.read_bytes() == b"earlier result"
    assert_clean_failure(
        *run(["predict", "--model", trained_run, folder, "--out", tmp_path / "x" / "y.nii.gz"], capsys),
        "x",
        "does not exist",
    )


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
