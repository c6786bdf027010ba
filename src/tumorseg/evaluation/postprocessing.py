"""Choosing the post-processing thresholds on out-of-fold predictions, as nnU-Net does.

Every candidate pair (``min_island_ml``, ``min_et_ml``) is applied to each patient's raw
out-of-fold label map, and the pair with the highest mean Dice over WT, TC and ET of all
patients wins; a larger threshold has to score strictly higher than a smaller one, so a rule
that changes nothing stays off. The figures are measured on the same patients the thresholds
were chosen on, so they flatter it a little (two numbers chosen from 70 pairs).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tumorseg.evaluation.metrics import region_dice
from tumorseg.labels import REGION_NAMES
from tumorseg.postprocess import PostProcessing

#: The thresholds tried, in mL (0: the rule is off). BraTS tumors are tens of mL; at the top
#: of the range only the largest component survives, as in nnU-Net's rule.
ISLAND_ML = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
ENHANCING_ML = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


@dataclass
class Choice:
    chosen: PostProcessing
    rows: list[dict]  # one per candidate: its thresholds, mean Dice per region and overall

    def table(self) -> str:
        """The rule chosen against no post-processing, as the command prints it."""
        by_rule = {(row["min_island_ml"], row["min_et_ml"]): row for row in self.rows}
        chosen = by_rule[self.chosen.min_island_ml, self.chosen.min_et_ml]
        lines = [f"{'post-processing':<58}" + "".join(f"{n:>8}" for n in REGION_NAMES) + f"{'mean':>8}"]
        for name, row in (("none", by_rule[0.0, 0.0]), (f"chosen: {self.chosen}", chosen)):
            cells = [row[f"dice_{n}"] for n in REGION_NAMES] + [row["dice_mean"]]
            lines.append(f"{name:<58}" + "".join(f"{c:>8.4f}" for c in cells))
        return "\n".join(lines)


def choose_postprocessing(patients: Iterable[tuple[np.ndarray, np.ndarray, float]]) -> Choice:
    """The best candidate over ``patients``: (raw predicted classes, reference classes, voxel mL)."""
    candidates = list(itertools.product(ISLAND_ML, ENHANCING_ML))
    totals = np.zeros((len(candidates), len(REGION_NAMES)))
    count = 0
    for prediction, reference, voxel_ml in patients:
        count += 1
        box = tumor_box(prediction, reference)  # Dice is the same without the background around
        prediction, reference = prediction[box], reference[box]
        for island in ISLAND_ML:
            cleaned = PostProcessing(min_island_ml=island).apply(prediction, voxel_ml)
            for enhancing in ENHANCING_ML:
                final = PostProcessing(min_et_ml=enhancing).apply(cleaned, voxel_ml)
                totals[candidates.index((island, enhancing))] += region_dice(final, reference)
    means = totals / max(count, 1)
    rows = [
        {
            "min_island_ml": island,
            "min_et_ml": enhancing,
            **{f"dice_{n}": float(d) for n, d in zip(REGION_NAMES, dice, strict=True)},
            "dice_mean": float(dice.mean()),
        }
        for (island, enhancing), dice in zip(candidates, means, strict=True)
    ]
    best = rows[0]
    for row in rows[1:]:  # in order of growing thresholds: a later one must be strictly better
        if row["dice_mean"] > best["dice_mean"]:
            best = row
    return Choice(PostProcessing(best["min_island_ml"], best["min_et_ml"]), rows)


def tumor_box(prediction: np.ndarray, reference: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of every voxel labeled in either map (the whole map if there is none)."""
    found = ndimage.find_objects(((prediction > 0) | (reference > 0)).astype(np.uint8))
    return found[0] if found else tuple(slice(None) for _ in prediction.shape)
