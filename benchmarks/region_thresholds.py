"""Out-of-fold Dice of a cross-validated recipe when its region probabilities are cut at other
thresholds than 0.5 (the post-processing of ``--postprocessing`` applied after).

A model that under-segments (its misses are mostly low sensitivity) might gain from a lower
threshold; this prints the mean Dice per region over every patient, each scored by the fold
model (or the ensemble of several folds directories) that never saw it. The threshold is chosen
and scored on the same patients, so the best row flatters it.

    python benchmarks/region_thresholds.py runs/cv-baseline \
        --postprocessing runs/cv-baseline/postprocessing.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from tumorseg.evaluation.crossval import fold_groups, out_of_fold
from tumorseg.evaluation.metrics import region_dice
from tumorseg.inference.segmenter import Segmenter
from tumorseg.labels import REGION_NAMES
from tumorseg.postprocess import PostProcessing

THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folds_dirs", type=Path, nargs="+", help="folds directories (several: their ensemble)"
    )
    parser.add_argument(
        "--postprocessing", type=Path, help="a rule from `tumorseg cv --choose-postprocessing`"
    )
    args = parser.parse_args()
    rule = PostProcessing.from_file(args.postprocessing) if args.postprocessing else PostProcessing()
    segmenter_of = lambda runs: Segmenter([run.root for run in runs])  # noqa: E731
    dice = []  # per patient: (thresholds, regions)
    for segmenter, probabilities, reference, voxel_ml in out_of_fold(
        fold_groups(args.folds_dirs), segmenter_of, None, progress=True
    ):
        if not segmenter.target.regions:
            raise SystemExit(f"{args.folds_dirs[0]}: a labels model has no region thresholds")
        scores = torch.from_numpy(probabilities)
        dice.append(
            [
                region_dice(rule.apply(segmenter.target.decode(scores, t).numpy(), voxel_ml), reference)
                for t in THRESHOLDS
            ]
        )
    means = np.mean(dice, axis=0)
    print(f"{len(dice)} patients, out of fold, post-processing: {rule}")
    print(f"{'threshold':<10}" + "".join(f"{name:>8}" for name in REGION_NAMES) + f"{'mean':>8}")
    for threshold, row in zip(THRESHOLDS, means, strict=True):
        print(f"{threshold:<10}" + "".join(f"{d:8.4f}" for d in row) + f"{row.mean():8.4f}")


if __name__ == "__main__":
    main()
