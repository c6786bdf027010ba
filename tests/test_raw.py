"""Raw scans: DICOM series found and named, the geometry of SimpleITK and nibabel tied together, the
raw pipeline's steps on phantoms moved and resampled as scanners do, and one real raw patient."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO, assert_clean_failure, run
from tumorseg.data.case import MODALITIES, brats_affine
from tumorseg.data.synth import phantom
from tumorseg.errors import TumorsegError
from tumorseg.labels import region_masks, to_internal
from tumorseg.raw import dicom, images, pipeline
from tumorseg.raw.registration import ALIGNED, register

RAW = Path(os.environ.get("TUMORSEG_RAW_DATA", REPO.parent / "shared/data/raw-mri"))
needs_raw = pytest.mark.skipif(not RAW.is_dir(), reason="raw MRI not found (set TUMORSEG_RAW_DATA)")


# --- geometry -------------------------------------------------------------------------------------


def test_simpleitk_and_nibabel_place_an_oblique_volume_alike(tmp_path):
    rotation = sitk.Euler3DTransform((0, 0, 0), 0.2, -0.1, 0.3).GetMatrix()
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(rotation).reshape(3, 3) * [0.9, 0.9, 5.5]
    affine[:3, 3] = [90.7, -71.4, -98.4]
    voxels = np.random.default_rng(0).integers(0, 1000, (20, 16, 6)).astype(np.int16)
    nib.save(nib.Nifti1Image(voxels, affine), tmp_path / "v.nii.gz")
    image = sitk.ReadImage(str(tmp_path / "v.nii.gz"))
    assert np.allclose(images.affine(image), affine, atol=1e-4)
    assert np.array_equal(images.array(image), voxels)
    assert images.array(images.from_array(voxels, image)).shape == voxels.shape


def test_the_shipped_atlas_lies_on_the_brats_grid():
    atlas = images.atlas()
    assert atlas.GetSize() == images.BRATS_SHAPE
    assert np.allclose(images.affine(atlas), brats_affine(images.BRATS_SHAPE))
    brain_ml = np.count_nonzero(images.array(atlas) > 0) / 1000
    assert 1300 < brain_ml < 1600  # an adult brain, not a head or an empty grid
    assert (images.ATLAS.parent / "COPYRIGHT.md").is_file()


# --- DICOM ----------------------------------------------------------------------------------------


def oblique_volume(shape=(24, 20, 12), spacing=(1.1, 1.1, 4.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.random.default_rng(1).integers(0, 900, shape[::-1]).astype(np.int16))
    image.SetSpacing(spacing)
    image.SetDirection(sitk.Euler3DTransform((0, 0, 0), 0.15, 0.0, -0.2).GetMatrix())
    image.SetOrigin((-20.0, 35.0, 12.5))
    return image


def test_a_dicom_series_reads_back_with_its_geometry_and_voxels(tmp_path):
    volume = oblique_volume()
    dicom.write_series(volume, tmp_path / "s", "t1_mprage_sag")
    [found] = dicom.find_series(tmp_path)
    read = dicom.read_series(found)
    assert found.sequence() == "t1" and len(found.files) == volume.GetDepth()
    assert np.allclose(read.GetOrigin(), volume.GetOrigin(), atol=1e-3)
    assert np.allclose(read.GetSpacing(), volume.GetSpacing(), atol=1e-3)
    assert np.allclose(read.GetDirection(), volume.GetDirection(), atol=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(volume))


@pytest.mark.parametrize(
    ("description", "contrast", "slices", "expected"),
    [
        ("AX FLAIR", "", 30, "flair"),
        ("t2_tirm_tra_dark-fluid", "", 30, "flair"),
        ("t2_tse_tra", "", 30, "t2"),
        ("T1 AX POST GD", "", 30, "t1ce"),
        ("t1_fl2d_sag", "Gadovist", 30, "t1ce"),
        ("t1_mprage_sag", "", 30, "t1"),
        ("t1_fl2d_sag", "", 35, "t1"),
        ("localizer", "", 30, None),
        ("t1 3-plane", "", 3, None),  # too few images: a localizer whatever its name
        ("ep2d_diff DWI", "", 30, None),
        ("Series 7", "", 30, None),
    ],
)
def test_series_are_named_from_their_headers(description, contrast, slices, expected):
    header = dict.fromkeys(dicom.TAGS, "") | {
        "description": description,
        "contrast": contrast,
        "modality": "MR",
    }
    assert dicom.Series("1", Path("."), ["f"] * slices, header).sequence() == expected


def test_a_study_with_two_t1ce_candidates_names_both(tmp_path):
    dicom.write_series(oblique_volume(), tmp_path / "a", "T1 POST GD")
    dicom.write_series(oblique_volume(), tmp_path / "b", "t1_mprage +C")
    with pytest.raises(TumorsegError, match=r"two series look like T1CE .*T1 POST GD.*t1_mprage \+C.*--t1ce"):
        dicom.choose(dicom.find_series(tmp_path), tmp_path)


def test_a_study_with_nothing_recognized_lists_what_it_holds(tmp_path):
    dicom.write_series(oblique_volume(), tmp_path / "a", "Series 7")
    with pytest.raises(TumorsegError, match=r"no series recognized .*'Series 7' \(12 images\)"):
        dicom.choose(dicom.find_series(tmp_path), tmp_path)


def test_a_study_of_two_patients_is_refused(tmp_path):
    dicom.write_series(oblique_volume(), tmp_path / "a", "AX FLAIR", patient="P1")
    dicom.write_series(oblique_volume(), tmp_path / "b", "t2_tse", patient="P2")
    with pytest.raises(TumorsegError, match="2 patients"):
        dicom.find_series(tmp_path)


def test_convert_writes_each_sequence_as_nifti_on_its_own_grid(tmp_path, capsys):
    study = tmp_path / "study"
    dicom.write_series(oblique_volume(), study / "1", "AX FLAIR")
    dicom.write_series(oblique_volume(spacing=(0.9, 0.9, 5.0)), study / "2", "T1 POST GD")
    dicom.write_series(oblique_volume(shape=(8, 8, 3)), study / "3", "localizer")
    code, _ = run(["convert", study, "--out", tmp_path / "nifti"], capsys)
    assert code == 0
    written = sorted(p.name for p in (tmp_path / "nifti").iterdir())
    assert written == ["flair.nii.gz", "t1ce.nii.gz"]
    assert np.allclose(nib.load(tmp_path / "nifti" / "t1ce.nii.gz").header.get_zooms(), (0.9, 0.9, 5.0))
    before = (tmp_path / "nifti" / "flair.nii.gz").read_bytes()
    code, err = run(["convert", study, "--out", tmp_path / "nifti"], capsys)
    assert_clean_failure(code, err, "flair.nii.gz", "--overwrite")
    assert (tmp_path / "nifti" / "flair.nii.gz").read_bytes() == before


@needs_raw
def test_a_head_scanned_prone_lands_where_the_supine_one_does():
    """The same head, head-first supine and prone: in patient coordinates the two differ by how
    the head lay (a few degrees), never by the half turn a position read wrong would make."""
    supine, prone = (
        dicom.read_series(dicom.find_series(RAW / "dicom-decubitus" / p)[0]) for p in ("HFS", "HFP")
    )
    moved = register(supine, prone)
    angles = np.rad2deg(np.abs([moved.GetAngleX(), moved.GetAngleY(), moved.GetAngleZ()]))
    assert angles.max() < 15, angles


# --- the pipeline on phantoms ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_phantom():
    """A phantom in BraTS space (3 mm voxels, centred), and its four sequences as a scanner gives
    them: each moved by its own rigid transform and sampled on a 2 x 2 x 5 mm grid."""
    image, label = phantom(np.random.default_rng(3), shape=(64, 64, 40))
    centre = np.array([119.5, -119.5, 77.0])
    truth = []
    for channel in (*image, label):
        volume = sitk.GetImageFromArray(np.ascontiguousarray(channel.transpose(2, 1, 0)).astype(np.float32))
        volume.SetSpacing((3.0, 3.0, 3.0))
        volume.SetOrigin(tuple(centre - 1.5 * (np.array(channel.shape) - 1)))
        truth.append(volume)
    native, moves = {}, {}
    for index, modality in enumerate(MODALITIES):
        move = sitk.Euler3DTransform(
            tuple(centre), *np.deg2rad([2 * index, -3, 4 + index]), (3.0 * index, -4, 2)
        )
        grid = sitk.Image(104, 104, 30, sitk.sitkFloat32)
        grid.SetSpacing((2.0, 2.0, 5.0))
        grid.SetOrigin(tuple(centre - [103.0, 103.0, 72.5]))  # the whole head, as a scanner frames it
        native[modality] = sitk.Resample(truth[index], grid, move, sitk.sitkLinear, 0.0)
        moves[modality] = move
    grid = images.brats_grid()
    in_brats = [
        sitk.Resample(t, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32) for t in truth
    ]
    return native, moves, in_brats, truth[-1]


@pytest.fixture
def phantom_steps(monkeypatch, raw_phantom):
    """The phantoms' own T1 as the atlas, and their brain (0 outside it) as the skull stripper's."""
    monkeypatch.setattr(images, "atlas", lambda: raw_phantom[2][MODALITIES.index("t1")])
    monkeypatch.setattr(pipeline, "brain_mask", lambda image, where: sitk.Cast(image > 0, sitk.sitkUInt8))


def test_the_pipeline_undoes_each_sequences_move_and_takes_labels_back(raw_phantom, phantom_steps):
    native, moves, in_brats, label = raw_phantom
    steps = []
    case, space = pipeline.prepare(native, "p", "p", report=steps.append)
    assert steps[0] == "skull stripping t1ce" and steps[-1] == "resampling to the BraTS grid"
    assert space.reference == "t1ce" and min(space.overlap.values()) >= ALIGNED
    assert case.image.shape == (4, *images.BRATS_SHAPE) and np.allclose(
        case.affine, brats_affine(images.BRATS_SHAPE)
    )
    # where each transform takes the brain's points, against where the moves put them (mm): a
    # transform taken the wrong way or composed in the wrong order would be off by centimetres
    # (accuracy itself is measured on real brains, benchmarks/made_raw.py)
    brain = np.argwhere(images.array(in_brats[MODALITIES.index("t1")]) > 0)[::97]
    points = [images.brats_grid().TransformIndexToPhysicalPoint([int(v) for v in i]) for i in brain]
    native_points = [space.to_atlas.TransformPoint(q) for q in points]
    error = [
        np.linalg.norm(np.subtract(moves["t1ce"].TransformPoint(p), q))
        for p, q in zip(native_points, points, strict=True)
    ]
    assert np.mean(error) < 4.0, np.mean(error)
    for modality, found in space.coregistered.items():
        error = [
            np.linalg.norm(
                np.subtract(
                    moves[modality].TransformPoint(found.TransformPoint(p)), moves["t1ce"].TransformPoint(p)
                )
            )
            for p in native_points
        ]
        assert np.mean(error) < 1.5, (modality, np.mean(error))
    again, _ = pipeline.prepare(native, "p", "p")  # the same, to the last bit
    assert np.array_equal(again.image, case.image)
    inside = images.array(in_brats[MODALITIES.index("t1")]) > 0
    for index, modality in enumerate(MODALITIES):  # the voxels follow the transforms
        assert np.corrcoef(case.image[index][inside], images.array(in_brats[index])[inside])[0, 1] > 0.85, (
            modality
        )
    labels = np.rint(images.array(in_brats[-1])).astype(np.uint8)
    back = space.to_native(to_internal(labels))
    expected = sitk.Resample(label, native["t1ce"], moves["t1ce"], sitk.sitkNearestNeighbor, 0.0)
    expected = to_internal(np.rint(images.array(expected)).astype(np.uint8))
    assert back.shape == images.array(native["t1ce"]).shape
    ours, theirs = region_masks(back)[0], region_masks(expected)[0]
    assert 2 * np.count_nonzero(ours & theirs) / (np.count_nonzero(ours) + np.count_nonzero(theirs)) > 0.85


def test_a_sequence_of_another_head_fails_registration_with_one_line(raw_phantom, phantom_steps):
    native = dict(raw_phantom[0])
    noise = np.random.default_rng(0).uniform(1, 1000, images.array(native["t2"]).shape).astype(np.float32)
    native["t2"] = images.from_array(noise, native["t2"])
    with pytest.raises(TumorsegError, match=r"p: t2: registration to t1ce failed \(the brains overlap"):
        pipeline.prepare(native, "p", "p")


# --- deciding what is raw, and the real thing ------------------------------------------------------


def test_auto_tells_raw_cases_from_preprocessed_ones(phantoms, tmp_path):
    from tumorseg.data.brats import find_case_files
    from tumorseg.inference.native import Study, why_raw

    case = find_case_files(next(p for p in sorted(phantoms.iterdir()) if p.is_dir()), require_label=False)
    assert why_raw(case) is None
    assert why_raw(Study("s", tmp_path)) == "a DICOM study"
    moved = tmp_path / "moved"
    moved.mkdir()
    for modality, path in case.modalities.items():
        image = nib.load(path)
        affine = image.affine.copy()
        if modality == "t2":
            affine[0, 3] += 7  # on its own slab
        data = np.asarray(image.dataobj)
        if modality == "flair":
            data = data + 100  # skull on: nothing is 0
        nib.save(nib.Nifti1Image(data, affine), moved / path.name)
    found = find_case_files(moved, require_label=False)
    assert why_raw(found) == "its sequences lie on different grids"
    nib.save(nib.load(case.modalities["t2"]), moved / case.modalities["t2"].name)
    assert "not skull-stripped" in why_raw(find_case_files(moved, require_label=False))
    for path in case.modalities.values():  # a head whose air is 0: liters, not a brain
        nib.save(nib.Nifti1Image(np.asarray(nib.load(path).dataobj), np.diag([9.0, 9, 9, 1])),
                 moved / path.name)  # fmt: skip
    assert "not skull-stripped: its non-zero voxels span" in why_raw(
        find_case_files(moved, require_label=False)
    )


def test_dicom_input_with_preprocess_brats_is_refused(tmp_path, capsys):
    dicom.write_series(oblique_volume(), tmp_path / "study", "AX FLAIR")
    code, err = run(
        ["predict", tmp_path / "study", "--out", tmp_path / "s.nii.gz", "--preprocess", "brats"], capsys
    )
    assert_clean_failure(code, err, "study", "DICOM input is raw; use --preprocess raw or auto")


@needs_raw
def test_a_real_raw_patient_is_segmented_on_its_own_grid(tmp_path, capsys):
    """TCGA-FG-6692: four sequences on their own slabs and angles, skull on. The label map lies on
    the T1ce's grid; the atlas-space copy and the brain mask beside it; the whole tumor agrees with
    the BraTS Toolkit's fusion of five challenge models (taken to the T1ce through its ANTs
    transforms) as docs/results.md reports."""
    patient = RAW / "TCGA-FG-6692"
    files = [f"--{m}={patient / f'TCGA-FG-6692_{m}.nii.gz'}" for m in MODALITIES]
    out = tmp_path / "seg.nii.gz"
    code, err = run(["predict", *files, "--out", out, "--keep-preprocessed", tmp_path / "pre"], capsys)
    assert code == 0, err
    kept = tmp_path / "pre" / "TCGA-FG-6692"  # a BraTS case folder, which view shows with the atlas labels
    assert sorted(p.name for p in kept.iterdir()) == [f"TCGA-FG-6692_{m}.nii.gz" for m in sorted(MODALITIES)]
    assert nib.load(kept / "TCGA-FG-6692_t1ce.nii.gz").shape == images.BRATS_SHAPE
    code, err = run(
        ["view", kept, "--seg", tmp_path / "seg_atlas.nii.gz", "--out", tmp_path / "v.html"], capsys
    )
    assert code == 0 and (tmp_path / "v.html").stat().st_size > 0, err
    t1ce = nib.load(patient / "TCGA-FG-6692_t1ce.nii.gz")
    seg = nib.load(out)
    assert seg.shape == t1ce.shape and np.allclose(seg.affine, t1ce.affine, atol=1e-3)
    assert nib.load(tmp_path / "seg_atlas.nii.gz").shape == images.BRATS_SHAPE
    assert nib.load(tmp_path / "seg_brain.nii.gz").shape == t1ce.shape
    reference = patient / "reference"
    ants = {name: sitk.ReadTransform(str(reference / f"ants_{name}_0GenericAffine.mat"))
            for name in ("t1c_to_t1", "native_t1_to_brats")}  # fmt: skip
    to_brats = sitk.CompositeTransform(
        [ants["native_t1_to_brats"].GetInverse(), ants["t1c_to_t1"].GetInverse()]
    )
    fusion = sitk.ReadImage(str(reference / "brats_space_seg_fusion_simple.nii.gz"))
    grid = sitk.ReadImage(str(patient / "TCGA-FG-6692_t1ce.nii.gz"))
    fusion = to_internal(images.array(sitk.Resample(fusion, grid, to_brats, sitk.sitkNearestNeighbor, 0)))
    ours, theirs = region_masks(to_internal(np.asarray(seg.dataobj)))[0], region_masks(fusion)[0]
    assert 2 * np.count_nonzero(ours & theirs) / (np.count_nonzero(ours) + np.count_nonzero(theirs)) > 0.8


def test_a_folder_of_studies_is_a_batch_and_one_study_is_one_case(tmp_path):
    from tumorseg.inference.native import Study
    from tumorseg.inference.predict import find_inputs

    for patient in ("P1", "P2"):
        dicom.write_series(
            oblique_volume(), tmp_path / "all" / patient / "flair", "AX FLAIR", patient=patient
        )
        dicom.write_series(oblique_volume(), tmp_path / "all" / patient / "t2", "AX T2", patient=patient)
    cases, batch = find_inputs(tmp_path / "all")
    assert batch and [(c.case_id, c.folder.name) for c in cases] == [("P1", "P1"), ("P2", "P2")]
    cases, batch = find_inputs(tmp_path / "all" / "P1")
    assert not batch and cases == [Study("P1", tmp_path / "all" / "P1")]


def test_kept_preprocessed_files_are_not_replaced_without_overwrite(raw_phantom, phantom_steps, tmp_path):
    from tumorseg.data.brats import CaseFiles
    from tumorseg.inference.native import segment_raw
    from tumorseg.inference.writing import write_together

    native = raw_phantom[0]
    paths = {}
    for modality, image in native.items():
        paths[modality] = tmp_path / f"p_{modality}.nii.gz"
        sitk.WriteImage(image, str(paths[modality]))
    files = CaseFiles("p", tmp_path, paths, None, "brats")
    kept = tmp_path / "pre" / "p"
    kept.mkdir(parents=True)
    (kept / "p_t1ce.nii.gz").write_bytes(b"a user's file")
    out = tmp_path / "seg.nii.gz"

    def segment(case):
        return np.zeros(case.image.shape[1:], np.uint8)

    with pytest.raises(TumorsegError, match="p_t1ce.nii.gz: exists; pass --overwrite"):
        segment_raw(files, segment, out, labels="brats", keep=tmp_path / "pre", report=print)
    assert (kept / "p_t1ce.nii.gz").read_bytes() == b"a user's file" and not out.exists()
    write_together(segment_raw(files, segment, out, labels="brats", keep=tmp_path / "pre", replace=True)[1])
    assert out.exists() and nib.load(kept / "p_t1ce.nii.gz").shape == images.BRATS_SHAPE


def test_a_series_whose_slices_differ_in_size_is_refused_with_one_line(tmp_path):
    import shutil

    dicom.write_series(oblique_volume(), tmp_path / "s", "AX FLAIR")
    dicom.write_series(oblique_volume(shape=(40, 36, 3)), tmp_path / "other", "AX FLAIR")  # the same series
    for index, path in enumerate(sorted((tmp_path / "other").iterdir())):
        shutil.copy(path, tmp_path / "s" / f"9{index}.dcm")
    shutil.rmtree(tmp_path / "other")
    [series] = dicom.find_series(tmp_path)
    with pytest.raises(TumorsegError) as caught:
        dicom.read_series(series)
    message = str(caught.value)
    assert "\n" not in message and "90.dcm: declares 40 x 36 pixels where the first image" in message


def test_a_later_image_declaring_a_huge_size_is_refused_before_any_pixel_is_read(tmp_path):
    from pydicom import dcmread

    dicom.write_series(oblique_volume(), tmp_path / "s", "AX FLAIR")
    forged = sorted((tmp_path / "s").iterdir())[5]
    header = dcmread(forged)
    header.Rows, header.Columns = 60000, 60000  # 3.6 G pixels declared, the same few bytes held
    header.save_as(forged)
    [series] = dicom.find_series(tmp_path)
    with pytest.raises(TumorsegError, match=f"{forged.name}: declares 60000 x 60000 pixels"):
        dicom.read_series(series)


# --- DICOM out ------------------------------------------------------------------------------------


def read_seg(path: Path, series: dicom.Series) -> tuple[np.ndarray, object]:
    """A SEG's labels on its source series' grid as (X, Y, Z) classes, and the SEG itself."""
    import highdicom as hd
    from pydicom import dcmread

    seg = hd.seg.segread(path)
    uids = [dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.files]
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1, 2, 3], combine_segments=True, relabel=False
    )
    return frames.transpose(2, 1, 0), seg


def test_a_dicom_seg_lies_on_its_source_series_and_names_its_segments(tmp_path):
    from pydicom import dcmread

    from tumorseg.raw.dicom_seg import dicom_writers

    volume = oblique_volume()
    dicom.write_series(volume, tmp_path / "s", "T1 POST GD")
    [series] = dicom.find_series(tmp_path / "s")
    classes = np.zeros(volume.GetSize(), np.uint8)
    classes[5:15, 4:12, 3:8] = 2
    classes[8:12, 6:10, 4:7] = 3
    classes[9, 7, 5] = 1
    for name in ("a", "b"):
        seg, report = dicom_writers(classes, series, {"WT": 1.0, "TC": 0.5, "ET": 0.2})
        seg(tmp_path / f"{name}.dcm")
        report(tmp_path / f"{name}_sr.dcm")
    first, second = (dcmread(tmp_path / name) for name in ("a.dcm", "b.dcm"))
    for field in ("SOPInstanceUID", "SeriesInstanceUID", "PixelData"):  # the same result, the same SEG
        assert first[field].value == second[field].value
    back, seg = read_seg(tmp_path / "a.dcm", series)
    assert np.array_equal(back, classes)
    assert [s.SegmentLabel.split(" (")[0] for s in seg.SegmentSequence] == [
        "necrotic and non-enhancing tumor core", "peritumoral edema", "enhancing tumor"
    ]  # fmt: skip
    assert seg.SegmentSequence[2].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Neoplasm"
    assert "ET 0.2 mL" in seg.ContentDescription
    # every frame sits on the source image it references
    positions = {d.SOPInstanceUID: d.ImagePositionPatient for d in map(dcmread, series.files)}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        placed = frame.PlanePositionSequence[0].ImagePositionPatient
        assert np.allclose([float(v) for v in placed], [float(v) for v in positions[source]], atol=1e-3)
    assert seg.FrameOfReferenceUID == dcmread(series.files[0]).FrameOfReferenceUID
    # the report: each segment's volume, referencing the SEG's segment
    volumes = reported_volumes(tmp_path / "a_sr.dcm", seg)
    voxel_ml = float(np.prod(volume.GetSpacing())) / 1000
    assert volumes == pytest.approx(
        {n: np.count_nonzero(classes == n) * voxel_ml for n in (1, 2, 3)}, abs=1e-4
    )
    assert dcmread(tmp_path / "a_sr.dcm").SOPInstanceUID == dcmread(tmp_path / "b_sr.dcm").SOPInstanceUID


def reported_volumes(path: Path, seg) -> dict[int, float]:
    """The volume (mL) a TID 1500 report gives each segment of ``seg``, by segment number."""
    import highdicom as hd

    report = hd.sr.srread(path)
    found = {}
    for group in report.content.get_volumetric_roi_measurement_groups():
        referenced = group.referenced_segment
        assert referenced.referenced_sop_instance_uid == seg.SOPInstanceUID
        [measurement] = group.get_measurements()
        assert measurement.unit.value == "cm3"
        found[referenced.referenced_segment_numbers[0]] = measurement.value
    return found


@needs_raw
def test_a_dicom_seg_over_a_real_scanners_series(tmp_path):
    """The sagittal T1 of a real scanner (dicom-decubitus/HFS): a sphere's SEG reads back on it."""
    from tumorseg.raw.dicom_seg import dicom_writers

    [series] = dicom.find_series(RAW / "dicom-decubitus" / "HFS")
    image = dicom.read_series(series)
    centre = np.array(image.GetSize()) / 2
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in image.GetSize()], indexing="ij"), axis=-1)
    distance = np.linalg.norm((grid - centre) * np.array(image.GetSpacing()), axis=-1)
    classes = np.where(distance < 20, 3, np.where(distance < 30, 2, 0)).astype(np.uint8)
    dicom_writers(classes, series, {"WT": 1.0, "TC": 0.5, "ET": 0.2})[0](tmp_path / "seg.dcm")
    back, _ = read_seg(tmp_path / "seg.dcm", series)
    assert np.array_equal(back, classes)


