"""Voxel sizes: predict resamples to the model's and back; a store holds one voxel size."""

import json

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_to_output

from tumorseg.data.case import MODALITIES
from tumorseg.data.prepare import prepare_store
from tumorseg.data.preprocess import resample
from tumorseg.errors import TumorsegError
from tumorseg.inference.predict import predict
from tumorseg.inference.segmenter import Segmenter


def resampled_case(folder, spacing, out, order=1):
    """A copy of a case folder with every file resampled to ``spacing`` mm (labels by nearest)."""
    out.mkdir(parents=True)
    for path in folder.iterdir():
        image = nib.load(path)
        is_label = path.name.endswith("_seg.nii.gz")
        resampled = resample_to_output(image, spacing, order=0 if is_label else order)
        nib.save(type(image)(np.asarray(resampled.dataobj), resampled.affine), out / path.name)
    return out


def test_resample_keeps_the_extent_and_constant_maps():
    volume = np.full((10, 12, 6), 3.5, np.float32)
    coarse = resample(volume, (5, 6, 3), order=1)
    assert coarse.shape == (5, 6, 3)
    np.testing.assert_allclose(coarse, 3.5)
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[:4] = 2
    fine = resample(labels, (16, 16, 16), order=0)
    assert fine.dtype == np.uint8 and (fine[:8] == 2).all() and (fine[8:] == 0).all()


def test_training_records_the_voxel_size_it_learned(trained_run):
    assert Segmenter(trained_run).config.spacing == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (0.9, 0.9, 3.0)])
def test_predict_resamples_and_answers_on_the_input_grid(trained_run, phantoms, tmp_path, spacing):
    case = resampled_case(phantoms / "Phantom_001", spacing, tmp_path / "Phantom_001")
    out = tmp_path / "seg.nii.gz"
    result = predict(case, out, lambda: Segmenter(trained_run), progress=False, probabilities=True)
    source = nib.load(case / "Phantom_001_flair.nii.gz")
    written = nib.load(out)
    assert written.shape == source.shape
    np.testing.assert_array_equal(written.affine, source.affine)
    assert nib.load(tmp_path / "seg_probabilities.nii.gz").shape == (*source.shape, 3)
    recorded = json.loads((tmp_path / "seg_volumes.json").read_text())["Phantom_001"]
    np.testing.assert_allclose(recorded["resampled_from_mm"], spacing, rtol=1e-6)
    assert recorded == result.volumes["Phantom_001"]


def test_the_model_grid_is_not_resampled(trained_run, phantoms, tmp_path):
    result = predict(
        phantoms / "Phantom_002", tmp_path / "s.nii.gz", lambda: Segmenter(trained_run), progress=False
    )
    assert "resampled_from_mm" not in result.volumes["Phantom_002"]


def test_resampling_preserves_what_a_model_sees(phantoms, tmp_path):
    """The same phantom at 2 mm, resampled back to the model's 1 mm, is the 1 mm phantom (up to
    interpolation): the segmentation is then done at the scale the model learned."""
    from tumorseg.data.brats import find_case_files, read_case
    from tumorseg.data.preprocess import preprocess

    fine = read_case(find_case_files(phantoms / "Phantom_003", require_label=False))
    coarse_folder = resampled_case(phantoms / "Phantom_003", (2.0, 2.0, 2.0), tmp_path / "Phantom_003")
    files = find_case_files(coarse_folder, require_label=False)
    coarse = read_case(type(files)(files.case_id, files.folder, files.modalities, None, files.convention))
    prepared = preprocess(coarse, spacing=(1.0, 1.0, 1.0))
    assert prepared.resampled_to == (1.0, 1.0, 1.0)
    reference = preprocess(type(fine)(fine.case_id, fine.image, None, fine.affine))
    assert abs(prepared.image.shape[0] - reference.image.shape[0]) <= 2
    # back onto the 2 mm crop, exactly its shape
    back = prepared.to_source_spacing(prepared.normalized())
    (x0, x1), (y0, y1), (z0, z1) = prepared.bbox
    assert back.shape == (z1 - z0, len(MODALITIES), x1 - x0, y1 - y0)


def test_a_store_holds_one_voxel_size(phantoms, tmp_path):
    cases = tmp_path / "cases"
    resampled_case(phantoms / "Phantom_001", (2.0, 2.0, 2.0), cases / "Phantom_001")
    for name in ("Phantom_002", "Phantom_003"):
        (cases / name).mkdir(parents=True)
        for path in (phantoms / name).iterdir():
            (cases / name / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "store.h5"
    with pytest.raises(
        TumorsegError, match=r"voxel size 1 x 1 x 1 mm differs from Phantom_001's 2 x 2 x 2 mm"
    ):
        prepare_store([cases], out, progress=False)
    assert not out.exists()
    result = prepare_store([cases], out, skip_invalid=True, progress=False)
    assert result.added == ["Phantom_001"] and len(result.invalid) == 2
