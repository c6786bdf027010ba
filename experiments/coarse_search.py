"""Coarse-to-fine search benchmark: what each (step, margin, brain margin) saves and costs on real
patients.

Every case of the shared folder is segmented NIfTI to NIfTI by a model (default: the shipped one,
with its 8-bit export, as predict runs it on a CPU) on every slice, and coarse to fine with each
step, margin around the tumor and margin around each first-pass slice's brain
(``segment_coarse_to_fine``), in turns. Per variant it prints the median time per
patient, the median of its per-patient time ratio to every slice, its mean Dice per region
against the label maps and the change from every slice, with the largest drop of one patient.

    python experiments/coarse_search.py [--model MODEL] [--engine onnx-int8] [--cases 28]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from tumorseg.data.brats import find_case_files, find_case_folders
from tumorseg.inference.predict import predict_case
from tumorseg.inference.segmenter import Segmenter
from tumorseg.inference.sliding_window import Search
from tumorseg.labels import to_internal
from tumorseg.metrics import region_dice

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from data_io import real_root  # noqa: E402  (the benchmarks' one finder of the real cases)

#: A brain margin wider than any slice: the first pass segments whole slices (as before it
#: learned to crop each to its brain).
WHOLE = 10**4
#: (step, margin, brain margin, in pixels); step 1 is every slice, whole: the reference.
VARIANTS = ((1, 0, WHOLE), (4, 32, WHOLE), (4, 32, 16), (4, 32, 8), (4, 32, 0), (6, 32, 16), (8, 32, 16))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="run directory or model file (default: the shipped model)")
    parser.add_argument("--engine", default="onnx-int8", choices=("torch", "onnx", "onnx-int8"))
    parser.add_argument("--cases", type=int, default=28)
    args = parser.parse_args()
    segmenters = {
        (step, margin, brain): Segmenter(args.model, engine=args.engine, search=Search(step, margin, brain))
        for step, margin, brain in VARIANTS
    }
    seconds = {variant: [] for variant in VARIANTS}
    dice = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "seg.nii.gz"
        for folder in find_case_folders(real_root())[: args.cases]:
            files = find_case_files(folder)
            truth = to_internal(np.asarray(nib.load(files.seg).dataobj), files.convention)
            for variant, segmenter in segmenters.items():  # in turns, so drift hits all alike
                start = time.perf_counter()
                predict_case(files, segmenter, out)
                seconds[variant].append(time.perf_counter() - start)
                dice[variant].append(region_dice(to_internal(np.asarray(nib.load(out).dataobj)), truth))
    reference = VARIANTS[0]
    print(f"{args.engine}, {len(dice[reference])} cases; Dice WT / TC / ET; change from every slice")
    header = f"{'step, margins':<24} {'s/patient':>9} {'ratio':>6}  {'mean Dice':<22} {'mean change':<24}"
    print(f"{header} worst patient")
    for variant in VARIANTS:
        ratio = np.median(np.asarray(seconds[variant]) / np.asarray(seconds[reference]))
        scores, change = np.asarray(dice[variant]), np.asarray(dice[variant]) - np.asarray(dice[reference])
        step, margin, brain = variant
        brain_name = "whole slices" if brain == WHOLE else f"brain + {brain} px"
        name = "every slice" if variant == reference else f"{step}, {margin} px, {brain_name}"
        print(
            f"{name:<24} {np.median(seconds[variant]):9.2f} {ratio:6.2f}  "
            + " / ".join(f"{d:.4f}" for d in scores.mean(0))
            + "  "
            + " / ".join(f"{d:+.4f}" for d in change.mean(0))
            + "  "
            + " / ".join(f"{d:+.4f}" for d in change.min(0))
        )


if __name__ == "__main__":
    main()
