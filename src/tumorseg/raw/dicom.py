"""A DICOM study's series: found, named by sequence from their headers, and read as volumes.

GDCM (inside SimpleITK) groups the files of a folder by series and orders each series' slices by
their position along the slice normal; the image's direction and origin come from the headers
(Image Orientation and Position (Patient)), so a head scanned prone lands where the same head
scanned supine does, in patient coordinates.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from tumorseg.data.case import MODALITIES, check_grid
from tumorseg.errors import TumorsegError

#: The deepest folder searched below a study's root (study / patient / date / series).
MAX_DEPTH = 4
#: A series with fewer slices than this is a localizer or a single image, never a sequence.
MIN_SLICES = 10
#: Header fields read for each series (DICOM tags as GDCM names them).
TAGS = {
    "description": "0008|103e",
    "sequence": "0018|0024",
    "contrast": "0018|0010",
    "patient": "0010|0020",
    "modality": "0008|0060",
    "image_type": "0008|0008",
    "position": "0018|5100",
}
#: Words of a series description or sequence name that name a sequence, tried in this order: a
#: FLAIR is a T2-weighted inversion recovery, and Siemens names it "tir" or "tirm".
_FLAIR = re.compile(r"flair|\btirm?\b|\*tir|dark.?fluid")
_T2 = re.compile(r"t2|\*tse|\*fse")
_T1 = re.compile(r"t1|mprage|\bspgr\b|\bbravo\b|\*fl3d|\*fl2d|\btfe\b")
_CONTRAST = re.compile(r"\+ ?c\b|\bgd\b|gad|contrast|\bpost\b|\bce\b|t1ce|t1c\b|\+gd|kontrast")
_NOT_A_SEQUENCE = re.compile(r"localizer|scout|survey|\bloc\b|mip|dwi|adc|trace|perf|swi|dti")


@dataclass
class Series:
    """One series of a study, as its first file's header describes it."""

    uid: str
    folder: Path
    files: list[str]
    header: dict[str, str]

    @property
    def description(self) -> str:
        return self.header["description"] or self.header["sequence"] or self.uid

    @property
    def where(self) -> str:
        """The series as messages name it: its folder and description."""
        return f"{self.folder} ({self.description})"

    def sequence(self) -> str | None:
        """Which of FLAIR, T1, T1ce, T2 this series is (None: none of them, or it cannot tell)."""
        text = f"{self.header['description']} {self.header['sequence']}".lower()
        if (
            self.header["modality"] not in ("", "MR")
            or len(self.files) < MIN_SLICES
            or "LOCALIZER" in self.header["image_type"].upper()
            or _NOT_A_SEQUENCE.search(text)
        ):
            return None
        if _FLAIR.search(text):
            return "flair"
        if _T2.search(text):
            return "t2"
        if _T1.search(text):
            return "t1ce" if self.header["contrast"] or _CONTRAST.search(text) else "t1"
        return None


def is_dicom(path: Path) -> bool:
    """Whether ``path`` is a DICOM file (the 'DICM' mark after its 128-byte preamble)."""
    try:
        with open(path, "rb") as file:
            return file.read(132)[128:] == b"DICM"
    except OSError:
        return False


def holds_dicom(folder: Path) -> bool:
    """Whether a DICOM file lies in ``folder`` or below it (to MAX_DEPTH)."""
    return any(any(is_dicom(Path(root) / name) for name in names) for root, names in _walk(folder))


def _walk(folder: Path):  # noqa: ANN202 (pairs of a folder and its file names)
    top = len(Path(folder).parts)
    for root, dirs, names in os.walk(folder):
        if len(Path(root).parts) - top >= MAX_DEPTH:
            dirs.clear()
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield root, sorted(n for n in names if not n.startswith("."))


def find_series(folder: Path) -> list[Series]:
    """Every series under ``folder``; a study of several patients is refused."""
    found = all_series(folder)
    patients = sorted({s.header["patient"] for s in found})
    if len(patients) > 1:
        raise TumorsegError(
            f"{folder}: holds series of {len(patients)} patients ({', '.join(patients)}); "
            "give one patient's study"
        )
    return found


def all_series(folder: Path) -> list[Series]:
    """Every series under ``folder``, of any patient."""
    found = []
    for root, names in _walk(folder):
        if not names:
            continue
        try:  # GDCM reads every file's header here, and asserts on some it finds malformed
            series = {
                uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(root, uid))
                for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(root)
            }
        except RuntimeError as err:
            raise TumorsegError(f"{root}: a DICOM file here is malformed: {itk_message(err)}") from err
        for uid, files in series.items():
            found.append(Series(uid, Path(root), files, read_header(files[0])))
    if not found:
        raise TumorsegError(f"{folder}: no DICOM series found")
    return found


def study_folders(folder: Path) -> list[Path]:
    """The studies under ``folder``: itself when its series are one patient's, else each of its
    subfolders that holds DICOM files (a batch, one patient each)."""
    if len({s.header["patient"] for s in all_series(folder)}) == 1:
        return [folder]
    return [sub for sub in sorted(folder.iterdir()) if sub.is_dir() and holds_dicom(sub)]


