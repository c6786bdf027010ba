"""Boxes, margins and voxel volumes: the small geometry every stage shares.

A box is a tuple of slices, one per axis, as ``scipy.ndimage.find_objects`` gives it, so that
``array[box]`` is the part of an array it holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

Box = tuple[slice, ...]


def bounding_box(mask: np.ndarray) -> Box | None:
    """The smallest box that holds every True voxel of ``mask``; None when there is none."""
    found = ndimage.find_objects(np.asarray(mask, bool).view(np.uint8))
    return found[0] if found else None


def widened_span(start: int, stop: int, size: int, margin: int, multiple: int = 1) -> slice:
    """[start, stop) widened by ``margin`` on either side and on to a multiple of ``multiple`` (so
    that a network of that stride takes it whole), within [0, size)."""
    start, stop = max(start - margin, 0), min(stop + margin, size)
    length = min(-(-(stop - start) // multiple) * multiple, size)
    stop = min(start + length, size)
    return slice(stop - length, stop)


def widened(box: Box, shape: Sequence[int], margin: int, multiple: int = 1) -> Box:
    """``box`` ``margin`` voxels wider on every side and on to a multiple of ``multiple`` along each
    axis (``widened_span``), within ``shape``."""
    return tuple(
        widened_span(piece.start, piece.stop, size, margin, multiple)
        for piece, size in zip(box, shape, strict=True)
    )


def box_around(mask: np.ndarray, margin: int, multiple: int = 1) -> Box:
    """The box of ``mask``'s True voxels (there must be some), ``widened`` within the mask."""
    return widened(bounding_box(mask), mask.shape, margin, multiple)


def shifted_into(inner: Box, outer: Box) -> Box:
    """``inner`` (a box of the whole array, inside ``outer``) as a box of ``array[outer]``."""
    return tuple(slice(a.start - b.start, a.stop - b.start) for a, b in zip(inner, outer, strict=True))


def voxel_ml(grid: np.ndarray | Sequence[float]) -> float:
    """The volume of one voxel in mL, of a grid given by its affine (4, 4) (any shear or rotation:
    the determinant) or by its voxel size in mm (3,)."""
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim == 2:
        return float(abs(np.linalg.det(grid[:3, :3]))) / 1000
    return float(np.prod(grid)) / 1000
