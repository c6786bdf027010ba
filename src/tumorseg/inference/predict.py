"""Segment new patients: NIfTI modalities in, a BraTS label map out on the input's grid.

Each case is turned to the orientation the BraTS training data have (LPS), cropped to its
brain and z-scored exactly as ``prepare`` does, segmented slice by slice, and the labels are
put back on the input's own grid, with its affine and header. A sequence may be missing when
the model was trained with modality dropout: it enters the network as a zero channel. Outputs
are written under a temporary name and renamed, so a killed batch leaves only whole files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from tumorseg import interrupts
from tumorseg.data.brats import (
    CaseFiles,
    find_case_files,
    find_case_folders,
    open_nifti,
    read_case,
    read_voxels,
    volume_shape,
)
from tumorseg.data.case import Case
from tumorseg.data.preprocess import check_background, preprocess
from tumorseg.errors import TumorsegError, first_line
from tumorseg.files import load_json, made_folder, write_json
from tumorseg.geometry import voxel_ml
from tumorseg.inference.native import Study, segment_raw, why_raw, writes_dicom
from tumorseg.inference.onnx import onnx_path
from tumorseg.inference.segmenter import Segmenter
from tumorseg.inference.writing import companion, companions, nifti_writer, write_together
from tumorseg.labels import region_volumes, shown_volumes, to_brats, to_internal, unseen_regions
from tumorseg.outputs import claim_outputs

#: The steps a raw case goes through, as printed before it is segmented.
RAW_STEPS = "skull stripping, rigid co-registration, SRI24 atlas registration, 1 mm resampling"


@dataclass
class Prediction:
    case_id: str
    classes: np.ndarray  # (X, Y, Z) internal classes on the input's grid
    probabilities: np.ndarray | None  # (X, Y, Z, C) on the input's grid, when asked for
    volumes_ml: dict[str, float]
    uncertainty: np.ndarray | None = None  # (X, Y, Z) on the input's grid, when asked for
    absent: tuple[str, ...] = ()  # the sequences the case lacked
    resampled_from: tuple[float, float, float] | None = None  # its voxel size, when not the model's

    def record(self) -> dict:
        """What the volumes JSON keeps of this case: volumes in mL (None for a region its sequences
        cannot show, listed under ``not_shown``), the missing sequences, and the voxel size it was
        resampled from."""
        # with uncertain_mL when the uncertainty was asked for
        record: dict = shown_volumes(self.volumes_ml, self.absent)
        if self.absent:
            record["missing"] = list(self.absent)
        if unseen := unseen_regions(self.absent):
            record["not_shown"] = list(unseen)
        if self.resampled_from:
            record["resampled_from_mm"] = [round(s, 4) for s in self.resampled_from]
        return record


def tumor_volumes(classes: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """Volume in mL of each BraTS region."""
    return region_volumes(classes, voxel_ml(affine))


#: Voxels at least this uncertain (bits; a region probability between about 0.11 and 0.89) count
#: towards a case's uncertain volume.
UNCERTAIN = 0.5


def segment(
    case: Case,
    segmenter: Segmenter,
    keep_probabilities: bool = False,
    uncertainty: bool = False,
) -> Prediction:
    """Segment one case held in memory; the result lies on the case's own grid."""
    segmenter = segmenter.for_sequences(case.absent)
    segmenter.check_absent(case.absent, case.sources[0] if case.sources else case.case_id)
    check_background(case)  # a model trained on BraTS segments anything else as nonsense
    prepared = preprocess(
        Case(case.case_id, case.image, None, case.affine, case.sources, absent=case.absent),
        spacing=segmenter.config.spacing,
    )
    # (Z, C, H, W) on the crop, at the case's own voxel size: resampled probabilities, then decoded
    volume = prepared.normalized()
    probabilities = prepared.to_source_spacing(segmenter.probabilities(volume))
    # only growth reads the sequences after the networks, on the probabilities' grid
    volume = prepared.to_source_spacing(volume) if segmenter.postprocessing.tumor_growth else None
    classes = prepared.restore(segmenter.segmentation(probabilities, voxel_ml(case.affine), volume))
    full = prepared.restore(probabilities) if keep_probabilities else None
    resampled_from = prepared.spacing if prepared.resampled_to else None
    volumes = tumor_volumes(classes, case.affine)
    uncertain = prepared.restore(segmenter.uncertainty(probabilities)) if uncertainty else None
    if uncertain is not None:
        volumes["uncertain_mL"] = float(np.count_nonzero(uncertain >= UNCERTAIN) * voxel_ml(case.affine))
    return Prediction(case.case_id, classes, full, volumes, uncertain, case.absent, resampled_from)


