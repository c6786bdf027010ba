"""Metrics of a label map against a reference, per BraTS region (WT, TC, ET) and label: overlap
(Dice, IoU), surface distances (HD95 as the BraTS scorer and as MONAI compute it, the normalized
surface Dice), lesion-wise scores, and the per-voxel confusion matrix and classification report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from tumorseg.geometry import bounding_box, widened
from tumorseg.labels import CLASS_NAMES, EDEMA, NECROSIS, REGIONS, region_masks


def overlap_counts(prediction: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """True positives, false positives and false negatives per region: a (3, 3) int64 tensor, on the
    inputs' device (so that a training step need not wait for it)."""
    pred, ref = region_masks(prediction), region_masks(reference)
    flat = (pred.flatten(1), ref.flatten(1))
    tp = (flat[0] & flat[1]).sum(1)
    fp = (flat[0] & ~flat[1]).sum(1)
    fn = (~flat[0] & flat[1]).sum(1)
    return torch.stack([tp, fp, fn], dim=1).long()


def dice_iou(counts: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU per region from (tp, fp, fn) rows; a region empty in both is a perfect 1."""
    if isinstance(counts, torch.Tensor):
        counts = counts.cpu()
    tp, fp, fn = np.asarray(counts, dtype=np.float64).T
    union = tp + fp + fn
    empty = union == 0
    dice = np.where(empty, 1.0, 2 * tp / np.maximum(2 * tp + fp + fn, 1))
    iou = np.where(empty, 1.0, tp / np.maximum(union, 1))
    return dice, iou


#: BraTS's HD95 (mm) when exactly one of reference and prediction is empty: the diagonal of the
#: BraTS grid, the largest distance two voxels can have.
EMPTY_HD95 = 373.13
#: The tolerance (mm) within which a surface voxel counts as found by the normalized surface Dice:
#: the official scorer's for a whole region (0.5, which it applies in voxels: on BraTS's 1 mm grid
#: only surface voxels that coincide count).
NSD_TOLERANCE = 0.5
#: What ``patient_metrics`` scores: the BraTS regions, then the labels (label 4 is ET itself).
STRUCTURES: dict[str, tuple[int, ...]] = {**REGIONS, "NCR": (NECROSIS,), "ED": (EDEMA,)}
#: Each column of ``patient_metrics`` per structure, and how tables name it. HD95 is the official
#: BraTS scorer's (panoptica): the 95th percentile of the surface distances of both directions
#: pooled; hd95max is MONAI's, the larger of the two directed 95th percentiles.
METRICS = (
    "dice",
    "iou",
    "hd95",
    "hd95max",
    "nsd",
    "lesion_dice",
    "lesion_hd95",
    "sensitivity",
    "specificity",
)
#: The metrics in mm, which tables give with fewer digits.
DISTANCES = ("hd95", "hd95max", "lesion_hd95")
#: What each metric is, as every table of them says below it.
LEGEND = (
    "hd95: 95th percentile of the surface distances of both directions pooled (the official BraTS "
    "scorer's, panoptica); hd95max: the larger of the two directed 95th percentiles (MONAI's); "
    f"nsd: normalized surface Dice within {NSD_TOLERANCE:g} mm; lesion_dice, lesion_hd95: "
    "lesion-wise, as BraTS ranks since 2023 (a missed or false lesion scores 0 and 373.13 mm)"
)


def metric_label(metric: str, unit: str = "{} mm") -> str:
    """How a table names ``metric``: with its unit (``unit`` formats the name) if it is a distance."""
    return unit.format(metric) if metric in DISTANCES else metric


def metric_cell(stats: dict, metric: str, extra: str = "") -> str:
    """Mean ± std of ``metric`` (2 decimals for a distance in mm, else 3), then ``extra`` formatted
    with the same digits from ``stats`` (e.g. " [{fold_std:.{d}f}]")."""
    d = 2 if metric in DISTANCES else 3
    return f"{stats['mean']:.{d}f} ± {stats['std']:.{d}f}" + extra.format(d=d, **stats)


def surface_distances(
    prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """The distances (mm) from each surface voxel of ``prediction`` to the surface of ``reference``,
    and back; both masks non-empty. A surface voxel is one that erosion by the 6-neighbourhood
    removes (the array's edge counts as outside), as the official BraTS scorer finds them."""
    box = widened(bounding_box(prediction | reference), prediction.shape, 1)
    structure = ndimage.generate_binary_structure(prediction.ndim, 1)
    borders = [mask[box] & ~ndimage.binary_erosion(mask[box], structure) for mask in (prediction, reference)]
    there = ndimage.distance_transform_edt(~borders[1], sampling=spacing)[borders[0]]
    back = ndimage.distance_transform_edt(~borders[0], sampling=spacing)[borders[1]]
    return there, back


def distance_scores(
    prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...]
) -> dict[str, float]:
    """HD95 both ways (``METRICS``) and the normalized surface Dice of two masks, with the BraTS
    rules for empty masks: both empty, HD95 0 and NSD 1; exactly one, HD95 373.13 mm and NSD 0."""
    has_prediction, has_reference = bool(prediction.any()), bool(reference.any())
    if not (has_prediction and has_reference):
        distance = 0.0 if has_prediction == has_reference else EMPTY_HD95
        return {"hd95": distance, "hd95max": distance, "nsd": float(has_prediction == has_reference)}
    there, back = surface_distances(prediction, reference, spacing)
    return {
        "hd95": float(np.percentile(np.concatenate([there, back]), 95)),
        "hd95max": float(max(np.percentile(there, 95), np.percentile(back, 95))),
        "nsd": float((np.mean(there <= NSD_TOLERANCE) + np.mean(back <= NSD_TOLERANCE)) / 2),
    }


def hd95(prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...]) -> float:
    """The larger of the two directed 95th-percentile distances between mask surfaces, in mm
    (MONAI's HD95; ``distance_scores`` gives the official BraTS one beside it)."""
    return distance_scores(prediction, reference, spacing)["hd95max"]


