import os
import signal
import subprocess
import sys
import time

import h5py
import nibabel as nib
import numpy as np
import pytest

from tumorseg.data import kaggle
from tumorseg.data.case import MODALITIES
from tumorseg.data.prepare import prepare_store
from tumorseg.data.store import FORMAT_VERSION, Store
from tumorseg.data.store import describe as summarize
from tumorseg.data.synth import synthesize
from tumorseg.errors import TumorsegError
from tumorseg.labels import to_internal


def zscore(volume: np.ndarray) -> np.ndarray:
    """The documented normalization, computed independently in float64."""
    out = np.zeros(volume.shape)
    brain = volume != 0
    values = volume[brain].astype(np.float64)
    out[brain] = (values - values.mean()) / values.std()
    return out


def assert_case_matches_nifti(store: Store, case_id: str, folder) -> None:
    """Every stored voxel equals the NIfTI's after cropping and z-scoring; the rest is empty."""
    info = store.info(case_id)
    image, label = store.read_volume(case_id)
    (x0, x1), (y0, y1), (z0, z1) = info.attrs["bbox"]
    for channel, modality in enumerate(MODALITIES):
        source = nib.load(next(folder.glob(f"*_{modality}.nii*")))
        volume = np.asarray(source.dataobj)
        np.testing.assert_allclose(info.attrs["affine"], source.affine)
        expected = zscore(volume)[x0:x1, y0:y1, z0:z1]
        np.testing.assert_allclose(image[:, channel], np.moveaxis(expected, 2, 0), atol=1e-5)
        outside = volume.copy()
        outside[x0:x1, y0:y1, z0:z1] = 0
        assert not outside.any(), "brain voxels outside the stored bounding box"
    seg = np.asarray(nib.load(next(folder.glob("*_seg.nii*"))).dataobj)
    np.testing.assert_array_equal(label, np.moveaxis(to_internal(seg)[x0:x1, y0:y1, z0:z1], 2, 0))
    counts = np.bincount(to_internal(seg).ravel(), minlength=4)
    # every tumor voxel is kept; background only inside the crop
    np.testing.assert_array_equal(info.label_counts.sum(axis=0)[1:], counts[1:])
    assert info.label_counts.sum() == label.size
    assert tuple(info.attrs["original_shape"]) == seg.shape


def test_store_matches_the_nifti_sources(store, phantoms):
    with Store(store) as opened:
        assert opened.case_ids == ["Phantom_001", "Phantom_002", "Phantom_003"]
        for case_id in opened.case_ids:
            assert_case_matches_nifti(opened, case_id, phantoms / case_id)


def test_kaggle_store_equals_the_nifti_store(store, kaggle_phantoms, tmp_path):
    out = tmp_path / "kaggle.h5"
    prepare_store([kaggle_phantoms], out, progress=False)
    with Store(store) as from_nifti, Store(out) as from_kaggle:
        assert from_kaggle.case_ids == ["volume_1", "volume_2", "volume_3"]
        for number in (1, 2, 3):
            a = from_nifti.read_volume(f"Phantom_{number:03d}")
            b = from_kaggle.read_volume(f"volume_{number}")
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])


def test_float_intensities_are_scaled_and_zscores_kept(kaggle_phantoms, tmp_path):
    folder = tmp_path / "floats"
    slices = kaggle.find_volumes(kaggle_phantoms)[1]
    case = kaggle.read_volume(1, slices)
    image = case.image * np.pi / 7  # not integers any more
    kaggle.write_volume(folder, 1, image, case.label)
    prepare_store([folder], tmp_path / "s.h5", progress=False)
    with Store(tmp_path / "s.h5") as opened:
        info = opened.info("volume_1")
        stored, _ = opened.read_volume("volume_1")
        assert (info.attrs["intensity_scale"] != 1).all()
        (x0, x1), (y0, y1), (z0, z1) = info.attrs["bbox"]
        for c in range(4):
            expected = np.moveaxis(zscore(image[c])[x0:x1, y0:y1, z0:z1], 2, 0)
            np.testing.assert_allclose(stored[:, c], expected, atol=2e-3)


