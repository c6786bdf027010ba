"""The tumorseg HDF5 store: every case cropped to its brain, one chunk per axial slice.

Layout (format version 1)::

    /                      attrs: format, format_version, modalities, class_names, ...
    /cases/<case_id>/image         (Z, 4, H, W) int16, chunk (1, 4, H, W), Blosc LZ4 + shuffle
    /cases/<case_id>/label         (Z, H, W) uint8 internal classes 0..3 (absent if unlabeled)
    /cases/<case_id>/label_counts  (Z, 4) int64 voxels per class per slice
                                   attrs: sources, affine, spacing, original_shape, bbox,
                                   intensity_scale, norm_mean, norm_std, label_convention

Z, H, W run along the source array's axes 3, 1, 2 (NIfTI's k, i, j), cropped to ``bbox``.
Intensities are kept as integers (the BraTS files are int16, so nothing is lost) and
normalized when read: ``(v - norm_mean) / norm_std`` per modality for v != 0, and 0 where
v == 0 (outside the brain). Sources that are not int16-exact (Kaggle floats) are stored as
``round(v * intensity_scale)``; z-scores do not change under that scaling.

A store is replaced atomically: ``prepare`` writes a temporary file beside it and renames it
over the old one only after every case is written, so a killed run leaves the old store.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
from tqdm import tqdm

from tumorseg import __version__
from tumorseg.data import brats, kaggle
from tumorseg.data.case import MODALITIES, Case
from tumorseg.errors import TumorsegError
from tumorseg.labels import BRATS_VALUES, CLASS_NAMES, NUM_CLASSES

FORMAT = "tumorseg-store"
FORMAT_VERSION = 1
# Chosen by measurement (README, "Store format"): smaller and faster to read than gzip or lzf.
CODEC = hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)
INT16_MAX = np.iinfo(np.int16).max


@dataclass
class Source:
    """A case found on disk and not yet read: ``load`` reads and checks it."""

    case_id: str
    where: str
    load: Callable[[], Case]


def discover(
    paths: list[Path], require_label: bool = True, skip_invalid: bool = False
) -> tuple[list[Source], list[tuple[str, str]]]:
    """Find the cases under each path: a case folder, a folder of them, or a Kaggle folder.

    Returns the sources and, when ``skip_invalid``, the (place, problem) of folders skipped.
    """
    sources: list[Source] = []
    invalid: list[tuple[str, str]] = []
    for path in paths:
        if not path.exists():
            raise TumorsegError(f"{path}: does not exist")
        if not path.is_dir():
            raise TumorsegError(f"{path}: expected a case folder, a folder of cases or a Kaggle folder")
        if kaggle.is_kaggle_folder(path):
            volumes = kaggle.find_volumes(path)
            kaggle.check_meta(path, volumes)
            for number, slices in volumes.items():
                load = lambda number=number, slices=slices: kaggle.read_volume(number, slices)  # noqa: E731
                sources.append(Source(f"volume_{number}", f"{path}/volume_{number}_slice_*.h5", load))
            continue
        folders = brats.find_case_folders(path)
        if not folders:
            raise TumorsegError(f"{path}: no BraTS case folders or Kaggle slice files found")
        for folder in folders:
            try:
                files = brats.find_case_files(folder, require_label)
            except TumorsegError as err:
                if not skip_invalid:
                    raise
                invalid.append((str(folder), str(err)))
                continue
            sources.append(Source(files.case_id, str(folder), lambda f=files: brats.read_case(f)))
    return sources, invalid


@dataclass
class EncodedCase:
    """A case as the store holds it (see the module docstring)."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    attrs: dict


