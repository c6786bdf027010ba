"""Choosing the post-processing thresholds on out-of-fold predictions, as nnU-Net does.

Every candidate pair (``min_island_ml``, ``min_et_ml``) is applied to each patient's raw
out-of-fold label map, and the pair with the highest mean Dice over WT, TC and ET of all
patients wins; a larger threshold has to score strictly higher than a smaller one, so a rule
that changes nothing stays off. The figures are measured on the same patients the thresholds
were chosen on, so they flatter it a little (two numbers chosen from 70 pairs); with folds, each
fold is also scored with the rule chosen on the others, which does not.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

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
    #: Mean Dice per region when each fold's patients get the rule chosen on the other folds: an
    #: estimate that does not flatter the choice (None with a single fold).
    nested: np.ndarray | None = None
    nested_rules: list[PostProcessing] = field(default_factory=list)  # the rule of each fold

    def table(self) -> str:
        """The rule chosen against no post-processing (and, with folds, the choice made on the
        other folds), as the command prints it."""
        by_rule = {(row["min_island_ml"], row["min_et_ml"]): row for row in self.rows}
        chosen = by_rule[self.chosen.min_island_ml, self.chosen.min_et_ml]
        lines = [f"{'post-processing':<58}" + "".join(f"{n:>8}" for n in REGION_NAMES) + f"{'mean':>8}"]
        for name, row in (("none", by_rule[0.0, 0.0]), (f"chosen: {self.chosen}", chosen)):
            cells = [row[f"dice_{n}"] for n in REGION_NAMES] + [row["dice_mean"]]
            lines.append(f"{name:<58}" + "".join(f"{c:>8.4f}" for c in cells))
        if self.nested is not None:
            cells = [*self.nested, self.nested.mean()]
            name = "each fold: chosen on the other folds"
            lines.append(f"{name:<58}" + "".join(f"{c:>8.4f}" for c in cells))
            lines.append("  (rules: " + " | ".join(str(rule) for rule in self.nested_rules) + ")")
        return "\n".join(lines)


def choose_postprocessing(patients: Iterable[tuple[np.ndarray, np.ndarray, float, int]]) -> Choice:
    """The best candidate over ``patients``: (raw predicted classes, reference classes, voxel mL,
    fold). With two or more folds, each fold is also given the best candidate of the others."""
    candidates = list(itertools.product(ISLAND_ML, ENHANCING_ML))
    scores, folds = [], []  # per patient: Dice (candidates, regions); its fold
    for prediction, reference, voxel_ml, fold in patients:
        box = tumor_box(prediction, reference)  # Dice is the same without the background around
        prediction, reference = prediction[box], reference[box]
        dice = np.zeros((len(candidates), len(REGION_NAMES)))
        for island in ISLAND_ML:
            cleaned = PostProcessing(min_island_ml=island).apply(prediction, voxel_ml)
            for enhancing in ENHANCING_ML:
                final = PostProcessing(min_et_ml=enhancing).apply(cleaned, voxel_ml)
                dice[candidates.index((island, enhancing))] = region_dice(final, reference)
        scores.append(dice)
        folds.append(fold)
    scores, folds = np.asarray(scores).reshape(-1, len(candidates), len(REGION_NAMES)), np.asarray(folds)
    means = scores.mean(axis=0) if len(scores) else np.zeros((len(candidates), len(REGION_NAMES)))
    rows = [
        {
            "min_island_ml": island,
            "min_et_ml": enhancing,
            **{f"dice_{n}": float(d) for n, d in zip(REGION_NAMES, dice, strict=True)},
            "dice_mean": float(dice.mean()),
        }
        for (island, enhancing), dice in zip(candidates, means, strict=True)
    ]
    choice = Choice(PostProcessing(*candidates[best_candidate(means)]), rows)
    if len(np.unique(folds)) > 1:
        nested = np.zeros((len(scores), len(REGION_NAMES)))
        for fold in np.unique(folds):
            held_out = folds == fold
            best = best_candidate(scores[~held_out].mean(axis=0))
            nested[held_out] = scores[held_out, best]
            choice.nested_rules.append(PostProcessing(*candidates[best]))
        choice.nested = nested.mean(axis=0)
    return choice


def best_candidate(means: np.ndarray) -> int:
    """The candidate (row of ``means``: mean Dice per region) with the highest mean Dice; candidates
    come in order of growing thresholds, and argmax keeps the first of equals: a larger threshold
    must score strictly higher."""
    return int(np.argmax(means.mean(axis=1)))


def tumor_box(prediction: np.ndarray, reference: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of every voxel labeled in either map (the whole map if there is none)."""
    found = ndimage.find_objects(((prediction > 0) | (reference > 0)).astype(np.uint8))
    return found[0] if found else tuple(slice(None) for _ in prediction.shape)
