"""Which registration library: SimpleITK (what the raw pipeline uses), ANTsPy and ITK-Elastix, each
with its own rigid defaults, on two registrations whose truth is known: each shared patient's T1 as
BraTS ships it (already in SRI24 space) registered to the shipped SRI24 atlas, and its T2 to its
T1 (already co-registered): the truth is no move at all. Prints, per library and registration, the
mean distance (mm) between where it puts the atlas's brain voxels (every 300th) and where they are,
the seconds it took, and each library against SimpleITK, paired, with its standard error.

The other two libraries are not tumorseg's dependencies (ANTsPy with its dependencies is about
300 MB installed, ITK-Elastix 1.6 GB); run it where they are installed:

    pip install antspyx itk-elastix SimpleITK nibabel
    PYTHONPATH=src python experiments/registration_libraries.py [--cases 28] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from tumorseg.data.brats import find_case_folders
from tumorseg.raw import images
from tumorseg.raw import registration as reg

REAL = Path(os.environ.get("TUMORSEG_REAL_DATA", Path(__file__).parents[2] / "shared/data/brats2018-sample"))


def simpleitk(fixed: Path, moving: Path, same_contrast: bool, work: Path) -> sitk.Transform:
    """As the raw pipeline registers: correlation for one contrast, mutual information else."""
    read = [sitk.ReadImage(str(path), sitk.sitkFloat32) for path in (fixed, moving)]
    return reg.register(*read, same_contrast=same_contrast, by_moments=True)


def antspy(fixed: Path, moving: Path, same_contrast: bool, work: Path) -> sitk.Transform:
    """ANTsPy's "Rigid" (mutual information, its default levels), from the images' centres."""
    import ants

    result = ants.registration(
        ants.image_read(str(fixed)), ants.image_read(str(moving)), type_of_transform="Rigid",
        outprefix=str(work / "ants_"),
    )  # fmt: skip
    return sitk.ReadTransform(result["fwdtransforms"][0])


def elastix(fixed: Path, moving: Path, same_contrast: bool, work: Path) -> sitk.Transform:
    """ITK-Elastix's default rigid parameter map (advanced Mattes mutual information, 4 levels)."""
    import itk

    parameters = itk.ParameterObject.New()
    parameters.AddParameterMap(parameters.GetDefaultParameterMap("rigid"))
    _, found = itk.elastix_registration_method(
        itk.imread(str(fixed), itk.F), itk.imread(str(moving), itk.F), parameter_object=parameters,
        log_to_console=False, output_directory=str(work),
    )  # fmt: skip
    values = [float(v) for v in found.GetParameter(0, "TransformParameters")]
    centre = [float(v) for v in found.GetParameter(0, "CenterOfRotationPoint")]
    return sitk.Euler3DTransform(centre, *values[:3], values[3:])


LIBRARIES = {"SimpleITK": simpleitk, "ANTsPy": antspy, "ITK-Elastix": elastix}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=28)
    parser.add_argument("--threads", type=int, default=1, help="for ANTs and Elastix (SimpleITK uses 1)")
    args = parser.parse_args()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    atlas = images.atlas()
    points = images.brain_points(atlas, every=300)
    none = sitk.Euler3DTransform()
    on_grid = Path(tempfile.mkdtemp()) / "atlas.nii.gz"  # as the pipeline reads it: on the BraTS grid
    sitk.WriteImage(atlas, str(on_grid))
    tasks = {"T1 to the atlas": (on_grid, "t1", True), "T2 to the T1": (None, "t2", False)}  # None: its T1
    errors = {(task, name): [] for task in tasks for name in LIBRARIES}
    seconds = {key: [] for key in errors}
    for folder in find_case_folders(REAL)[: args.cases]:
        row = [folder.name]
        for task, (fixed, sequence, same) in tasks.items():
            fixed = fixed or folder / f"{folder.name}_t1.nii.gz"
            moving = folder / f"{folder.name}_{sequence}.nii.gz"
            for name, register in LIBRARIES.items():
                with tempfile.TemporaryDirectory() as work:
                    start = time.perf_counter()
                    found = register(fixed, moving, same, Path(work))
                    seconds[task, name].append(time.perf_counter() - start)
                errors[task, name].append(float(reg.displacement(found, none, points).mean()))
                row.append(f"{errors[task, name][-1]:6.2f}")
        print(" ".join(row), flush=True)
    print(f"\n{len(row) and len(errors[next(iter(errors))])} patients; distance from the truth (mm): mean, "
          "worst; seconds a registration (median); against SimpleITK, paired (s.e.)")  # fmt: skip
    for (task, name), values in errors.items():
        values = np.array(values)
        paired = values - np.array(errors[task, "SimpleITK"])
        error = paired.std(ddof=1) / np.sqrt(len(paired)) if len(paired) > 1 else float("nan")
        print(f"{task:<16} {name:<12} {values.mean():6.2f} {values.max():6.2f} "
              f"{np.median(seconds[task, name]):6.1f} s   {paired.mean():+.2f} ({error:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
