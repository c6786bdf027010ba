"""Overlap metrics on internal label maps, per BraTS region (WT, TC, ET)."""

from __future__ import annotations

import numpy as np
import torch

from tumorseg.labels import REGIONS

REGION_NAMES = tuple(REGIONS)


def region_stack(labels: torch.Tensor) -> torch.Tensor:
    """(..., ) internal classes -> (3, ...) bool masks of WT, TC and ET."""
    return torch.stack([torch.isin(labels, torch.tensor(m, device=labels.device)) for m in REGIONS.values()])


def overlap_counts(prediction: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """True positives, false positives and false negatives per region: a (3, 3) int64 tensor."""
    pred, ref = region_stack(prediction), region_stack(reference)
    flat = (pred.flatten(1), ref.flatten(1))
    tp = (flat[0] & flat[1]).sum(1)
    fp = (flat[0] & ~flat[1]).sum(1)
    fn = (~flat[0] & flat[1]).sum(1)
    return torch.stack([tp, fp, fn], dim=1).long().cpu()


def dice_iou(counts: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU per region from (tp, fp, fn) rows; a region empty in both is a perfect 1."""
    tp, fp, fn = np.asarray(counts, dtype=np.float64).T
    union = tp + fp + fn
    empty = union == 0
    dice = np.where(empty, 1.0, 2 * tp / np.maximum(2 * tp + fp + fn, 1))
    iou = np.where(empty, 1.0, tp / np.maximum(union, 1))
    return dice, iou
