"""The tumorseg HDF5 store: every case preprocessed, one chunk per axial slice, and its reader.

Layout (format version 1)::

    /                      attrs: format, format_version, modalities, class_names, ...
    /cases/<case_id>/image         (Z, 4, H, W) int16, chunk (1, 4, H, W), Blosc LZ4 + shuffle
    /cases/<case_id>/label         (Z, H, W) uint8 internal classes 0..3 (absent if unlabeled)
    /cases/<case_id>/label_counts  (Z, 4) int64 voxels per class per slice
                                   attrs: sources, affine, spacing, original_shape, bbox,
                                   intensity_scale, norm_mean, norm_std, label_convention

What a case holds is ``tumorseg.data.preprocess``'s result: turned to the BraTS orientation,
cropped to ``bbox``, Z, H, W along the oriented grid's axes 3, 1, 2; ``affine``, ``spacing`` and
``original_shape`` describe that whole grid. Intensities are integers, normalized when read:
``(v - norm_mean) / norm_std`` per modality for v != 0, and 0 where v == 0 (outside the brain).
Writing a whole store (atomically, under a lock) is ``tumorseg.data.prepare``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from tumorseg import __version__
from tumorseg.data.case import MAX_SIDE, MAX_VOXELS, MODALITIES
from tumorseg.data.preprocess import Preprocessed, differs, normalize, zscore_coefficients
from tumorseg.errors import TumorsegError, short
from tumorseg.geometry import voxel_ml
from tumorseg.labels import BRATS_VALUES, CLASS_NAMES, NUM_CLASSES

FORMAT = "tumorseg-store"
FORMAT_VERSION = 1
# Chosen by measurement (docs/design.md, "The HDF5 store"): smaller and faster to read than gzip or lzf.
CODEC = hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)


def write_root_attrs(handle: h5py.File) -> None:
    handle.attrs.update(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "modalities": json.dumps(MODALITIES),
            "class_names": json.dumps(CLASS_NAMES),
            "brats_values": json.dumps(BRATS_VALUES),
            "layout": "image (Z, 4, H, W) int16; normalized = (v - norm_mean) / norm_std, 0 where v == 0",
            "written_by": f"tumorseg {__version__}",
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )


def write_case(group: h5py.Group, case: Preprocessed) -> None:
    """Add one preprocessed case under ``group`` (the store's /cases)."""
    where = case.sources[0] if case.sources else case.case_id
    if "/" in case.case_id or not case.case_id:
        raise TumorsegError(f"{where}: case id {case.case_id!r} cannot name an HDF5 group")
    node = group.create_group(case.case_id)
    node.create_dataset("image", data=case.image, chunks=(1, *case.image.shape[1:]), **CODEC)
    if case.label is not None:
        node.create_dataset("label", data=case.label, chunks=(1, *case.label.shape[1:]), **CODEC)
    node.create_dataset("label_counts", data=case.label_counts)
    node.attrs.update(
        {
            "case_id": case.case_id,
            "sources": json.dumps(case.sources),
            "affine": case.affine,
            "spacing": np.asarray(case.spacing),
            "original_shape": np.asarray(case.shape),
            "bbox": case.bbox,
            "intensity_scale": case.intensity_scale,
            "norm_mean": case.norm_mean,
            "norm_std": case.norm_std,
            "label_convention": case.label_convention,
            "has_label": case.label is not None,
        }
    )


def _open(path: Path) -> h5py.File:
    """Open a store read-only, with a clear message when it is not one this version reads."""
    if not path.exists():
        raise TumorsegError(f"{path}: store does not exist")
    try:
        # No chunk cache: slices are read in random order, each chunk once; a cache per dataset
        # would only make memory grow with the number of cases touched.
        handle = h5py.File(path, "r", rdcc_nbytes=0)
    except OSError as err:
        raise TumorsegError(f"{path}: not an HDF5 file ({err})") from err
    if handle.attrs.get("format") != FORMAT or "cases" not in handle:
        handle.close()
        raise TumorsegError(f"{path}: not a tumorseg store (make one with `tumorseg prepare`)")
    version = handle.attrs.get("format_version")
    if not isinstance(version, int | np.integer):
        handle.close()
        raise TumorsegError(f"{path}: damaged store (no format_version); prepare it again")
    if version > FORMAT_VERSION:
        handle.close()
        raise TumorsegError(
            f"{path}: store format {version} is newer than this tumorseg reads "
            f"({FORMAT_VERSION}); upgrade tumorseg"
        )
    return handle


@dataclass
class CaseInfo:
    case_id: str
    num_slices: int
    shape: tuple[int, ...]
    has_label: bool
    label_counts: np.ndarray
    attrs: dict = field(repr=False)

    @property
    def tumor_slices(self) -> np.ndarray:
        """Indices of the stored slices that hold any tumor voxel."""
        return np.flatnonzero(self.tumor_voxels)

    @property
    def tumor_voxels(self) -> np.ndarray:
        """Tumor voxels (any class but background) in each stored slice."""
        return self.label_counts[:, 1:].sum(axis=1)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the stored axes (Z, H, W)."""
        x, y, z = (float(s) for s in self.attrs["spacing"])
        return z, x, y

    @property
    def voxel_ml(self) -> float:
        """The volume of one voxel, in mL."""
        return voxel_ml(self.attrs["spacing"])

    @property
    def outside_voxels(self) -> int:
        """Voxels of the case's whole grid that lie outside the stored crop (all background)."""
        z, _, h, w = self.shape
        return int(np.prod(self.attrs["original_shape"])) - z * h * w


REQUIRED_ATTRS = ("affine", "spacing", "original_shape", "bbox", "norm_mean", "norm_std", "has_label")


def case_problem(node: h5py.Group, attrs: dict) -> str | None:
    """What is wrong with a stored case, from its metadata alone (nothing is read), or None."""
    missing = [key for key in REQUIRED_ATTRS if key not in attrs]
    if missing:
        return f"no {', '.join(missing)}"
    return datasets_problem(node, bool(attrs["has_label"])) or attrs_problem(attrs)


def datasets_problem(node: h5py.Group, has_label: bool) -> str | None:
    """Shapes and value types: what reading a slice would allocate is declared by both."""
    image, label, counts = node.get("image"), node.get("label"), node.get("label_counts")
    if not isinstance(image, h5py.Dataset) or image.ndim != 4 or image.shape[1] != len(MODALITIES):
        return "image is not a (Z, 4, H, W) dataset"
    z, _, h, w = image.shape
    if max(z, h, w) > MAX_SIDE or z * h * w > MAX_VOXELS:
        return f"image shape {image.shape} is larger than tumorseg reads"
    if image.dtype != np.int16:
        return f"image holds {image.dtype}, not int16"
    if has_label and (
        not isinstance(label, h5py.Dataset) or label.shape != (z, h, w) or label.dtype != np.uint8
    ):
        return "label is not a uint8 dataset the image's size"
    if (
        not isinstance(counts, h5py.Dataset)
        or counts.shape != (z, NUM_CLASSES)
        or counts.dtype.kind not in "iu"
    ):
        return "label_counts is not an integer dataset that matches the image"
    return None


def attrs_problem(attrs: dict) -> str | None:
    spacing, affine = np.asarray(attrs["spacing"], dtype=float), np.asarray(attrs["affine"], dtype=float)
    if spacing.shape != (3,) or not np.isfinite(spacing).all() or (spacing <= 0).any():
        return f"spacing {short(spacing.tolist())}"
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        return "affine is not a finite 4 x 4 matrix"
    stats = (np.asarray(attrs["norm_mean"], dtype=float), np.asarray(attrs["norm_std"], dtype=float))
    if any(v.shape != (len(MODALITIES),) or not np.isfinite(v).all() for v in stats) or (stats[1] <= 0).any():
        return "z-score statistics"
    if np.asarray(attrs["original_shape"]).shape != (3,) or np.asarray(attrs["bbox"]).shape != (3, 2):
        return "original_shape or bbox"
    return None


def format_spacing(spacing: tuple[float, ...] | list[float]) -> str:
    return " x ".join(f"{float(s):g}" for s in spacing) + " mm"


def check_spacing(spacing: tuple[float, ...], first: tuple[str, tuple[float, ...]], where: str) -> None:
    """Refuse a voxel size other than the store's ``first`` (case id, size): a network learns
    one scale, and predict resamples new cases to the one its model learned."""
    case_id, expected = first
    if differs(spacing, expected):
        raise TumorsegError(
            f"{where}: voxel size {format_spacing(spacing)} differs from {case_id}'s "
            f"{format_spacing(expected)}; a store holds one voxel size (resample the case, or "
            "prepare it into a store of its own)"
        )


class Store:
    """Read access to a store; open one per process (HDF5 handles do not survive fork)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = _open(self.path)
        self._cases = self._file["cases"]
        self._info: dict[str, CaseInfo] = {}
        self._datasets: dict[str, tuple] = {}  # case -> (image, label, z-score scale, offset)

    @property
    def case_ids(self) -> list[str]:
        return list(self._cases.keys())

    @property
    def labeled_case_ids(self) -> list[str]:
        return [c for c in self.case_ids if self.info(c).has_label]

    @property
    def attrs(self) -> dict:
        return dict(self._file.attrs)

    def spacing(self, case_ids: list[str]) -> list[float]:
        """The voxel size (X, Y, Z mm, along the training axes) the cases share."""
        first = (case_ids[0], tuple(float(v) for v in self.info(case_ids[0]).attrs["spacing"]))
        for case_id in case_ids[1:]:
            check_spacing(tuple(self.info(case_id).attrs["spacing"]), first, f"{self.path} ({case_id})")
        return list(first[1])

    def info(self, case_id: str) -> CaseInfo:
        if case_id not in self._info:
            if case_id not in self._cases:
                raise TumorsegError(f"{self.path}: no case {case_id!r}")
            node = self._cases[case_id]
            attrs = dict(node.attrs)
            problem = case_problem(node, attrs)
            if problem:
                raise TumorsegError(f"{self.path}: case {case_id!r} is damaged ({problem}); prepare it again")
            self._info[case_id] = CaseInfo(
                case_id=case_id,
                num_slices=node["image"].shape[0],
                shape=node["image"].shape,
                has_label=bool(attrs["has_label"]),
                label_counts=node["label_counts"][()],
                attrs=attrs,
            )
            label = node["label"] if attrs["has_label"] else None
            coefficients = zscore_coefficients(attrs["norm_mean"], attrs["norm_std"])
            self._datasets[case_id] = (node["image"], label, *coefficients)
        return self._info[case_id]

    def _handles(self, case_id: str) -> tuple:
        """(image, label, z-score scale, offset) of a case, opened (and checked) on first use."""
        if case_id not in self._datasets:
            self.info(case_id)
        return self._datasets[case_id]

    def read_slice(self, case_id: str, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """One normalized axial slice (4, H, W) float32 and its label (H, W) uint8 or None."""
        image, label, scale, offset = self._handles(case_id)
        return normalize(image[index], scale, offset), (None if label is None else label[index])

    def read_slices(self, case_id: str, indices: np.ndarray) -> np.ndarray:
        """Normalized axial slices (len(indices), 4, H, W) float32, in the order given (repeats
        allowed): one read of the range they span."""
        image, _, scale, offset = self._handles(case_id)
        low, high = int(np.min(indices)), int(np.max(indices))
        return normalize(image[low : high + 1], scale, offset)[np.asarray(indices) - low]

    def read_box(self, case_id: str, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        """A normalized box (Z, 4, H, W) float32 of a labeled case, and its label (Z, H, W): the
        slices it spans are read, the rest of them is never normalized."""
        image, label, scale, offset = self._handles(case_id)
        z, y, x = box
        return normalize(image[z, :, y, x], scale, offset), label[z, y, x]

    def read_label(self, case_id: str) -> np.ndarray:
        """The label map (Z, H, W) of a labeled case."""
        return self._handles(case_id)[1][()]

    def read_volume(self, case_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        """A whole normalized case (Z, 4, H, W) float32 and its label (Z, H, W) or None."""
        image, label, scale, offset = self._handles(case_id)
        return normalize(image[()], scale, offset), (None if label is None else label[()])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe(path: Path) -> dict:
    """What ``tumorseg inspect`` prints: cases, slices, label volumes, size on disk."""
    with Store(path) as store:
        rows = []
        for case_id in store.case_ids:
            info = store.info(case_id)
            rows.append(
                {
                    "case_id": case_id,
                    "slices": info.num_slices,
                    "shape": list(info.shape),
                    "tumor_slices": int(info.tumor_slices.size),
                    "voxels": info.label_counts.sum(axis=0).tolist(),
                    "labeled": info.has_label,
                }
            )
        attrs = store.attrs
    return {
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "format_version": int(attrs["format_version"]),
        "written_by": str(attrs.get("written_by", "")),
        "cases": rows,
        "slices": sum(r["slices"] for r in rows),
        "tumor_slices": sum(r["tumor_slices"] for r in rows),
        "voxels": np.sum([r["voxels"] for r in rows], axis=0).tolist() if rows else [0] * 4,
    }


class ProcessStore:
    """A store opened on first use in each process, since DataLoader workers cannot share an HDF5
    handle: calling it gives this process's open ``Store``."""

    def __init__(self, path: Path):
        self.path = path
        self._store: Store | None = None
        self._pid = -1

    def __call__(self) -> Store:
        if self._store is None or self._pid != os.getpid():
            self._store = Store(self.path)
            self._pid = os.getpid()
        return self._store
