"""A label map as a DICOM Segmentation (SEG) that references the series it was drawn on, so that
a PACS, OHIF or 3D Slicer shows it over the patient's own images, and its volumes as a DICOM
Structured Report of measurements (TID 1500) that references the SEG (``highdicom``).

One segment per tumor class, named and colored as the viewer shows them, each coded with SNOMED CT
(necrosis, edema, neoplasm), the algorithm named (tumorseg, automatic). The volumes of WT, TC and
ET go into the SEG's content description, and each segment's label carries its volume; the report
holds each segment's volume as a coded measurement. Frames without any label are left out
(highdicom's default), and every frame points to the source image it lies on. UIDs derive from the
source series and the labels, so the same result gives the same SEG and report.
"""

from __future__ import annotations

import hashlib
import warnings
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
#: The SEG's series description and number, and the report's.
DESCRIPTION = "tumorseg BraTS segmentation"
SERIES_NUMBER = 9901
REPORT_DESCRIPTION = "tumorseg tumor volumes"
REPORT_SERIES_NUMBER = 9902
#: The procedure the report measures (LOINC 24590-2).
MR_BRAIN = ("24590-2", "LN", "MR Brain")


def dicom_writers(classes: np.ndarray, series: Series, volumes_ml: dict[str, float | None]) -> tuple:
    """Writers of the SEG of ``classes`` (``segmentation``) and of its measurement report; a region
    whose volume is None is one the case's sequences cannot show."""
    from pydicom import dcmread  # imported when DICOM is written

    sources = [dcmread(path, stop_before_pixels=True) for path in series.files]
    with warnings.catch_warnings():  # the patient's name is copied as the scanner wrote it, "HFS" too
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = segmentation(classes, series, sources, volumes_ml)
        report = measurement_report(seg, series, classes, voxel_ml(sources))
    return (lambda path: seg.save_as(Path(path))), (lambda path: report.save_as(Path(path)))


def segmentation(classes: np.ndarray, series: Series, sources: list, volumes_ml: dict[str, float | None]):  # noqa: ANN201 (highdicom's)
    """The SEG of ``classes`` (X, Y, Z internal classes on the grid SimpleITK reads ``series`` onto:
    X along the columns, Y along the rows, Z along the files in ``series.files`` order, whose
    headers are ``sources``)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    frames = np.ascontiguousarray(classes.transpose(2, 1, 0)).astype(np.uint8)  # (slices, rows, columns)
    if frames.shape != (len(sources), int(sources[0].Rows), int(sources[0].Columns)):
        raise ValueError(f"labels of shape {classes.shape} do not lie on the series {series.folder}")
    algorithm = hd.AlgorithmIdentificationSequence(
        name="tumorseg", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    voxel = voxel_ml(sources)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"{label} ({np.count_nonzero(classes == number) * voxel:.2f} mL)"[:64],
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
    return hd.seg.Segmentation(
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
        content_description=" ".join(
            f"{r} not shown" if volumes_ml[r] is None else f"{r} {volumes_ml[r]:.1f} mL"
            for r in ("WT", "TC", "ET")
        )[:64],
        content_label="TUMORSEG",
        series_description=DESCRIPTION,
    )


def measurement_report(seg, series: Series, classes: np.ndarray, voxel: float):  # noqa: ANN001, ANN201 (highdicom's)
    """The TID 1500 report of a SEG (``segmentation``): per segment, its volume in cm3 (= mL),
    tracked by the segment's own tracking UID and referencing it; the device and algorithm named."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    algorithm = hd.sr.AlgorithmIdentification(name="tumorseg", version=__version__)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=make_uid("tumorseg", __version__), name="tumorseg", model_name="tumorseg"
        ),
    )
    groups = [
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=item.TrackingUID, identifier=item.TrackingID),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID,
                sop_instance_uid=seg.SOPInstanceUID,
                segment_number=int(item.SegmentNumber),
                source_series=hd.sr.SourceSeriesForSegmentation(series.uid),
            ),
            finding_type=item.SegmentedPropertyTypeCodeSequence[0],
            algorithm_id=algorithm,
            measurements=[
                hd.sr.Measurement(
                    name=codes.SCT.Volume,
                    value=round(float(np.count_nonzero(classes == int(item.SegmentNumber)) * voxel), 4),
                    unit=codes.UCUM.CubicCentimeter,
                    algorithm_id=algorithm,
                )
            ],
        )
        for item in seg.SegmentSequence
    ]
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=Code(*MR_BRAIN),
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[seg],
        content=content,
        series_instance_uid=make_uid(seg.SOPInstanceUID, "report", "series"),
        series_number=REPORT_SERIES_NUMBER,
        sop_instance_uid=make_uid(seg.SOPInstanceUID, "report", "instance"),
        instance_number=1,
        manufacturer="tumorseg",
        series_description=REPORT_DESCRIPTION,
    )


def voxel_ml(sources: list) -> float:
    """The volume of one voxel of a series (mL): pixel spacing times the distance between slices."""
    if len(sources) < 2:
        thickness = float(getattr(sources[0], "SliceThickness", 1.0))
    else:
        between = np.subtract(sources[1].ImagePositionPatient, sources[0].ImagePositionPatient)
        thickness = float(np.linalg.norm(between))
    rows, columns = (float(v) for v in sources[0].PixelSpacing)
    return rows * columns * thickness / 1000
