"""Raw scans: each step of tumorseg's raw pipeline against the BraTS Toolkit's outputs for the two
raw glioma patients (HD-BET masks, ANTs rigid transforms, the fusion of challenge models). These
are references, not ground truth.

Prints, per patient:
- brain mask Dice against HD-BET's, on each sequence's native grid: the mask the outputs use (the
  reference sequence's brain, taken to that grid through the co-registration), and deepbet's mask
  of that sequence itself (which only checks the co-registration);
- co-registration and atlas registration against ANTs: mean and largest displacement (mm) of the
  reference brain's voxels (every 50th) between the two transforms;
- the segmentation against the five-model fusion, Dice WT / TC / ET, in BraTS space and on the
  native T1ce grid (the fusion taken there through the ANTs transforms);
- the time of the whole `tumorseg predict` command and its peak memory.

Raw cases come from $TUMORSEG_RAW_DATA or ../shared/data/raw-mri.

    cd benchmarks && python raw_references.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from predict_command import COMMAND, timed  # this folder's benchmarks; scripts run from here
from tumorseg.labels import to_internal
from tumorseg.metrics import region_dice
from tumorseg.raw import images
from tumorseg.raw.pipeline import prepare, read_sequence
from tumorseg.raw.registration import displacement, overlap, resample

RAW = Path(os.environ.get("TUMORSEG_RAW_DATA", Path(__file__).parents[1] / ".." / "shared/data/raw-mri"))
#: How each patient's reference files name the sequences.
NAMES = {
    "TCGA-FG-6692": {"t1": "t1", "t1ce": "t1c", "t2": "t2", "flair": "fla"},
    "TCGA-DU-7294": {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair"},
}


def mask_dice(a: sitk.Image, b: sitk.Image) -> float:
    x, y = sitk.GetArrayViewFromImage(a) > 0, sitk.GetArrayViewFromImage(b) > 0
    return 2.0 * np.count_nonzero(x & y) / (np.count_nonzero(x) + np.count_nonzero(y))


def run_predict(patient: Path, out: Path) -> tuple[float, float]:
    """The whole command as a user runs it, in a fresh process: seconds and peak memory (GB)."""
    files = [f"--{m}={patient / f'{patient.name}_{m}.nii.gz'}" for m in ("flair", "t1", "t1ce", "t2")]
    seconds, megabytes = timed(
        [sys.executable, "-c", COMMAND.format(imports=""), "predict", *files, "--out", str(out)]
    )
    return seconds, megabytes / 1024


def main() -> None:
    rows = []
    for name, refs in NAMES.items():
        folder = RAW / name
        reference = folder / "reference"
        sequences = {m: read_sequence(str(folder / f"{name}_{m}.nii.gz")) for m in refs}
        print(f"{name}:")
        case, space = prepare(sequences, name, name)
        for modality, short in refs.items():
            hdbet = sitk.ReadImage(str(reference / f"hdbet_brain_mask_native_{short}.nii.gz"))
            used = space.brain  # the reference's brain, which masks every sequence, on this grid
            if modality != space.reference:
                inverse = space.coregistered[modality].GetInverse()
                used = resample(space.brain, sequences[modality], inverse, labels=True)
            print(f"  brain mask {modality:<5} Dice vs HD-BET: the one used {mask_dice(used, hdbet):.3f}, "
                  f"the sequence's own {mask_dice(space.brains[modality], hdbet):.3f}")  # fmt: skip
        ants = {p.name.split("_to_")[0].removeprefix("ants_"): sitk.ReadTransform(str(p))
                for p in reference.glob("ants_*_0GenericAffine.mat")}  # fmt: skip
        t1ce_to_t1 = ants["t1c"].GetInverse()  # reference points -> T1 points
        brain = sitk.GetArrayViewFromImage(space.brain) > 0
        points = np.array([space.grid.TransformIndexToPhysicalPoint([int(v) for v in index[::-1]])
                           for index in np.argwhere(brain)[::50]])  # fmt: skip
        for modality, short in (("t1", "t1"), ("t2", "t2"), ("flair", "fla")):
            theirs = t1ce_to_t1 if modality == "t1" else sitk.CompositeTransform([ants[short], t1ce_to_t1])
            moved = displacement(space.coregistered[modality], theirs, points)
            print(f"  {modality:<5} to t1ce vs ANTs: mean {moved.mean():.2f} mm, max {moved.max():.2f} mm")
        in_atlas = (
            sitk.GetArrayViewFromImage(
                resample(space.brain, images.brats_grid(), space.to_atlas, labels=True)
            )
            > 0
        )
        atlas_points = np.array([images.brats_grid().TransformIndexToPhysicalPoint([int(v) for v in i[::-1]])
                                 for i in np.argwhere(in_atlas)[::50]])  # fmt: skip
        theirs = sitk.CompositeTransform([ants["t1c"], ants["native_t1"]])  # BraTS -> T1 -> T1ce
        moved = displacement(space.to_atlas, theirs, atlas_points)
        atlas_brain = sitk.Cast(images.atlas() > 0, sitk.sitkUInt8)
        print(f"  atlas registration vs ANTs: mean {moved.mean():.2f} mm, max {moved.max():.2f} mm; the "
              f"brain's overlap with the atlas's: ours {space.overlap['atlas']:.3f}, "
              f"ANTs' {overlap(atlas_brain, space.brain, theirs):.3f}")  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "seg.nii.gz"
            seconds, peak = run_predict(folder, out)
            native = to_internal(np.asarray(nib.load(out).dataobj), "brats")
            atlas = to_internal(np.asarray(nib.load(Path(tmp) / "seg_atlas.nii.gz").dataobj), "brats")
        fusion_image = sitk.ReadImage(str(reference / "brats_space_seg_fusion_simple.nii.gz"))
        fusion = to_internal(images.array(fusion_image), "brats")
        to_brats = sitk.CompositeTransform([ants["native_t1"].GetInverse(), t1ce_to_t1])  # T1ce -> BraTS
        fusion_native = to_internal(
            images.array(resample(fusion_image, space.grid, to_brats, labels=True)), "brats"
        )
        atlas_dice, native_dice = region_dice(atlas, fusion), region_dice(native, fusion_native)
        print("  segmentation vs fusion, BraTS space: " + " / ".join(f"{d:.3f}" for d in atlas_dice))
        print("  segmentation vs fusion, native T1ce: " + " / ".join(f"{d:.3f}" for d in native_dice))
        print(f"  tumorseg predict: {seconds:.1f} s, peak {peak:.2f} GB")
        rows.append((name, atlas_dice, native_dice, seconds))
    print("\npatient        Dice vs fusion (WT / TC / ET): BraTS space | native      predict (s)")
    for name, atlas_dice, native_dice, seconds in rows:
        a = " / ".join(f"{d:.3f}" for d in atlas_dice)
        n = " / ".join(f"{d:.3f}" for d in native_dice)
        print(f"{name}   {a} | {n}   {seconds:.1f}")


if __name__ == "__main__":
    main()
