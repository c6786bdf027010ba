import numpy as np
import pytest
from scipy import ndimage

from tumorseg.metrics import (
    EMPTY_HD95,
    classification_report,
    confusion_matrix,
    hd95,
    patient_metrics,
)


def test_hd95_of_two_points_is_their_distance_in_mm():
    a, b = np.zeros((1, 10, 10), bool), np.zeros((1, 10, 10), bool)
    a[0, 2, 2], b[0, 2, 5] = True, True
    assert hd95(a, b, (1.0, 1.0, 1.0)) == pytest.approx(3.0)
    assert hd95(a, b, (1.0, 2.0, 2.0)) == pytest.approx(6.0)


def reference_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """An independent HD95: surface voxels by erosion, distances by SciPy's EDT."""

    def surface(mask):
        return mask & ~ndimage.binary_erosion(mask)

    def directed(x, y):
        distances = ndimage.distance_transform_edt(~surface(y), sampling=spacing)
        return np.percentile(distances[surface(x)], 95)

    return max(directed(a, b), directed(b, a))


def test_hd95_agrees_with_an_independent_computation():
    rng = np.random.default_rng(0)
    for _ in range(3):
        a = ndimage.binary_dilation(rng.random((12, 20, 20)) > 0.97, iterations=2)
        b = ndimage.binary_dilation(rng.random((12, 20, 20)) > 0.97, iterations=2)
        assert hd95(a, b, (2.0, 1.0, 1.0)) == pytest.approx(reference_hd95(a, b, (2.0, 1.0, 1.0)), abs=1e-4)


def test_brats_empty_rules():
    empty = np.zeros((4, 4, 4), np.uint8)
    tumor = empty.copy()
    tumor[1, 1, 1] = 3
    both_empty = patient_metrics(empty, empty, (1, 1, 1))
    assert both_empty["dice_ET"] == 1 and both_empty["hd95_ET"] == 0 and both_empty["iou_ET"] == 1
    missed = patient_metrics(empty, tumor, (1, 1, 1))
    assert missed["dice_ET"] == 0 and missed["hd95_ET"] == EMPTY_HD95 and missed["sensitivity_ET"] == 0
    invented = patient_metrics(tumor, empty, (1, 1, 1))
    assert invented["dice_ET"] == 0 and invented["hd95_ET"] == EMPTY_HD95
    assert invented["sensitivity_ET"] == 1  # nothing to miss
    assert invented["specificity_ET"] == pytest.approx(63 / 64)


def test_patient_metrics_by_hand():
    reference = np.zeros((1, 4, 4), np.uint8)
    prediction = np.zeros((1, 4, 4), np.uint8)
    reference[0, 0, :3] = [2, 1, 3]  # edema, NCR, enhancing
    prediction[0, 0, :4] = [2, 2, 3, 3]
    row = patient_metrics(prediction, reference, (1, 1, 1), outside_voxels=100)
    # WT: ref 3 voxels, pred 4, overlap 3 -> Dice 6/7, IoU 3/4, sensitivity 1
    assert row["dice_WT"] == pytest.approx(6 / 7) and row["iou_WT"] == pytest.approx(3 / 4)
    assert row["sensitivity_WT"] == 1
    # specificity over the crop (13 background) plus 100 outside voxels, one false positive
    assert row["specificity_WT"] == pytest.approx(112 / 113)
    # ET: ref {2}, pred {2, 3}: Dice 2/3; NCR: ref {1}, pred none: Dice 0, HD95 373.13
    assert row["dice_ET"] == pytest.approx(2 / 3)
    assert row["dice_NCR"] == 0 and row["hd95_NCR"] == EMPTY_HD95
    assert row["dice_ED"] == pytest.approx(2 / 3)


def test_classification_report_by_hand():
    reference = np.array([0, 0, 0, 1, 2, 2, 3, 3])
    prediction = np.array([0, 0, 2, 1, 2, 0, 3, 1])
    confusion = confusion_matrix(prediction, reference)
    assert confusion.tolist() == [[2, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1]]
    report = classification_report(confusion)
    assert report["background"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert report["NCR/NET"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert report["enhancing"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert report["accuracy"]["value"] == pytest.approx(5 / 8)
    assert report["macro avg"]["recall"] == pytest.approx((2 / 3 + 1 + 0.5 + 0.5) / 4)
    assert report["weighted avg"]["recall"] == pytest.approx(5 / 8)  # weighted recall is accuracy


def test_region_dice_is_the_dice_of_patient_metrics():
    from tumorseg.metrics import region_dice

    rng = np.random.default_rng(3)
    prediction, reference = rng.integers(0, 4, (2, 12, 10, 8), dtype=np.uint8)
    row = patient_metrics(prediction, reference, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(
        region_dice(prediction, reference), [row[f"dice_{r}"] for r in ("WT", "TC", "ET")]
    )


def test_lesion_wise_scores_by_hand():
    from tumorseg.metrics import lesion_scores

    reference = np.zeros((1, 12, 12), bool)
    reference[0, 1:3, 1:3] = True  # lesion a: 4 voxels, found by half
    reference[0, 8:10, 8:10] = True  # lesion b: missed
    prediction = np.zeros_like(reference)
    prediction[0, 1:3, 1:2] = True  # overlaps a: Dice 2 * 2 / (4 + 2)
    prediction[0, 5, 10] = True  # a false lesion
    lesions = lesion_scores(prediction, reference, (1.0, 1.0, 1.0))
    assert (lesions.found, lesions.missed, lesions.false) == (1, 1, 1)
    assert lesions.matched_dice == pytest.approx((4 / 6,))
    assert lesions.dice == pytest.approx((4 / 6) / 3)
    assert lesions.hd95 == pytest.approx((lesions.matched_hd95[0] + 2 * EMPTY_HD95) / 3)
    none = lesion_scores(np.zeros_like(reference), np.zeros_like(reference), (1.0, 1.0, 1.0))
    assert (none.dice, none.hd95) == (1.0, 0.0)
    missed = lesion_scores(np.zeros_like(reference), reference, (1.0, 1.0, 1.0))
    assert (missed.dice, missed.hd95, missed.missed) == (0.0, EMPTY_HD95, 2)


def test_hd95_pooled_as_brats_against_the_larger_directed_one():
    from tumorseg.metrics import distance_scores

    # a reference square and a prediction with a far outlier of 8 voxels: pooled over both
    # directions its distances are under 5 % of all (8 of 208), in the prediction's own not (8 of 108)
    reference = np.zeros((1, 30, 30), bool)
    reference[0, 5:15, 5:15] = True
    prediction = reference.copy()
    prediction[0, 26:28, 25:29] = True
    scores = distance_scores(prediction, reference, (1.0, 1.0, 1.0))
    assert scores["hd95"] == 0.0 < scores["hd95max"]
    assert scores["nsd"] < 1 and distance_scores(reference, reference, (1.0, 1.0, 1.0))["nsd"] == 1
