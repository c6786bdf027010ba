"""SimpleITK images and the arrays and affines the rest of tumorseg holds.

SimpleITK places voxels in LPS world coordinates and returns arrays as (Z, Y, X); nibabel places
them in RAS and indexes (X, Y, Z). Both read a NIfTI file's voxels in the same order, so the two
differ only by a transposition and the sign of the first two world axes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: The grid of BraTS images (and of the SRI24 atlas as BraTS ships it): 240 x 240 x 155 voxels of
#: 1 mm, axes along L, P and S, origin at (0, -239, 0) in LPS (``data.case.brats_affine`` in RAS).
BRATS_SHAPE = (240, 240, 155)
ATLAS = Path(__file__).with_name("atlas") / "sri24_t1_brain_brats_space.nii.gz"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def brats_grid() -> sitk.Image:
    """An empty image on the BraTS grid, for resampling onto it."""
    grid = sitk.Image(*BRATS_SHAPE, sitk.sitkUInt8)
    grid.SetOrigin((0.0, -(BRATS_SHAPE[1] - 1.0), 0.0))
    return grid


def atlas() -> sitk.Image:
    """The skull-stripped SRI24 T1 atlas on the BraTS grid (Rohlfing et al., Hum Brain Mapp 2010)."""
    image = sitk.ReadImage(str(ATLAS), sitk.sitkFloat32)
    if image.GetDimension() == 4:  # shipped as 240 x 240 x 155 x 1
        image = image[:, :, :, 0]
    # stored with another (equivalent) header: placed by world coordinates, it is the BraTS grid
    return sitk.Resample(image, brats_grid(), sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def affine(image: sitk.Image) -> np.ndarray:
    """The RAS voxel-to-world affine of ``image`` (nibabel's convention)."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    lps[:3, 3] = image.GetOrigin()
    return _LPS_TO_RAS @ lps


def array(image: sitk.Image) -> np.ndarray:
    """The voxels of ``image`` as an (X, Y, Z) array."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def brain_points(image: sitk.Image, every: int = 1) -> np.ndarray:
    """The LPS positions (N x 3, mm) of every ``every``-th non-zero voxel of ``image``: where a
    registration's error is measured (``registration.displacement``)."""
    voxels = np.argwhere(array(image) > 0)[::every]
    return np.array([image.TransformIndexToPhysicalPoint([int(v) for v in index]) for index in voxels])


def from_array(voxels: np.ndarray, like: sitk.Image) -> sitk.Image:
    """An (X, Y, Z) array placed on the grid of ``like``."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(voxels.transpose(2, 1, 0)))
    image.CopyInformation(like)
    return image


def placed(voxels: np.ndarray, ras_affine: np.ndarray) -> sitk.Image:
    """An (X, Y, Z) array as a SimpleITK image placed by a RAS affine (``affine``'s inverse)."""
    lps = _LPS_TO_RAS @ np.asarray(ras_affine, np.float64)  # the flip is its own inverse
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(voxels.transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image
