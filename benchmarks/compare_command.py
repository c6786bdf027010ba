"""Seconds and peak memory of a whole `tumorseg compare` command on two preprocessed visits, as a
user runs it: a fresh process each time.

The visits are shared BraTS patients, each moved twice by a small rigid move and resampled (the
expert labels by nearest neighbour), so that the registration has something to undo. Two
variants, each patient in turn: with the label maps given (``--seg``: registration, measures,
report; the target is under 10 s on 2 cores) and with the shipped models segmenting both visits.

    python benchmarks/compare_command.py [--cases 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from data_io import real_root  # this folder's benchmarks; scripts run from here
from predict_command import COMMAND, timed
from tumorseg.data.brats import find_case_folders

MOVES = ((4.0, (2.0, -1.0, 1.0)), (-3.0, (-3.0, 2.0, -2.0)))


def visit(folder: Path, out: Path, degrees: float, shift: tuple[float, float, float]) -> Path:
    """The case of ``folder`` turned about its left-right axis and shifted, as a case folder."""
    out.mkdir(parents=True)
    angle = np.deg2rad(degrees)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    for path in folder.glob("*.nii*"):
        image = nib.load(path)
        centre = (np.array(image.shape) - 1) / 2
        offset = centre - rotation @ centre + np.array(shift)
        labels = "_seg" in path.name
        data = ndimage.affine_transform(
            np.asarray(image.dataobj, np.float32), rotation, offset, order=0 if labels else 1
        )
        nib.save(nib.Nifti1Image(np.rint(data).astype(np.int16), image.affine), out / path.name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    folders = find_case_folders(real_root())[: args.cases]
    base = [sys.executable, "-c", COMMAND.format(imports="")]
    times: dict[str, list[float]] = {"--seg": [], "segmenting": []}
    peaks: dict[str, list[float]] = {"--seg": [], "segmenting": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pairs = []
        for folder in folders:
            one, two = (
                visit(folder, root / name / folder.name, *move)
                for name, move in zip("ab", MOVES, strict=True)
            )
            pairs.append((one, two))
        for repeat in range(args.repeats):
            for index, (one, two) in enumerate(pairs):
                segs = [str(v / f"{v.name}_seg.nii.gz") for v in (one, two)]
                for variant, extra in (("--seg", ["--seg", *segs]), ("segmenting", [])):
                    out = root / f"out-{variant}-{index}-{repeat}"
                    seconds, peak = timed([*base, "compare", str(one), str(two), "--out", str(out), *extra])
                    times[variant].append(seconds)
                    peaks[variant].append(peak)
    for variant in times:
        print(f"compare {variant:<11} median {statistics.median(times[variant]):5.1f} s "
              f"(min {min(times[variant]):.1f}, max {max(times[variant]):.1f}), "
              f"peak {max(peaks[variant]):.0f} MB, {len(times[variant])} runs")  # fmt: skip


if __name__ == "__main__":
    main()
