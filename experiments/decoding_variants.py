"""Out-of-fold Dice of a cross-validated recipe under other ways of turning its region
probabilities into labels (the post-processing of ``--postprocessing`` applied after each).

Five families, each against the model's own decoding (regions cut at 0.5):

- other thresholds than 0.5: a model that under-segments might gain from a lower one;
- one region cut at another threshold, the others at 0.5: the whole tumor is mostly missed, not
  overdrawn, where it scores low, while a lower cut costs the core;
- probabilities smoothed through the slices (a Gaussian along z of ``sigma`` slices) before the
  cut: a 2D network decides every slice alone, and its maps are ragged from slice to slice;
- holes of the tumor core filled slice by slice (necrosis inside an enhancing rim that was called
  edema becomes core);
- tumor-core components smaller than a volume, but the largest, relabeled edema (the island rule of
  ``--postprocessing`` does this for the whole tumor; a far false core inside the edema is what
  makes a core's HD95 large).

Prints the mean Dice per region over every patient, each scored by the fold model (or the
ensemble of several folds directories) that never saw it, the mean paired difference to the
model's own decoding, and the lowest fold mean of that difference (a variant that helps one fold
and hurts another is no rule). Variants are chosen and scored on the same patients, so the best
row flatters itself; the next line does not: each fold decoded by the variant the other folds
score best with. Last, the patients with the lowest tumor-core Dice, and how much of their core
the model called edema.

    python experiments/decoding_variants.py runs/cv-gpu --data runs/real.h5 \
        --postprocessing runs/cv-gpu/postprocessing.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from tumorseg.evaluation.crossval import fold_groups, out_of_fold
from tumorseg.inference.segmenter import Segmenter
from tumorseg.labels import EDEMA, ENHANCING, NECROSIS, REGION_NAMES, Target, region_masks
from tumorseg.metrics import region_dice
from tumorseg.postprocessing.rules import PostProcessing, relabel_pieces

THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.6)
REGION_THRESHOLDS = (0.3, 0.4, 0.45, 0.55, 0.6)
CORE_ISLANDS_ML = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
SIGMAS = (0.5, 1.0, 1.5, 2.0)  # slices
OWN = "own (0.5)"
WEAKEST = 3


def fill_core_holes(classes: np.ndarray) -> np.ndarray:
    """Edema or background enclosed by tumor core within its slice becomes necrosis."""
    core = (classes == NECROSIS) | (classes == ENHANCING)
    filled = np.stack([ndimage.binary_fill_holes(plane) for plane in core])
    out = classes.copy()
    out[filled & ~core] = NECROSIS
    return out


def without_core_islands(classes: np.ndarray, voxel_ml: float, min_ml: float) -> np.ndarray:
    """Tumor-core components (26-connected) under ``min_ml`` but the largest become edema."""
    core = (classes == NECROSIS) | (classes == ENHANCING)
    return relabel_pieces(classes, core, EDEMA, lambda sizes, _: sizes * voxel_ml < min_ml)


def variants(target: Target, voxel_ml: float) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Name -> probabilities (Z, 3, H, W) to classes (Z, H, W)."""

    def cut(threshold: float) -> Callable[[np.ndarray], np.ndarray]:
        return lambda p: target.decode(p, threshold)

    def region_cut(region: int, threshold: float) -> Callable[[np.ndarray], np.ndarray]:
        """``region`` above ``threshold``, the others above 0.5: its probability shifted."""

        def decode(p: np.ndarray) -> np.ndarray:
            shifted = p.copy()
            shifted[:, region] += 0.5 - threshold
            return cut(0.5)(shifted)

        return decode

    def smoothed(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
        return lambda p: cut(0.5)(ndimage.gaussian_filter1d(p, sigma, axis=0))

    def core_islands(min_ml: float) -> Callable[[np.ndarray], np.ndarray]:
        return lambda p: without_core_islands(cut(0.5)(p), voxel_ml, min_ml)

    found = {OWN: cut(0.5)}
    found |= {f"threshold {t}": cut(t) for t in THRESHOLDS}
    found |= {
        f"{name} alone at {t}": region_cut(region, t)
        for region, name in enumerate(REGION_NAMES)
        for t in REGION_THRESHOLDS
    }
    found |= {f"smoothed along z, sigma {s}": smoothed(s) for s in SIGMAS}
    found["core holes filled per slice"] = lambda p: fill_core_holes(cut(0.5)(p))
    found |= {f"core islands < {ml:g} mL to edema": core_islands(ml) for ml in CORE_ISLANDS_ML}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folds_dirs", type=Path, nargs="+", help="folds directories (several: an ensemble)")
    parser.add_argument("--data", type=Path, help="the store (default: the one each run trained on)")
    parser.add_argument("--postprocessing", type=Path, help="a rule of `tumorseg cv --choose-postprocessing`")
    args = parser.parse_args()
    rule = PostProcessing.from_file(args.postprocessing) if args.postprocessing else PostProcessing()
    segmenter_of = lambda runs: Segmenter([run.root for run in runs])  # noqa: E731
    dice, folds, cores = {}, [], []  # variant -> Dice per patient and region; fold; core facts
    for patient in out_of_fold(fold_groups(args.folds_dirs), segmenter_of, args.data, progress=True):
        if not patient.predictor.target.regions:
            raise SystemExit(f"{args.folds_dirs[0]}: a labels model has no region probabilities to vary")
        folds.append(patient.fold)
        scores = patient.probabilities
        reference, voxel_ml = patient.reference, patient.voxel_ml
        core_probability = patient.predictor.target.core_probability(scores)
        evidence = (patient.predictor.target.region_probabilities(scores), patient.volume)
        for name, decode in variants(patient.predictor.target, voxel_ml).items():
            classes = rule.apply(decode(scores).astype(np.uint8), voxel_ml, core_probability, evidence)
            dice.setdefault(name, []).append(region_dice(classes, reference))
            if name == OWN:
                _, core, enhancing = region_masks(reference)
                called_edema = np.count_nonzero(core & (classes == EDEMA)) * voxel_ml
                et = np.count_nonzero(enhancing) * voxel_ml
                cores.append((patient.case_id, et, called_edema))
    folds = np.asarray(folds)
    own = np.asarray(dice[OWN])
    print(f"{len(own)} patients, out of fold, post-processing: {rule}")
    print(f"{'decoding':<32}" + "".join(f"{n:>8}" for n in REGION_NAMES) + f"{'mean':>8}"
          + f"{'vs own':>9}" + f"{'worst fold':>12}")  # fmt: skip

    def print_row(name: str, values: np.ndarray) -> None:
        """Mean Dice per region and overall, the mean gain over ``own`` and its lowest fold mean."""
        gain = (values - own).mean(axis=1)
        worst = min(gain[folds == fold].mean() for fold in np.unique(folds))
        print(f"{name:<32}" + "".join(f"{d:8.4f}" for d in values.mean(axis=0))
              + f"{values.mean():8.4f}{gain.mean():+9.4f}{worst:+12.4f}")  # fmt: skip

    for name, values in dice.items():
        print_row(name, np.asarray(values))
    names = list(dice)
    stacked = np.stack([np.asarray(dice[name]) for name in names])  # variant, patient, region
    nested, chosen = np.zeros_like(own), []
    for fold in np.unique(folds):
        best = int(stacked[:, folds != fold].mean(axis=(1, 2)).argmax())
        nested[folds == fold] = stacked[best, folds == fold]
        chosen.append(names[best])
    print_row("each fold: best of the others", nested)
    print("  (chosen: " + " | ".join(chosen) + ")")
    print(f"\n{WEAKEST} lowest tumor cores ({OWN}): TC Dice, reference enhancing tumor, core called edema")
    for index in np.argsort(own[:, REGION_NAMES.index("TC")])[:WEAKEST]:
        case_id, et, called_edema = cores[index]
        print(f"  {case_id:<28}{own[index, REGION_NAMES.index('TC')]:6.2f}{et:9.1f} mL{called_edema:9.1f} mL")


if __name__ == "__main__":
    main()
