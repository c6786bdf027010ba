"""Should the raw pipeline correct each sequence's bias field (N4, Tustison et al. 2010)? The
healthy head of the raw data, scanned prone, comes out with false edema that the supine scan does
not show; a receive coil that sees the head unevenly is the usual suspect. Measured three ways,
with the shipped models, N4 fitted within the brain on the BraTS grid (shrunk 6 times, one
thread, 50 iterations a level) with 1, 2 or 4 fitting levels (4: SimpleITK's default; each level
doubles the field's control points):

- the shared patients as BraTS ships them, and the same shaded by a smooth field per sequence
  (exp(0.3 g), g a random second-order polynomial over the grid, largest |g| 1: 0.74x to 1.35x),
  each without and with N4: mean Dice WT / TC / ET, and each N4 against none, paired, with s.e.;
- the healthy head, supine and prone (T1 only, read from DICOM, through the raw pipeline): the
  tumor it finds in mL, without and with N4.

    python experiments/bias_correction.py [--cases 8]

Raw data from $TUMORSEG_RAW_DATA or ../shared/data/raw-mri; shared patients from
$TUMORSEG_REAL_DATA or ../shared/data/brats2018-sample.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from data_io import real_root  # noqa: E402
from tumorseg.data.brats import find_case_files, find_case_folders, read_case  # noqa: E402
from tumorseg.data.case import Case  # noqa: E402
from tumorseg.inference.predict import segment  # noqa: E402
from tumorseg.inference.segmenter import Segmenter  # noqa: E402
from tumorseg.metrics import region_dice  # noqa: E402
from tumorseg.raw import dicom  # noqa: E402
from tumorseg.raw.pipeline import prepare  # noqa: E402

RAW = Path(os.environ.get("TUMORSEG_RAW_DATA", Path(__file__).parents[1] / ".." / "shared/data/raw-mri"))
LEVELS = (1, 2, 4)
SHADE = 0.3


def n4(voxels: np.ndarray, brain: np.ndarray, levels: int) -> np.ndarray:
    """``voxels`` divided by N4's field, fitted within the brain's positive voxels; 0 outside."""
    image = sitk.GetImageFromArray(voxels.astype(np.float32))
    mask = sitk.GetImageFromArray((brain & (voxels > 0)).astype(np.uint8))
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetNumberOfThreads(1)
    corrector.SetMaximumNumberOfIterations([50] * levels)
    corrector.Execute(sitk.Shrink(image, [6] * 3), sitk.Shrink(mask, [6] * 3))
    field = sitk.GetArrayFromImage(sitk.Exp(corrector.GetLogBiasFieldAsImage(image)))
    return np.where(brain, voxels / field, 0).astype(np.float32)


def corrected(case: Case, levels: int) -> Case:
    brain = (case.image != 0).any(axis=0)
    image = np.stack([n4(channel, brain, levels) if channel.any() else channel for channel in case.image])
    return Case(case.case_id, image, case.label, case.affine, case.sources, absent=case.absent)


def shaded(case: Case, rng: np.random.Generator) -> Case:
    axes = np.meshgrid(*(np.linspace(-1, 1, n) for n in case.image.shape[1:]), indexing="ij")
    terms = [*axes, *(a * b for i, a in enumerate(axes) for b in axes[i:])]
    image = case.image.astype(np.float32)
    for channel in image:
        g = sum(rng.normal() * term for term in terms)
        channel *= np.exp(SHADE * g / np.abs(g).max())
    return Case(case.case_id, image, case.label, case.affine, case.sources, absent=case.absent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=8)
    args = parser.parse_args()
    segmenter = Segmenter(None)
    rng = np.random.default_rng(0)
    extras = ("", *(f" N4x{n}" for n in LEVELS))
    names = [f"{shade}{extra}" for shade in ("clean", "shaded") for extra in extras]
    scores: dict[str, list] = {name: [] for name in names}
    for folder in find_case_folders(real_root())[: args.cases]:
        case = read_case(find_case_files(folder))
        case.image = case.image.astype(np.float32)
        for shade, base in (("clean", case), ("shaded", shaded(case, rng))):
            scores[shade].append(region_dice(segment(base, segmenter).classes, case.label))
            for levels in LEVELS:
                fixed = segment(corrected(base, levels), segmenter).classes
                scores[f"{shade} N4x{levels}"].append(region_dice(fixed, case.label))
        print(folder.name, "  ".join(f"{n} {' '.join(f'{d:.3f}' for d in s[-1])}" for n, s in scores.items()),
              flush=True)  # fmt: skip
    print(f"\n{args.cases} patients, Dice WT / TC / ET (mean); N4 against none, paired (s.e.)")
    for name, values in scores.items():
        values = np.array(values)
        line = f"{name:<16} " + " / ".join(f"{d:.3f}" for d in values.mean(axis=0))
        if "N4" in name:
            difference = values - np.array(scores[name.split(" ")[0]])
            se = difference.std(axis=0, ddof=1) / np.sqrt(len(difference))
            pairs = zip(difference.mean(axis=0), se, strict=True)
            line += "   " + " / ".join(f"{d:+.3f} ({s:.3f})" for d, s in pairs)
        print(line)
    print("\nhealthy head (T1 only), tumor found, mL: none | " + " | ".join(f"N4x{n}" for n in LEVELS))
    for position in ("HFS", "HFP"):
        (series,) = dicom.find_series(RAW / "dicom-decubitus" / position)
        case, _ = prepare({"t1": dicom.read_series(series)}, position, position)
        found = [segment(c, segmenter).classes for c in (case, *(corrected(case, n) for n in LEVELS))]
        print(f"{position}  " + " | ".join(f"{np.count_nonzero(f) / 1000:.1f}" for f in found))


if __name__ == "__main__":
    main()
