"""Out-of-fold Dice and HD95 of a two-member ensemble whose probabilities are averaged with
other weights than half and half.

An ensemble averages its members' probabilities equally. When one member is better alone, a
weight leaning its way might do better; each member is also scored alone (weights 1 and 0).
Every patient is scored by the fold models that never saw it, after the post-processing of
``--postprocessing``; the last line decodes each fold with the weight the other folds score
best with, which does not flatter the choice.

    python experiments/ensemble_weights.py runs/cv-strong runs/cv-context --data runs/real.h5 \
        --postprocessing runs/cv-strong/postprocessing-with-cv-context.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tumorseg.data.store import Store
from tumorseg.evaluation.crossval import fold_groups, out_of_fold
from tumorseg.inference.segmenter import Segmenter
from tumorseg.labels import REGION_NAMES, region_masks
from tumorseg.metrics import hd95, region_dice
from tumorseg.postprocessing import PostProcessing
from tumorseg.rundir import RunDir

WEIGHTS = (0.0, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 1.0)  # of the first member


class Members:
    """The fold's members, each one's probabilities apart (member, Z, C, H, W)."""

    def __init__(self, runs: list[RunDir]) -> None:
        self.segmenters = [Segmenter([run.root]) for run in runs]
        self.target = self.segmenters[0].target

    def probabilities(self, volume: np.ndarray) -> np.ndarray:
        return np.stack([segmenter.probabilities(volume) for segmenter in self.segmenters])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="the first member's folds directory")
    parser.add_argument("second", type=Path, help="the second member's, trained on the same folds")
    parser.add_argument("--data", type=Path, help="the store (default: the one each run trained on)")
    parser.add_argument("--postprocessing", type=Path, help="a rule of `tumorseg cv --choose-postprocessing`")
    args = parser.parse_args()
    rule = PostProcessing.from_file(args.postprocessing) if args.postprocessing else PostProcessing()
    groups = fold_groups([args.first, args.second])
    scores, folds = [], []  # per patient: (weight, Dice WT TC ET + HD95 WT TC ET); its fold
    with Store(args.data or groups[0][0].store()) as store:
        for patient in out_of_fold(groups, Members, args.data, progress=True):
            spacing = store.info(patient.case_id).spacing
            reference = region_masks(patient.reference)
            first, second = patient.probabilities
            target, rows = patient.predictor.target, []
            for weight in WEIGHTS:
                mixed = weight * first + (1 - weight) * second
                classes = rule.apply(
                    target.decode(mixed).astype(np.uint8),
                    patient.voxel_ml,
                    target.core_probability(mixed),
                    (target.region_probabilities(mixed), patient.volume),
                )
                found = region_masks(classes)
                distances = [hd95(found[r], reference[r], spacing) for r in range(len(REGION_NAMES))]
                rows.append([*region_dice(classes, patient.reference), *distances])
            scores.append(rows)
            folds.append(patient.fold)
    scores, folds = np.asarray(scores), np.asarray(folds)
    dice, equal = scores[..., :3], WEIGHTS.index(0.5)
    print(f"{len(folds)} patients, out of fold, post-processing: {rule}")
    print(f"{'weight of ' + args.first.name:<24}" + "".join(f"{n:>8}" for n in REGION_NAMES)
          + f"{'mean':>8}{'vs 0.5':>9}{'worst fold':>12}   HD95 " + " / ".join(REGION_NAMES))  # fmt: skip

    def print_row(name: str, values: np.ndarray) -> None:
        """Mean Dice per region and overall, the gain over equal weights, its lowest fold mean, HD95."""
        gain = (values[:, :3] - dice[:, equal]).mean(axis=1)
        worst = min(gain[folds == fold].mean() for fold in np.unique(folds))
        means = values.mean(axis=0)
        print(f"{name:<24}" + "".join(f"{d:8.4f}" for d in means[:3]) + f"{means[:3].mean():8.4f}"
              + f"{gain.mean():+9.4f}{worst:+12.4f}   "
              + " / ".join(f"{h:.2f}" for h in means[3:]))  # fmt: skip

    for index, weight in enumerate(WEIGHTS):
        print_row(f"{weight:g}", scores[:, index])
    nested, chosen = np.zeros_like(scores[:, 0]), []
    for fold in np.unique(folds):
        best = int(dice[folds != fold].mean(axis=(0, 2)).argmax())
        nested[folds == fold] = scores[folds == fold, best]
        chosen.append(f"{WEIGHTS[best]:g}")
    print_row("each fold: the others'", nested)
    print("  (chosen: " + " | ".join(chosen) + ")")


if __name__ == "__main__":
    main()
