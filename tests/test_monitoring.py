"""tumorseg compare: measures, response rules, the change map, and whole comparisons of phantom
visits whose tumors grew or shrank by a known amount (``synth --tumor-scale``)."""

from __future__ import annotations

import json
import math
import shutil

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from conftest import assert_clean_failure, run
from tumorseg.data.synth import phantom, synthesize
from tumorseg.labels import EDEMA, ENHANCING, NECROSIS
from tumorseg.monitoring import measures, response
from tumorseg.monitoring.compare import compare
from tumorseg.monitoring.comparison import repeatability

SHAPE = (128, 128, 96)
CASE = 3  # a phantom whose enhancing tumor is measurable at scale 1 and not at 0.5 (bidimensionally)


def disc(shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float], angle: float = 0.0,
         spacing: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:  # fmt: skip
    """A filled ellipse (radii in mm, turned by ``angle`` radians) on a grid of ``spacing`` mm."""
    x, y = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing, strict=True)), indexing="ij")
    dx, dy = x - centre[0], y - centre[1]
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    return (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= 1


def enhancing(mask2d: np.ndarray, depth: int = 3) -> np.ndarray:
    classes = np.zeros((*mask2d.shape, depth + 2), np.uint8)
    classes[:, :, 1 : 1 + depth][mask2d] = ENHANCING
    return classes


# ---- measures


@pytest.mark.parametrize(
    ("radii", "angle", "spacing"),
    [((15.0, 6.0), 0.0, (1.0, 1.0)), ((15.0, 6.0), 0.7, (1.0, 1.0)), ((12.0, 12.0), 0.0, (0.5, 1.0))],
)
def test_bidimensional_measures_an_ellipse_to_a_voxel(radii, angle, spacing) -> None:
    shape = (int(80 / spacing[0]), int(80 / spacing[1]))
    lesion = disc(shape, (40.0, 40.0), radii, angle, spacing)
    found = measures.bidimensional(enhancing(lesion), (*spacing, 1.0))
    assert abs(found.longest_mm - 2 * radii[0]) <= max(spacing) * 1.5
    assert abs(found.perpendicular_mm - 2 * radii[1]) <= max(spacing) * 1.5
    assert found.lesions == 1 and found.measurable == (2 * radii[1] >= measures.MEASURABLE_MM)


def test_bidimensional_takes_the_largest_lesion_on_its_largest_slice() -> None:
    classes = np.zeros((80, 80, 12), np.uint8)
    classes[:, :, 2:5][disc((80, 80), (20, 20), (5, 5))] = ENHANCING  # small
    classes[:, :, 6][disc((80, 80), (55, 55), (8, 8))] = ENHANCING  # the big one's widest slice
    classes[:, :, 5][disc((80, 80), (55, 55), (6, 6))] = ENHANCING
    classes[:, :, 7][disc((80, 80), (55, 55), (6, 6))] = ENHANCING
    found = measures.bidimensional(classes, (1.0, 1.0, 1.0))
    assert found.lesions == 2 and found.slice == 6
    assert abs(found.longest_mm - 16) <= 1.5 and abs(found.perpendicular_mm - 16) <= 1.5


def test_no_enhancing_tumor_measures_zero_and_is_not_measurable() -> None:
    classes = np.full((20, 20, 5), EDEMA, np.uint8)
    found = measures.bidimensional(classes, (1.0, 1.0, 1.0))
    assert found.product_mm2 == 0 and not found.measurable and found.lesions == 0


def test_a_one_voxel_wide_line_measures_one_voxel_across() -> None:
    line = np.zeros((40, 40), bool)
    line[5:25, 10] = True
    longest, perpendicular = measures.diameters(line, (1.0, 1.0))
    assert longest == pytest.approx(math.hypot(20, 1), abs=1e-6)
    assert perpendicular == pytest.approx(1.0, abs=0.3)


def test_volumes_count_each_region_and_class() -> None:
    classes = np.zeros((10, 10, 10), np.uint8)
    classes[0, 0, :4] = NECROSIS
    classes[1, 0, :5] = EDEMA
    classes[2, 0, :6] = ENHANCING
    found = measures.volumes(classes, 0.5)
    assert found == {"WT": 7.5, "TC": 5.0, "ET": 3.0, "NCR": 2.0, "edema": 2.5}


def test_change_map_names_vanished_persisting_and_new_tumor() -> None:
    before = np.array([0, 2, 2, 3, 0, 1])
    after = np.array([0, 0, 1, 2, 3, 0])
    assert measures.change_map(before, after).tolist() == [0, 1, 2, 2, 3, 1]


def test_new_lesions_are_those_touching_no_enhancing_tumor_of_the_baseline() -> None:
    before = np.zeros((60, 60, 5), np.uint8)
    before[:, :, 2][disc((60, 60), (15, 15), (6, 6))] = ENHANCING
    after = before.copy()
    after[:, :, 2][disc((60, 60), (17, 15), (7, 7))] = ENHANCING  # grown: not new
    after[:, :, 1:4][disc((60, 60), (45, 45), (7, 7))] = ENHANCING  # elsewhere: new
    new = measures.new_lesions(before, after, (1.0, 1.0, 1.0))
    assert len(new) == 1 and new[0].measurable


# ---- response rules


@pytest.mark.parametrize(
    ("rule", "after", "expected"),
    [
        (response.BIDIMENSIONAL, 125.0, response.PROGRESSION),
        (response.BIDIMENSIONAL, 124.0, response.STABLE),
        (response.BIDIMENSIONAL, 51.0, response.STABLE),
        (response.BIDIMENSIONAL, 50.0, response.PARTIAL),
        (response.BIDIMENSIONAL, 0.0, response.COMPLETE),
        (response.VOLUMETRIC, 140.0, response.PROGRESSION),
        (response.VOLUMETRIC, 139.0, response.STABLE),
        (response.VOLUMETRIC, 36.0, response.STABLE),
        (response.VOLUMETRIC, 35.0, response.PARTIAL),
    ],
)
def test_rules_at_their_thresholds(rule, after, expected) -> None:
    judged = response.categorize(rule, 100.0, after, measurable=True, new_lesions=0, aligned=True)
    assert judged.category == expected, judged


def test_not_evaluable_and_new_lesions() -> None:
    rule = response.VOLUMETRIC
    assert response.categorize(rule, 0.1, 5.0, measurable=False, new_lesions=0, aligned=True).category == (
        response.NOT_EVALUABLE
    )
    failed = response.categorize(rule, 10.0, 5.0, measurable=True, new_lesions=0, aligned=False)
    assert failed.category == response.NOT_EVALUABLE and "registered" in failed.reason
    shrunk_but_new = response.categorize(rule, 10.0, 2.0, measurable=True, new_lesions=1, aligned=True)
    assert shrunk_but_new.category == response.PROGRESSION
    assert pytest.approx(0.5236, abs=1e-4) == response.MEASURABLE_ML


# ---- phantom visits


def test_tumor_scale_keeps_the_brain_and_grows_the_tumor() -> None:
    image, label = phantom(np.random.default_rng([0, CASE]), (64, 64, 48))
    grown_image, grown = phantom(np.random.default_rng([0, CASE]), (64, 64, 48), tumor_scale=1.4)
    outside = ~ndimage.binary_dilation((label > 0) | (grown > 0), iterations=5)  # tissue is smoothed
    assert np.array_equal(image[:, outside], grown_image[:, outside])
    assert np.count_nonzero(grown) > 2 * np.count_nonzero(label)
    assert np.all(grown[label > 0] > 0)  # the grown tumor holds the first


@pytest.fixture(scope="module")
def visits(tmp_path_factory) -> dict:
    """The same phantom at tumor scales 1 (baseline), 1.5, 0.5, 1.03 and 0.05."""
    root = tmp_path_factory.mktemp("visits")
    found = {}
    for scale in (1.0, 1.5, 0.5, 1.03, 0.05):
        (folder,) = synthesize(
            root / f"scale{scale}", 1, shape=SHAPE, start=CASE, tumor_scale=scale, progress=False
        )
        found[scale] = folder
    return found


def seg(folder):
    return folder / f"{folder.name}_seg.nii.gz"


def known_volumes(path) -> dict[str, float]:
    """Volumes counted straight from a BraTS label file (values 1, 2, 4)."""
    image = nib.load(path)
    values = np.asarray(image.dataobj)
    ml = float(np.prod(image.header.get_zooms()[:3])) / 1000
    count = lambda *v: float(np.isin(values, v).sum() * ml)  # noqa: E731
    return {"WT": count(1, 2, 4), "TC": count(1, 4), "ET": count(4), "NCR": count(1), "edema": count(2)}


@pytest.mark.parametrize(
    ("scale", "bidimensional", "volumetric"),
    [
        (1.5, response.PROGRESSION, response.PROGRESSION),
        (0.5, response.PARTIAL, response.PARTIAL),
        (1.03, response.STABLE, response.STABLE),
        (0.05, response.COMPLETE, response.COMPLETE),
    ],
)
def test_compare_phantom_visits_of_known_change(visits, tmp_path, scale, bidimensional, volumetric) -> None:
    before, after = visits[1.0], visits[scale]
    result = compare(
        before, after, tmp_path / "out", None, seg=(seg(before), seg(after)), report=lambda _: None
    )
    assert [r.category for r in result.responses] == [bidimensional, volumetric]
    record = json.loads((tmp_path / "out" / "comparison.json").read_text())
    for name, folder in (("baseline", before), ("followup", after)):
        truth = known_volumes(seg(folder))
        for region, ml in record["visits"][name]["volumes_ml"].items():
            assert ml == pytest.approx(truth[region], abs=0.01), (name, region)
    assert result.alignment.aligned and result.alignment.overlap > 0.95
    change = nib.load(tmp_path / "out" / "change.nii.gz").get_fdata()
    grew = scale > 1
    assert (np.count_nonzero(change == measures.NEW) > np.count_nonzero(change == measures.VANISHED)) == grew
    names = {path.name for path in result.written}
    assert {"report.html", "comparison.csv", "change.nii.gz", "followup_on_baseline.nii.gz"} <= names
    assert "baseline.nii.gz" not in names  # the label maps were given


def test_the_same_visit_moved_is_stable_and_within_noise(visits, tmp_path) -> None:
    """A visit moved rigidly and resampled (labels by nearest neighbour) against itself."""
    folder = visits[1.0]
    moved = tmp_path / "moved" / folder.name
    moved.mkdir(parents=True)
    angle = np.deg2rad(6.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    centre = (np.array(SHAPE) - 1) / 2
    offset = centre - rotation @ centre + np.array([3.0, -2.0, 1.0])
    for path in folder.iterdir():
        image = nib.load(path)
        order = 0 if path.name.endswith("_seg.nii.gz") else 1
        data = ndimage.affine_transform(np.asarray(image.dataobj), rotation, offset, order=order)
        nib.save(nib.Nifti1Image(data, image.affine, image.header), moved / path.name)
    result = compare(
        folder, moved, tmp_path / "out", None, seg=(seg(folder), seg(moved)), report=lambda _: None
    )
    assert result.alignment.aligned
    assert [r.category for r in result.responses] == [response.STABLE, response.STABLE]
    wt = result.regions()[0]
    assert abs(wt["change_percent"]) < 5
    # how well the registration undid the move is tested on a real brain (below): a phantom's brain,
    # a smooth ellipsoid nearly round in the axial plane, hardly pins a turn in that plane


def test_a_failed_registration_is_not_evaluable(visits, tmp_path) -> None:
    folder = visits[1.0]
    noise = tmp_path / "noise" / folder.name
    noise.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for path in folder.iterdir():
        image = nib.load(path)
        data = np.asarray(image.dataobj)
        data = (
            data if path.name.endswith("_seg.nii.gz") else rng.integers(1, 1000, data.shape).astype(np.int16)
        )
        nib.save(nib.Nifti1Image(data, image.affine, image.header), noise / path.name)
    result = compare(folder, noise, tmp_path / "out", None, seg=(seg(folder), seg(noise)), preprocess="brats",
                     report=lambda _: None)  # fmt: skip
    assert not result.alignment.aligned
    assert {r.category for r in result.responses} == {response.NOT_EVALUABLE}
    assert not (tmp_path / "out" / "change.nii.gz").exists()
    assert "registration failed" in (tmp_path / "out" / "report.html").read_text()


def test_compare_command_prints_rules_and_refuses_to_overwrite(visits, tmp_path, capsys) -> None:
    before, after = visits[1.0], visits[1.5]
    args = ["compare", before, after, "--out", tmp_path / "out", "--seg", seg(before), seg(after)]
    code, _ = run(args, capsys)
    assert code == 0
    code, err = run(args, capsys)
    assert_clean_failure(code, err, str(tmp_path / "out"), "exists; pass --overwrite")
    from tumorseg.cli import main

    code = main([str(a) for a in [*args, "--overwrite"]])
    printed = capsys.readouterr().out
    assert (
        code == 0 and "bidimensional: progressive disease" in printed and "volumetric: progressive" in printed
    )


def test_a_followup_without_t1ce_is_no_complete_response(visits, tmp_path, capsys) -> None:
    """The enhancing tumor is outlined on T1ce: a follow-up without it, whose enhancing tumor all
    but vanished, is not evaluable, and what its core and edema did is not a change."""
    from tumorseg.cli import main

    before, shrunk = visits[1.0], visits[0.05]
    after = tmp_path / "no-t1ce" / shrunk.name
    shutil.copytree(shrunk, after)
    (after / f"{shrunk.name}_t1ce.nii.gz").unlink()
    out = tmp_path / "out"
    code = main([str(a) for a in ["compare", before, after, "--out", out, "--seg", seg(before), seg(after)]])
    printed = capsys.readouterr().out
    assert code == 0
    record = json.loads((out / "comparison.json").read_text())
    assert {r["category"] for r in record["responses"]} == {response.NOT_EVALUABLE}
    assert all("not shown without T1CE at the follow-up" in r["reason"] for r in record["responses"])
    rows = {row["region"]: row for row in record["regions"]}
    assert rows["WT"]["not_shown"] is None and rows["WT"]["change_ml"] < 0
    hidden = ["TC", "ET", "NCR", "edema"]
    assert (
        record["visits"]["followup"]["not_shown"] == hidden
        and record["visits"]["baseline"]["not_shown"] == []
    )
    for region in hidden:
        assert rows[region]["change_ml"] is None and rows[region]["within_noise"] is None
        assert rows[region]["not_shown"] == "not shown without T1CE at the follow-up"
    assert "complete response" not in printed and "not shown without T1CE" in printed


def test_compare_refuses_a_label_map_of_another_grid_and_leaves_nothing(visits, tmp_path, capsys) -> None:
    small = tmp_path / "small_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)), small)
    before, after = visits[1.0], visits[1.5]
    code, err = run(
        ["compare", before, after, "--out", tmp_path / "out", "--seg", seg(before), small], capsys
    )
    assert_clean_failure(code, err, str(small), "not on the case's grid")
    assert not (tmp_path / "out").exists()


def test_compare_segments_visits_with_a_model(visits, segmenting_run, tmp_path) -> None:
    before, after = visits[1.0], visits[1.5]
    from tumorseg.inference.segmenter import Segmenter

    result = compare(before, after, tmp_path / "out", lambda: Segmenter(segmenting_run / "best.pt"),
                     report=lambda _: None)  # fmt: skip
    written = {path.name for path in result.written}
    assert {"baseline.nii.gz", "followup.nii.gz"} <= written
    labels = nib.load(tmp_path / "out" / "followup.nii.gz")
    assert labels.shape == SHAPE
    assert result.followup.volumes_ml["WT"] > result.baseline.volumes_ml["WT"]


def test_repeatability_ships_for_every_region() -> None:
    found = repeatability()
    assert set(found) == set(measures.VOLUME_REGIONS)
    assert all(values["rc_ml"] > 0 for values in found.values())
    # a region found in some copies and not in others is left out of the percentage; with it in,
    # one patient's enhancing tumor flipping between 0 and 1 mL made ET's 60 %
    assert all(values["rc_percent"] < 20 for values in found.values()), found


def test_a_real_patient_moved_is_stable_within_the_repeatability(real_root, tmp_path) -> None:
    """A shared BraTS patient moved and resampled twice, by two moves: two visits of a tumor that did
    not change (each resampled, as every visit is on its way to atlas space), both segmented by the
    models that ship."""
    from tumorseg.data.brats import find_case_folders
    from tumorseg.inference.segmenter import Segmenter

    folder = find_case_folders(real_root)[0]
    visits = []
    for name, degrees, shift in (("one", 4.0, (2.0, -1.0, 1.0)), ("two", -3.0, (-3.0, 2.0, -2.0))):
        visit = tmp_path / name / folder.name
        visit.mkdir(parents=True)
        cos, sin = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
        rotation = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]])
        for path in folder.glob("*.nii.gz"):
            if "_seg" in path.name:
                continue
            image = nib.load(path)
            centre = (np.array(image.shape) - 1) / 2
            offset = centre - rotation @ centre + np.array(shift)
            data = ndimage.affine_transform(np.asarray(image.dataobj, np.float32), rotation, offset, order=1)
            nib.save(nib.Nifti1Image(np.rint(data).astype(np.int16), image.affine), visit / path.name)
        visits.append(visit)
    result = compare(*visits, tmp_path / "out", lambda: Segmenter(None), report=lambda _: None)
    assert result.alignment.aligned and result.alignment.overlap > 0.95
    wt = result.regions()[0]
    assert wt["region"] == "WT" and wt["within_noise"], wt
    # the registration undid the two moves: the registered follow-up's tumor lies on the baseline's
    persisting = np.count_nonzero(result.change == measures.PERSISTING)
    assert persisting / np.count_nonzero(result.change) > 0.9
    assert [r.category for r in result.responses] == [response.STABLE, response.STABLE]
