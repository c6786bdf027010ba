import h5py
import numpy as np
import pytest

from tumorseg.data import kaggle
from tumorseg.data.brats import find_case_files, read_case
from tumorseg.errors import TumorsegError


def test_volumes_match_the_nifti_phantoms(phantoms, kaggle_phantoms):
    volumes = kaggle.find_volumes(kaggle_phantoms)
    assert sorted(volumes) == [1, 2, 3]
    for number, slices in volumes.items():
        from_kaggle = kaggle.read_volume(number, slices)
        from_nifti = read_case(find_case_files(phantoms / f"Phantom_{number:03d}"))
        assert from_kaggle.case_id == f"volume_{number}"
        np.testing.assert_array_equal(from_kaggle.image, from_nifti.image)
        np.testing.assert_array_equal(from_kaggle.label, from_nifti.label)


def test_channel_mapping_is_the_documented_one(kaggle_phantoms):
    with h5py.File(kaggle_phantoms / "volume_1_slice_8.h5") as f:
        image, mask = f["image"][()], f["mask"][()]
    case = kaggle.read_volume(1, kaggle.find_volumes(kaggle_phantoms)[1])
    for channel, modality in enumerate(kaggle.IMAGE_CHANNELS):
        np.testing.assert_array_equal(
            case.image[("flair", "t1", "t1ce", "t2").index(modality), :, :, 8], image[..., channel]
        )
    for channel, cls in enumerate(kaggle.MASK_CLASSES):
        np.testing.assert_array_equal(case.label[:, :, 8] == cls, mask[..., channel] == 1)


@pytest.fixture
def copy_of_volume(kaggle_phantoms, tmp_path):
    """A private copy of volume 1 that a test may break."""
    for path in kaggle_phantoms.glob("volume_1_slice_*.h5"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    return tmp_path


def rewrite(path, **datasets):
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f[key] = value


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (
            lambda d: rewrite(d / "volume_1_slice_3.h5", img=np.zeros((32, 32, 4))),
            "expected datasets 'image' and 'mask'",
        ),
        (lambda d: (d / "volume_1_slice_3.h5").write_bytes(b"garbage"), "not a readable HDF5"),
        (lambda d: (d / "volume_1_slice_3.h5").write_bytes(b""), "not a readable HDF5"),
        (lambda d: (d / "volume_1_slice_3.h5").unlink(), "lacks slice 3"),
        (
            lambda d: rewrite(
                d / "volume_1_slice_3.h5", image=np.zeros((32, 32, 3)), mask=np.zeros((32, 32, 3))
            ),
            r"'image' has shape \(32, 32, 3\)",
        ),
        (
            lambda d: rewrite(
                d / "volume_1_slice_3.h5", image=np.zeros((32, 32, 4)), mask=np.ones((32, 32, 3))
            ),
            "overlap",
        ),
        (
            lambda d: rewrite(
                d / "volume_1_slice_3.h5", image=np.full((32, 32, 4), np.inf), mask=np.zeros((32, 32, 3))
            ),
            "NaN or infinite",
        ),
        (
            lambda d: rewrite(
                d / "volume_1_slice_3.h5", image=np.zeros((16, 16, 4)), mask=np.zeros((16, 16, 3))
            ),
            "differs from slice 0",
        ),
        (
            lambda d: rewrite(
                d / "volume_1_slice_3.h5", image=np.zeros((32, 32, 4)), mask=np.full((32, 32, 3), 2)
            ),
            "values other than 0 and 1",
        ),
        (
            lambda d: rewrite(
                d / "volume_1_slice_3.h5", image=np.array([b"x"] * 4), mask=np.zeros((32, 32, 3))
            ),
            "'image' has shape",
        ),
    ],
)
def test_broken_slice_files_are_named(copy_of_volume, breaker, message):
    breaker(copy_of_volume)
    with pytest.raises(TumorsegError, match=message) as err:
        kaggle.read_volume(1, kaggle.find_volumes(copy_of_volume)[1])
    assert str(copy_of_volume) in str(err.value)


def test_meta_data_listing_a_missing_slice(copy_of_volume):
    kaggle.write_meta(copy_of_volume, [{"slice_path": "x", "target": 0, "volume": 9, "slice": 0}])
    with pytest.raises(TumorsegError, match="volume_9_slice_0.h5"):
        kaggle.check_meta(copy_of_volume, kaggle.find_volumes(copy_of_volume))
    (copy_of_volume / kaggle.META_FILE).write_text("a,b\n1,2\n")
    with pytest.raises(TumorsegError, match="not a Kaggle meta_data.csv"):
        kaggle.check_meta(copy_of_volume, kaggle.find_volumes(copy_of_volume))
