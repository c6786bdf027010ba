"""``tumorseg compare``: two visits of one patient, segmented (or their label maps given), the
follow-up registered rigidly to the baseline, and what changed.

Each visit is anything ``predict`` takes as one case: a BraTS-preprocessed case folder, or a raw
one (a DICOM study, a folder of NIfTI files on their own grids), which goes through the raw
pipeline and is compared in BraTS space. Each visit's volumes are counted on the grid its label
map is written on (a raw visit's: its T1ce's own), never on a resampled copy, so that the
registration adds no noise to them; the registration serves the change map and the search for
new lesions, and the follow-up's bidimensional product is measured on the baseline's axial
slices once registered, so that both visits are cut alike.

Written into the folder ``OUT``, as one transaction (all or nothing, so that a run that stops
leaves nothing to block the next): ``baseline.nii.gz`` and ``followup.nii.gz`` (when segmented
here; with a raw visit's companions), ``followup_on_baseline.nii.gz`` and ``change.nii.gz`` (on
the baseline's grid; not when the registration failed), ``comparison.json``, ``comparison.csv``
and ``report.html``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from tumorseg.data.brats import CaseFiles, find_case_files
from tumorseg.data.case import Case
from tumorseg.data.preprocess import reorient
from tumorseg.errors import TumorsegError
from tumorseg.evaluation.viewer import read_labels
from tumorseg.files import made_folder, rounded, write_csv, write_json, write_text
from tumorseg.geometry import voxel_ml
from tumorseg.inference.native import Study, segment_raw
from tumorseg.inference.predict import find_inputs, raw_reason, read_inputs, segment
from tumorseg.inference.segmenter import Segmenter
from tumorseg.inference.writing import nifti_writer, write_together
from tumorseg.labels import to_brats
from tumorseg.monitoring import measures
from tumorseg.monitoring.alignment import align
from tumorseg.monitoring.comparison import Comparison, Visit, measure
from tumorseg.monitoring.report import report_page
from tumorseg.outputs import claim_outputs

VISITS = ("baseline", "followup")
OUTPUTS = ("followup_on_baseline.nii.gz", "change.nii.gz", "comparison.json", "comparison.csv", "report.html")


def visit_files(path: Path) -> CaseFiles | Study:
    """The one case a visit's folder holds."""
    cases, batch = find_inputs(path)
    if batch:
        raise TumorsegError(f"{path}: holds {len(cases)} cases; give the folder of one visit")
    return cases[0] if isinstance(cases[0], Study) else find_case_files(cases[0], require_label=False,
                                                                        require_all=False)  # fmt: skip


def read_visit(
    name: str, files: CaseFiles | Study, out: Path, segmenter: Callable[[], Segmenter] | None,
    seg: Path | None, preprocess: str, labels: str,
) -> Visit:  # fmt: skip
    """A visit segmented with ``segmenter`` (its label maps to be written as ``out/NAME.nii.gz``),
    or read with its label map ``seg``."""
    reason = raw_reason(files, preprocess)
    if reason is not None:
        if seg is not None:
            raise TumorsegError(f"{files.folder}: --seg takes the label maps of BraTS-preprocessed visits; "
                                "let compare segment a raw visit")  # fmt: skip
        in_atlas: list[tuple[Case, np.ndarray]] = []  # what the raw pipeline segmented, in BraTS space

        def segment_in_atlas(case: Case) -> np.ndarray:
            in_atlas.append((case, segment(case, segmenter()).classes))
            return in_atlas[-1][1]

        done, writers = segment_raw(files, segment_in_atlas, out / f"{name}.nii.gz", labels=labels)
        case, classes = in_atlas[0]  # on the BraTS grid, whose axes are L, P, S already
        volumes = measures.volumes(done.classes, voxel_ml(done.affine))
        return Visit(name, files.case_id, str(files.folder), case.image, classes, case.affine, volumes,
                     case.absent, reason, writers)  # fmt: skip
    case, reference = read_inputs(files)
    if seg is None:
        classes = segment(case, segmenter()).classes
        writers = [(out / f"{name}.nii.gz", nifti_writer(to_brats(classes, labels), reference))]
    else:
        classes = read_labels(seg, case.image.shape[1:], case.affine)
        writers = []
    volumes = measures.volumes(classes, voxel_ml(case.affine))
    turned = reorient(Case(case.case_id, case.image, classes, case.affine, case.sources, absent=case.absent))
    return Visit(name, files.case_id, str(files.folder), turned.image, turned.label, turned.affine, volumes,
                 case.absent, None, writers)  # fmt: skip


def compare(
    baseline: Path,
    followup: Path,
    out: Path,
    make_segmenter: Callable[[], Segmenter] | None,
    *,
    seg: tuple[Path, Path] | None = None,
    preprocess: str = "auto",
    labels: str = "brats",
    overwrite: bool = False,
    report: Callable[[str], None] = print,
) -> Comparison:
    """Compare two visits into the folder ``out`` (see the module's description); ``seg``: the two
    visits' label maps, instead of segmenting them with ``make_segmenter`` (called once, if at all)."""
    paths = (Path(baseline), Path(followup))
    visits = [visit_files(path) for path in paths]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TumorsegError(f"{out}: is a file; compare writes a folder")
    planned = [out / name for name in OUTPUTS] + ([] if seg else [out / f"{name}.nii.gz" for name in VISITS])
    claim_outputs(planned, [*paths, *(seg or ())], overwrite)
    loaded: list[Segmenter] = []

    def segmenter() -> Segmenter:
        if not loaded:
            loaded.append(make_segmenter())
        return loaded[0]

    with made_folder(out):  # nothing written: no empty folder left
        return compare_into(out, paths, visits, segmenter, seg, preprocess, labels, overwrite, report)


def compare_into(
    out: Path,
    paths: tuple[Path, Path],
    visits: list[CaseFiles | Study],
    segmenter: Callable[[], Segmenter],
    seg: tuple[Path, Path] | None,
    preprocess: str,
    labels: str,
    overwrite: bool,
    report: Callable[[str], None],
) -> Comparison:
    """``compare``, its checks done and ``out`` locked."""
    inputs = [*paths, *(seg or ())]
    read = []
    for index, (name, files) in enumerate(zip(VISITS, visits, strict=True)):
        report(f"{name}: {files.folder}")
        read.append(read_visit(name, files, out, segmenter, seg[index] if seg else None, preprocess, labels))
    before, after = read
    for visit in read:
        claim_outputs([path for path, _ in visit.writers], inputs, overwrite)  # a raw visit's companions
    report("registering the follow-up to the baseline")
    try:
        alignment = align(before.image, before.affine, after.image, after.affine, after.classes,
                          (before.absent, after.absent))  # fmt: skip
    except ValueError as err:
        raise TumorsegError(f"{paths[1]}: {err}") from err
    comparison = measure(before, after, alignment)
    record, rows = rounded(comparison.record()), rounded(comparison.regions())
    page = report_page(comparison)
    # write_together renames its first file last: report.html is there only when all the rest is
    written = [
        (out / "report.html", lambda path: write_text(path, page)),
        (out / "comparison.json", lambda path: write_json(path, record)),
        (out / "comparison.csv", lambda path: write_csv(path, rows, list(rows[0]))),
    ]
    grid = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), before.affine)
    if alignment.aligned:
        written += [
            (out / "change.nii.gz", nifti_writer(comparison.change, grid)),
            (out / "followup_on_baseline.nii.gz", nifti_writer(to_brats(alignment.labels, labels), grid)),
        ]
    written += [*before.writers, *after.writers]
    write_together(written)
    comparison.written = [path for path, _ in written]
    return comparison