def patient_metrics(
    prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...], outside_voxels: int = 0
) -> dict[str, float]:
    """``METRICS`` of each structure, with the BraTS rules for empty structures.

    Both empty: Dice 1, IoU 1, HD95 0. Exactly one empty: Dice 0, IoU 0, HD95 373.13 mm. With an
    empty reference sensitivity is 1 (nothing to miss). ``outside_voxels`` counts background
    voxels outside the arrays given (a crop), so that specificity is over the whole volume.
    """
    row: dict[str, float] = {}
    for name, members in STRUCTURES.items():
        pred, ref = np.isin(prediction, members), np.isin(reference, members)
        tp = int(np.count_nonzero(pred & ref))
        fp = int(np.count_nonzero(pred)) - tp
        fn = int(np.count_nonzero(ref)) - tp
        tn = pred.size - tp - fp - fn + outside_voxels
        (dice,), (iou,) = dice_iou(np.array([[tp, fp, fn]]))
        scores = {"dice": float(dice), "iou": float(iou), **distance_scores(pred, ref, spacing)}
        lesions = lesion_scores(pred, ref, spacing)
        scores |= {"lesion_dice": lesions.dice, "lesion_hd95": lesions.hd95}
        scores["sensitivity"] = tp / (tp + fn) if tp + fn else 1.0
        scores["specificity"] = tn / (tn + fp) if tn + fp else 1.0
        row |= {f"{metric}_{name}": scores[metric] for metric in METRICS}
    return row


