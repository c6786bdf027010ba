"""prepare on real BraTS cases, checked against the NIfTI files with nibabel alone."""

import nibabel as nib
import numpy as np
import pytest

from tumorseg.data.prepare import prepare_store
from tumorseg.data.store import Store

# One case with int16 labels (Brats18_2013_*) and one with uint8 labels.
CASES = ("Brats18_2013_3_1", "Brats18_CBICA_AME_1")
BRATS_VALUES = (0, 1, 2, 4)


@pytest.fixture(scope="module")
def real_store(tmp_path_factory):
    from conftest import real_data_root

    root = real_data_root()
    if root is None:
        pytest.skip("real BraTS cases not found (set TUMORSEG_REAL_DATA)")
    out = tmp_path_factory.mktemp("real") / "store.h5"
    prepare_store([root / c for c in CASES], out, progress=False)
    return out, root


@pytest.mark.parametrize("case_id", CASES)
def test_real_case_matches_nifti(real_store, case_id):
    out, root = real_store
    folder = root / case_id
    seg_image = nib.load(folder / f"{case_id}_seg.nii.gz")
    seg = np.asarray(seg_image.dataobj)
    flair = np.asarray(nib.load(folder / f"{case_id}_flair.nii.gz").dataobj)
    with Store(out) as store:
        info = store.info(case_id)
        image, label = store.read_volume(case_id)
    assert tuple(info.attrs["original_shape"]) == (240, 240, 155)
    np.testing.assert_array_equal(info.attrs["affine"], seg_image.affine)
    np.testing.assert_array_equal(info.attrs["spacing"], [1, 1, 1])
    (x0, x1), (y0, y1), (z0, z1) = info.attrs["bbox"]
    assert image.shape == (z1 - z0, 4, x1 - x0, y1 - y0)
    # tumor voxels per BraTS label: exactly those of the file
    for cls, value in enumerate(BRATS_VALUES[1:], start=1):
        assert (label == cls).sum() == (seg == value).sum() > 0
    # slice order: stored slice k is the file's axial slice z0 + k, voxel for voxel
    brain = flair != 0
    mean, std = flair[brain].mean(dtype=np.float64), flair[brain].std(dtype=np.float64)
    for k in (0, (z1 - z0) // 2, z1 - z0 - 1):
        raw = flair[x0:x1, y0:y1, z0 + k].astype(np.float64)
        expected = np.where(raw != 0, (raw - mean) / std, 0)
        np.testing.assert_allclose(image[k, 0], expected, atol=1e-5)
        np.testing.assert_array_equal(label[k], np.searchsorted(BRATS_VALUES, seg[x0:x1, y0:y1, z0 + k]))
    # the crop dropped no brain: all FLAIR voxels outside it are zero
    assert int(brain.sum()) == int((image[:, 0] != 0).sum())


def test_a_reoriented_copy_of_a_real_case_gives_the_same_stored_slices(real_store, tmp_path):
    """Axes swapped and flipped on disk: prepare turns the case back to the same axial slices."""
    out, root = real_store
    case_id = CASES[1]
    folder = tmp_path / case_id
    folder.mkdir()
    ornt = np.array([[1, -1], [2, 1], [0, 1]])
    for path in (root / case_id).iterdir():
        nib.save(nib.load(path).as_reoriented(ornt), folder / path.name)
    prepare_store([folder], tmp_path / "turned.h5", progress=False)
    with Store(out) as plain, Store(tmp_path / "turned.h5") as turned:
        for a, b in zip(plain.read_volume(case_id), turned.read_volume(case_id), strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(plain.info(case_id).attrs["bbox"], turned.info(case_id).attrs["bbox"])
