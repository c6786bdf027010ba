"""Segmenting a raw study: its sequences brought to BraTS space (``tumorseg.raw.pipeline``),
segmented there as any BraTS case, and the labels taken back to the reference sequence's grid.

Beside the label map ``OUT`` go ``OUT_atlas.nii.gz`` (the labels in BraTS space, 240 x 240 x 155)
and ``OUT_brain.nii.gz`` (the brain mask on the native grid), and when the labels lie on a DICOM
series ``OUT_seg.dcm`` (a DICOM Segmentation over it, ``tumorseg.raw.dicom_seg``), which
``predict`` writes as one transaction with it. Volumes are counted on the native grid.

``tumorseg.raw`` (SimpleITK) is imported only when a case is raw: a preprocessed case never needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from tumorseg.data.brats import CaseFiles, open_nifti, read_voxels, volume_shape
from tumorseg.data.case import MODALITIES, Case, brats_affine
from tumorseg.data.preprocess import not_stripped
from tumorseg.errors import TumorsegError
from tumorseg.geometry import voxel_ml
from tumorseg.inference.writing import Writer, companion, nifti_writer
from tumorseg.labels import region_volumes, shown_volumes, to_brats
from tumorseg.outputs import claim_outputs


@dataclass
class Study:
    """A DICOM study given as one folder: its series are found and named when it is read."""

    case_id: str
    folder: Path

    @property
    def paths(self) -> list[Path]:
        return [self.folder]

    @property
    def absent(self) -> tuple[str, ...]:
        return ()


def preprocessed_writers(case: Case, folder: Path, grid: nib.Nifti1Image) -> list:
    """Writers of a BraTS-space case's sequences as a BraTS case folder (``CASE_flair.nii.gz``...)."""
    return [
        (
            folder / f"{case.case_id}_{modality}.nii.gz",
            nifti_writer(case.image[index].astype(np.float32), grid),
        )
        for index, modality in enumerate(MODALITIES)
        if modality not in case.absent
    ]


def why_raw(files: CaseFiles | Study) -> str | None:
    """Why a case needs the raw pipeline (None: it looks BraTS-preprocessed), from its headers and
    its first sequence's background."""
    if isinstance(files, Study):
        return "a DICOM study"
    if any(path.is_dir() for path in files.paths):
        return "DICOM series"
    try:
        headers = [open_nifti(path) for path in files.paths]
        shapes = {volume_shape(image, path) for image, path in zip(headers, files.paths, strict=True)}
    except TumorsegError:
        return None  # not decided here: reading the case names the file, after the model loads
    if len(shapes) > 1 or any(not np.allclose(h.affine, headers[0].affine, atol=1e-3) for h in headers):
        return "its sequences lie on different grids"
    try:
        voxels = read_voxels(headers[0], volume_shape(headers[0], files.paths[0]), files.paths[0])
    except TumorsegError:
        return None
    why = not_stripped(voxels, headers[0].affine)
    if why:
        return f"not skull-stripped: {why}"
    return None


def read_sequences(
    files: CaseFiles | Study, report: Callable[[str], None]
) -> tuple[dict, dict[str, str], dict]:
    """The sequences of a raw case as SimpleITK images (NIfTI files, DICOM series folders, or a
    study), where each came from (for messages), and the DICOM series of those read from DICOM."""
    from tumorseg.raw import dicom
    from tumorseg.raw.pipeline import read_sequence

    if isinstance(files, Study):
        sequences, table, chosen = dicom.study(files.folder)
        report(table)
        return sequences, {m: item.where for m, item in chosen.items()}, chosen
    sequences, series = {}, {}
    for modality, path in files.modalities.items():
        if path.is_dir():
            found = dicom.find_series(path)
            if len(found) != 1:
                raise TumorsegError(f"{path}: holds {len(found)} series; name the folder of one")
            series[modality] = found[0]
            sequences[modality] = dicom.read_series(found[0])
        else:
            volume_shape(open_nifti(path), path)  # its declared size checked before SimpleITK reads it
            sequences[modality] = read_sequence(str(path))
    return sequences, {modality: str(path) for modality, path in files.modalities.items()}, series


def writes_dicom(files: CaseFiles | Study) -> bool:
    """Whether a raw case's labels lie on a DICOM series (its reference sequence came as DICOM), so
    that a DICOM SEG is written beside them."""
    if isinstance(files, Study):
        return True
    if not any(path.is_dir() for path in files.paths):
        return False
    from tumorseg.raw.pipeline import REFERENCE_ORDER

    reference = next(m for m in REFERENCE_ORDER if m in files.modalities)
    return files.modalities[reference].is_dir()


@dataclass
class NativeResult:
    classes: np.ndarray  # internal classes on the reference sequence's grid
    affine: np.ndarray  # that grid's
    absent: tuple[str, ...]


def segment_raw(
    files: CaseFiles | Study,
    segment: Callable[[Case], np.ndarray],
    out: Path,
    *,
    labels: str,
    keep: Path | None = None,
    replace: bool = False,
    report: Callable[[str], None] = print,
) -> tuple[NativeResult, list[tuple[Path, Writer]]]:
    """Segment a raw case with ``segment`` (a BraTS-space case -> its classes): the result on the
    native grid, and the writers of the label map ``out``, its atlas-space labels and brain mask
    beside it, and with ``keep`` its BraTS-space sequences as the case folder ``keep/CASE`` (for
    ``view``); existing files there are replaced only when ``replace``."""
    from tumorseg.raw.images import BRATS_SHAPE, array
    from tumorseg.raw.pipeline import prepare

    sequences, sources, series = read_sequences(files, report)
    case, space = prepare(
        sequences, files.case_id, str(files.folder), lambda step: report(f"  {step}"), sources
    )
    in_atlas = segment(case)
    native = space.to_native(in_atlas)
    grid = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), space.affine)
    atlas = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), brats_affine(BRATS_SHAPE))
    written = [
        (out, nifti_writer(to_brats(native, labels), grid)),
        (companion(out, "atlas"), nifti_writer(to_brats(in_atlas, labels), atlas)),
        (companion(out, "brain"), nifti_writer(array(space.brain).astype(np.uint8), grid)),
    ]
    if space.reference in series:  # a DICOM SEG over the series the labels lie on
        from tumorseg.raw.dicom_seg import dicom_writers

        volumes = shown_volumes(region_volumes(native, voxel_ml(space.affine)), case.absent)
        seg, report = dicom_writers(native, series[space.reference], volumes)
        written += [(companion(out, "dicom"), seg), (companion(out, "dicom_report"), report)]
    if keep is not None:
        kept = preprocessed_writers(case, keep / files.case_id, atlas)
        claim_outputs([path for path, _ in kept], files.paths, replace)
        (keep / files.case_id).mkdir(parents=True, exist_ok=True)
        written += kept
    return NativeResult(native, space.affine, case.absent), written