@dataclass(frozen=True)
class Lesions:
    """Lesion-wise scores of one structure, as the BraTS challenge ranks since 2023: each connected
    lesion (26-connected) of the reference is matched to at most one of the prediction by the
    largest total Dice (any overlap counts, as the official scorer's matching), and the matched
    pairs' Dice and HD95 are averaged over every lesion of either side, a missed or a false one
    scoring Dice 0 and HD95 373.13 mm. No lesion on either side: Dice 1, HD95 0."""

    found: int  # matched lesions
    missed: int  # reference lesions without a match
    false: int  # predicted lesions without a match
    dice: float
    hd95: float
    matched_dice: tuple[float, ...] = ()  # each matched pair's, as the official scorer lists them
    matched_hd95: tuple[float, ...] = ()


def lesion_scores(prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...]) -> Lesions:
    """``Lesions`` of two masks."""
    from scipy.optimize import linear_sum_assignment  # here: only lesion-wise scoring needs it

    box = bounding_box(prediction | reference)
    if box is None:
        return Lesions(0, 0, 0, 1.0, 0.0)
    connectivity = np.ones((3,) * prediction.ndim)
    (pred, n_pred), (ref, n_ref) = (
        ndimage.label(mask[box], connectivity) for mask in (prediction, reference)
    )
    overlap = np.bincount(ref.ravel() * (n_pred + 1) + pred.ravel(), minlength=(n_ref + 1) * (n_pred + 1))
    overlap = overlap.reshape(n_ref + 1, n_pred + 1)[1:, 1:]
    sizes_ref, sizes_pred = (
        np.bincount(ref.ravel(), minlength=n_ref + 1)[1:],
        np.bincount(pred.ravel(), minlength=n_pred + 1)[1:],
    )
    dice = 2 * overlap / (sizes_ref[:, None] + sizes_pred[None, :])
    rows, columns = linear_sum_assignment(np.where(overlap > 0, 1 - dice, 1 + 1e-6))
    pairs = [(r, c) for r, c in zip(rows, columns, strict=True) if overlap[r, c] > 0]
    matched_dice = tuple(float(dice[r, c]) for r, c in pairs)
    matched_hd95 = tuple(distance_scores(pred == c + 1, ref == r + 1, spacing)["hd95"] for r, c in pairs)
    lesions = n_ref + n_pred - len(pairs)
    missed_or_false = lesions - len(pairs)
    return Lesions(
        found=len(pairs),
        missed=n_ref - len(pairs),
        false=n_pred - len(pairs),
        dice=sum(matched_dice) / lesions,
        hd95=(sum(matched_hd95) + EMPTY_HD95 * missed_or_false) / lesions,
        matched_dice=matched_dice,
        matched_hd95=matched_hd95,
    )


def confusion_matrix(prediction: np.ndarray, reference: np.ndarray, classes: int = 4) -> np.ndarray:
    """Counts[reference class, predicted class] over all voxels."""
    flat = reference.astype(np.int64).ravel() * classes + prediction.astype(np.int64).ravel()
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def classification_report(confusion: np.ndarray) -> dict[str, dict[str, float]]:
    """Per-class precision, recall, F1 and support, with macro and weighted averages."""
    confusion = np.asarray(confusion, dtype=np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    true_positive = np.diag(confusion)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(predicted), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(support), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    report = {
        name: {"precision": p, "recall": r, "f1": f, "support": int(s)}
        for name, p, r, f, s in zip(CLASS_NAMES, precision, recall, f1, support, strict=True)
    }
    weights = support / support.sum()
    for label, average in (("macro avg", np.mean), ("weighted avg", None)):
        values = {
            key: float(np.mean(column) if average else np.sum(column * weights))
            for key, column in (("precision", precision), ("recall", recall), ("f1", f1))
        }
        report[label] = {**values, "support": int(support.sum())}
    report["accuracy"] = {"value": float(true_positive.sum() / support.sum())}
    return report


def region_dice(prediction: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Dice of WT, TC and ET of two class maps: the quick score, without HD95, benchmarks use."""
    return dice_iou(overlap_counts(torch.as_tensor(prediction), torch.as_tensor(reference)))[0]
