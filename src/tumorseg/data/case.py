"""One patient in memory, as every reader returns it and the store consumes it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tumorseg.errors import TumorsegError, short
from tumorseg.labels import to_internal

#: Modality order used everywhere: image channel i is MODALITIES[i].
MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
#: The largest grid read: a file declaring more is refused from its header, before any voxel is
#: decoded (BraTS volumes are 240 x 240 x 155; clinical ones stay well under 1024 a side).
MAX_SIDE = 1024
MAX_VOXELS = 2**26


@dataclass
class Case:
    """A patient's co-registered modalities and (optionally) its label map.

    ``image`` is (4, X, Y, Z) in the source's intensities and array order, channels in
    ``MODALITIES`` order; ``label`` is (X, Y, Z) internal classes 0..3 (see ``tumorseg.labels``).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    sources: list[str] = field(default_factory=list)
    label_convention: str = "brats"
    absent: tuple[str, ...] = ()  # sequences not acquired: zero channels of ``image``

    @property
    def spacing(self) -> tuple[float, float, float]:
        return voxel_spacing(self.affine)

    def source(self, modality: str) -> str:
        """The file ``modality`` was read from, for messages: ``sources`` lists the files of the
        sequences given, in ``MODALITIES`` order (then the label map); a Kaggle case has one
        pattern for all."""
        given = [m for m in MODALITIES if m not in self.absent]
        if modality in given and len(self.sources) >= len(given):
            return self.sources[given.index(modality)]
        return self.sources[0] if self.sources else self.case_id


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along the array axes, from the affine's column norms."""
    return tuple(float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def brats_affine(shape: tuple[int, ...]) -> np.ndarray:
    """The grid of the BraTS files: 1 mm voxels, x and y flipped (LPS), as their affines hold."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = shape[1] - 1
    return affine


def check_grid(shape: tuple[int, ...], where: str, declares: str = "declares") -> None:
    """Refuse a declared grid that is not 3D or larger than any brain scan, from its shape alone."""
    if len(shape) != 3:
        raise TumorsegError(f"{where}: expected a 3D volume, got shape {short(shape)}")
    if min(shape) < 1 or max(shape) > MAX_SIDE or int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise TumorsegError(
            f"{where}: {declares} a grid of {' x '.join(map(str, shape))} voxels; "
            f"tumorseg reads up to {MAX_SIDE} a side and {MAX_VOXELS:,} in all"
        )


def check_real_numbers(dtype: np.dtype, where: str) -> None:
    """Refuse values that are not plain real numbers (text, records, complex, ...), from the
    declared type alone: a file declares the size of each value, as it does its shape."""
    if dtype.fields is not None or dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise TumorsegError(f"{where}: values of type {dtype} are not supported (expected real numbers)")


def check_affine(affine: np.ndarray, where: str) -> None:
    """Refuse an affine that places no voxel in space: non-finite, or with a zero-size axis."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or min(voxel_spacing(affine)) <= 0:
        raise TumorsegError(f"{where}: its affine is not a valid voxel-to-world transform")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise TumorsegError(f"{where}: its affine is singular (its axes do not span space)")


def check_case_id(case_id: str, where: str) -> str:
    """A case id names files and HDF5 groups: printable, no path separators, not hidden."""
    if (
        not case_id
        or case_id.startswith(".")
        or "/" in case_id
        or "\\" in case_id
        or not case_id.isprintable()
    ):
        raise TumorsegError(
            f"{where}: {short(case_id)} cannot be a case id (it names files and store groups)"
        )
    return case_id


def check_finite(array: np.ndarray, where: str) -> None:
    """Refuse NaN or infinite voxels, which would poison the normalization statistics."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise TumorsegError(f"{where}: {bad} voxels are NaN or infinite")


def labels_to_internal(values: np.ndarray, convention: str, where: str) -> np.ndarray:
    """Convert a BraTS label map to internal classes, naming the file when values are wrong."""
    check_finite(values, where)
    if np.issubdtype(values.dtype, np.floating) and not np.array_equal(values, np.round(values)):
        raise TumorsegError(f"{where}: label map holds non-integer values")
    try:
        return to_internal(values, convention)
    except ValueError as err:
        raise TumorsegError(f"{where}: {err}") from err