def predict_case(
    files: CaseFiles,
    segmenter: Segmenter,
    out: Path,
    *,
    labels: str = "brats",
    probabilities: bool = False,
    uncertainty: bool = False,
    volumes: bool = False,
    read_ahead: Future[tuple[Case, nib.Nifti1Image]] | None = None,
    raw: bool = False,
    keep_preprocessed: Path | None = None,
    replace: bool = False,
) -> Prediction:
    """Read a case's modalities (unless ``read_ahead`` is reading them: ``read_inputs``), segment them,
    and write the label map with what is asked beside it (probabilities, the uncertainty map, the
    volumes), all or none (``writing.write_together``). A ``raw`` case goes through the BraTS
    preprocessing first (``native.segment_raw``); ``replace``: whether files it keeps there may
    replace files of the same name (``--overwrite``, or a batch redoing its own). The caller has
    checked that the model segments the sequences the case has (``segment_all``)."""
    if raw:
        if probabilities or uncertainty:
            raise TumorsegError(
                f"{files.folder}: --probabilities and --uncertainty are written for "
                "BraTS-preprocessed cases only"
            )
        done, written = segment_raw(files, lambda case: segment(case, segmenter).classes, out, labels=labels,
                                    keep=keep_preprocessed, replace=replace)  # fmt: skip
        volumes_ml = tumor_volumes(done.classes, done.affine)
        prediction = Prediction(files.case_id, done.classes, None, volumes_ml, absent=done.absent)
    else:
        case, reference = read_inputs(files) if read_ahead is None else read_ahead.result()
        prediction = segment(case, segmenter, keep_probabilities=probabilities, uncertainty=uncertainty)
        written = [(out, nifti_writer(to_brats(prediction.classes, labels), reference))]
        if probabilities:
            written.append(
                (companion(out, "probabilities"), nifti_writer(prediction.probabilities, reference))
            )
        if uncertainty:
            uncertain = prediction.uncertainty.astype(np.float32)
            written.append((companion(out, "uncertainty"), nifti_writer(uncertain, reference)))
    if volumes:  # a single case's: with its label map, or not at all
        record = {files.case_id: prediction.record()}
        written.append((companion(out, "volumes"), lambda path: write_json(path, record)))
    write_together(written)
    return prediction


def read_inputs(files: CaseFiles) -> tuple[Case, nib.Nifti1Image]:
    """A case's modalities, and the image whose grid and header its outputs take."""
    case = read_case(CaseFiles(files.case_id, files.folder, files.modalities, None, files.convention))
    return case, nib.load(files.paths[0])


def files_from_paths(flair: Path | None, t1: Path | None, t1ce: Path | None, t2: Path | None) -> CaseFiles:
    """A case given as explicit files (None for a sequence not acquired); its id is the first
    file's name without suffixes."""
    given = {"flair": flair, "t1": t1, "t1ce": t1ce, "t2": t2}
    paths = {modality: Path(path) for modality, path in given.items() if path is not None}
    if not paths:
        raise TumorsegError("predict: give at least one of --flair --t1 --t1ce --t2")
    for path in paths.values():
        if path.is_dir():
            from tumorseg.raw.dicom import holds_dicom  # SimpleITK: for DICOM input only

            if holds_dicom(path):
                continue
        if not path.is_file():
            raise TumorsegError(f"{path}: is neither a NIfTI file nor a folder of DICOM files")
    first_modality, first = next(iter(paths.items()))
    case_id = first.name.removesuffix(".gz").removesuffix(".nii").removesuffix(f"_{first_modality}")
    return CaseFiles(case_id or first.name, first.parent, paths, None, "brats")


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
    probabilities: bool = False,
    uncertainty: bool = False,
    progress: bool | None = None,
    preprocess: str = "auto",
    keep_preprocessed: Path | None = None,
) -> BatchResult:
    """Segment one case (a case folder or four files) into the file ``out``, or every case folder
    under ``inputs`` into the folder ``out`` (``<case>.nii.gz`` each, plus ``volumes.json``).

    A batch goes on past a failing case, and a re-run skips the cases whose label map is there
    and whole (unless ``overwrite``). ``preprocess``: "raw" runs the BraTS preprocessing on every
    case, "brats" on none, "auto" on the cases that need it (``native.why_raw``)."""
    cases, batch = find_inputs(inputs)
    if batch and not isinstance(cases[0], Study):
        cases, failed = case_files(cases)
    elif batch:
        failed = []
    else:
        cases, failed = (
            [
                c
                if isinstance(c, CaseFiles | Study)
                else find_case_files(c, require_label=False, require_all=False)
                for c in cases
            ],
            [],
        )
    check_output(out, batch, overwrite)
    reasons: dict[str, str | None] = {}  # why a case is raw, where decided already (read once)
    if not batch:  # what it writes beside the label map, refused too before any model is loaded
        reason = reasons[cases[0].case_id] = raw_reason(cases[0], preprocess)
        asked = case_companions(out, cases[0], reason, probabilities, uncertainty, volumes=True)
        claim_outputs(asked, cases[0].paths, overwrite)
    # the folder written into (a batch's, or the label map's) is made; left empty (every case
    # failed, or no model), it goes again
    with made_folder(out if batch else out.parent) as folder:
        if not os.access(folder, os.W_OK):
            raise TumorsegError(f"{folder}: cannot write here")
        result = BatchResult([], [], failed, {})
        with ThreadPoolExecutor(1, thread_name_prefix="tumorseg-read") as reader:
            # the first case is read while the model loads, which leaves a core idle (docs/results.md)
            ahead = cases and isinstance(cases[0], CaseFiles) and preprocess != "raw"
            first = reader.submit(read_inputs, cases[0]) if ahead else None
            segment_all(cases, out, batch, make_segmenter(), result, overwrite, progress, first,
                        labels=labels, probabilities=probabilities,
                        uncertainty=uncertainty, preprocess=preprocess,
                        keep_preprocessed=keep_preprocessed, reasons=reasons)  # fmt: skip
        return result