def test_slice_reads_equal_volume_reads(store):
    with Store(store) as opened:
        case_id = opened.case_ids[1]
        volume, labels = opened.read_volume(case_id)
        for z in (0, volume.shape[0] // 2, volume.shape[0] - 1):
            image, label = opened.read_slice(case_id, z)
            np.testing.assert_array_equal(image, volume[z])
            np.testing.assert_array_equal(label, labels[z])
        info = opened.info(case_id)
        assert all(labels[z, :, :].max() > 0 for z in info.tumor_slices)
        assert opened._cases[case_id]["image"].chunks == (1, *volume.shape[1:])


def test_append_and_existing_policies(phantoms, tmp_path):
    more = tmp_path / "more"
    synthesize(more, 1, shape=(32, 32, 16), seed=7, start=4, progress=False)
    out = tmp_path / "s.h5"
    prepare_store([phantoms / "Phantom_001"], out, progress=False)
    result = prepare_store([more], out, progress=False)
    assert result.added == ["Phantom_004"]
    assert Store(out).case_ids == ["Phantom_001", "Phantom_004"]

    before = out.read_bytes()
    with pytest.raises(TumorsegError, match="already holds 1 of these cases .Phantom_001.*--existing"):
        prepare_store([phantoms], out, progress=False)
    assert out.read_bytes() == before

    result = prepare_store([phantoms], out, existing="skip", progress=False)
    assert result.skipped_existing == ["Phantom_001"]
    assert result.added == ["Phantom_002", "Phantom_003"]
    assert Store(out).case_ids == ["Phantom_001", "Phantom_002", "Phantom_003", "Phantom_004"]

    # replacing a case with different content: one copy, the new one
    (phantoms / "Phantom_001").rename(tmp_path / "keep")
    try:
        synthesize(tmp_path / "alt", 1, shape=(32, 32, 16), seed=99, start=1, progress=False)
        result = prepare_store([tmp_path / "alt"], out, existing="replace", progress=False)
    finally:
        (tmp_path / "keep").rename(phantoms / "Phantom_001")
    assert result.replaced == ["Phantom_001"]
    with Store(out) as opened:
        assert opened.case_ids.count("Phantom_001") == 1
        assert_case_matches_nifti(opened, "Phantom_001", tmp_path / "alt" / "Phantom_001")


def test_a_bad_case_leaves_the_store_untouched(phantoms, tmp_path):
    out = tmp_path / "s.h5"
    prepare_store([phantoms / "Phantom_001"], out, progress=False)
    before = out.read_bytes()
    bad = tmp_path / "cases" / "Bad_1"
    synthesize(tmp_path / "cases", 1, shape=(32, 32, 16), seed=1, start=2, progress=False)
    bad.mkdir()
    for path in (phantoms / "Phantom_002").iterdir():
        (bad / path.name.replace("Phantom_002", "Bad_1")).write_bytes(path.read_bytes()[:300])
    with pytest.raises(TumorsegError, match="Bad_1"):
        prepare_store([tmp_path / "cases"], out, progress=False)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []

    result = prepare_store([tmp_path / "cases"], out, skip_invalid=True, progress=False)
    assert result.added == ["Phantom_002"]
    assert len(result.invalid) == 1 and "Bad_1" in result.invalid[0][1]


def test_killed_prepare_leaves_the_old_store_and_rerun_finishes(tmp_path):
    cases = tmp_path / "cases"
    synthesize(cases, 6, shape=(96, 96, 48), seed=3, progress=False)
    out = tmp_path / "s.h5"
    prepare_store([cases / "Phantom_001"], out, progress=False)
    before = out.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-m", "tumorseg", "prepare", str(cases), "--out", str(out), "--existing", "skip"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".s.h5.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert out.read_bytes() == before
    with Store(out) as opened:
        assert opened.case_ids == ["Phantom_001"]
    result = prepare_store([cases], out, existing="skip", progress=False)
    assert len(result.added) == 5
    assert not list(tmp_path.glob(".s.h5.tmp-*"))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"hello"), "not an HDF5 file"),
        (lambda p: h5py.File(p, "w").close(), "not a tumorseg store"),
        (lambda p: None, "store does not exist"),
    ],
)
def test_opening_what_is_not_a_store(tmp_path, make, message):
    path = tmp_path / "x.h5"
    make(path)
    with pytest.raises(TumorsegError, match=message):
        Store(path)


