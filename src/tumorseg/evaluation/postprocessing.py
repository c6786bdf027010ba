"""Choosing the post-processing thresholds on out-of-fold predictions, as nnU-Net does.

Every candidate (``min_island_ml``, ``min_core_probability``, ``min_et_ml``) is applied to each
patient's raw out-of-fold label map, and the one with the highest mean Dice over WT, TC and ET of
all patients wins; a larger threshold has to score strictly higher than a smaller one, so a rule
that changes nothing stays off. The figures are measured on the same patients the thresholds
were chosen on, so they flatter it a little (three numbers chosen from 490 candidates); with
folds, each fold is also scored with the rule chosen on the others, which does not.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field, fields

import numpy as np
from scipy import ndimage

from tumorseg.evaluation.metrics import region_dice
from tumorseg.labels import REGION_NAMES
from tumorseg.postprocess import PostProcessing

#: The thresholds tried, in mL (0: the rule is off). BraTS tumors are tens of mL; at the top
#: of the range only the largest component survives, as in nnU-Net's rule.
ISLAND_ML = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
CORE_PROBABILITY = (0.0, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
ENHANCING_ML = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
#: The rule's thresholds in the order of a candidate (island, core, enhancing).
RULE_KEYS = tuple(field.name for field in fields(PostProcessing))


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
        by_rule = {tuple(row[key] for key in RULE_KEYS): row for row in self.rows}
        chosen = by_rule[tuple(self.chosen.to_dict()[key] for key in RULE_KEYS)]
        lines = [f"{'post-processing':<58}" + "".join(f"{n:>8}" for n in REGION_NAMES) + f"{'mean':>8}"]
        for name, row in (("none", by_rule[0.0, 0.0, 0.0]), (f"chosen: {self.chosen}", chosen)):
            cells = [row[f"dice_{n}"] for n in REGION_NAMES] + [row["dice_mean"]]
            lines.append(f"{name:<58}" + "".join(f"{c:>8.4f}" for c in cells))
        if self.nested is not None:
            cells = [*self.nested, self.nested.mean()]
            name = "each fold: chosen on the other folds"
            lines.append(f"{name:<58}" + "".join(f"{c:>8.4f}" for c in cells))
            lines.append("  (rules: " + " | ".join(str(rule) for rule in self.nested_rules) + ")")
        return "\n".join(lines)


def choose_postprocessing(
    patients: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, float, int]],
) -> Choice:
    """The best candidate over ``patients``: (raw predicted classes, core probabilities, reference
    classes, voxel mL, fold). With two or more folds, each fold is also given the best candidate
    of the others."""
    candidates = list(itertools.product(ISLAND_ML, CORE_PROBABILITY, ENHANCING_ML))
    scores, folds = [], []  # per patient: Dice (candidates, regions); its fold
    for prediction, core_probability, reference, voxel_ml, fold in patients:
        box = tumor_box(prediction, reference)  # Dice is the same without the background around
        prediction, core_probability, reference = prediction[box], core_probability[box], reference[box]
        dice = []  # in the order of candidates
        for island in ISLAND_ML:
            cleaned = PostProcessing(min_island_ml=island).apply(prediction, voxel_ml)
            for core in CORE_PROBABILITY:
                cored = PostProcessing(min_core_probability=core).apply(cleaned, voxel_ml, core_probability)
                for enhancing in ENHANCING_ML:
                    final = PostProcessing(min_et_ml=enhancing).apply(cored, voxel_ml)
                    dice.append(region_dice(final, reference))
        scores.append(dice)
        folds.append(fold)
    scores, folds = np.asarray(scores).reshape(-1, len(candidates), len(REGION_NAMES)), np.asarray(folds)
    means = scores.mean(axis=0) if len(scores) else np.zeros((len(candidates), len(REGION_NAMES)))
    rows = [
        {
            **dict(zip(RULE_KEYS, candidate, strict=True)),
            **{f"dice_{n}": float(d) for n, d in zip(REGION_NAMES, dice, strict=True)},
            "dice_mean": float(dice.mean()),
        }
        for candidate, dice in zip(candidates, means, strict=True)
    ]

    def rule(index: int) -> PostProcessing:
        return PostProcessing(**dict(zip(RULE_KEYS, candidates[index], strict=True)))

    choice = Choice(rule(best_candidate(means)), rows)
    if len(np.unique(folds)) > 1:
        nested = np.zeros((len(scores), len(REGION_NAMES)))
        for fold in np.unique(folds):
            held_out = folds == fold
            best = best_candidate(scores[~held_out].mean(axis=0))
            nested[held_out] = scores[held_out, best]
            choice.nested_rules.append(rule(best))
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