def segment_all(
    cases: list[CaseFiles],
    out: Path,
    batch: bool,
    segmenter: Segmenter,
    result: BatchResult,
    overwrite: bool,
    progress: bool | None,
    first: Future[tuple[Case, nib.Nifti1Image]] | None = None,
    **options: object,
) -> None:
    """Segment each case into ``out`` (a file, or a batch's folder), recording it in ``result``;
    ``first``: the first case's inputs, being read (``read_inputs``)."""
    model_files = [segmenter.path, onnx_path(segmenter.path)]
    volumes_file = out / "volumes.json"  # a batch's; a single case writes its own beside its label map
    if batch:
        for stale in out.glob(".*.tmp-*"):  # left by a run that was killed mid-write
            stale.unlink()
    recorded = read_volumes(volumes_file, overwrite) if batch else {}
    for files in tqdm(cases, desc="predict", unit="case", disable=None if progress is None else not progress):
        interrupts.check()
        read_ahead, first = first, None  # the first case only
        target = out / f"{files.case_id}.nii.gz" if batch else out
        try:
            where = str(files.paths[0] if len(files.modalities) == 1 else files.folder)  # what was given
            segmenter.for_sequences(files.absent).check_absent(files.absent, where)
            reasons = options["reasons"]
            reason = (
                reasons[files.case_id]
                if files.case_id in reasons
                else raw_reason(files, options["preprocess"])
            )
            if reason:
                print(f"{files.case_id}: raw ({reason}): {RAW_STEPS}")
            asked = case_companions(target, files, reason, options["probabilities"], options["uncertainty"],
                                    volumes=not batch)  # fmt: skip
            done = leftover(target, files, asked, reason is not None) if batch and not overwrite else None
            if done is not None:
                result.skipped.append(target)
                recorded = record_skipped(files.case_id, *done, volumes_file, recorded, options["labels"])
                continue
            # a batch redoes its own leftovers: a case's files are whole or absent (write_together)
            claim_outputs([target, *asked], [*files.paths, *model_files], overwrite or batch)
            prediction = predict_case(
                files, segmenter, target, read_ahead=read_ahead, volumes=not batch, raw=reason is not None,
                labels=options["labels"], probabilities=options["probabilities"],
                uncertainty=options["uncertainty"], keep_preprocessed=options["keep_preprocessed"],
                replace=overwrite or batch,
            )  # fmt: skip
        except TumorsegError as err:
            if not batch:
                raise
            result.failed.append((files.case_id, str(err)))
            continue
        result.written.append(target)
        record = result.volumes[files.case_id] = prediction.record()
        if batch:  # after each case, so that a killed batch keeps the volumes of the cases it finished
            recorded = {**recorded, files.case_id: record}
            write_json(volumes_file, recorded)


def case_companions(
    target: Path, files: CaseFiles | Study, reason: str | None, probabilities: bool, uncertainty: bool,
    volumes: bool,
) -> list[Path]:  # fmt: skip
    """What a case writes beside its label map ``target``: what is asked for, and for a raw case
    (``reason``) its atlas-space labels and brain mask, and its DICOM SEG and report when its labels
    lie on a DICOM series."""
    raw = reason is not None
    return companions(target, probabilities, uncertainty, volumes, raw=raw, dicom=raw and writes_dicom(files))