def test_newer_store_format_is_refused(store, tmp_path):
    newer = tmp_path / "newer.h5"
    newer.write_bytes(store.read_bytes())
    with h5py.File(newer, "a") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(TumorsegError, match="newer than this tumorseg reads"):
        Store(newer)


def test_summary_counts(store, phantoms):
    summary = summarize(store)
    assert len(summary["cases"]) == 3
    assert summary["slices"] == sum(c["slices"] for c in summary["cases"])
    total = np.zeros(4, dtype=np.int64)
    for folder in sorted(phantoms.iterdir()):
        seg = np.asarray(nib.load(next(folder.glob("*_seg.nii.gz"))).dataobj)
        total += np.bincount(to_internal(seg).ravel(), minlength=4)
    assert summary["voxels"][1:] == total[1:].tolist()
    assert summary["voxels"][0] == sum(np.prod(c["shape"]) // 4 for c in summary["cases"]) - total[1:].sum()
    assert summary["size_bytes"] == store.stat().st_size


def test_duplicate_case_ids_across_sources(phantoms, tmp_path):
    with pytest.raises(TumorsegError, match="also found at"):
        prepare_store([phantoms, phantoms / "Phantom_001"], tmp_path / "s.h5", progress=False)
    assert not (tmp_path / "s.h5").exists()


def test_all_zero_case_is_refused(tmp_path):
    from tumorseg.data.synth import write_brats_case

    write_brats_case(tmp_path / "Z_1", "Z_1", np.zeros((4, 8, 8, 8), np.int16), np.zeros((8, 8, 8), np.uint8))
    with pytest.raises(TumorsegError, match="every voxel of every modality is zero"):
        prepare_store([tmp_path / "Z_1"], tmp_path / "s.h5", progress=False)


def test_crop_keeps_labels_outside_the_brain():
    from tumorseg.data.case import Case, brats_affine
    from tumorseg.data.preprocess import preprocess

    image = np.zeros((4, 10, 10, 10), np.int16)
    image[:, 2:5, 2:5, 2:5] = np.arange(1, 28).reshape(3, 3, 3)
    label = np.zeros((10, 10, 10), np.uint8)
    label[8, 8, 8] = 2
    encoded = preprocess(Case("c", image, label, brats_affine(label.shape)))  # already in training axes
    assert encoded.bbox.tolist() == [[2, 9], [2, 9], [2, 9]]
    assert encoded.label_counts[:, 2].sum() == 1


def reoriented_copy(folder, out, ornt):
    """The case's files with their arrays in another axis order and direction (same voxels in space)."""
    out.mkdir(parents=True)
    for path in folder.iterdir():
        nib.save(nib.load(path).as_reoriented(ornt), out / path.name)
    return out


def test_prepare_stores_any_orientation_as_the_same_axial_slices(phantoms, tmp_path):
    case = phantoms / "Phantom_002"
    turned = reoriented_copy(case, tmp_path / "turned" / case.name, np.array([[2, 1], [0, -1], [1, -1]]))
    assert nib.load(next(turned.glob("*_t1.nii.gz"))).shape != nib.load(next(case.glob("*_t1.nii.gz"))).shape
    prepare_store([case], tmp_path / "a.h5", progress=False)
    prepare_store([turned], tmp_path / "b.h5", progress=False)
    with Store(tmp_path / "a.h5") as a, Store(tmp_path / "b.h5") as b:
        for part_a, part_b in zip(a.read_volume(case.name), b.read_volume(case.name), strict=True):
            np.testing.assert_array_equal(part_a, part_b)
        np.testing.assert_allclose(
            a.info(case.name).attrs["affine"], b.info(case.name).attrs["affine"], atol=1e-6
        )
