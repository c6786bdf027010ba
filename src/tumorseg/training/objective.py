"""The loss a network learns from, for its target (``tumorseg.labels``).

- ``regions``: Dice + BCE over the three sigmoid region channels (as nnU-Net does for BraTS).
  MONAI's ``DiceCELoss`` applies softmax cross-entropy to multi-channel input even with
  ``sigmoid=True``, which is wrong for overlapping regions, so regions pair Dice with BCE here.
- ``labels``: Dice (tumor classes) + cross-entropy over the four softmax channels.

With deep supervision the finest output weighs most and each coarser one half as much.
"""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from tumorseg.labels import Target


class Objective(nn.Module):
    """Loss of (possibly deep-supervised) logits against an internal label map (B, H, W)."""

    def __init__(self, target: Target):
        super().__init__()
        self.target = target
        if target.regions:
            self.dice = DiceLoss(sigmoid=True, batch=True)
            self.bce = nn.BCEWithLogitsLoss()
        else:
            self.dice_ce = DiceCELoss(softmax=True, to_onehot_y=True, include_background=False, batch=True)

    def single(self, logits: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.target.regions:
            return self.dice(logits, encoded) + self.bce(logits, encoded)
        return self.dice_ce(logits, encoded)

    def forward(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor) -> torch.Tensor:
        encoded = self.target.encode(labels)
        if isinstance(outputs, torch.Tensor):
            return self.single(outputs, encoded)
        weights = [0.5**i for i in range(len(outputs))]
        total = sum(w * self.single(o, encoded) for w, o in zip(weights, outputs, strict=True))
        return total / sum(weights)
