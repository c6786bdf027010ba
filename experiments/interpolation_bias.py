"""Does a model trained with scanner augmentation answer one more interpolation less? Two grouped
cross-validations' fold models (last.pt, no post-processing) segment each of their held-out
patients as BraTS ships them and after a random rigid move resampled linearly (as
``benchmarks/repeatability.py`` moves them; the expert labels moved by nearest neighbour).

Per run it prints the mean change of the whole tumor's volume that the move brings (moved - as
shipped, mL, with its standard error over patients) and the Dice of both against the expert
labels; then the paired difference of the two runs' volume changes.

    python experiments/interpolation_bias.py runs/cv-grouped-e runs/cv-grouped-e-scanner
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from data_io import real_root  # noqa: E402 (the benchmarks' helpers)
from repeatability import moved, random_move  # noqa: E402
from tumorseg.data.brats import find_case_files, find_case_folders, read_case  # noqa: E402
from tumorseg.data.case import Case  # noqa: E402
from tumorseg.geometry import voxel_ml  # noqa: E402
from tumorseg.inference.predict import segment  # noqa: E402
from tumorseg.inference.segmenter import Segmenter  # noqa: E402
from tumorseg.metrics import region_dice  # noqa: E402
from tumorseg.postprocessing import PostProcessing  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folders = {folder.name: folder for folder in find_case_folders(real_root())}
    results = {}
    for run in args.runs:
        rows = {}
        for fold in sorted(run.glob("fold-*")):
            split = json.loads((fold / "split.json").read_text())
            model = Segmenter(fold / "last.pt", postprocessing=PostProcessing())
            for case_id in split["val"]:
                case = read_case(find_case_files(folders[case_id]))
                draws = [args.seed, sorted(folders).index(case_id)]  # the same move for images and labels
                image_only = Case(case.case_id, case.image, None, case.affine, case.sources)
                move = random_move(np.random.default_rng(draws), case)
                shifted = moved(image_only, move)
                label = ndimage.affine_transform(case.label, *move, order=0)
                ml = voxel_ml(case.affine)
                original, after = segment(image_only, model).classes, segment(shifted, model).classes
                rows[case_id] = {
                    "wt_change_ml": float(
                        (np.isin(after, (1, 2, 3)).sum() - np.isin(original, (1, 2, 3)).sum()) * ml
                    ),
                    "dice_original": region_dice(original, case.label).tolist(),
                    "dice_moved": region_dice(after, label).tolist(),
                }
                print(f"{run.name:<26} {case_id:<22} WT {rows[case_id]['wt_change_ml']:+6.2f} mL", flush=True)
        results[run] = rows
    cases = sorted(set.intersection(*(set(r) for r in results.values())))
    for run, rows in results.items():
        change = np.array([rows[c]["wt_change_ml"] for c in cases])
        before = " / ".join(f"{d:.3f}" for d in np.array([rows[c]["dice_original"] for c in cases]).mean(0))
        after = " / ".join(f"{d:.3f}" for d in np.array([rows[c]["dice_moved"] for c in cases]).mean(0))
        print(f"{run}: WT moved - as shipped {change.mean():+.2f} mL (s.e. {standard_error(change):.2f}); "
              f"Dice WT/TC/ET as shipped {before}, moved {after}")  # fmt: skip
    a, b = ([results[run][c]["wt_change_ml"] for c in cases] for run in args.runs)
    difference = np.subtract(b, a)
    print(f"volume change, B - A: {difference.mean():+.2f} mL (s.e. {standard_error(difference):.2f}), "
          f"{len(cases)} patients")  # fmt: skip


def standard_error(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(len(values)))


if __name__ == "__main__":
    main()
