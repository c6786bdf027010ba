"""Label conventions: one internal class index everywhere, BraTS values only at the edges.

Internally every label map holds class indices 0..3, so that losses, one-hot encodings and
confusion matrices need no lookup. The BraTS files use other values, converted on the way in
and out:

    class  name        BraTS 2018-2021   BraTS 2023
    0      background  0                 0
    1      NCR/NET     1                 1
    2      edema       2                 2
    3      enhancing   4                 3
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("background", "NCR/NET", "edema", "enhancing")
NUM_CLASSES = len(CLASS_NAMES)

#: BraTS label value of each internal class, per naming convention.
BRATS_VALUES: dict[str, tuple[int, ...]] = {
    "brats": (0, 1, 2, 4),  # BraTS 2018, 2019, 2020, 2021
    "brats2023": (0, 1, 2, 3),
}

#: The evaluated BraTS regions as sets of internal classes.
REGIONS: dict[str, tuple[int, ...]] = {
    "WT": (1, 2, 3),  # whole tumor
    "TC": (1, 3),  # tumor core
    "ET": (3,),  # enhancing tumor
}
REGION_NAMES: tuple[str, ...] = tuple(REGIONS)
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


def region_masks(classes):
    """A class map (...) -> boolean masks (3, ...) of WT, TC and ET; a NumPy array or a torch tensor.

    One table lookup, so the same function serves the loss targets, the metrics and any device.
    """
    if isinstance(classes, np.ndarray):
        return REGION_MEMBERSHIP[:, classes]
    if classes.device not in _MEMBERSHIP_ON:  # copied once per device: a copy every step waits for a GPU
        _MEMBERSHIP_ON[classes.device] = classes.new_tensor(REGION_MEMBERSHIP)
    return _MEMBERSHIP_ON[classes.device][:, classes.long()]


def region_volumes(classes: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Volume in mL of each BraTS region of a class map whose voxels hold ``voxel_ml`` each."""
    return {name: float(np.isin(classes, members).sum() * voxel_ml) for name, members in REGIONS.items()}


def label_convention() -> dict:
    """The class names and BraTS values as plain data, as checkpoints record them."""
    return {"class_names": list(CLASS_NAMES), "brats_values": {k: list(v) for k, v in BRATS_VALUES.items()}}
