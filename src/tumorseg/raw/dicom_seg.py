"""A label map as a DICOM Segmentation (SEG) that references the series it was drawn on, so that
a PACS, OHIF or 3D Slicer shows it over the patient's own images (``highdicom``).

One segment per tumor class, named and colored as the viewer shows them, each coded with SNOMED CT
(necrosis, edema, neoplasm), the algorithm named (tumorseg, automatic). The volumes of WT, TC and
ET go into the SEG's content description, and each segment's label carries its volume. Frames
without any label are left out (highdicom's default), and every frame points to the source image
it lies on. UIDs derive from the source series and the labels, so the same result gives the same
file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tumorseg import __version__
from tumorseg.labels import CLASS_NAMES, EDEMA, ENHANCING, NECROSIS
from tumorseg.raw.dicom import Series, make_uid

#: Each class as a segment: its number is the class index; the label, SNOMED CT type and the
#: viewer's color (RGB).
SEGMENTS = {
    NECROSIS: ("necrotic and non-enhancing tumor core", "Necrosis", (230, 25, 25)),
    EDEMA: ("peritumoral edema", "Edema", (25, 204, 51)),
    ENHANCING: ("enhancing tumor", "Neoplasm", (255, 217, 0)),
}
#: The SEG's series description and number.
DESCRIPTION = "tumorseg BraTS segmentation"
SERIES_NUMBER = 9901


def segmentation(classes: np.ndarray, series: Series, volumes_ml: dict[str, float]):  # noqa: ANN201 (highdicom's Segmentation)
    """The SEG of ``classes`` (X, Y, Z internal classes on the grid SimpleITK reads ``series`` onto:
    X along the columns, Y along the rows, Z along the files in ``series.files`` order)."""
    import highdicom as hd  # imported when DICOM is written
    from pydicom import dcmread
    from pydicom.sr.codedict import codes

    sources = [dcmread(path, stop_before_pixels=True) for path in series.files]
    frames = np.ascontiguousarray(classes.transpose(2, 1, 0)).astype(np.uint8)  # (slices, rows, columns)
    if frames.shape != (len(sources), int(sources[0].Rows), int(sources[0].Columns)):
        raise ValueError(f"labels of shape {classes.shape} do not lie on the series {series.folder}")
    algorithm = hd.AlgorithmIdentificationSequence(
        name="tumorseg", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"{label} ({np.count_nonzero(classes == number) * _voxel_ml(sources):.2f} mL)"[:64],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=getattr(codes.SCT, kind),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=make_uid(series.uid, "tumorseg", CLASS_NAMES[number]),
            tracking_id=CLASS_NAMES[number],
            display_color=hd.color.CIELabColor.from_rgb(*rgb),
        )
        for number, (label, kind, rgb) in SEGMENTS.items()
    ]
    identity = (series.uid, __version__, hashlib.sha256(frames.tobytes()).hexdigest())
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=make_uid(*identity, "series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=make_uid(*identity, "instance"),
        instance_number=1,
        manufacturer="tumorseg",
        manufacturer_model_name="tumorseg",
        software_versions=__version__,
        device_serial_number="none",
        content_description=" ".join(f"{r} {volumes_ml[r]:.1f} mL" for r in ("WT", "TC", "ET"))[:64],
        content_label="TUMORSEG",
        series_description=DESCRIPTION,
    )
    return seg


def _voxel_ml(sources: list) -> float:
    """The volume of one voxel of the series (mL): pixel spacing times the distance between slices."""
    if len(sources) < 2:
        thickness = float(getattr(sources[0], "SliceThickness", 1.0))
    else:
        thickness = float(
            np.linalg.norm(np.subtract(sources[1].ImagePositionPatient, sources[0].ImagePositionPatient))
        )
    rows, columns = (float(v) for v in sources[0].PixelSpacing)
    return rows * columns * thickness / 1000


def seg_writer(classes: np.ndarray, series: Series, volumes_ml: dict[str, float]):  # noqa: ANN201
    """Writes the SEG of ``classes`` (``segmentation``) to the path it is given."""
    seg = segmentation(classes, series, volumes_ml)
    return lambda path: seg.save_as(Path(path))