def itk_message(err: RuntimeError) -> str:
    """What ITK says went wrong, on one line: its last line, without the class and address before it,
    files by their names (the message names the folder already), at most 160 characters."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    last = lines[-1] if lines else "unknown error"
    last = re.sub(r"^ITK ERROR: \w+\(0x[0-9a-f]+\): ", "", last)
    last = re.sub(r"(?:[A-Za-z]:)?[/\\]\S*[/\\]([^/\\\s]+)", r"\1", last)
    return last if len(last) <= 160 else last[:157] + "..."


def header(path: str) -> sitk.ImageFileReader:
    """A DICOM file's header read (GDCM), no pixel decoded; one line naming the file when it is none."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise TumorsegError(f"{path}: not a readable DICOM image: {itk_message(err)}") from err
    return reader


def read_header(path: str) -> dict[str, str]:
    reader = header(path)
    return {
        name: reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""
        for name, tag in TAGS.items()
    }


def choose(series: list[Series], where: Path) -> dict[str, Series]:
    """The series of each sequence; two candidates for one sequence are refused, naming both."""
    chosen: dict[str, Series] = {}
    for item in series:
        sequence = item.sequence()
        if sequence is None:
            continue
        if sequence in chosen:
            raise TumorsegError(
                f"{where}: two series look like {sequence.upper()} ({chosen[sequence].description!r} in "
                f"{chosen[sequence].folder}, {item.description!r} in {item.folder}); name one with "
                f"--{sequence} FOLDER"
            )
        chosen[sequence] = item
    if not chosen:
        names = "; ".join(f"{s.description!r} ({len(s.files)} images)" for s in series)
        raise TumorsegError(f"{where}: no series recognized as FLAIR, T1, T1ce or T2 among: {names}")
    return {m: chosen[m] for m in MODALITIES if m in chosen}


def table(series: list[Series], chosen: dict[str, Series]) -> str:
    """What was found and what was taken, one line a series."""
    taken = {item.uid: sequence for sequence, item in chosen.items()}
    lines = [f"{'sequence':<9} {'images':>6}  series"]
    for item in series:
        lines.append(f"{taken.get(item.uid, '-'):<9} {len(item.files):>6}  {item.description}")
    return "\n".join(lines)


def read_series(item: Series) -> sitk.Image:
    """A series' slices as one 3D float volume in patient coordinates."""
    check_grid(_declared_shape(item), f"{item.folder} ({item.description})")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(item.files)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise TumorsegError(
            f"{item.folder}: series {item.description!r} could not be read: {itk_message(err)}"
        ) from err
    return sitk.Cast(image, sitk.sitkFloat32)


def _declared_shape(item: Series) -> tuple[int, int, int]:
    """Columns x rows x slices, from every file's header, before any pixel is decoded: an image that
    declares another size than the first is refused by name (a decoder would size its buffer by
    what that header says)."""
    sizes = []
    for path in item.files:
        sizes.append(tuple(int(n) for n in header(path).GetSize()[:2]))
        if sizes[-1] != sizes[0]:
            raise TumorsegError(
                f"{path}: declares {sizes[-1][0]} x {sizes[-1][1]} pixels where the first image of "
                f"series {item.description!r} holds {sizes[0][0]} x {sizes[0][1]}"
            )
    return (*sizes[0], len(item.files))


def study(folder: Path) -> tuple[dict[str, sitk.Image], str, dict[str, Series]]:
    """The sequences of a DICOM study, the table of what was chosen, and the series each came from."""
    series = find_series(folder)
    chosen = choose(series, folder)
    volumes = {sequence: read_series(item) for sequence, item in chosen.items()}
    return volumes, table(series, chosen), chosen


#: The root of the UIDs tumorseg makes for series it writes (a UUID-derived root, ISO 2.25).
UID_ROOT = "2.25."


def make_uid(*parts: object) -> str:
    """A DICOM UID made from ``parts``: the same parts give the same UID."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return UID_ROOT + str(int.from_bytes(digest[:16], "big"))


def write_series(
    volume: sitk.Image, folder: Path, description: str, *, patient: str = "anonymous", contrast: str = ""
) -> None:
    """``volume`` as an MR series of one file a slice in ``folder``, with the fields that place and
    name it (position, orientation, description, patient, contrast agent): made-raw test studies."""
    folder.mkdir(parents=True, exist_ok=True)
    series = make_uid(patient, description, "series")
    direction = volume.GetDirection()
    volume = sitk.Cast(sitk.Clamp(volume, lowerBound=-32768, upperBound=32767), sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        piece = volume[:, :, k]
        tags = {
            "0008|0060": "MR",
            "0010|0020": patient,
            "0008|103e": description,
            "0018|0010": contrast,
            "0020|000d": make_uid(patient, "study"),
            "0020|000e": series,
            "0020|0052": make_uid(patient, "frame of reference"),  # one head, one patient space
            "0008|0018": f"{series}.{k + 1}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in volume.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*direction[0::3], *direction[1::3])),
            "0018|0050": f"{volume.GetSpacing()[2]:.4f}",
            "0018|0088": f"{volume.GetSpacing()[2]:.4f}",
            "0020|0011": str(int(series.rsplit(".", 1)[-1]) % 1000 + 1),  # series number
            "0020|0012": "1",  # acquisition number: one acquisition, which converters keep whole
            "0008|0008": "DERIVED\\SECONDARY",
            "0008|0070": "tumorseg",
            "0018|5100": "HFS",
            "0008|0020": "20000101",  # study, series and content dates and times: one for the series
            "0008|0030": "000000",
            "0008|0021": "20000101",
            "0008|0031": "000000",
            "0008|0023": "20000101",
            "0008|0033": "000000",
        }
        for tag, value in tags.items():
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{k + 1:04d}.dcm"))
        writer.Execute(piece)