def bounding_box(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) along each axis of the True voxels of a 3D mask; [] when there are none."""
    bbox = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return []
        bbox.append((int(hits[0]), int(hits[-1]) + 1))
    return bbox


def to_int16(volume: np.ndarray) -> tuple[np.ndarray, float]:
    """Store intensities as int16: exactly when they are int16-exact, else scaled to fit."""
    lo, hi = volume.min(), volume.max()
    exact = np.issubdtype(volume.dtype, np.integer) or np.array_equal(volume, np.round(volume))
    if exact and lo >= -INT16_MAX - 1 and hi <= INT16_MAX:
        return volume.astype(np.int16), 1.0
    peak = float(max(abs(lo), abs(hi)))
    scale = INT16_MAX / peak
    return np.round(volume.astype(np.float64) * scale).astype(np.int16), scale


def encode(case: Case) -> EncodedCase:
    """Crop to the brain, make int16, compute the z-score statistics of each modality.

    The crop keeps every voxel that is non-zero in any modality or labeled as tumor, so
    nothing but background is ever cut away.
    """
    where = case.sources[0] if case.sources else case.case_id
    if "/" in case.case_id or not case.case_id:
        raise TumorsegError(f"{where}: case id {case.case_id!r} cannot name an HDF5 group")
    keep = (case.image != 0).any(axis=0)
    if case.label is not None:
        keep |= case.label > 0
    bbox = bounding_box(keep)
    if not (case.image != 0).any():
        raise TumorsegError(f"{where}: every voxel of every modality is zero")
    crop = tuple(slice(a, b) for a, b in bbox)
    stored, scales, means, stds = [], [], [], []
    for modality, volume in zip(MODALITIES, case.image, strict=True):
        values, scale = to_int16(volume[crop])
        brain = values[values != 0].astype(np.float64)
        if brain.size < 2 or brain.std() == 0:
            raise TumorsegError(f"{where}: modality {modality} is empty or constant")
        stored.append(values)
        scales.append(scale)
        means.append(brain.mean())
        stds.append(brain.std())
    image = np.ascontiguousarray(np.moveaxis(np.stack(stored), 3, 0))  # (Z, 4, H, W)
    label = None
    counts = np.zeros((image.shape[0], NUM_CLASSES), dtype=np.int64)
    if case.label is not None:
        label = np.ascontiguousarray(np.moveaxis(case.label[crop], 2, 0))
        flat = label.reshape(label.shape[0], -1).astype(np.int64)
        flat += np.arange(label.shape[0])[:, None] * NUM_CLASSES
        counts = np.bincount(flat.ravel(), minlength=counts.size).reshape(counts.shape)
    attrs = {
        "case_id": case.case_id,
        "sources": json.dumps(case.sources),
        "affine": case.affine,
        "spacing": np.asarray(case.spacing),
        "original_shape": np.asarray(case.image.shape[1:]),
        "bbox": np.asarray(bbox),
        "intensity_scale": np.asarray(scales),
        "norm_mean": np.asarray(means),
        "norm_std": np.asarray(stds),
        "label_convention": case.label_convention,
        "has_label": label is not None,
        "label_counts": counts,
    }
    return EncodedCase(case.case_id, image, label, attrs)


def write_case(group: h5py.Group, encoded: EncodedCase) -> None:
    attrs = dict(encoded.attrs)
    counts = attrs.pop("label_counts")
    node = group.create_group(encoded.case_id)
    node.create_dataset("image", data=encoded.image, chunks=(1, *encoded.image.shape[1:]), **CODEC)
    if encoded.label is not None:
        node.create_dataset("label", data=encoded.label, chunks=(1, *encoded.label.shape[1:]), **CODEC)
    node.create_dataset("label_counts", data=counts)
    node.attrs.update(attrs)


def zscore_coefficients(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) per modality, shaped to broadcast over axis -3: z = v * scale + offset."""
    scale = (1 / np.asarray(std, dtype=np.float64)).astype(np.float32).reshape(-1, 1, 1)
    offset = (-np.asarray(mean, dtype=np.float64) / std).astype(np.float32).reshape(-1, 1, 1)
    return scale, offset


