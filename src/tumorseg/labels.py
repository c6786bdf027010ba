"""What labels mean: the one owner of class numbers, BraTS values, regions and network targets.

Internally every label map holds class indices 0..3, named below (``NECROSIS``, ``EDEMA``,
``ENHANCING``), so that losses, one-hot encodings and confusion matrices need no lookup. The
BraTS files use other values, converted on the way in and out:

    class  name        BraTS 2018-2021   BraTS 2023
    0      background  0                 0
    1      NCR/NET     1                 1
    2      edema       2                 2
    3      enhancing   4                 3

What a network predicts (``Target``) lives here too, as nnU-Net's ``LabelManager`` keeps it
beside the labels. Two targets, chosen per model (``ModelConfig.target``):

- ``regions``: 3 sigmoid channels for the nested BraTS regions WT, TC, ET (as nnU-Net does for
  BraTS). A label map is encoded as the three region masks; probabilities are decoded as
  ET -> enhancing, else TC -> NCR/NET, else WT -> edema, so the innermost region wins.
- ``labels``: 4 softmax channels, one per internal class; decoded by argmax.

The loss, the metrics, validation, evaluation and prediction ask a ``Target`` instead of testing
the name. ``decode`` takes NumPy arrays or PyTorch tensors alike, and ``uncertainty`` NumPy
arrays: prediction with ONNX Runtime decodes without importing PyTorch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

#: The internal classes, by name.
BACKGROUND, NECROSIS, EDEMA, ENHANCING = 0, 1, 2, 3
CLASS_NAMES: tuple[str, ...] = ("background", "NCR/NET", "edema", "enhancing")
NUM_CLASSES = len(CLASS_NAMES)

#: BraTS label value of each internal class, per naming convention.
BRATS_VALUES: dict[str, tuple[int, ...]] = {
    "brats": (0, 1, 2, 4),  # BraTS 2018, 2019, 2020, 2021
    "brats2023": (0, 1, 2, 3),
}

#: The evaluated BraTS regions as sets of internal classes.
REGIONS: dict[str, tuple[int, ...]] = {
    "WT": (NECROSIS, EDEMA, ENHANCING),  # whole tumor
    "TC": (NECROSIS, ENHANCING),  # tumor core
    "ET": (ENHANCING,),  # enhancing tumor
}
REGION_NAMES: tuple[str, ...] = tuple(REGIONS)
#: The sequences each region is outlined on in the BraTS annotation protocol (Menze et al. 2015,
#: Bakas et al. 2018): the whole tumor by its FLAIR (and T2) hyperintensity, the tumor core and
#: the enhancing tumor by T1ce (contrast uptake, and the necrosis it rims). A case lacking all of a
#: region's sequences cannot show that region, whatever a model trained to do without sequences
#: puts there (docs/how-to/predict.md, "Missing sequences", measures it).
SHOWN_BY: dict[str, tuple[str, ...]] = {"WT": ("flair", "t2"), "TC": ("t1ce",), "ET": ("t1ce",)}


def unseen_regions(absent: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The regions a case lacking the sequences ``absent`` cannot show (``SHOWN_BY``)."""
    return tuple(region for region, shown_by in SHOWN_BY.items() if set(shown_by) <= set(absent))


def shown_volumes(volumes: dict[str, float], absent: tuple[str, ...] | list[str]) -> dict:
    """``volumes`` with None for each region a case lacking ``absent`` cannot show."""
    unseen = unseen_regions(absent)
    return {region: None if region in unseen else volume for region, volume in volumes.items()}


#: REGION_MEMBERSHIP[r, c]: whether class c belongs to region r (rows in REGION_NAMES order).
REGION_MEMBERSHIP = np.array([[c in members for c in range(NUM_CLASSES)] for members in REGIONS.values()])
_MEMBERSHIP_ON: dict = {}  # REGION_MEMBERSHIP as a tensor, per torch device


def to_internal(values: np.ndarray, convention: str = "brats") -> np.ndarray:
    """Map a BraTS label map to internal classes (uint8). Unknown values raise ValueError."""
    brats = BRATS_VALUES[convention]
    present = np.unique(values)
    unknown = sorted(set(present.tolist()) - set(brats))
    if unknown:
        raise ValueError(f"unknown label values {unknown}; expected {list(brats)}")
    lut = np.zeros(max(brats) + 1, dtype=np.uint8)
    for index, value in enumerate(brats):
        lut[value] = index
    return lut[values.astype(np.int64)]


def to_brats(classes: np.ndarray, convention: str = "brats") -> np.ndarray:
    """Map internal classes back to BraTS label values (uint8)."""
    lut = np.asarray(BRATS_VALUES[convention], dtype=np.uint8)
    return lut[classes]


def region_masks(classes: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """A class map (...) -> boolean masks (3, ...) of WT, TC and ET; a NumPy array or a torch tensor.

    One table lookup, so the same function serves the loss targets, the metrics and any device.
    """
    if isinstance(classes, np.ndarray):
        return REGION_MEMBERSHIP[:, classes]
    if classes.device not in _MEMBERSHIP_ON:  # copied once per device: a copy every step waits for a GPU
        _MEMBERSHIP_ON[classes.device] = classes.new_tensor(REGION_MEMBERSHIP)
    return _MEMBERSHIP_ON[classes.device][:, classes.long()]


def region_volumes(
    classes: np.ndarray, voxel_ml: float, regions: dict[str, tuple[int, ...]] = REGIONS
) -> dict[str, float]:
    """Volume in mL of each BraTS region (or of each of ``regions``: sets of classes) of a class map
    whose voxels hold ``voxel_ml`` each."""
    return {name: float(np.isin(classes, members).sum() * voxel_ml) for name, members in regions.items()}


def label_convention() -> dict:
    """The class names and BraTS values as plain data, as checkpoints record them."""
    return {"class_names": list(CLASS_NAMES), "brats_values": {k: list(v) for k, v in BRATS_VALUES.items()}}


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
            scores[BACKGROUND] = 1
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
        # ET wins, else TC, else WT: sums of masks, which NumPy and PyTorch write alike (and
        # which, unlike masked assignments, need not wait for a GPU to count a mask)
        return ENHANCING * et + NECROSIS * (tc & ~et) + EDEMA * (wt & ~tc & ~et)

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
            bias[BACKGROUND] = 0.0
        return bias
