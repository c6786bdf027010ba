"""Which registration puts a patient's brain back on the SRI24 atlas: variants compared where the
truth is known, on the shared BraTS patients made raw (``benchmarks/made_raw.py``: the BraTS images
lie in SRI24 space, so the inverse of the T1ce's random move is where the brain belongs).

For each patient: the T1ce's brain (deepbet), the T1 registered to the T1ce (as the pipeline does),
then each variant registers that T1 brain to the atlas; the error is the mean distance (mm) between
where the variant and the truth put the atlas's brain voxels (every 300th). Prints the mean, worst
and the paired difference of each variant against the first, with its standard error.

    python experiments/atlas_registration.py [--cases 28]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from data_io import real_root  # noqa: E402
from made_raw import make_raw  # noqa: E402 (the made-raw studies of the benchmark)
from tumorseg.data.brats import find_case_folders  # noqa: E402
from tumorseg.raw import dicom, images  # noqa: E402
from tumorseg.raw import registration as reg  # noqa: E402
from tumorseg.raw.brain import brain_mask  # noqa: E402

VARIANTS = {
    "correlation, centres of mass": dict(same_contrast=True, by_moments=True),
    "mutual information, centres of mass": dict(same_contrast=False, by_moments=True),
    "correlation, image centres": dict(same_contrast=True, by_moments=False),
    "mutual information, image centres": dict(same_contrast=False, by_moments=False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=28)
    args = parser.parse_args()
    atlas = images.atlas()
    points = images.brain_points(atlas, every=300)
    errors = {name: [] for name in VARIANTS}
    for index, folder in enumerate(find_case_folders(real_root())[: args.cases]):
        with tempfile.TemporaryDirectory() as tmp:
            moves, _ = make_raw(folder, Path(tmp) / "study", np.random.default_rng([0, index]))
            sequences, _, _ = dicom.study(Path(tmp) / "study")
        t1ce = sequences["t1ce"]
        brain = brain_mask(t1ce, folder.name)
        t1 = reg.resample(sequences["t1"], t1ce, reg.register(t1ce, sequences["t1"]))
        moving = sitk.Mask(sitk.Cast(t1, sitk.sitkFloat32), brain)
        truth = moves["t1ce"].GetInverse()
        row = []
        for name, options in VARIANTS.items():
            found = reg.register(atlas, moving, **options)
            errors[name].append(float(reg.displacement(found, truth, points).mean()))
            row.append(f"{errors[name][-1]:5.2f}")
        print(f"{folder.name:<22} " + "  ".join(row), flush=True)
    first = np.array(errors[next(iter(VARIANTS))])
    print(f"\n{len(first)} patients; atlas registration error (mm): mean, worst, paired difference")
    print("against the first (standard error)")
    for name, values in errors.items():
        values = np.array(values)
        difference = values - first
        se = difference.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
        print(f"{name:<38} {values.mean():6.2f} {values.max():7.2f}   {difference.mean():+.2f} ({se:.2f})")


if __name__ == "__main__":
    main()
