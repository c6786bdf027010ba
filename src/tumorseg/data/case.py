"""One patient in memory, as every reader returns it and the store consumes it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tumorseg.errors import TumorsegError
from tumorseg.labels import to_internal

#: Modality order used everywhere: image channel i is MODALITIES[i].
MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")


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

    @property
    def spacing(self) -> tuple[float, float, float]:
        return voxel_spacing(self.affine)


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along the array axes, from the affine's column norms."""
    return tuple(float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def brats_affine(shape: tuple[int, ...]) -> np.ndarray:
    """The grid of the BraTS files: 1 mm voxels, x and y flipped (LPS), as their affines hold."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = shape[1] - 1
    return affine


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
