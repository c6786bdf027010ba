"""Segment new patients: four NIfTI modalities in, a BraTS label map out on the input's grid.

Each case is turned to the orientation the BraTS training data have (LPS), cropped to its
brain and z-scored exactly as ``prepare`` does, segmented slice by slice, and the labels are
put back on the input's own grid, with its affine and header. Outputs are written under a
temporary name and renamed, so a killed batch leaves only whole files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from tumorseg.data.brats import CaseFiles, find_case_files, find_case_folders, read_case
from tumorseg.data.case import Case
from tumorseg.data.preprocess import preprocess
from tumorseg.errors import TumorsegError
from tumorseg.files import write_json
from tumorseg.inference.segmenter import Segmenter
from tumorseg.labels import REGIONS, to_brats, to_internal


@dataclass
class Prediction:
    case_id: str
    classes: np.ndarray  # (X, Y, Z) internal classes on the input's grid
    probabilities: np.ndarray | None  # (X, Y, Z, C) on the input's grid, when asked for
    volumes_ml: dict[str, float]


def remove_small_enhancing(classes: np.ndarray, min_voxels: int) -> np.ndarray:
    """Relabel enhancing components smaller than ``min_voxels`` as NCR/NET (nnU-Net's BraTS idea:
    a few false enhancing voxels cost a whole case's ET Dice when the reference has none)."""
    if min_voxels <= 0:
        return classes
    components, count = ndimage.label(classes == 3, structure=np.ones((3, 3, 3)))
    if count == 0:
        return classes
    sizes = np.bincount(components.ravel())
    small = np.flatnonzero(sizes < min_voxels)
    small = small[small > 0]
    out = classes.copy()
    out[np.isin(components, small)] = 1
    return out


def tumor_volumes(classes: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """Volume in mL of each BraTS region."""
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000
    return {name: float(np.isin(classes, members).sum() * voxel_ml) for name, members in REGIONS.items()}


def segment(
    case: Case, segmenter: Segmenter, min_et_voxels: int = 0, keep_probabilities: bool = False
) -> Prediction:
    """Segment one case held in memory; the result lies on the case's own grid."""
    prepared = preprocess(Case(case.case_id, case.image, None, case.affine, case.sources))
    probabilities = segmenter.probabilities(prepared.normalized())  # (Z, C, H, W)
    classes = remove_small_enhancing(prepared.restore(segmenter.classes(probabilities)), min_et_voxels)
    full = prepared.restore(probabilities) if keep_probabilities else None
    return Prediction(case.case_id, classes, full, tumor_volumes(classes, case.affine))


def write_nifti(data: np.ndarray, reference: nib.Nifti1Image, path: Path) -> None:
    """Save ``data`` with the reference's affine and header, atomically."""
    header = reference.header.copy()
    header.set_data_dtype(data.dtype)
    image = type(reference)(data, reference.affine, header)
    if data.ndim == 4:
        image.header.set_intent("vector")
    image.header.set_slope_inter(1, 0)
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        nib.save(image, tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise TumorsegError(f"{path}: could not write ({err.strerror or err})") from err


def predict_case(
    files: CaseFiles,
    segmenter: Segmenter,
    out: Path,
    *,
    labels: str = "brats",
    min_et_voxels: int = 0,
    probabilities: bool = False,
) -> Prediction:
    """Read a case's four modalities, segment them, write the label map (and probabilities)."""
    case = read_case(CaseFiles(files.case_id, files.folder, files.modalities, None, files.convention))
    reference = nib.load(files.modalities["flair"])
    prediction = segment(case, segmenter, min_et_voxels, keep_probabilities=probabilities)
    write_nifti(to_brats(prediction.classes, labels), reference, out)
    if probabilities:
        write_nifti(prediction.probabilities, reference, beside(out, "_probabilities.nii.gz"))
    return prediction


def beside(out: Path, suffix: str) -> Path:
    """A file next to the NIfTI ``out``: seg.nii.gz + "_volumes.json" -> seg_volumes.json."""
    return out.with_name(out.name.removesuffix(".gz").removesuffix(".nii") + suffix)


def files_from_paths(flair: Path, t1: Path, t1ce: Path, t2: Path) -> CaseFiles:
    """A case given as four explicit files; its id is the FLAIR file's name without suffixes."""
    paths = {"flair": Path(flair), "t1": Path(t1), "t1ce": Path(t1ce), "t2": Path(t2)}
    for path in paths.values():
        if not path.is_file():
            raise TumorsegError(f"{path}: file does not exist")
    case_id = paths["flair"].name.removesuffix(".gz").removesuffix(".nii")
    return CaseFiles(case_id, paths["flair"].parent, paths, None, "brats")


@dataclass
class BatchResult:
    written: list[Path]
    skipped: list[Path]
    failed: list[tuple[str, str]]
    volumes: dict[str, dict[str, float]]


def predict(
    inputs: Path | CaseFiles,
    out: Path,
    make_segmenter: Callable[[], Segmenter],
    *,
    overwrite: bool = False,
    labels: str = "brats",
    min_et_voxels: int = 0,
    probabilities: bool = False,
    progress: bool | None = None,
) -> BatchResult:
    """Segment one case (a case folder or four files) into the file ``out``, or every case folder
    under ``inputs`` into the folder ``out`` (``<case>.nii.gz`` each, plus ``volumes.json``)."""
    cases, batch = find_inputs(inputs)
    check_output(out, batch, overwrite)
    segmenter = make_segmenter()
    if batch:
        for stale in out.glob(".*.tmp-*"):  # left by a run that was killed mid-write
            stale.unlink()
    volumes_file = out / "volumes.json" if batch else beside(out, "_volumes.json")
    result = BatchResult([], [], [], {})
    bar = tqdm(cases, desc="predict", unit="case", disable=None if progress is None else not progress)
    for item in bar:
        try:
            files = item if isinstance(item, CaseFiles) else find_case_files(item, require_label=False)
            target = out / f"{files.case_id}.nii.gz" if batch else out
            if batch and target.exists() and not overwrite:
                result.skipped.append(target)
                record_skipped(files.case_id, target, volumes_file, labels)
                continue
            bar.set_postfix_str(files.case_id)
            options = {"labels": labels, "min_et_voxels": min_et_voxels, "probabilities": probabilities}
            prediction = predict_case(files, segmenter, target, **options)
        except TumorsegError as err:
            if not batch:
                raise
            result.failed.append((str(item), str(err)))
            continue
        result.written.append(target)
        result.volumes[files.case_id] = prediction.volumes_ml
        # after each case, so that a killed batch keeps the volumes of the cases it finished
        previous = json.loads(volumes_file.read_text()) if batch and volumes_file.exists() else {}
        write_json(volumes_file, {**previous, files.case_id: prediction.volumes_ml})
    return result


def find_inputs(inputs: Path | CaseFiles) -> tuple[list[Path | CaseFiles], bool]:
    """The cases to segment, and whether they are a batch (a folder of case folders)."""
    if isinstance(inputs, CaseFiles):
        return [inputs], False
    inputs = Path(inputs)
    if not inputs.exists():
        raise TumorsegError(f"{inputs}: does not exist")
    if not inputs.is_dir():
        raise TumorsegError(
            f"{inputs}: give a case folder, a folder of case folders, or --flair/--t1/--t1ce/--t2"
        )
    folders = find_case_folders(inputs)
    if not folders:
        raise TumorsegError(f"{inputs}: no BraTS case folders found")
    return folders, folders != [inputs]


def check_output(out: Path, batch: bool, overwrite: bool) -> None:
    """Refuse an output that cannot be written, before any model is loaded; make a batch's folder."""
    if batch:
        if out.exists() and not out.is_dir():
            raise TumorsegError(f"{out}: several cases need an output folder, and this is a file")
        out.mkdir(parents=True, exist_ok=True)
    else:
        if out.is_dir():
            raise TumorsegError(f"{out}: is a folder; give the output file, e.g. {out / 'seg.nii.gz'}")
        if not out.name.endswith((".nii", ".nii.gz")):
            raise TumorsegError(f"{out}: the output must be a .nii or .nii.gz file")
        if out.exists() and not overwrite:
            raise TumorsegError(f"{out}: exists; pass --overwrite to replace it")
        if not out.parent.is_dir():
            raise TumorsegError(f"{out.parent}: output folder does not exist")
    if not os.access(out if batch else out.parent, os.W_OK):
        raise TumorsegError(f"{out if batch else out.parent}: cannot write here")


def record_skipped(case_id: str, target: Path, volumes_file: Path, labels: str) -> None:
    """A batch killed between a label map and volumes.json: fill the case in from its label map."""
    recorded = json.loads(volumes_file.read_text()) if volumes_file.exists() else {}
    if case_id in recorded:
        return
    image = nib.load(target)
    try:
        classes = to_internal(np.asarray(image.dataobj), labels)
    except ValueError:  # written with the other --labels convention: left unrecorded
        return
    write_json(volumes_file, {**recorded, case_id: tumor_volumes(classes, image.affine)})
