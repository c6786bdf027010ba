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
from nibabel import orientations
from scipy import ndimage
from tqdm import tqdm

from tumorseg.data.brats import CaseFiles, find_case_files, find_case_folders, read_case
from tumorseg.data.case import Case
from tumorseg.data.store import encode, normalize, zscore_coefficients
from tumorseg.errors import TumorsegError
from tumorseg.files import write_json
from tumorseg.inference.model import probabilities_to_classes
from tumorseg.labels import REGIONS, to_brats, to_internal

#: Axis codes of the BraTS files (and so of the slices the models learned from).
TRAINING_AXES = ("L", "P", "S")


@dataclass
class Prediction:
    case_id: str
    classes: np.ndarray  # (X, Y, Z) internal classes on the input's grid
    probabilities: np.ndarray | None  # (X, Y, Z, C) on the input's grid, when asked for
    volumes_ml: dict[str, float]


def reorientation(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(to training orientation, back) as nibabel orientation transforms."""
    current = orientations.io_orientation(affine)
    training = orientations.axcodes2ornt(TRAINING_AXES)
    return orientations.ornt_transform(current, training), orientations.ornt_transform(training, current)


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


def segment(case: Case, segmenter, min_et_voxels: int = 0, keep_probabilities: bool = False) -> Prediction:
    """Segment one case held in memory (image in the source's grid and orientation)."""
    forward, back = reorientation(case.affine)
    image = np.stack([orientations.apply_orientation(volume, forward) for volume in case.image])
    encoded = encode(Case(case.case_id, image, None, case.affine, case.sources))
    mean, std = encoded.attrs["norm_mean"], encoded.attrs["norm_std"]
    volume = normalize(encoded.image, *zscore_coefficients(mean, std))  # (Z, 4, H, W)
    probabilities = segmenter.probabilities(volume)  # (Z, C, H, W)
    crop = tuple(slice(a, b) for a, b in encoded.attrs["bbox"])
    classes = np.zeros(image.shape[1:], dtype=np.uint8)
    classes[crop] = np.moveaxis(probabilities_to_classes(probabilities, segmenter.target), 0, 2)
    classes = remove_small_enhancing(orientations.apply_orientation(classes, back), min_et_voxels)
    full = None
    if keep_probabilities:
        full = np.zeros((*image.shape[1:], probabilities.shape[1]), dtype=np.float32)
        full[crop] = np.moveaxis(probabilities, (0, 1), (2, 3))
        full = orientations.apply_orientation(full, back)
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
        raise TumorsegError(f"{path}: could not write ({err.strerror or err})") from None


def predict_case(
    files: CaseFiles,
    segmenter,
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
    make_segmenter: Callable[[], object],
    *,
    overwrite: bool = False,
    labels: str = "brats",
    min_et_voxels: int = 0,
    probabilities: bool = False,
    progress: bool | None = None,
) -> BatchResult:
    """Segment one case (a case folder or four files) into the file ``out``, or every case folder
    under ``inputs`` into the folder ``out`` (``<case>.nii.gz`` each, plus ``volumes.json``)."""
    if isinstance(inputs, CaseFiles):
        cases, batch = [inputs], False
    else:
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
        batch = folders != [inputs]
        cases = folders
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
        except TumorsegError as err:
            if not batch:
                raise
            result.failed.append((str(item), str(err)))
            continue
        target = out / f"{files.case_id}.nii.gz" if batch else out
        if batch and target.exists() and not overwrite:
            result.skipped.append(target)
            recorded = json.loads(volumes_file.read_text()) if volumes_file.exists() else {}
            if files.case_id not in recorded:  # killed between the label map and volumes.json
                image = nib.load(target)
                try:
                    classes = to_internal(np.asarray(image.dataobj), labels)
                except ValueError:  # written with the other --labels convention: left unrecorded
                    continue
                write_json(volumes_file, {**recorded, files.case_id: tumor_volumes(classes, image.affine)})
            continue
        bar.set_postfix_str(files.case_id)
        try:
            prediction = predict_case(
                files,
                segmenter,
                target,
                labels=labels,
                min_et_voxels=min_et_voxels,
                probabilities=probabilities,
            )
        except TumorsegError as err:
            if not batch:
                raise
            result.failed.append((files.case_id, str(err)))
            continue
        result.written.append(target)
        result.volumes[files.case_id] = prediction.volumes_ml
        # after each case, so that a killed batch keeps the volumes of the cases it finished
        previous = json.loads(volumes_file.read_text()) if batch and volumes_file.exists() else {}
        write_json(volumes_file, {**previous, files.case_id: prediction.volumes_ml})
    return result
