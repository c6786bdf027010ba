"""Does the intensity normalization survive outliers? The shipped ensemble segments the shared
patients as BraTS ships them and with an artefact in one sequence, under each normalization:

- ``hot voxels``: 0.5 % of the FLAIR's brain voxels, spread at random, at the int16 ceiling (a
  sequence saturated in places, spikes);
- ``bright rim``: the T1's outermost 2 mm of brain at 4 times its median (fat or scalp that skull
  stripping left, a bright vessel along the surface);

and the normalizations: ``plain`` (z-scores over every brain voxel, as tumorseg did until
2026-12-07) and ``despiked`` (an intensity farther than ``OUTLIER_SDS`` robust standard
deviations from the brain's median first takes the median of its neighbours: the default
since; ``preprocess.despike``). Prints the mean
Dice (WT / TC / ET) of each, and each against ``plain`` on the clean images, patient by patient,
with its standard error. The models trained on these patients: only differences mean anything.

    python experiments/robust_normalization.py [--cases 28]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from data_io import real_root  # noqa: E402
from tumorseg.data import preprocess as prep  # noqa: E402
from tumorseg.data.brats import find_case_files, find_case_folders, read_case  # noqa: E402
from tumorseg.data.case import Case  # noqa: E402
from tumorseg.inference.predict import segment  # noqa: E402
from tumorseg.inference.segmenter import Segmenter  # noqa: E402
from tumorseg.inference.sliding_window import COARSE_STEP, Search  # noqa: E402
from tumorseg.metrics import region_dice  # noqa: E402

NORMALIZATIONS = {"plain": np.inf, "despiked": prep.OUTLIER_SDS}


def hot_voxels(case: Case, rng: np.random.Generator) -> Case:
    image = case.image.copy()
    flair = image[0]
    brain = np.flatnonzero(flair)
    flair.flat[rng.choice(brain, size=len(brain) // 200, replace=False)] = np.iinfo(np.int16).max
    return Case(case.case_id, image, case.label, case.affine, case.sources)


def bright_rim(case: Case, rng: np.random.Generator) -> Case:
    image = case.image.copy()
    t1 = image[1]
    brain = t1 != 0
    rim = brain & ~ndimage.binary_erosion(brain, iterations=2)
    t1[rim] = 4 * np.median(t1[brain])
    return Case(case.case_id, image, case.label, case.affine, case.sources)


ARTEFACTS = {"clean": lambda case, rng: case, "hot voxels": hot_voxels, "bright rim": bright_rim}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=28)
    args = parser.parse_args()
    segmenter = Segmenter(None, engine="auto", search=Search(COARSE_STEP))  # predict's defaults
    dice: dict[tuple[str, str], list[np.ndarray]] = {}
    for index, folder in enumerate(find_case_folders(real_root())[: args.cases]):
        files = find_case_files(folder)
        case = read_case(files)
        truth = case.label  # internal classes, as segment returns them
        for artefact, make in ARTEFACTS.items():
            changed = make(case, np.random.default_rng([7, index]))
            unlabeled = Case(changed.case_id, changed.image, None, changed.affine, changed.sources)
            for name, outlier_sds in NORMALIZATIONS.items():
                prep.OUTLIER_SDS = outlier_sds
                classes = segment(unlabeled, segmenter).classes
                dice.setdefault((artefact, name), []).append(region_dice(classes, truth))
        print(folder.name, " ".join(f"{np.mean(v[-1]):.3f}" for v in dice.values()), flush=True)
    base = np.array(dice[("clean", "plain")])
    print(f"\n{len(base)} patients, the shipped ensemble; mean Dice WT / TC / ET, and the mean of the three "
          "against plain on clean images (paired, s.e.)")  # fmt: skip
    for (artefact, name), values in dice.items():
        values = np.array(values)
        gain = values.mean(axis=1) - base.mean(axis=1)
        error = gain.std(ddof=1) / np.sqrt(len(gain))
        means = " / ".join(f"{v:.4f}" for v in values.mean(axis=0))
        print(f"{artefact:<11} {name:<20} {means}   {gain.mean():+.4f} ({error:.4f})")


if __name__ == "__main__":
    main()
