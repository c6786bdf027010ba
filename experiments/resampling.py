"""Resampling benchmark: real cases at other voxel sizes, segmented by models that never saw them.

For each fold run of a cross-validation folder, a few of its validation patients are resampled
(linearly, with nibabel) to coarser grids and segmented three ways:

- ``own grid``: segmented at the input's voxel size, as tumorseg did before resampling;
- ``labels``: resampled to the model's 1 mm, segmented, the label map resampled back (nearest);
- ``probabilities`` (what predict does): the probabilities resampled back (linear), then decoded.

It prints the mean Dice per region against the 1 mm prediction (put on the coarse grid, nearest)
and against the reference label map (put on the coarse grid the same way), over the patients.

    python experiments/resampling.py runs/cv-baseline --per-fold 2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to, resample_to_output

from tumorseg.data.brats import find_case_files, read_case
from tumorseg.data.case import Case
from tumorseg.data.preprocess import preprocess
from tumorseg.data.splits import load_split
from tumorseg.inference.predict import segment
from tumorseg.inference.segmenter import Segmenter
from tumorseg.metrics import region_dice
from tumorseg.rundir import RunDir

GRIDS = {"2 x 2 x 2 mm": (2.0, 2.0, 2.0), "0.9 x 0.9 x 3 mm": (0.9, 0.9, 3.0)}
METHODS = ("own grid", "labels", "probabilities")


def coarse_case(
    case: Case, reference: nib.Nifti1Image, spacing: tuple[float, ...]
) -> tuple[Case, np.ndarray]:
    """The case's modalities and labels resampled to ``spacing`` (images linear, labels nearest)."""
    volumes, affine = [], None
    for volume in case.image:
        image = resample_to_output(
            nib.Nifti1Image(volume.astype(np.float32), reference.affine), spacing, order=1
        )
        volumes.append(np.asarray(image.dataobj))
        affine = image.affine
    labels = resample_to_output(nib.Nifti1Image(case.label, reference.affine), spacing, order=0)
    coarse = Case(case.case_id, np.stack(volumes), None, affine, case.sources)
    return coarse, np.asarray(labels.dataobj)


def on_grid(labels: np.ndarray, affine: np.ndarray, target: Case) -> np.ndarray:
    """A label map put on another case's grid by nearest neighbour."""
    image = nib.Nifti1Image(labels.astype(np.uint8), affine)
    return np.asarray(resample_from_to(image, (target.image.shape[1:], target.affine), order=0).dataobj)


def segment_as(case: Case, segmenter: Segmenter, method: str) -> np.ndarray:
    if method == "probabilities":
        return segment(case, segmenter).classes
    if method == "own grid":
        native = dataclasses.replace(segmenter.config, spacing=list(case.spacing))
        original, segmenter.config = segmenter.config, native
        try:
            return segment(case, segmenter).classes
        finally:
            segmenter.config = original
    prepared = preprocess(case, spacing=segmenter.config.spacing)
    classes = segmenter.classes(segmenter.probabilities(prepared.normalized()))
    return prepared.restore(prepared.to_source_spacing(classes))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folds_dir", type=Path, help="a cross-validation folder of fold runs")
    parser.add_argument("--cases", type=Path, default=None, help="real case folders (default: shared sample)")
    parser.add_argument("--per-fold", type=int, default=2, help="validation patients per fold")
    args = parser.parse_args()
    default = Path(__file__).resolve().parents[2] / "shared/data/brats2018-sample"
    root = args.cases or Path(os.environ.get("TUMORSEG_REAL_DATA", default))
    scores: dict[tuple[str, str, str], list[np.ndarray]] = {}
    for run_path in sorted(p for p in args.folds_dir.iterdir() if RunDir(p).best.exists()):
        segmenter = Segmenter(run_path)
        for case_id in load_split(RunDir(run_path).split)["val"][: args.per_fold]:
            files = find_case_files(root / case_id)
            case = read_case(files)
            reference = nib.load(files.seg)
            fine = segment(dataclasses.replace(case, label=None), segmenter).classes
            scores.setdefault(("1 mm", "-", "reference"), []).append(region_dice(fine, case.label))
            for grid, spacing in GRIDS.items():
                coarse, labels = coarse_case(case, reference, spacing)
                fine_there = on_grid(fine, case.affine, coarse)
                for method in METHODS:
                    classes = segment_as(coarse, segmenter, method)
                    scores.setdefault((grid, method, "1 mm prediction"), []).append(
                        region_dice(classes, fine_there)
                    )
                    scores.setdefault((grid, method, "reference"), []).append(region_dice(classes, labels))
            print(f"done {case_id}", flush=True)
    print(f"\n{'grid':<18}{'method':<15}{'Dice against':<17}{'WT':>7}{'TC':>7}{'ET':>7}   patients")
    for (grid, method, against), values in scores.items():
        mean = np.mean(values, axis=0)
        print(
            f"{grid:<18}{method:<15}{against:<17}" + "".join(f"{v:>7.3f}" for v in mean) + f"   {len(values)}"
        )


if __name__ == "__main__":
    main()