def normalize(stored: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """z-score each modality (axis -3) of stored intensities; zero (outside the brain) stays zero."""
    out = stored * scale
    out += offset
    out *= stored != 0
    return out


def _open(path: Path) -> h5py.File:
    """Open a store read-only, with a clear message when it is not one this version reads."""
    if not path.exists():
        raise TumorsegError(f"{path}: store does not exist")
    try:
        # No chunk cache: slices are read in random order, each chunk once; a cache per dataset
        # would only make memory grow with the number of cases touched.
        handle = h5py.File(path, "r", rdcc_nbytes=0)
    except OSError as err:
        raise TumorsegError(f"{path}: not an HDF5 file ({err})") from None
    if handle.attrs.get("format") != FORMAT or "cases" not in handle:
        handle.close()
        raise TumorsegError(f"{path}: not a tumorseg store (make one with `tumorseg prepare`)")
    version = int(handle.attrs.get("format_version", 0))
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

    def info(self, case_id: str) -> CaseInfo:
        if case_id not in self._info:
            if case_id not in self._cases:
                raise TumorsegError(f"{self.path}: no case {case_id!r}")
            node = self._cases[case_id]
            attrs = dict(node.attrs)
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

    def read_slice(self, case_id: str, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """One normalized axial slice (4, H, W) float32 and its label (H, W) uint8 or None."""
        if case_id not in self._datasets:
            self.info(case_id)
        image, label, scale, offset = self._datasets[case_id]
        return normalize(image[index], scale, offset), (None if label is None else label[index])

    def read_volume(self, case_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        """A whole normalized case (Z, 4, H, W) float32 and its label (Z, H, W) or None."""
        if case_id not in self._datasets:
            self.info(case_id)
        image, label, scale, offset = self._datasets[case_id]
        return normalize(image[()], scale, offset), (None if label is None else label[()])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def store_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the store so two writers never race."""
    lock_path = path.parent / f".{path.name}.lock"
    try:
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as err:
        raise TumorsegError(f"{path.parent}: cannot write here ({err.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TumorsegError(f"{path}: another tumorseg prepare is writing this store") from None
        yield
    finally:
        os.close(fd)


@dataclass
class PrepareResult:
    out: Path
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)


def _write_root_attrs(handle: h5py.File) -> None:
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


def prepare_store(
    paths: list[Path],
    out: Path,
    *,
    existing: str = "error",
    skip_invalid: bool = False,
    require_label: bool = True,
    progress: bool | None = None,
) -> PrepareResult:
    """Add the cases under ``paths`` to the store ``out`` (created when missing).

    ``existing`` says what to do with a case the store already holds: "error", "skip" or
    "replace". Bad cases stop the run unless ``skip_invalid``; either way ``out`` is only ever
    replaced whole, after every case was written.
    """
    if existing not in ("error", "skip", "replace"):
        raise ValueError(f"existing must be error, skip or replace, not {existing!r}")
    result = PrepareResult(out)
    sources, result.invalid = discover(paths, require_label, skip_invalid)
    seen: dict[str, str] = {}
    for source in sources:
        if source.case_id in seen:
            raise TumorsegError(f"{source.where}: case {source.case_id} also found at {seen[source.case_id]}")
        seen[source.case_id] = source.where
    if out.is_dir():
        raise TumorsegError(f"{out}: is a folder; give the store's file name, e.g. {out / 'store.h5'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with store_lock(out):
        old_ids: list[str] = []
        if out.exists():
            with Store(out) as old:
                old_ids = old.case_ids
        clash = [s.case_id for s in sources if s.case_id in old_ids]
        if clash and existing == "error":
            raise TumorsegError(
                f"{out}: already holds {len(clash)} of these cases ({', '.join(clash[:5])}"
                f"{', ...' if len(clash) > 5 else ''}); use --existing skip or --existing replace"
            )
        if existing == "skip":
            result.skipped_existing = clash
            sources = [s for s in sources if s.case_id not in old_ids]
        else:
            result.replaced = clash
        if not sources:
            if not old_ids:
                raise TumorsegError(f"{out}: no valid case to write")
            return result
        for stale in out.parent.glob(f".{out.name}.tmp-*"):
            stale.unlink()  # left by a killed run; we hold the lock, so nobody is writing it
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        try:
            with h5py.File(tmp, "w") as handle:
                _write_root_attrs(handle)
                cases = handle.create_group("cases")
                if old_ids:
                    with h5py.File(out, "r") as old:
                        for case_id in old_ids:
                            if case_id not in result.replaced:
                                old.copy(old["cases"][case_id], cases, name=case_id)
                bar = tqdm(
                    sources,
                    desc="prepare",
                    unit="case",
                    disable=None if progress is None else not progress,
                )
                for source in bar:
                    bar.set_postfix_str(source.case_id)
                    try:
                        encoded = encode(source.load())
                    except TumorsegError as err:
                        if not skip_invalid:
                            raise
                        result.invalid.append((source.where, str(err)))
                        continue
                    write_case(cases, encoded)
                    result.added.append(source.case_id)
                if not len(cases):
                    raise TumorsegError(f"{out}: no valid case to write")
            os.replace(tmp, out)
        except OSError as err:
            raise TumorsegError(f"{out}: could not write the store ({err})") from None
        finally:
            tmp.unlink(missing_ok=True)
    return result


def summarize(path: Path) -> dict:
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
