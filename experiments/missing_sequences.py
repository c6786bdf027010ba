"""Missing sequences: Dice with all four sequences and with each one left out, per model.

Each FOLDS_DIR is a cross-validation folder (``train --folds K --fold i``); every fold run that
has a ``best.pt`` segments its own validation patients from the store, once with all four
sequences and once without each (its channel zeroed, as predict does for a case lacking the
file). For a model trained without ``--modality-dropout`` predict refuses such a case; this
script measures what that refusal protects from. Prints mean ± std over patients per region.

    python experiments/missing_sequences.py runs/cv-baseline runs/cv-dropout --data runs/real.h5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tumorseg.data.case import MODALITIES
from tumorseg.data.splits import load_split
from tumorseg.data.store import Store
from tumorseg.inference.segmenter import Segmenter
from tumorseg.metrics import region_dice
from tumorseg.rundir import RunDir


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folds_dirs", type=Path, nargs="+", metavar="FOLDS_DIR")
    parser.add_argument("--data", type=Path, required=True, help="the store the folds trained on")
    args = parser.parse_args()
    conditions = [(), *((m,) for m in MODALITIES)]
    print(f"{'model':<28}{'sequences':<16}{'Dice WT':>16}{'Dice TC':>16}{'Dice ET':>16}  patients folds")
    with Store(args.data) as store:
        for folds_dir in args.folds_dirs:
            runs = [RunDir(p) for p in sorted(folds_dir.iterdir()) if RunDir(p).best.exists()]
            scores: dict[tuple, list[np.ndarray]] = {c: [] for c in conditions}
            for run in runs:
                segmenter = Segmenter(run.root)
                for case_id in load_split(run.split)["val"]:
                    volume, reference = store.read_volume(case_id)
                    for absent in conditions:
                        segmenter.absent = absent  # set directly: the benchmark skips predict's refusal
                        prediction = segmenter.classes(segmenter.probabilities(volume))
                        scores[absent].append(region_dice(prediction, reference))
            for absent, values in scores.items():
                mean, std = np.mean(values, axis=0), np.std(values, axis=0)
                cells = "".join(f"{m:>9.3f} ± {s:.3f}" for m, s in zip(mean, std, strict=True))
                label = f"without {absent[0].upper()}" if absent else "all four"
                print(f"{folds_dir.name:<28}{label:<16}{cells}  {len(values):>8} {len(runs):>5}", flush=True)


if __name__ == "__main__":
    main()
