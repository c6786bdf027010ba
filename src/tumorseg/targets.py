"""What a network predicts: its output channels, their activation, and the way to and from labels.

Two targets, chosen per model (``ModelConfig.target``):

- ``regions``: 3 sigmoid channels for the nested BraTS regions WT, TC, ET (as nnU-Net does for
  BraTS). A label map is encoded as the three region masks; probabilities are decoded as
  ET -> enhancing, else TC -> NCR/NET, else WT -> edema, so the innermost region wins.
- ``labels``: 4 softmax channels, one per internal class; decoded by argmax.

Everything that depends on the choice lives here; the loss, the metrics, validation, evaluation
and prediction ask a ``Target`` instead of testing the name. ``decode`` takes NumPy arrays or
PyTorch tensors alike, and ``uncertainty`` NumPy arrays: prediction with ONNX Runtime decodes
without importing PyTorch (which takes longer than segmenting a patient).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from tumorseg.labels import NUM_CLASSES, REGION_NAMES, REGIONS, region_masks

if TYPE_CHECKING:
    import torch

TARGETS = ("regions", "labels")
#: A NumPy array or a PyTorch tensor: ``decode`` returns the kind it is given.
Scores = TypeVar("Scores")


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

    @property
    def background(self) -> np.ndarray:
        """The probabilities (C,) of a voxel that is surely background: no region, or class 0."""
        scores = np.zeros(self.channels, np.float32)
        if not self.regions:
            scores[0] = 1  # the background class
        return scores

    def encode(self, classes: torch.Tensor) -> torch.Tensor:
        """Internal class maps (B, ...) -> what the loss compares with: (B, 3, ...) region masks as
        floats, or (B, 1, ...) class indices."""
        if self.regions:
            return region_masks(classes).transpose(0, 1).float()
        return classes.unsqueeze(1)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, ...) -> probabilities: sigmoid per region or softmax over classes."""
        return logits.sigmoid() if self.regions else logits.softmax(dim=1)

    def decode(self, probabilities: Scores, threshold: float = 0.5) -> Scores:
        """Probabilities (B, C, ...) -> internal class map (B, ...) (int64), an array of the kind
        given; a region is where its probability exceeds ``threshold``."""
        if not self.regions:
            return probabilities.argmax(1)
        wt, tc, et = (probabilities[:, index] > threshold for index in range(3))
        # ET wins, else TC (1), else WT (2): sums of masks, which NumPy and PyTorch write alike
        # (and which, unlike masked assignments, need not wait for a GPU to count a mask)
        return 3 * et + (tc & ~et) + 2 * (wt & ~tc & ~et)

    def region_probabilities(self, probabilities: np.ndarray) -> np.ndarray:
        """Probabilities (B, C, ...) -> the probabilities (B, 3, ...) of WT, TC and ET: the
        channels themselves, or the sums of each region's classes."""
        if self.regions:
            return probabilities
        return np.stack([probabilities[:, list(REGIONS[name])].sum(axis=1) for name in REGION_NAMES], axis=1)

    def core_probability(self, probabilities: np.ndarray) -> np.ndarray:
        """Probabilities (B, C, ...) -> the probability (B, ...) that a voxel is tumor core: the TC
        region's, or the sum of its classes'."""
        if self.regions:
            return probabilities[:, REGION_NAMES.index("TC")]
        return probabilities[:, list(REGIONS["TC"])].sum(axis=1)

    def uncertainty(self, probabilities: np.ndarray) -> np.ndarray:
        """Probabilities (B, C, ...) -> voxel-wise uncertainty (B, ...) in [0, 1], float32: the
        largest binary entropy (bits) of the three regions, or the class entropy over log2(C).
        Averaged over TTA flips or models, the probabilities carry their disagreement into it."""
        p = np.clip(probabilities.astype(np.float32), 1e-7, 1 - 1e-7)
        if self.regions:
            return (-(p * np.log2(p) + (1 - p) * np.log2(1 - p))).max(axis=1)
        return -(p * np.log2(p)).sum(axis=1) / np.float32(math.log2(self.channels))

    def initial_bias(self, prior: float = 0.01) -> list[float]:
        """Output biases under which every voxel starts as background with probability 1 - ``prior``
        (Lin et al. 2017, RetinaNet). With zero biases every voxel starts at p = 0.5 for every
        region, and the first epochs go to unlearning that over a background that is ~99 % of the
        volume."""
        bias = [math.log(prior / (1 - prior))] * self.channels
        if not self.regions:
            bias[0] = 0.0
        return bias
