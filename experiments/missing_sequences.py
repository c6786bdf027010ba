"""Missing sequences: Dice with all four sequences and with some left out, per model.

Each SOURCE is a cross-validation folder (``train --folds K --fold i``), whose every fold run
segments its own validation patients from the store, or a model file, which segments the
validation patients its ``split`` names (for a shipped file: the patients watched during its
training, never trained on). Every case is segmented once with all four sequences and once
without each (its channel zeroed, as predict does for a case lacking the file); ``--subsets all``
tries every set of one to four sequences instead. For a model trained without
``--modality-dropout`` predict refuses such a case; this script measures what that refusal
protects from. Prints mean ± std over patients per region, and the mean volume of tumor found
outside the reference's whole tumor (mL; with all four sequences mostly a border drawn wider).

    python experiments/missing_sequences.py runs/cv-baseline runs/cv-dropout --data runs/real.h5
    python experiments/missing_sequences.py runs/cv-grouped-b --last --subsets all --data runs/real.h5
    python experiments/missing_sequences.py src/tumorseg/weights/brats-2d-any-sequences.pt \
        --subsets all --data runs/real.h5
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from tumorseg.data.case import MODALITIES
from tumorseg.data.splits import load_split
from tumorseg.data.store import Store
from tumorseg.inference.segmenter import Segmenter
from tumorseg.metrics import region_dice
from tumorseg.rundir import RunDir


def models(source: Path, last: bool) -> list[tuple[Path, list[str]]]:
    """(model file, the patients it never trained on) for each fold run of a folder, or a file."""
    if source.is_file():
        return [(source, torch.load(source, weights_only=True, map_location="cpu")["split"]["val"])]
    runs = [RunDir(p) for p in sorted(source.iterdir()) if p.is_dir() and RunDir(p).split.is_file()]
    pairs = [(run.last if last else run.best, load_split(run.split)["val"]) for run in runs]
    return [(path, cases) for path, cases in pairs if path.exists()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sources", type=Path, nargs="+", metavar="SOURCE")
    parser.add_argument("--data", type=Path, required=True, help="the store the models trained on")
    parser.add_argument("--last", action="store_true", help="each fold's last.pt, not its best.pt")
    parser.add_argument("--subsets", choices=("leave-one-out", "all"), default="leave-one-out")
    parser.add_argument("--json", type=Path, help="also write every patient's figures here")
    args = parser.parse_args()
    if args.subsets == "all":
        given = [c for k in (4, 3, 2, 1) for c in itertools.combinations(MODALITIES, k)]
    else:
        given = [tuple(MODALITIES), *(tuple(x for x in MODALITIES if x != m) for m in MODALITIES)]
    print(f"{'model':<28}{'sequences given':<24}{'Dice WT':>16}{'Dice TC':>16}{'Dice ET':>16}"
          f"{'outside mL':>12}  patients")  # fmt: skip
    patients: dict[str, dict] = {}
    with Store(args.data) as store:
        for source in args.sources:
            pairs = models(source, args.last)
            dice: dict[tuple, list[np.ndarray]] = {g: [] for g in given}
            made_up: dict[tuple, list[float]] = {g: [] for g in given}
            found = patients.setdefault(str(source), {})
            for path, cases in pairs:
                segmenter = Segmenter(path, engine="auto")
                for case_id in cases:
                    volume, reference = store.read_volume(case_id)
                    voxel_ml = store.info(case_id).voxel_ml
                    for sequences in given:
                        # set directly: predict refuses T1 alone and models without dropout
                        segmenter.absent = tuple(m for m in MODALITIES if m not in sequences)
                        prediction = segmenter.segmentation(segmenter.probabilities(volume), voxel_ml, volume)
                        dice[sequences].append(region_dice(prediction, reference))
                        outside = (prediction > 0) & (reference == 0)
                        made_up[sequences].append(float(outside.sum()) * voxel_ml)
                        found.setdefault(case_id, {})["+".join(sequences)] = {
                            "dice": [round(float(d), 4) for d in dice[sequences][-1]],
                            "outside_ml": round(made_up[sequences][-1], 3),
                        }
            for sequences in given:
                mean, std = np.mean(dice[sequences], axis=0), np.std(dice[sequences], axis=0)
                cells = "".join(f"{m:>9.3f} ± {s:.3f}" for m, s in zip(mean, std, strict=True))
                label = "+".join(m.upper() for m in sequences)
                print(f"{source.name:<28}{label:<24}{cells}{np.mean(made_up[sequences]):>12.1f}"
                      f"  {len(dice[sequences]):>8}", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(patients, indent=1) + "\n")


if __name__ == "__main__":
    main()
