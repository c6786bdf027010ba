"""Choosing the post-processing rule on out-of-fold predictions, as nnU-Net does.

Every candidate (``min_island_ml``, ``min_core_probability``, ``min_et_ml``) is applied to each
patient's raw out-of-fold label map, and the one with the highest mean Dice over WT, TC and ET of
all patients wins; a larger threshold has to score strictly higher than a smaller one, so a rule
that changes nothing stays off. The figures are measured on the same patients the thresholds
were chosen on, so they flatter it a little (three numbers chosen from 490 candidates); with
folds, each fold is also scored with the rule chosen on the others, which does not.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from tumorseg.geometry import Box, bounding_box, shifted_into, widened
from tumorseg.labels import REGION_NAMES
from tumorseg.metrics import region_dice
from tumorseg.postprocessing import growth
from tumorseg.postprocessing.rules import PostProcessing

#: The thresholds tried, in mL (0: the rule is off). BraTS tumors are tens of mL; at the top
#: of the range only the largest component survives, as in nnU-Net's rule.
ISLAND_ML = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
CORE_PROBABILITY = (0.0, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
ENHANCING_ML = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
#: The rule's thresholds in the order of a candidate (island, core, enhancing).
RULE_KEYS = ("min_island_ml", "min_core_probability", "min_et_ml")


@dataclass
class OutOfFoldMap:
    """One patient's out-of-fold prediction, as the choice needs it."""

    classes: np.ndarray  # as decoded (Z, H, W)
    core_probability: np.ndarray  # (Z, H, W)
    reference: np.ndarray  # (Z, H, W)
    voxel_ml: float
    fold: int
    #: For growth: the region probabilities (Z, 3, H, W) and z-scored sequences (Z, 4, H, W).
    evidence: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class Choice:
    chosen: PostProcessing
    rows: list[dict]  # one per candidate: its thresholds, mean Dice per region and overall
    none: np.ndarray  # mean Dice per region without any post-processing
    #: Mean Dice per region when each fold's patients get the rule chosen on the other folds: an
    #: estimate that does not flatter the choice (with folds), without and with growth.
    nested: dict[str, np.ndarray] = field(default_factory=dict)
    nested_rules: list[PostProcessing] = field(default_factory=list)  # the rule of each fold
    #: Per nested row: the mean over patients of each one's change in mean Dice (over WT, TC, ET)
    #: against no post-processing, and its standard error: whether the rule beats its noise.
    nested_gain: dict[str, tuple[float, float]] = field(default_factory=dict)

    def table(self) -> str:
        """The rule chosen against no post-processing (and, with folds, the choice made on the
        other folds), as the command prints it."""
        by_rule = {tuple(row[key] for key in RULE_KEYS): row for row in self.rows}
        chosen = by_rule[tuple(getattr(self.chosen, key) for key in RULE_KEYS)]
        lines = [f"{'post-processing':<58}" + "".join(f"{n:>8}" for n in REGION_NAMES) + f"{'mean':>8}"]
        found = [("none", self.none), (f"chosen: {self.chosen}", [chosen[f"dice_{n}"] for n in REGION_NAMES])]
        found += [(f"each fold: chosen on the other folds{how}", dice) for how, dice in self.nested.items()]
        for name, dice in found:
            lines.append(f"{name:<58}" + "".join(f"{d:>8.4f}" for d in [*dice, np.mean(dice)]))
        for how, (gain, error) in self.nested_gain.items():
            against = f"  chosen on the other folds{how}, against none, patient by patient"
            lines.append(f"{against}: {gain:+.4f} (s.e. {error:.4f})")
        if self.nested_rules:
            lines.append("  (rules: " + " | ".join(str(rule) for rule in self.nested_rules) + ")")
        return "\n".join(lines)


CANDIDATES = list(itertools.product(ISLAND_ML, CORE_PROBABILITY, ENHANCING_ML))


@dataclass
class Kept:
    """What the choice keeps of a patient: its maps within the box that holds its tumor and rim,
    and its rim (a box within that box, the rim's mask in it, the rim voxels' growth features)."""

    classes: np.ndarray
    core_probability: np.ndarray
    reference: np.ndarray
    voxel_ml: float
    rim: tuple[Box, np.ndarray, np.ndarray]

    def grown(self, weights: list[float]) -> np.ndarray:
        return growth.grown(self.classes, *self.rim, weights)

    def growth_sample(self) -> tuple[np.ndarray, np.ndarray]:
        """The rim voxels' features and whether each is tumor in the reference, for ``growth.fit``."""
        box, mask, features = self.rim
        return features, self.reference[box][mask] > 0

    def scores(self, classes: np.ndarray) -> np.ndarray:
        """Dice (candidates, regions) of every candidate on ``classes`` (this patient's box)."""
        dice = []  # in the order of CANDIDATES
        for island in ISLAND_ML:
            cleaned = PostProcessing(min_island_ml=island).apply(classes, self.voxel_ml)
            for core in CORE_PROBABILITY:
                rule = PostProcessing(min_core_probability=core)
                cored = rule.apply(cleaned, self.voxel_ml, self.core_probability)
                for enhancing in ENHANCING_ML:
                    final = PostProcessing(min_et_ml=enhancing).apply(cored, self.voxel_ml)
                    dice.append(region_dice(final, self.reference))
        return np.asarray(dice)


