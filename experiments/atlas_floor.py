"""How close any rigid registration to the shipped SRI24 atlas can come to where BraTS placed a
brain: each shared patient's T1 as BraTS ships it (already in SRI24 space, so the truth is no
move at all) registered to the atlas as the raw pipeline does (correlation, from the centres of
mass), and by the outline alone (brain masks smoothed by 2 mm, correlation). The mean distance (mm)
between where each puts the atlas's brain voxels (every 300th) and where they are is a floor
under the made-raw patients' atlas error (``experiments/atlas_registration.py``), which adds
the move, the 5 mm slices and the skull stripping to it.

    python experiments/atlas_floor.py [--cases 28]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from data_io import real_root  # noqa: E402
from tumorseg.data.brats import find_case_folders  # noqa: E402
from tumorseg.raw import images  # noqa: E402
from tumorseg.raw import registration as reg  # noqa: E402


def outline(image: sitk.Image) -> sitk.Image:
    return sitk.SmoothingRecursiveGaussian(sitk.Cast(image > 0, sitk.sitkFloat32), 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=28)
    args = parser.parse_args()
    atlas = images.atlas()
    points = images.brain_points(atlas, every=300)
    none = sitk.Euler3DTransform()
    rows = []
    for folder in find_case_folders(real_root())[: args.cases]:
        t1 = sitk.ReadImage(str(folder / f"{folder.name}_t1.nii.gz"), sitk.sitkFloat32)
        intensities = reg.register(atlas, t1, same_contrast=True, by_moments=True)
        shape = reg.register(outline(atlas), outline(t1), same_contrast=True, by_moments=True)
        rows.append([float(reg.displacement(found, none, points).mean()) for found in (intensities, shape)])
        print(f"{folder.name:<24}" + "".join(f"{value:7.2f}" for value in rows[-1]), flush=True)
    errors = np.array(rows)
    difference = errors[:, 1] - errors[:, 0]
    print(f"\n{len(rows)} patients as BraTS ships them, registered to the atlas: distance from no move (mm)")
    for name, column in (("T1 intensities (the pipeline)", errors[:, 0]), ("brain outlines", errors[:, 1])):
        spread = f"median {np.median(column):5.2f}  worst {column.max():5.2f}"
        print(f"{name:<32} mean {column.mean():5.2f}  {spread}")
    print(f"outlines - intensities, paired: {difference.mean():+.2f} (s.e. "
          f"{difference.std(ddof=1) / np.sqrt(len(difference)):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