def test_predict_on_a_dicom_study_writes_a_seg_of_its_label_map(raw_phantom, phantom_steps, tmp_path):
    from tumorseg.inference.native import Study, segment_raw, writes_dicom
    from tumorseg.inference.writing import companion, write_together

    native = raw_phantom[0]
    names = {"flair": "AX FLAIR", "t1": "AX T1 SE", "t1ce": "AX T1 POST GD", "t2": "AX T2 FSE"}
    for modality, image in native.items():
        dicom.write_series(image, tmp_path / "study" / modality, names[modality], patient="P")
    study = Study("P", tmp_path / "study")
    assert writes_dicom(study)

    def segment(case):  # the brightest FLAIR as edema, the brightest T1ce in it as enhancing tumor
        flair, t1ce = case.image[0], case.image[2]
        classes = np.where(flair > np.percentile(flair[flair > 0], 90), 2, 0)
        enhancing = (classes > 0) & (t1ce > np.percentile(t1ce[t1ce > 0], 90))
        return np.where(enhancing, 3, classes).astype(np.uint8)

    out = tmp_path / "seg.nii.gz"
    _, written = segment_raw(study, segment, out, labels="brats", report=lambda _: None)
    assert {companion(out, "dicom"), companion(out, "dicom_report")} <= {path for path, _ in written}
    write_together(written)
    [t1ce] = [s for s in dicom.find_series(tmp_path / "study") if s.sequence() == "t1ce"]
    back, seg = read_seg(companion(out, "dicom"), t1ce)
    image = nib.load(out)
    labels = to_internal(np.asarray(image.dataobj))
    assert back.any() and np.array_equal(back, labels)
    reported = reported_volumes(companion(out, "dicom_report"), seg)
    voxel_ml = float(np.prod(image.header.get_zooms()[:3])) / 1000
    assert reported == pytest.approx(
        {n: np.count_nonzero(labels == n) * voxel_ml for n in (1, 2, 3)}, rel=1e-3
    )


