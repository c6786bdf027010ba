"""How much choosing best.pt on a fold's own validation patients flatters a cross-validation.

In `train --folds K --fold i` the held-out fold both chooses the epoch (best.pt, the highest
validation Dice) and is what `tumorseg cv` scores, so a cross-validation reads the best of N
epochs where a new patient gets one. This prints, per folds directory, each fold's validation
Dice at its best epoch and at its last (from history.csv alone) and the mean gap: the optimism
of the chosen epoch, which grows with the number of epochs to choose from.

    python experiments/epoch_choice.py runs/cv-gpu runs/cv-strong
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def best_and_last(run: Path) -> tuple[float, float, int]:
    """Validation Dice (mean of the regions) at the best epoch and at the last, and the epochs."""
    with open(run / "history.csv", newline="") as handle:
        dice = [float(row["val_dice"]) for row in csv.DictReader(handle)]
    return max(dice), dice[-1], len(dice)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folds_dirs", nargs="+", type=Path, help="folders of fold-* runs")
    args = parser.parse_args()
    print(f"{'folds':<28}{'epochs':>7}{'best':>8}{'last':>8}{'gap':>8}  gap per fold")
    for folder in args.folds_dirs:
        runs = sorted(p for p in folder.glob("fold-*") if (p / "history.csv").is_file())
        best, last, epochs = map(np.array, zip(*(best_and_last(run) for run in runs), strict=True))
        gaps = " ".join(f"{g:.3f}" for g in best - last)
        print(
            f"{str(folder):<28}{int(epochs.max()):>7}{best.mean():>8.4f}{last.mean():>8.4f}"
            f"{(best - last).mean():>8.4f}  {gaps}"
        )


if __name__ == "__main__":
    main()
