"""Overlap metrics on internal label maps, per BraTS region (WT, TC, ET)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

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


#: BraTS's HD95 (mm) when exactly one of reference and prediction is empty.
EMPTY_HD95 = 373.13
#: What ``patient_metrics`` scores: the BraTS regions, then the labels (label 4 is ET itself).
STRUCTURES: dict[str, tuple[int, ...]] = {**REGIONS, "NCR": (NECROSIS,), "ED": (EDEMA,)}
METRICS = ("dice", "iou", "hd95", "sensitivity", "specificity")


def hd95(prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Symmetric 95th-percentile Hausdorff distance between mask surfaces, in mm (MONAI)."""
    from monai.metrics import compute_hausdorff_distance

    has_pred, has_ref = bool(prediction.any()), bool(reference.any())
    if not has_pred and not has_ref:
        return 0.0
    if has_pred != has_ref:
        return EMPTY_HD95
    with warnings.catch_warnings():  # MONAI 1.5+ warns about an argument it passes itself
        warnings.simplefilter("ignore", FutureWarning)
        distance = compute_hausdorff_distance(
            torch.from_numpy(prediction[None, None]),
            torch.from_numpy(reference[None, None]),
            percentile=95,
            spacing=list(spacing),
        )
    return float(distance.item())


def patient_metrics(
    prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...], outside_voxels: int = 0
) -> dict[str, float]:
    """Dice, IoU, HD95, sensitivity and specificity of each structure, with the BraTS empty rules.

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
        row[f"dice_{name}"] = float(dice)
        row[f"iou_{name}"] = float(iou)
        row[f"hd95_{name}"] = hd95(pred, ref, spacing)
        row[f"sensitivity_{name}"] = tp / (tp + fn) if tp + fn else 1.0
        row[f"specificity_{name}"] = tn / (tn + fp) if tn + fp else 1.0
    return row


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
