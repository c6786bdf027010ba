"""The follow-up brought onto the baseline's grid by a rigid registration of one sequence they
share (the first of the raw pipeline's reference order both have, the T1ce when both have it;
``tumorseg.raw.registration``, mutual information), checked as
the raw pipeline checks its registrations: the two brains must overlap once aligned."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tumorseg.data.case import MODALITIES


@dataclass
class Alignment:
    sequence: str  # the sequence registered
    overlap: float  # Dice of the two brains once aligned
    aligned: bool  # overlap at least registration.ALIGNED
    labels: np.ndarray  # the follow-up's classes on the baseline's grid (nearest neighbour)
    images: np.ndarray  # the follow-up's sequences on the baseline's grid (4, X, Y, Z), linear
    parameters: list[float]  # the rigid transform: 3 angles (rad), 3 shifts (mm), baseline -> follow-up


def align(
    baseline: np.ndarray,
    baseline_affine: np.ndarray,
    followup: np.ndarray,
    followup_affine: np.ndarray,
    followup_classes: np.ndarray,
    absent: tuple[tuple[str, ...], tuple[str, ...]] = ((), ()),
) -> Alignment:
    """Register the follow-up's sequences (4, X, Y, Z) to the baseline's and resample its sequences
    and classes onto the baseline's grid; ``absent``: the sequences each visit lacks."""
    from tumorseg.raw.images import array, placed  # SimpleITK: imported when two visits are compared
    from tumorseg.raw.pipeline import REFERENCE_ORDER
    from tumorseg.raw.registration import ALIGNED, overlap, register, resample

    shared = [m for m in REFERENCE_ORDER if m not in absent[0] and m not in absent[1]]
    if not shared:
        raise ValueError("the two visits share no sequence")
    channel = MODALITIES.index(shared[0])
    fixed = placed(baseline[channel].astype(np.float32), baseline_affine)
    moving = placed(followup[channel].astype(np.float32), followup_affine)
    # two visits lie in one space already (both preprocessed, or both brought to the atlas): what is
    # left is a few mm, and stopping at 2 mm voxels moved a shared patient's result by 0.03 mm while
    # it saved 2 of 6.7 s
    try:
        transform = register(fixed, moving, shrink=(4, 2))
    except RuntimeError:  # ITK gives up (no overlap left, an empty image): the registration failed
        empty = np.zeros_like(baseline)
        return Alignment(shared[0], 0.0, False, np.zeros(baseline.shape[1:], np.uint8), empty, [])
    masks = [placed((image[channel] != 0).astype(np.uint8), affine)
             for image, affine in ((baseline, baseline_affine), (followup, followup_affine))]  # fmt: skip
    brains = float(overlap(masks[0], masks[1], transform))
    labels = array(
        resample(placed(followup_classes.astype(np.uint8), followup_affine), fixed, transform, labels=True)
    )
    images = np.stack(
        [array(resample(placed(c.astype(np.float32), followup_affine), fixed, transform)) for c in followup]
    )
    return Alignment(
        shared[0], brains, bool(brains >= ALIGNED), labels, images, list(transform.GetParameters())
    )
