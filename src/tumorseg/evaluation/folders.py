"""Scoring label maps on disk: a folder of predictions against a folder of references.

No store and no run: users score their own test sets this way, and tumorseg can score other
tools' outputs. Cases are matched by id; a file may be ``<id>.nii.gz`` (as ``tumorseg predict``
writes them), ``<id>_seg.nii.gz`` / ``<id>-seg.nii.gz`` (BraTS names), or a case folder holding
such a label file (whose FLAIR and T1ce then back the overlays). The metrics, tables and figures
are those of a run's evaluation (``tumorseg.evaluation.evaluate``), without the viewers.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tumorseg.data.brats import (
    AFFINE_TOLERANCE,
    find_case_files,
    is_nifti,
    nifti_files,
    open_nifti,
    read_voxels,
    volume_shape,
)
from tumorseg.data.case import labels_to_internal, voxel_spacing
from tumorseg.errors import TumorsegError
from tumorseg.evaluation.evaluate import OUTPUT_FILES, Evaluation, overlay_choices, write_results
from tumorseg.labels import BRATS_VALUES, ENHANCING
from tumorseg.metrics import confusion_matrix, patient_metrics
from tumorseg.outputs import claim_outputs

#: Files beside predicted label maps that are no label maps.
COMPANIONS = re.compile(r"_(probabilities|uncertainty)$")
SEG_SUFFIX = re.compile(r"[_-]seg$", re.IGNORECASE)


def case_id_of(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return SEG_SUFFIX.sub("", name)


def label_files(folder: Path, role: str) -> dict[str, Path]:
    """Case id -> label map file of a folder of label maps or of case folders."""
    if not folder.is_dir():
        raise TumorsegError(f"{folder}: not a folder of {role}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() and nifti_files(path):
            files = find_case_files(path, require_label=True, require_all=False)
            case_id, label = files.case_id, files.seg
        elif path.is_file() and is_nifti(path) and not COMPANIONS.search(case_id_of(path)):
            case_id, label = case_id_of(path), path
        else:
            continue
        if case_id in found:
            raise TumorsegError(
                f"{folder}: two {role} for case {case_id}: {found[case_id].name}, {path.name}"
            )
        found[case_id] = label
    if not found:
        raise TumorsegError(f"{folder}: no label maps (<id>.nii.gz, <id>_seg.nii.gz or case folders) found")
    return found


def matched(predictions: Path, references: Path) -> list[tuple[str, Path, Path]]:
    """(case id, prediction, reference) for every case; a case on one side only is an error."""
    predicted, referenced = label_files(predictions, "predictions"), label_files(references, "references")
    for side, have, other in ((predictions, predicted, referenced), (references, referenced, predicted)):
        alone = sorted(set(have) - set(other))
        if alone:
            raise TumorsegError(
                f"{side}: {len(alone)} cases have no counterpart in the other folder, e.g. {alone[0]}"
            )
    return [(case_id, predicted[case_id], referenced[case_id]) for case_id in sorted(predicted)]


def read_labels(path: Path, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """A label map as internal classes, and its affine; ``auto`` reads 3 as 2023's enhancing tumor."""
    image = open_nifti(path)
    values = read_voxels(image, volume_shape(image, path), path)
    if convention == "auto":
        convention = "brats2023" if (values == BRATS_VALUES["brats2023"][ENHANCING]).any() else "brats"
    return labels_to_internal(values, convention, str(path)), np.asarray(image.affine, dtype=np.float64)


def read_pair(prediction: Path, reference: Path, labels: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prediction and reference classes, checked to lie on one grid, and that grid's affine."""
    predicted, affine = read_labels(prediction, labels)
    truth, reference_affine = read_labels(reference, labels)
    if predicted.shape != truth.shape:
        raise TumorsegError(f"{prediction}: shape {predicted.shape} differs from {reference} {truth.shape}")
    if not np.allclose(affine, reference_affine, atol=AFFINE_TOLERANCE):
        raise TumorsegError(f"{prediction}: affine differs from {reference}'s (another grid)")
    return predicted, truth, reference_affine


def overlay_sample(case_id: str, prediction: Path, reference: Path, labels: str, title: str) -> dict:
    """The axial slice with most reference tumor; the case folder's FLAIR and T1ce when it has them."""
    predicted, truth, _ = read_pair(prediction, reference, labels)
    z = int(np.argmax((truth > 0).sum(axis=(0, 1))))
    images = {}
    for modality in ("flair", "t1ce"):
        found = (
            list(reference.parent.glob(f"{case_id}[_-]{modality}.nii*")) if reference.parent.is_dir() else []
        )
        if len(found) == 1:
            image = open_nifti(found[0])
            images[modality] = np.asarray(
                read_voxels(image, volume_shape(image, found[0]), found[0])[:, :, z]
            )
    blank = np.zeros(truth.shape[:2], dtype=np.float32)
    return {
        "title": title,
        "slice": z,
        "flair": images.get("flair", blank),
        "t1ce": images.get("t1ce", blank),
        "reference": truth[:, :, z],
        "prediction": predicted[:, :, z],
    }


def evaluate_folders(
    predictions: Path,
    references: Path,
    out: Path,
    *,
    labels: str = "auto",
    overwrite: bool = False,
    progress: bool | None = None,
) -> Evaluation:
    """Score every predicted label map against its reference into ``out``."""
    if labels not in ("auto", "brats", "brats2023"):
        raise TumorsegError(f"labels must be auto, brats or brats2023, not {labels!r}")
    pairs = matched(Path(predictions), Path(references))
    if out.exists() and not out.is_dir():
        raise TumorsegError(f"{out}: is a file; evaluate writes a folder of results")
    inputs = [path for _, *paths in pairs for path in paths]
    claim_outputs([out / name for name in OUTPUT_FILES], inputs, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("viewers.json", "uncertainty.json", "uncertainty.png"):  # a run's; label maps have neither
        (out / name).unlink(missing_ok=True)
    rows, confusion = [], np.zeros((4, 4), dtype=np.int64)
    for case_id, prediction, reference in tqdm(
        pairs, desc="evaluate", unit="case", disable=None if progress is None else not progress
    ):
        predicted, truth, affine = read_pair(prediction, reference, labels)
        rows.append({"case_id": case_id, **patient_metrics(predicted, truth, voxel_spacing(affine))})
        confusion += confusion_matrix(predicted, truth)
    where = {case_id: (prediction, reference) for case_id, prediction, reference in pairs}
    samples = [
        overlay_sample(case_id, *where[case_id], labels, title) for case_id, title in overlay_choices(rows)
    ]
    return write_results(out, "folder", rows, confusion, f"label maps in {predictions}", samples)
