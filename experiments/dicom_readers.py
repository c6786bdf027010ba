"""Three ways to decode a DICOM series, compared on the same series: SimpleITK (GDCM, what
tumorseg uses), dcm2niix (its PyPI wheel, the converter the BraTS Toolkit and most pipelines run)
and pydicom (slices stacked by their position along the slice normal).

For each series it prints the time to read it into a volume with its geometry, and how far the
other two land from SimpleITK: the largest voxel difference after placing each on SimpleITK's grid
by world coordinates (nearest neighbour), and the largest distance between the three corner
voxels' world positions. Needs `pip install dcm2niix pydicom` (neither is a tumorseg dependency).

Series: the healthy head in $TUMORSEG_RAW_DATA (or ../shared/data/raw-mri)/dicom-decubitus, supine
and prone, and one made-raw BraTS study (benchmarks/made_raw.py, its four series).

    cd experiments && python dicom_readers.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from data_io import real_root  # noqa: E402
from made_raw import make_raw  # noqa: E402
from tumorseg.data.brats import find_case_folders  # noqa: E402
from tumorseg.raw import dicom  # noqa: E402

RAW = Path(os.environ.get("TUMORSEG_RAW_DATA", Path(__file__).parents[1] / ".." / "shared/data/raw-mri"))


def with_simpleitk(files: list[str]) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return sitk.Cast(reader.Execute(), sitk.sitkFloat32)


def with_pydicom(files: list[str]) -> sitk.Image:
    slices = [pydicom.dcmread(f) for f in files]
    row, column = (np.array(slices[0].ImageOrientationPatient[:3], float),
                   np.array(slices[0].ImageOrientationPatient[3:], float))  # fmt: skip
    normal = np.cross(row, column)
    slices.sort(key=lambda s: float(np.dot(normal, np.array(s.ImagePositionPatient, float))))
    scale = [(float(getattr(s, "RescaleSlope", 1)), float(getattr(s, "RescaleIntercept", 0))) for s in slices]
    volume = np.stack([s.pixel_array * a + b for s, (a, b) in zip(slices, scale, strict=True)]).astype(
        np.float32
    )
    positions = [np.array(s.ImagePositionPatient, float) for s in slices]
    step = np.linalg.norm(positions[-1] - positions[0]) / max(1, len(slices) - 1)
    image = sitk.GetImageFromArray(volume)  # (slices, rows, columns): x along a row, y down columns
    spacing = [float(v) for v in slices[0].PixelSpacing]  # row spacing (between rows), column spacing
    image.SetSpacing((spacing[1], spacing[0], step))
    image.SetOrigin(tuple(positions[0]))
    image.SetDirection(tuple(np.stack([row, column, normal], axis=1).ravel()))
    return image


def with_dcm2niix(files: list[str]) -> sitk.Image:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for f in files:
            os.symlink(os.path.abspath(f), folder / Path(f).name)
        converter = str(Path(sys.executable).with_name("dcm2niix"))
        command = [converter, "-z", "n", "-b", "n", "-o", tmp, "-f", "out", str(folder)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        [nifti] = Path(tmp).glob("out*.nii")
        return sitk.Cast(sitk.ReadImage(str(nifti)), sitk.sitkFloat32)


READERS = {"SimpleITK (GDCM)": with_simpleitk, "dcm2niix": with_dcm2niix, "pydicom": with_pydicom}


def corners(image: sitk.Image) -> np.ndarray:
    """The world positions of the volume's 8 corner voxels (whatever order a reader stores them in)."""
    size = np.array(image.GetSize()) - 1
    return np.array([image.TransformIndexToPhysicalPoint([int(v) for v in size * np.array(c)])
                     for c in np.ndindex(2, 2, 2)])  # fmt: skip


def compare(name: str, files: list[str]) -> None:
    results = {}
    for reader, read in READERS.items():
        start = time.perf_counter()
        results[reader] = read(files)
        results[reader + " s"] = time.perf_counter() - start
    reference = results["SimpleITK (GDCM)"]
    line = [f"{name:<28} {len(files):>4} files"]
    for reader in READERS:
        image = results[reader]
        placed = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0)
        voxels = np.abs(sitk.GetArrayViewFromImage(placed) - sitk.GetArrayViewFromImage(reference)).max()
        # each corner against the nearest of the reference's: the same box, however its axes run
        shift = np.linalg.norm(corners(image)[:, None] - corners(reference)[None], axis=2).min(axis=1).max()
        line.append(f"{reader}: {results[reader + ' s']:.2f} s, voxels {voxels:g}, corners {shift:.3f} mm")
    print("   ".join(line), flush=True)


def main() -> None:
    for position in ("HFS", "HFP"):
        [series] = dicom.find_series(RAW / "dicom-decubitus" / position)
        compare(f"healthy head {position}", series.files)
    with tempfile.TemporaryDirectory() as tmp:
        folder = find_case_folders(real_root())[0]
        make_raw(folder, Path(tmp) / "study", np.random.default_rng(0))
        for series in dicom.find_series(Path(tmp) / "study"):
            compare(f"made-raw {series.sequence()}", series.files)


if __name__ == "__main__":
    main()
