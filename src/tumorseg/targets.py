"""What a network predicts: its output channels, their activation, and the way to and from labels.

Two targets, chosen per model (``ModelConfig.target``):

- ``regions``: 3 sigmoid channels for the nested BraTS regions WT, TC, ET (as nnU-Net does for
  BraTS). A label map is encoded as the three region masks; probabilities are decoded as
  ET -> enhancing, else TC -> NCR/NET, else WT -> edema, so the innermost region wins.
- ``labels``: 4 softmax channels, one per internal class; decoded by argmax.

Everything that depends on the choice lives here; the loss, the metrics, validation, evaluation
and prediction ask a ``Target`` instead of testing the name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from tumorseg.labels import NUM_CLASSES, REGION_NAMES, region_masks

TARGETS = ("regions", "labels")


@dataclass(frozen=True)
class Target:
    name: str

    def __post_init__(self) -> None:
        if self.name not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, not {self.name!r}")

    @property
    def regions(self) -> bool:
        return self.name == "regions"

    @property
    def channels(self) -> int:
        return len(REGION_NAMES) if self.regions else NUM_CLASSES

    def encode(self, classes: torch.Tensor) -> torch.Tensor:
        """Internal class maps (B, ...) -> what the loss compares with: (B, 3, ...) region masks as
        floats, or (B, 1, ...) class indices."""
        if self.regions:
            return region_masks(classes).transpose(0, 1).float()
        return classes.unsqueeze(1)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, ...) -> probabilities: sigmoid per region or softmax over classes."""
        return torch.sigmoid(logits) if self.regions else F.softmax(logits, dim=1)

    def decode(self, probabilities: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        """Probabilities (B, C, ...) -> internal class map (B, ...) (int64); a region is where its
        probability exceeds ``threshold``."""
        if not self.regions:
            return probabilities.argmax(dim=1)
        wt, tc, et = (probabilities > threshold).unbind(dim=1)
        # nested wheres, not masked assignments: those wait for the GPU to count the mask
        return torch.where(et, 3, torch.where(tc, 1, torch.where(wt, 2, 0)))

    def uncertainty(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Probabilities (B, C, ...) -> voxel-wise uncertainty (B, ...) in [0, 1]: the largest binary
        entropy (bits) of the three regions, or the class entropy over log2(C). Averaged over TTA
        flips or models, the probabilities carry their disagreement into it."""
        p = probabilities.float().clamp(1e-7, 1 - 1e-7)
        if self.regions:
            return (-(p * p.log2() + (1 - p) * (1 - p).log2())).amax(dim=1)
        return -(p * p.log2()).sum(dim=1) / math.log2(self.channels)

    def initial_bias(self, prior: float = 0.01) -> torch.Tensor:
        """Output biases under which every voxel starts as background with probability 1 - ``prior``
        (Lin et al. 2017, RetinaNet). With zero biases every voxel starts at p = 0.5 for every
        region, and the first epochs go to unlearning that over a background that is ~99 % of the
        volume."""
        bias = torch.full((self.channels,), math.log(prior / (1 - prior)))
        if not self.regions:
            bias[0] = 0.0
        return bias
