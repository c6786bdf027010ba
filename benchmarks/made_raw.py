"""The raw pipeline on the shared BraTS patients made raw, against the same patients as BraTS ships them.

Each patient's four sequences are moved by their own random rigid transform (up to 15 degrees
about each axis and 20 mm along it: the head between two series, and the head against the atlas),
resampled onto a clinical grid (FLAIR and T2: 0.9 x 0.9 x 5 mm axial; T1ce: a 1 mm 3D volume; T1:
1 x 1 x 5 mm) and written as DICOM series. Then, with the models that ship:

- the clean path segments the BraTS files, scored against the expert labels in BraTS space;
- the raw path reads the DICOM study, runs the raw pipeline, segments, and takes the labels to
  the T1ce's grid, scored against the expert labels taken there through the known move;
- the atlas registration is scored against the truth, which is known here (the BraTS images lie
  in SRI24 space): the mean distance between where it and the inverse of the T1ce's move put the
  brain's voxels.

It prints a row a patient and the mean Dice of both paths with the paired difference and its
standard error. The made-raw studies are written to a temporary folder (``--keep DIR`` keeps them).
Real cases come from $TUMORSEG_REAL_DATA or ../shared/data/brats2018-sample.

    python benchmarks/made_raw.py [--cases 28] [--seed 0] [--json made_raw.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from data_io import real_root  # this folder's benchmarks; scripts run from here
from tumorseg.data.brats import find_case_files, find_case_folders, read_case
from tumorseg.data.case import MODALITIES
from tumorseg.errors import TumorsegError
from tumorseg.inference.predict import segment
from tumorseg.inference.segmenter import Segmenter
from tumorseg.labels import to_internal
from tumorseg.metrics import region_dice
from tumorseg.raw import dicom, images
from tumorseg.raw.pipeline import prepare
from tumorseg.raw.registration import displacement

#: Each sequence's clinical grid: voxel size (mm) and the series description a scanner would give.
GRIDS = {
    "flair": ((0.9, 0.9, 5.0), "AX T2 FLAIR"),
    "t1": ((1.0, 1.0, 5.0), "AX T1 SE"),
    "t1ce": ((1.0, 1.0, 1.0), "3D T1 MPRAGE POST GD"),
    "t2": ((0.9, 0.9, 5.0), "AX T2 FSE"),
}
#: The field of view of every made-raw series (mm): the whole head of a BraTS image, moved.
FIELD = (230.0, 230.0, 160.0)


def random_move(rng: np.random.Generator, centre: np.ndarray) -> sitk.Euler3DTransform:
    angles = np.deg2rad(rng.uniform(-15, 15, 3))
    return sitk.Euler3DTransform(tuple(centre), *angles, tuple(rng.uniform(-20, 20, 3)))


def clinical_grid(spacing: tuple[float, float, float], centre: np.ndarray) -> sitk.Image:
    size = [int(round(f / s)) for f, s in zip(FIELD, spacing, strict=True)]
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing(spacing)
    grid.SetOrigin(tuple(centre - (np.array(size) - 1) * np.array(spacing) / 2))
    return grid


def make_raw(folder: Path, study: Path, rng: np.random.Generator) -> tuple[dict, sitk.Image]:
    """Write the case of ``folder`` as a DICOM study; the moves (native points -> BraTS points) and
    the expert labels on the T1ce's native grid."""
    files = find_case_files(folder)
    centre = np.array(images.brats_grid().TransformContinuousIndexToPhysicalPoint([119.5, 119.5, 77.0]))
    moves, natives = {}, {}
    for modality in MODALITIES:
        image = sitk.ReadImage(str(files.modalities[modality]), sitk.sitkFloat32)
        spacing, description = GRIDS[modality]
        moves[modality] = random_move(rng, centre)
        grid = clinical_grid(spacing, centre)
        natives[modality] = sitk.Resample(
            image, grid, moves[modality], sitk.sitkLinear, 0.0, sitk.sitkFloat32
        )
        dicom.write_series(natives[modality], study / modality, description, patient=files.case_id)
    label = sitk.ReadImage(str(files.seg))
    expert = sitk.Resample(label, natives["t1ce"], moves["t1ce"], sitk.sitkNearestNeighbor, 0)
    return moves, expert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=28)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="write the made-raw studies here, and keep them")
    args = parser.parse_args()
    folders = find_case_folders(real_root())[: args.cases]
    segmenter = Segmenter(None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for index, folder in enumerate(folders):
            rng = np.random.default_rng([args.seed, index])
            study = root / folder.name
            moves, expert = make_raw(folder, study, rng)
            case = read_case(find_case_files(folder))
            clean = region_dice(segment(case, segmenter).classes, case.label)
            start = time.perf_counter()
            try:
                sequences, _, _ = dicom.study(study)
                raw_case, space = prepare(sequences, folder.name, str(study))
                native = space.to_native(segment(raw_case, segmenter).classes)
            except TumorsegError as err:  # refused: the patient gets no segmentation, Dice 0
                print(f"{folder.name:<22} refused: {err}", flush=True)
                seconds = time.perf_counter() - start
                rows.append({"case": folder.name, "clean": clean.tolist(), "raw": [0.0, 0.0, 0.0],
                             "atlas_mm": None, "seconds": seconds, "refused": str(err)})  # fmt: skip
                continue
            seconds = time.perf_counter() - start
            raw = region_dice(native, to_internal(images.array(expert)))
            brain = np.argwhere(space.brain_in_atlas())[::200]
            points = [images.brats_grid().TransformIndexToPhysicalPoint([int(v) for v in i]) for i in brain]
            error = displacement(space.to_atlas, moves["t1ce"].GetInverse(), np.array(points))
            rows.append({"case": folder.name, "clean": clean.tolist(), "raw": raw.tolist(),
                         "atlas_mm": float(error.mean()), "seconds": seconds})  # fmt: skip
            scores = (
                f"clean {' / '.join(f'{d:.3f}' for d in clean)}   raw {' / '.join(f'{d:.3f}' for d in raw)}"
            )
            print(f"{folder.name:<22} {scores}   atlas {error.mean():.2f} mm   {seconds:.1f} s", flush=True)
    clean = np.array([r["clean"] for r in rows])
    raw = np.array([r["raw"] for r in rows])
    difference = raw - clean
    se = difference.std(axis=0, ddof=1) / np.sqrt(len(rows)) if len(rows) > 1 else np.zeros(3)
    print(f"\n{len(rows)} patients, Dice WT / TC / ET (mean):")
    print("clean path (BraTS files)      " + " / ".join(f"{d:.3f}" for d in clean.mean(axis=0)))
    print("raw path (made-raw DICOM)     " + " / ".join(f"{d:.3f}" for d in raw.mean(axis=0)))
    print(
        "raw - clean, paired (s.e.)    "
        + " / ".join(f"{d:+.3f} ({s:.3f})" for d, s in zip(difference.mean(axis=0), se, strict=True))
    )
    atlas = np.array([r["atlas_mm"] for r in rows if r["atlas_mm"] is not None])
    refused = sum("refused" in r for r in rows)
    print(f"refused (one line, nothing written): {refused} of {len(rows)}")
    if len(atlas):
        print(f"atlas registration against the truth: mean {atlas.mean():.2f} mm, worst {atlas.max():.2f} mm")
    median = np.median([r["seconds"] for r in rows])
    print(f"raw path per patient (in process, the model loaded once): median {median:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