def keep(patient: OutOfFoldMap) -> Kept:
    """``patient`` within the box of its predicted and reference tumor and the rim around it (Dice
    is the same without the background around), with its rim's growth features if it has evidence."""
    box = tumor_box(patient.classes, patient.reference, margin=int(np.ceil(growth.RIM)))
    nothing = tuple(slice(0, 0) for _ in box)
    rim = (nothing, np.zeros((0,) * len(box), bool), np.zeros((0, len(growth.FEATURES)), np.float32))
    if patient.evidence is not None:
        rim_box, rim_mask, features = growth.rim_features(patient.classes > 0, *patient.evidence)
        if len(features):  # the rim lies within RIM of the tumor: inside ``box``
            rim = (shifted_into(rim_box, box), rim_mask, features)
    return Kept(
        patient.classes[box], patient.core_probability[box], patient.reference[box], patient.voxel_ml, rim
    )


def choose_postprocessing(patients: Iterable[OutOfFoldMap]) -> Choice:
    """The best candidate over ``patients`` and, with two or more folds and evidence, the growth
    model if it helps; with folds, each fold is also given the choice made on the others."""
    kept, folds = [], []
    for patient in patients:
        kept.append(keep(patient))
        folds.append(patient.fold)
    folds = np.asarray(folds)
    shape = (len(kept), len(CANDIDATES), len(REGION_NAMES))
    plain = np.asarray([k.scores(k.classes) for k in kept]).reshape(shape)

    def rule(index: int, weights: list[float] = ()) -> PostProcessing:
        return PostProcessing(
            **dict(zip(RULE_KEYS, CANDIDATES[index], strict=True)), tumor_growth=tuple(weights)
        )

    def nested(scores: np.ndarray, models: dict[int, list[float]], how: str = "") -> list[PostProcessing]:
        """Each fold's patients scored with the candidate best on the other folds (into ``choice``)."""
        dice, rules = np.zeros((len(kept), len(REGION_NAMES))), []
        for fold in np.unique(folds):
            held_out = folds == fold
            best = best_candidate(scores[~held_out].mean(axis=0))
            dice[held_out] = scores[held_out, best]
            rules.append(rule(best, models.get(fold, [])))
        change = dice.mean(axis=1) - plain[:, 0].mean(axis=1)  # candidate 0: every rule off
        choice.nested[how] = dice.mean(axis=0)
        choice.nested_gain[how] = (float(change.mean()), float(change.std(ddof=1) / np.sqrt(len(change))))
        return rules

    means = plain.mean(axis=0) if len(kept) else np.zeros(shape[1:])
    choice = Choice(rule(best_candidate(means)), table_rows(means), means[0])
    if len(np.unique(folds)) < 2:
        return choice
    choice.nested_rules = nested(plain, {})
    samples = [k.growth_sample() for k in kept]
    if not any(len(features) for features, _ in samples):
        return choice
    models = {
        f: growth.fit([s for s, other in zip(samples, folds, strict=True) if other != f])
        for f in np.unique(folds)
    }
    out_of_fold = np.asarray(
        [k.scores(k.grown(models[f])) for k, f in zip(kept, folds, strict=True)]
    ).reshape(shape)
    rules = nested(out_of_fold, models, ", with growth fitted on them")
    if choice.nested[", with growth fitted on them"].mean() > choice.nested[""].mean():
        weights = growth.fit(samples)
        means = np.asarray([k.scores(k.grown(weights)) for k in kept]).reshape(shape).mean(axis=0)
        choice = dataclasses.replace(
            choice, chosen=rule(best_candidate(means), weights), rows=table_rows(means), nested_rules=rules
        )
    return choice


def table_rows(means: np.ndarray) -> list[dict]:
    """One row per candidate: its thresholds, its mean Dice per region and overall."""
    return [
        {
            **dict(zip(RULE_KEYS, candidate, strict=True)),
            **{f"dice_{n}": float(d) for n, d in zip(REGION_NAMES, dice, strict=True)},
            "dice_mean": float(dice.mean()),
        }
        for candidate, dice in zip(CANDIDATES, means, strict=True)
    ]


def best_candidate(means: np.ndarray) -> int:
    """The candidate (row of ``means``: mean Dice per region) with the highest mean Dice; candidates
    come in order of growing thresholds, and argmax keeps the first of equals: a larger threshold
    must score strictly higher."""
    return int(np.argmax(means.mean(axis=1)))


def tumor_box(prediction: np.ndarray, reference: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """The bounding box of every voxel labeled in either map, ``margin`` voxels wider (the whole
    map if there is none)."""
    found = bounding_box((prediction > 0) | (reference > 0))
    return widened(found, prediction.shape, margin) if found else tuple(slice(None) for _ in prediction.shape)
