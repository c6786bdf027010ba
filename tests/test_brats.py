import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorseg.data.brats import find_case_files, read_case
from tumorseg.data.case import brats_affine
from tumorseg.errors import TumorsegError

SHAPE = (6, 5, 4)


def write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    nib.save(nib.Nifti1Image(data, brats_affine(SHAPE) if affine is None else affine), path)


def make_case(folder: Path, prefix: str, suffixes=("flair", "t1", "t1ce", "t2", "seg"), ext=".nii.gz"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for suffix in suffixes:
        if suffix == "seg":
            data = np.zeros(SHAPE, np.uint8)
            data[1:3, 1:3, 1:3] = 2
            data[2, 2, 2] = 4 if "GLI" not in prefix else 3
        else:
            data = rng.integers(1, 500, SHAPE).astype(np.int16)
        write(folder / f"{prefix}{suffix}{ext}", data)
    return folder


@pytest.mark.parametrize(
    ("prefix", "suffixes", "case_id", "convention"),
    [
        ("Brats18_CBICA_AAB_1_", ("flair", "t1", "t1ce", "t2", "seg"), "Brats18_CBICA_AAB_1", "brats"),
        ("BraTS20_Training_001_", ("flair", "t1", "t1ce", "t2", "seg"), "BraTS20_Training_001", "brats"),
        ("BraTS2021_00000_", ("flair", "t1", "t1ce", "t2", "seg"), "BraTS2021_00000", "brats"),
        ("BraTS-GLI-00000-000-", ("t2f", "t1n", "t1c", "t2w", "seg"), "BraTS-GLI-00000-000", "brats2023"),
    ],
)
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_naming_conventions(tmp_path, prefix, suffixes, case_id, convention, ext):
    folder = make_case(tmp_path / "case", prefix, suffixes, ext)
    files = find_case_files(folder)
    assert files.case_id == case_id
    assert files.convention == convention
    case = read_case(files)
    assert case.image.shape == (4, *SHAPE)
    assert case.image.dtype == np.int16
    # the enhancing voxel becomes internal class 3 under both conventions
    assert case.label[2, 2, 2] == 3
    assert sorted(np.unique(case.label).tolist()) == [0, 2, 3]
    assert case.spacing == (1.0, 1.0, 1.0)


def test_modalities_are_read_in_order(tmp_path):
    folder = make_case(tmp_path / "c", "X_")
    case = read_case(find_case_files(folder))
    for i, name in enumerate(("flair", "t1", "t1ce", "t2")):
        expected = np.asarray(nib.load(folder / f"X_{name}.nii.gz").dataobj)
        np.testing.assert_array_equal(case.image[i], expected)


def test_misnamed_label_file_gets_a_hint(tmp_path):
    # BraTS 2020 case 355 ships its label as W39_1998.09.19_Segm.nii
    folder = make_case(
        tmp_path / "BraTS20_Training_355", "BraTS20_Training_355_", ("flair", "t1", "t1ce", "t2")
    )
    write(folder / "W39_1998.09.19_Segm.nii", np.zeros(SHAPE, np.uint8))
    with pytest.raises(TumorsegError, match=r"W39_1998\.09\.19_Segm\.nii.*rename"):
        find_case_files(folder)
    assert find_case_files(folder, require_label=False).seg is None


def bad_cases():
    """(name, how to break a good case folder, expected message)."""

    def drop(name):
        return lambda f: (f / f"X_{name}.nii.gz").unlink()

    def rewrite(name, data, affine=None):
        return lambda f: write(f / f"X_{name}.nii.gz", data, affine)

    def truncate(f):
        path = f / "X_t1.nii.gz"
        path.write_bytes(path.read_bytes()[:200])

    def garbage(f):
        (f / "X_t2.nii.gz").write_bytes(gzip.compress(b"not a nifti at all" * 40))

    nan = np.ones(SHAPE, np.float32)
    nan[0, 0, 0] = np.nan
    shifted = brats_affine(SHAPE)
    shifted[0, 3] += 5
    return [
        ("missing modality", drop("t1ce"), "missing modality t1ce"),
        ("shape mismatch", rewrite("t2", np.ones((6, 5, 3), np.int16)), "shape"),
        ("affine mismatch", rewrite("t1", np.ones(SHAPE, np.int16), shifted), "affine differs"),
        ("NaN voxels", rewrite("flair", nan), "NaN"),
        ("unknown label", rewrite("seg", np.full(SHAPE, 3, np.uint8)), r"unknown label values \[3\]"),
        ("fractional label", rewrite("seg", np.full(SHAPE, 0.5, np.float32)), "non-integer"),
        ("truncated gzip", truncate, "X_t1.nii.gz: not a readable NIfTI"),
        ("zero bytes", lambda f: (f / "X_flair.nii.gz").write_bytes(b""), "X_flair.nii.gz: not a readable"),
        ("not NIfTI", garbage, "X_t2.nii.gz: not a readable NIfTI"),
        ("4D volume", rewrite("t1", np.ones((*SHAPE, 2), np.int16)), "expected a 3D volume"),
        ("2D volume", rewrite("t1", np.ones(SHAPE[:2], np.int16)), "expected a 3D volume"),
        ("two cases", lambda f: (f / "X_t2.nii.gz").rename(f / "Y_t2.nii.gz"), "different cases"),
    ]


@pytest.mark.parametrize(("name", "breaker", "message"), bad_cases(), ids=[c[0] for c in bad_cases()])
def test_bad_case_is_named_and_explained(tmp_path, name, breaker, message):
    folder = make_case(tmp_path / "case", "X_")
    breaker(folder)
    with pytest.raises(TumorsegError, match=message) as err:
        read_case(find_case_files(folder))
    assert str(tmp_path) in str(err.value)


def test_empty_folder(tmp_path):
    with pytest.raises(TumorsegError, match="no BraTS NIfTI files"):
        find_case_files(tmp_path)
