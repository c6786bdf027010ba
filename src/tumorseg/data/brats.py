"""BraTS case folders: four NIfTI modalities and (for training data) a label map per folder.

Naming conventions understood (``.nii`` or ``.nii.gz``):

- BraTS 2018-2020: ``Brats18_CBICA_AAB_1_flair``, ``BraTS20_Training_001_t1ce``, ...
- BraTS 2021: ``BraTS2021_00000_flair``, ...; suffixes flair, t1, t1ce, t2, seg; labels 0/1/2/4.
- BraTS 2023: ``BraTS-GLI-00000-000-t2f``; suffixes t2f, t1n, t1c, t2w, seg; label 3 is enhancing.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from tumorseg.data.case import MODALITIES, Case, check_finite, labels_to_internal
from tumorseg.errors import TumorsegError

# File suffix -> (modality or "seg", naming convention).
SUFFIXES: dict[str, tuple[str, str]] = {
    "flair": ("flair", "brats"),
    "t1": ("t1", "brats"),
    "t1ce": ("t1ce", "brats"),
    "t2": ("t2", "brats"),
    "t2f": ("flair", "brats2023"),
    "t1n": ("t1", "brats2023"),
    "t1c": ("t1ce", "brats2023"),
    "t2w": ("t2", "brats2023"),
}
_NAME = re.compile(
    r"^(?P<id>.+?)[_-](?P<suffix>" + "|".join(sorted(SUFFIXES, key=len, reverse=True)) + r"|seg)"
    r"\.nii(\.gz)?$",
    re.IGNORECASE,
)
AFFINE_TOLERANCE = 1e-3  # mm; co-registered BraTS modalities share the affine exactly


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


@dataclass
class CaseFiles:
    """Where one case's files are; found by ``find_case_files`` before any voxel is read."""

    case_id: str
    folder: Path
    modalities: dict[str, Path]
    seg: Path | None
    convention: str

    @property
    def paths(self) -> list[Path]:
        return [self.modalities[m] for m in MODALITIES] + ([self.seg] if self.seg else [])


def name_files(folder: Path) -> tuple[dict[str, Path], set[str], set[str], list[str]]:
    """A folder's NIfTI files by role (modality or "seg"), with the case ids and naming conventions
    their names carry, and the NIfTI names not understood."""
    found: dict[str, Path] = {}
    ids: set[str] = set()
    conventions: set[str] = set()
    unrecognized: list[str] = []
    for path in sorted(p for p in folder.iterdir() if is_nifti(p)):
        match = _NAME.match(path.name)
        if not match:
            unrecognized.append(path.name)
            continue
        role, convention = SUFFIXES.get(match["suffix"].lower(), ("seg", None))
        if convention:
            conventions.add(convention)
        if role in found:
            raise TumorsegError(f"{folder}: two files for {role}: {found[role].name}, {path.name}")
        found[role] = path
        ids.add(match["id"])
    return found, ids, conventions, unrecognized


def find_case_files(folder: Path, require_label: bool = True) -> CaseFiles:
    """Recognize one case folder's files by their BraTS names, or say what is missing."""
    if not folder.is_dir():
        raise TumorsegError(f"{folder}: not a folder")
    found, ids, conventions, unrecognized = name_files(folder)
    if not found:
        raise TumorsegError(f"{folder}: no BraTS NIfTI files (<id>_flair.nii.gz, ...) found")
    if len(conventions) > 1:
        raise TumorsegError(f"{folder}: mixes BraTS 2018-2021 and 2023 file names")
    if len(ids) > 1:
        raise TumorsegError(f"{folder}: files name different cases: {sorted(ids)}")
    missing = [m for m in MODALITIES if m not in found]
    if missing:
        raise TumorsegError(f"{folder}: missing modality {', '.join(missing)}")
    (case_id,) = ids
    if require_label and "seg" not in found:
        hint = f"; unrecognized NIfTI files: {', '.join(unrecognized)}" if unrecognized else ""
        raise TumorsegError(
            f"{folder}: no label file <id>_seg.nii[.gz]{hint} (rename the label file to "
            f"{case_id}_seg.nii.gz, or prepare without labels)"
        )
    return CaseFiles(
        case_id=case_id,
        folder=folder,
        modalities={m: found[m] for m in MODALITIES},
        seg=found.get("seg"),
        convention=conventions.pop() if conventions else "brats",
    )


def load_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """Read a 3D NIfTI volume as (array in its stored dtype, affine, header)."""
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except FileNotFoundError as err:
        raise TumorsegError(f"{path}: file does not exist") from err
    except (EOFError, zlib.error, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TumorsegError(f"{path}: not a readable NIfTI file ({reason})") from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise TumorsegError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return data, image.affine, image.header


def read_case(files: CaseFiles) -> Case:
    """Load and check a case: same grid for all files, finite voxels, known labels."""
    volumes = []
    reference_shape = reference_affine = None
    for path in files.paths:
        data, affine, _ = load_nifti(path)
        if reference_shape is None:
            reference_shape, reference_affine, reference_path = data.shape, affine, path
        elif data.shape != reference_shape:
            raise TumorsegError(
                f"{path}: shape {data.shape} differs from {reference_path.name} {reference_shape}"
            )
        elif not np.allclose(affine, reference_affine, atol=AFFINE_TOLERANCE):
            raise TumorsegError(f"{path}: affine differs from {reference_path.name}")
        volumes.append(data)
    for path, data in zip(files.paths[:4], volumes[:4], strict=True):
        check_finite(data, str(path))
    label = None
    if files.seg is not None:
        label = labels_to_internal(volumes[4], files.convention, str(files.seg))
    return Case(
        case_id=files.case_id,
        image=np.stack(volumes[:4]),
        label=label,
        affine=np.asarray(reference_affine, dtype=np.float64),
        sources=[str(p) for p in files.paths],
        label_convention=files.convention,
    )


def contains_case_files(folder: Path) -> bool:
    return any(is_nifti(p) for p in folder.iterdir())


def find_case_folders(root: Path) -> list[Path]:
    """``root`` itself when it is a case folder, else its sub-folders that hold NIfTI files."""
    if contains_case_files(root):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and contains_case_files(p))
