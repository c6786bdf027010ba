"""Skull stripping with deepbet (Fisch et al., Comput Biol Med 2024), whose two networks come inside
its PyPI wheel: nothing is downloaded when it runs.

deepbet is trained on T1-weighted images of healthy adults; on the gliomas' T1ce it agrees with
HD-BET, the BraTS pipeline's stripper, to a Dice of 0.97 (docs/results.md, "Raw scans").
"""

from __future__ import annotations

from functools import cache

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from tumorseg.errors import TumorsegError
from tumorseg.raw.images import affine, array, from_array


@cache
def _extractor():  # noqa: ANN202 (deepbet's class; imported only when a raw scan comes in)
    from deepbet.bet import BrainExtraction

    return BrainExtraction(no_gpu=True)


def brain_mask(image: sitk.Image, where: str) -> sitk.Image:
    """The brain of ``image``: a 0/1 mask on its grid (the largest connected piece, holes filled)."""
    volume = nib.Nifti1Image(array(image).astype(np.float32), affine(image))
    try:
        _, mask, _ = _extractor().run(volume)
    except (AssertionError, ValueError, RuntimeError) as err:  # deepbet asserts when it finds no head
        raise TumorsegError(f"{where}: skull stripping found no brain") from err
    voxels = np.asarray(mask.dataobj) > 0
    if not voxels.any():
        raise TumorsegError(f"{where}: skull stripping found no brain")
    return from_array(voxels.astype(np.uint8), image)