def test_compare_two_dicom_studies_writes_each_visits_seg(
    raw_phantom, phantom_steps, segmenting_run, tmp_path
):
    """Two DICOM studies of one (phantom) patient through compare: each goes through the raw pipeline,
    is compared in BraTS space, and gets its DICOM SEG; the same images twice change nothing."""
    from tumorseg.inference.segmenter import Segmenter
    from tumorseg.monitoring.compare import compare

    names = {"flair": "AX FLAIR", "t1": "AX T1 SE", "t1ce": "AX T1 POST GD", "t2": "AX T2 FSE"}
    for visit in ("one", "two"):
        for modality, image in raw_phantom[0].items():
            dicom.write_series(image, tmp_path / visit / "P" / modality, names[modality], patient="P")
    out = tmp_path / "out"
    result = compare(tmp_path / "one" / "P", tmp_path / "two" / "P", out,
                     lambda: Segmenter(segmenting_run / "best.pt"), report=lambda _: None)  # fmt: skip
    assert result.baseline.raw == "a DICOM study" and result.baseline.image.shape[1:] == images.BRATS_SHAPE
    assert result.alignment.aligned
    for name in ("baseline", "followup"):
        assert all((out / f"{name}{suffix}").is_file() for suffix in ("_seg.dcm", "_sr.dcm", "_atlas.nii.gz"))
    assert all(row["change_ml"] == 0 for row in result.regions())
