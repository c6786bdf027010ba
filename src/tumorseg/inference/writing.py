"""Writing a case's results, as one transaction: the label map on the input's grid and what lies
beside it (probabilities, uncertainty, a single case's volumes).

Every file is first written under a temporary name beside its place, then all are renamed into
place, the label map last: it is what marks a case done (a re-run of a batch skips a case whose
label map and every companion asked for are there). A failure or an interrupt anywhere leaves
none of them, so that nothing half-done blocks the next run or passes for finished.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from tumorseg.errors import TumorsegError

#: What a companion of the label map ``OUT.nii.gz`` is called: OUT + the suffix.
COMPANION_SUFFIXES = {
    "probabilities": "_probabilities.nii.gz",
    "uncertainty": "_uncertainty.nii.gz",
    "volumes": "_volumes.json",
    "atlas": "_atlas.nii.gz",  # a raw case's labels in BraTS space
    "brain": "_brain.nii.gz",  # a raw case's brain mask on its native grid
    "dicom": "_seg.dcm",  # a DICOM Segmentation, when the labels lie on a DICOM series
    "dicom_report": "_sr.dcm",  # and its volumes as a DICOM Structured Report (TID 1500)
}
#: Writes a file's content to the path given.
Writer = Callable[[Path], None]


def beside(out: Path, suffix: str) -> Path:
    """A file next to the NIfTI ``out``: seg.nii.gz + "_volumes.json" -> seg_volumes.json."""
    return out.with_name(out.name.removesuffix(".gz").removesuffix(".nii") + suffix)


def companions(
    out: Path, probabilities: bool, uncertainty: bool, volumes: bool, raw: bool = False, dicom: bool = False
) -> list[Path]:
    """The files written beside the label map ``out``: the probabilities and the uncertainty map
    when asked for, a single case's volumes, a raw case's atlas-space labels and brain mask, and
    the DICOM SEG and measurement report of labels that lie on a DICOM series."""
    wanted = {
        "probabilities": probabilities,
        "uncertainty": uncertainty,
        "volumes": volumes,
        "atlas": raw,
        "brain": raw,
        "dicom": dicom,
        "dicom_report": dicom,
    }
    return [companion(out, name) for name, asked in wanted.items() if asked]


def companion(out: Path, name: str) -> Path:
    """Where the companion ``name`` (one of ``COMPANION_SUFFIXES``) of the label map ``out`` lies."""
    return beside(out, COMPANION_SUFFIXES[name])


def nifti_writer(data: np.ndarray, reference: nib.Nifti1Image) -> Writer:
    """Writes ``data`` with the reference's affine and header."""
    header = reference.header.copy()
    header.set_data_dtype(data.dtype)
    image = type(reference)(data, reference.affine, header)
    if data.ndim == 4:
        image.header.set_intent("vector")
    image.header.set_slope_inter(1, 0)
    return lambda path: nib.save(image, path)


def write_together(files: list[tuple[Path, Writer]]) -> None:
    """Write every (path, writer) under a temporary name, then rename them all into place, the
    first (the label map) last; on any failure or interrupt, remove what this call wrote."""
    temporary: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for path, write in files:
            suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
            temporary.append((tmp, path))
            write(tmp)
        for tmp, path in reversed(temporary):
            os.replace(tmp, path)
            placed.append(path)
        placed = []  # all in place: the transaction is complete
    except OSError as err:
        raise TumorsegError(f"{files[0][0]}: could not write ({err.strerror or err})") from err
    finally:
        for tmp, _ in temporary:
            tmp.unlink(missing_ok=True)
        for path in placed:  # a failure between renames: the case is left as if never written
            path.unlink(missing_ok=True)