def raw_reason(files: CaseFiles | Study, preprocess: str) -> str | None:
    """Why a case goes through the raw pipeline, or None when it does not (``predict``'s preprocess)."""
    if preprocess == "brats":
        if isinstance(files, Study) or any(path.is_dir() for path in files.paths):
            raise TumorsegError(f"{files.folder}: DICOM input is raw; use --preprocess raw or auto")
        return None
    return "--preprocess raw" if preprocess == "raw" else why_raw(files)


def find_inputs(inputs: Path | CaseFiles) -> tuple[list[Path | CaseFiles | Study], bool]:
    """The cases to segment, and whether they are a batch (a folder of case folders). A folder that
    holds no NIfTI case but DICOM files is one study, or a batch of them (``dicom.study_folders``)."""
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
        from tumorseg.raw.dicom import holds_dicom, study_folders  # SimpleITK: for DICOM input only

        if holds_dicom(inputs):
            studies = study_folders(inputs)
            return [Study(folder.resolve().name, folder) for folder in studies], studies != [inputs]
        raise TumorsegError(f"{inputs}: no BraTS case folders found (nor DICOM files)")
    return folders, folders != [inputs]


def check_output(out: Path, batch: bool, overwrite: bool) -> None:
    """Refuse an output that cannot be what it is asked to be, before any model is loaded."""
    if batch:
        if out.exists() and not out.is_dir():
            raise TumorsegError(f"{out}: several cases need an output folder, and this is a file")
        return
    if out.is_dir():
        raise TumorsegError(f"{out}: is a folder; give the output file, e.g. {out / 'seg.nii.gz'}")
    if not out.name.endswith((".nii", ".nii.gz")):
        raise TumorsegError(f"{out}: the output must be a .nii or .nii.gz file")
    if out.exists() and not overwrite:
        raise TumorsegError(f"{out}: exists; pass --overwrite to replace it")


def case_files(folders: list[Path]) -> tuple[list[CaseFiles], list[tuple[str, str]]]:
    """The files of each case folder of a batch (and the folders that are no case); two folders
    holding the same case id are refused, since their outputs would be one file."""
    found, failed, where = [], [], {}
    for folder in folders:
        try:
            files = find_case_files(folder, require_label=False, require_all=False)
        except TumorsegError as err:
            failed.append((str(folder), str(err)))
            continue
        if files.case_id in where:
            raise TumorsegError(f"{folder}: case {files.case_id} also found at {where[files.case_id]}")
        where[files.case_id] = folder
        found.append(files)
    return found, failed


def leftover(
    target: Path, files: CaseFiles | Study, asked: list[Path], raw: bool = False
) -> tuple[np.ndarray, np.ndarray] | None:
    """The label map an earlier run left for this case and its affine, read whole and checked as
    any input; None (redo it) for a zero-byte, truncated or broken file, one of another grid (for a
    preprocessed case: a raw one's lies on its reference sequence's), or when a companion now
    ``asked`` for is missing."""
    if not target.exists() or not all(path.exists() for path in asked):
        return None
    try:
        image = open_nifti(target)
        if not raw and image.shape != open_nifti(files.paths[0]).shape:
            return None
        return read_voxels(image, volume_shape(image, target), target), image.affine
    except Exception:  # noqa: BLE001 (any unreadable leftover is simply redone)
        return None


def read_volumes(path: Path, overwrite: bool) -> dict:
    """The volumes a batch recorded so far; a damaged file is named, or (with overwrite) started afresh."""
    if not path.exists():
        return {}
    try:
        recorded = load_json(path)
        if not isinstance(recorded, dict):
            raise ValueError("not a mapping of case ids")
    except ValueError as err:
        if overwrite:
            return {}
        raise TumorsegError(
            f"{path}: not a volumes file ({first_line(err)}); remove it or pass --overwrite"
        ) from err
    return recorded


def record_skipped(
    case_id: str, values: np.ndarray, affine: np.ndarray, volumes_file: Path, recorded: dict, labels: str
) -> dict:
    """A batch killed between a label map and volumes.json: fill the case in from its label map."""
    if case_id in recorded:
        return recorded
    try:
        classes = to_internal(values, labels)
    except ValueError:  # written with the other --labels convention: left unrecorded
        return recorded
    recorded = {**recorded, case_id: tumor_volumes(classes, affine)}
    write_json(volumes_file, recorded)
    return recorded
