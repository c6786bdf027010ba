"""BraTS case folders: four NIfTI modalities and (for training data) a label map per folder.

Naming conventions understood (``.nii`` or ``.nii.gz``):

- BraTS 2018-2020: ``Brats18_CBICA_AAB_1_flair``, ``BraTS20_Training_001_t1ce``, ...
- BraTS 2021: ``BraTS2021_00000_flair``, ...; suffixes flair, t1, t1ce, t2, seg; labels 0/1/2/4.
- BraTS 2023: ``BraTS-GLI-00000-000-t2f``; suffixes t2f, t1n, t1c, t2w, seg; label 3 is enhancing.
"""

from __future__ import annotations

import errno
import re
import stat
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from tumorseg.data.case import (
    MODALITIES,
    Case,
    check_affine,
    check_case_id,
    check_finite,
    check_grid,
    check_real_numbers,
    labels_to_internal,
)
from tumorseg.errors import TumorsegError, first_line

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
#: How many levels below a folder given case folders are looked for.
MAX_CASE_DEPTH = 3
#: The most a NIfTI file's header extensions may hold (dcm2niix writes a few kB, if any).
MAX_EXTENSION_BYTES = 2**24


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


@dataclass
class CaseFiles:
    """Where one case's files are; found by ``find_case_files`` before any voxel is read."""

    case_id: str
    folder: Path
    modalities: dict[str, Path]  # the sequences present; all four unless found with require_all=False
    seg: Path | None
    convention: str

    @property
    def paths(self) -> list[Path]:
        return [self.modalities[m] for m in MODALITIES if m in self.modalities] + (
            [self.seg] if self.seg else []
        )

    @property
    def absent(self) -> tuple[str, ...]:
        """The sequences this case lacks, in MODALITIES order."""
        return tuple(m for m in MODALITIES if m not in self.modalities)


def name_files(folder: Path) -> tuple[dict[str, Path], set[str], set[str], list[str]]:
    """A folder's NIfTI files by role (modality or "seg"), with the case ids and naming conventions
    their names carry, and the NIfTI names not understood."""
    found: dict[str, Path] = {}
    ids: set[str] = set()
    conventions: set[str] = set()
    unrecognized: list[str] = []
    for path in nifti_files(folder):
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


def find_case_files(folder: Path, require_label: bool = True, require_all: bool = True) -> CaseFiles:
    """Recognize one case folder's files by their BraTS names, or say what is missing.

    ``require_all=False`` accepts a case with some sequences missing (not all four), for models
    trained to segment without them."""
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
    if missing and (require_all or len(missing) == len(MODALITIES)):
        raise TumorsegError(f"{folder}: missing modality {', '.join(missing)}")
    (case_id,) = ids
    check_case_id(case_id, str(folder))
    if require_label and "seg" not in found:
        hint = f"; unrecognized NIfTI files: {', '.join(unrecognized)}" if unrecognized else ""
        raise TumorsegError(
            f"{folder}: no label file <id>_seg.nii[.gz]{hint} (rename the label file to "
            f"{case_id}_seg.nii.gz, or prepare without labels)"
        )
    return CaseFiles(
        case_id=case_id,
        folder=folder,
        modalities={m: found[m] for m in MODALITIES if m in found},
        seg=found.get("seg"),
        convention=conventions.pop() if conventions else "brats",
    )


