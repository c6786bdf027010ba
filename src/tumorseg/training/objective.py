"""What the network predicts, the loss it learns from, and how predictions become labels.

Two targets (``TrainConfig.target``):

- ``regions``: 3 sigmoid outputs for the nested BraTS regions WT, TC, ET, trained with
  Dice + BCE (as nnU-Net does for BraTS). Labels are recovered as ET -> enhancing, else
  TC -> NCR/NET, else WT -> edema.
- ``labels``: 4 softmax outputs, one per class, trained with Dice (tumor classes) + CE.
"""

from __future__ import annotations

import math

import torch
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from tumorseg.evaluation.metrics import region_stack

TARGETS = ("regions", "labels")


def out_channels(target: str) -> int:
    return 3 if target == "regions" else 4


class Objective(nn.Module):
    """Loss of (possibly deep-supervised) logits against an internal label map (B, H, W)."""

    def __init__(self, target: str):
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
        self.target = target
        # MONAI's DiceCELoss applies softmax cross-entropy to multi-channel input even with
        # sigmoid=True, which is wrong for overlapping regions: regions pair Dice with BCE here.
        self.dice = DiceLoss(sigmoid=True, batch=True)
        self.bce = nn.BCEWithLogitsLoss()
        self.dice_ce = DiceCELoss(softmax=True, to_onehot_y=True, include_background=False, batch=True)

    def encode(self, labels: torch.Tensor) -> torch.Tensor:
        if self.target == "regions":
            return region_stack(labels).transpose(0, 1).float()  # (B, 3, H, W)
        return labels.unsqueeze(1)

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.target == "regions":
            return self.dice(logits, target) + self.bce(logits, target)
        return self.dice_ce(logits, target)

    def forward(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor) -> torch.Tensor:
        target = self.encode(labels)
        if isinstance(outputs, torch.Tensor):
            return self.single(outputs, target)
        # deep supervision: the finest output weighs most, each coarser one half as much
        weights = [0.5**i for i in range(len(outputs))]
        total = sum(w * self.single(o, target) for w, o in zip(weights, outputs, strict=True))
        return total / sum(weights)


def decode(scores: torch.Tensor, target: str, threshold: float = 0.0) -> torch.Tensor:
    """Scores (B, C, ...) -> internal class map (B, ...).

    Scores are logits (region threshold 0, i.e. sigmoid 0.5) or, with ``threshold=0.5``,
    probabilities.
    """
    if target == "labels":
        return scores.argmax(dim=1)
    wt, tc, et = (scores > threshold).unbind(dim=1)
    labels = torch.zeros_like(wt, dtype=torch.long)
    labels[wt] = 2
    labels[tc] = 1
    labels[et] = 3
    return labels


def init_output_bias(model: nn.Module, target: str, prior: float = 0.01) -> None:
    """Start out predicting background with probability 1 - ``prior`` (Lin et al. 2017, RetinaNet).

    With zero biases every voxel starts at p = 0.5 for every region, and the first epochs go to
    unlearning that over a background that is ~99 % of the volume; the prior skips them.
    """
    if hasattr(model, "head"):
        heads = [model.head, *model.aux_heads]
    else:  # MONAI's AttentionUnet: its output convolution is its last
        heads = [[m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)][-1]]
    logit = math.log(prior / (1 - prior))
    with torch.no_grad():
        for head in heads:
            head.bias.fill_(logit)
            if target == "labels":
                head.bias[0] = 0.0