def open_nifti(path: Path) -> nib.Nifti1Image:
    """A NIfTI image with only its header read; its voxels are decoded when asked for."""
    try:
        check_extensions(path)
        return nib.load(path)
    except FileNotFoundError as err:
        raise TumorsegError(f"{path}: file does not exist") from err
    except (EOFError, zlib.error, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise TumorsegError(f"{path}: not a readable NIfTI file ({first_line(err)})") from err


def check_extensions(path: Path) -> None:
    """Refuse header extensions that would make nibabel read more than MAX_EXTENSION_BYTES, before
    it reads them: they lie between the header (flagged in the 4 bytes after it) and the voxels
    (``vox_offset``), and each declares its own size, which nibabel reads as given (one under 8
    bytes reads the whole rest of the stream, one past the voxel offset into the voxels); a gzip
    of zeros declaring gigabytes is a few MB."""
    with ImageOpener(path) as handle:
        start = handle.read(nib.Nifti2Header.template_dtype.itemsize + 4)
    for kind in (nib.Nifti1Header, nib.Nifti2Header):
        size = kind.template_dtype.itemsize
        order = next((o for o in ("little", "big") if int.from_bytes(start[:4], o) == size), None)
        if len(start) > size and order:
            break
    else:
        return  # not NIfTI: nibabel says what it is not
    if start[size] == 0:
        return  # no extensions
    offset = float(kind(start[:size], check=False)["vox_offset"])
    if offset < size + 4:  # nibabel would read extensions to the end of the file
        raise TumorsegError(
            f"{path}: flags header extensions but puts its voxels at offset {offset:g}, before them"
        )
    if not offset - size - 4 <= MAX_EXTENSION_BYTES:  # NaN included
        raise TumorsegError(
            f"{path}: declares {offset - size - 4:,.0f} bytes of header extensions; "
            f"tumorseg reads up to {MAX_EXTENSION_BYTES:,}"
        )
    check_extension_sizes(path, size + 4, int(offset), order)


def check_extension_sizes(path: Path, first: int, end: int, order: str) -> None:
    """Each extension between byte ``first`` and the voxels at ``end`` declares a size of at least 16
    bytes that ends before the voxels, as the NIfTI standard has it; read as nibabel reads them."""
    with ImageOpener(path) as handle:
        handle.read(first)
        region = handle.read(end - first)  # bounded: check_extensions checked end - first
    at = 0
    while len(region) - at >= 16:
        declared = int.from_bytes(region[at : at + 4], order, signed=True)
        if not 16 <= declared <= len(region) - at:
            raise TumorsegError(
                f"{path}: a header extension declares {declared:,} bytes, where 16 to "
                f"{len(region) - at:,} fit before the voxels"
            )
        at += declared


def volume_shape(image: nib.Nifti1Image, path: Path) -> tuple[int, ...]:
    """The declared 3D shape (trailing singleton axes dropped), checked to be one tumorseg reads."""
    shape = tuple(image.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    check_grid(shape, str(path))
    check_real_numbers(image.get_data_dtype(), str(path))
    check_affine(image.affine, str(path))
    return shape


def read_voxels(image: nib.Nifti1Image, shape: tuple[int, ...], path: Path) -> np.ndarray:
    try:
        data = np.asanyarray(image.dataobj)
    except (EOFError, zlib.error, OSError, ValueError) as err:
        raise TumorsegError(f"{path}: not a readable NIfTI file ({first_line(err)})") from err
    return data.reshape(shape)


def read_case(files: CaseFiles) -> Case:
    """Load and check a case: headers first (same grid for all files, a size tumorseg reads, real
    voxel types), then the voxels (finite, known labels). An absent sequence is a zero channel."""
    images = [open_nifti(path) for path in files.paths]
    reference_path, reference = files.paths[0], images[0]
    reference_shape = volume_shape(reference, reference_path)
    for path, image in zip(files.paths[1:], images[1:], strict=True):
        shape = volume_shape(image, path)
        if shape != reference_shape:
            raise TumorsegError(f"{path}: shape {shape} differs from {reference_path.name} {reference_shape}")
        if not np.allclose(image.affine, reference.affine, atol=AFFINE_TOLERANCE):
            raise TumorsegError(f"{path}: affine differs from {reference_path.name}")
    present = [m for m in MODALITIES if m in files.modalities]  # the order of files.paths
    with ThreadPoolExecutor(len(images)) as pool:  # gzip inflates outside the GIL: files in parallel
        voxels = list(
            pool.map(lambda image, path: read_voxels(image, reference_shape, path), images, files.paths)
        )
    volumes = dict(zip(present, voxels, strict=False))
    for modality, path in zip(present, files.paths, strict=False):
        check_finite(volumes[modality], str(path))
    label = None
    if files.seg is not None:
        label = labels_to_internal(voxels[len(present)], files.convention, str(files.seg))
    dtype = np.result_type(*volumes.values())
    return Case(
        case_id=files.case_id,
        image=np.stack([volumes.get(m, np.zeros(reference_shape, dtype)) for m in MODALITIES]),
        label=label,
        affine=np.asarray(reference.affine, dtype=np.float64),
        sources=[str(p) for p in files.paths],
        label_convention=files.convention,
        absent=files.absent,
    )


def nifti_files(folder: Path) -> list[Path]:
    """The NIfTI files of a folder, hidden ones (such as macOS's ``._name`` companions) left out.
    Something named like one that is no regular file is named, never taken for a missing sequence
    (and a FIFO never opened: reading it would wait forever)."""
    found = []
    for path in sorted(folder.iterdir()):
        if not is_nifti(path) or path.name.startswith("."):
            continue
        try:
            mode = path.stat().st_mode
        except OSError as err:  # a broken link, a link loop
            what = "a symbolic link loop" if err.errno == errno.ELOOP else "a link to nothing"
            raise TumorsegError(f"{path}: is {what}, not a NIfTI file") from err
        if stat.S_ISDIR(mode):
            raise TumorsegError(f"{path}: is a folder, not a NIfTI file")
        if not stat.S_ISREG(mode):
            raise TumorsegError(f"{path}: is a FIFO, socket or device, not a NIfTI file")
        found.append(path)
    return found


def sub_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())


def find_case_folders(root: Path, depth: int = MAX_CASE_DEPTH) -> list[Path]:
    """``root`` itself when it is a case folder (it holds NIfTI files), else every case folder below
    it, up to ``depth`` levels down: the official BraTS 2018 and 2019 training data keep theirs in
    ``HGG/`` and ``LGG/``. A folder holding both NIfTI files and case folders is refused."""
    stray = nifti_files(root)
    if stray:
        beside = [p for p in sub_folders(root) if nifti_files(p)]
        if beside:
            raise TumorsegError(
                f"{root}: holds case folders and also NIfTI files ({', '.join(p.name for p in stray[:3])}); "
                "move those into a case folder of their own"
            )
        return [root]
    return [case for sub in sub_folders(root) for case in find_case_folders(sub, depth - 1)] if depth else []
