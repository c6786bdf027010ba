"""From a patient's raw sequences to a BraTS-space case, and from BraTS-space labels back to the
patient's grid: the BraTS preprocessing (Bakas et al., Sci Data 2017; BraTS Toolkit, Kofler et al.
2020) on a CPU, in the order of its steps.

1. The reference is the T1ce (or, without one, the first of T1, FLAIR, T2): its grid is the output's.
2. Each sequence's brain is found by skull stripping (``brain``).
3. Every other sequence is registered rigidly to it, by mutual information; the two brains must
   then overlap (``registration.ALIGNED``), or the case is refused.
4. The brain (from the T1 when there is one, as the atlas is a T1) is registered rigidly to the
   skull-stripped SRI24 atlas.
5. Each sequence is resampled once, through both transforms, onto the BraTS grid (1 mm), and its
   voxels outside the brain are set to 0, as BraTS images are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from tumorseg.data.case import MODALITIES, Case, brats_affine
from tumorseg.errors import TumorsegError
from tumorseg.raw import images
from tumorseg.raw.brain import brain_mask
from tumorseg.raw.registration import ALIGNED, overlap, register, resample

#: Which sequence's grid a raw case's results take, in order of preference.
REFERENCE_ORDER = ("t1ce", "t1", "flair", "t2")
#: A step's name, reported as it starts ("registering flair to t1ce").
Report = Callable[[str], None]


@dataclass
class NativeSpace:
    """Where a raw case came from: its reference grid, brain, and the transforms of its steps."""

    reference: str  # the sequence whose grid the results take
    grid: sitk.Image  # that sequence's image
    brain: sitk.Image  # the brain mask on that grid
    to_atlas: sitk.Transform  # BraTS-space points -> reference points
    coregistered: dict[str, sitk.Transform]  # reference points -> each other sequence's points
    brains: dict[str, sitk.Image]  # the brain mask of each sequence, on its own grid
    overlap: dict[str, float]  # Dice of each registered brain with the reference's (or the atlas's)

    @property
    def affine(self) -> np.ndarray:
        return images.affine(self.grid)

    def brain_in_atlas(self) -> np.ndarray:
        """The brain mask on the BraTS grid, (X, Y, Z)."""
        return images.array(resample(self.brain, images.brats_grid(), self.to_atlas, labels=True)) > 0

    def to_native(self, classes: np.ndarray) -> np.ndarray:
        """A BraTS-space label map (X, Y, Z, classes 0..C-1) on the reference grid: each class's
        indicator is resampled linearly and the largest wins, which keeps thin structures that
        nearest-neighbour sampling of the labels would break."""
        inverse = self.to_atlas.GetInverse()
        grid = images.brats_grid()
        best = np.zeros(images.array(self.grid).shape, dtype=np.float32)
        native = np.zeros(best.shape, dtype=np.uint8)
        for value in range(int(classes.max()) + 1):  # outside the BraTS grid, all are 0: background
            share = images.from_array((classes == value).astype(np.float32), grid)
            share = images.array(resample(share, self.grid, inverse))
            better = share > best
            native[better], best[better] = value, share[better]
        return native


def prepare(
    sequences: dict[str, sitk.Image],
    case_id: str,
    where: str,
    report: Report = lambda step: None,
    sources: dict[str, str] | None = None,
) -> tuple[Case, NativeSpace]:
    """The BraTS-space case of a patient's raw ``sequences`` (modality -> image, at least one), and
    the space it came from. Messages name ``where`` (the case), or each sequence's file or series
    folder in ``sources``."""
    sources = {m: (sources or {}).get(m, f"{where}: {m}") for m in sequences}
    reference = next(m for m in REFERENCE_ORDER if m in sequences)
    fixed = sequences[reference]
    brains: dict[str, sitk.Image] = {}
    for modality in (reference, *(m for m in MODALITIES if m in sequences and m != reference)):
        report(f"skull stripping {modality}")
        brains[modality] = brain_mask(sequences[modality], sources[modality])
    brain = brains[reference]
    coregistered: dict[str, sitk.Transform] = {}
    overlaps: dict[str, float] = {}
    for modality in brains:
        if modality != reference:
            report(f"registering {modality} to {reference}")
            coregistered[modality] = register(fixed, sequences[modality])
            overlaps[modality] = overlap(brain, brains[modality], coregistered[modality])
            check_aligned(overlaps[modality], f"{sources[modality]}: registration to {reference}")
    report("registering the brain to the SRI24 atlas")
    t1 = resample(sequences["t1"], fixed, coregistered["t1"]) if "t1" in coregistered else fixed
    atlas = images.atlas()
    atlas_brain = sitk.Cast(atlas > 0, sitk.sitkUInt8)
    moving = sitk.Mask(sitk.Cast(t1, sitk.sitkFloat32), brain)
    # from the centres of mass: a scan's field of view may reach far below the brain (the made-raw
    # fields, all centred, did 0.18 mm better from the image centres: s.e. 0.08, a cost taken)
    to_atlas = register(atlas, moving, same_contrast=True, by_moments=True)
    overlaps["atlas"] = overlap(atlas_brain, brain, to_atlas)
    check_aligned(overlaps["atlas"], f"{sources[reference]}: registration to the SRI24 atlas")
    space = NativeSpace(reference, fixed, brain, to_atlas, coregistered, brains, overlaps)
    report("resampling to the BraTS grid")
    case = to_atlas_case(sequences, space, case_id)
    case.sources = [sources[m] for m in MODALITIES if m in sequences]
    return case, space


def check_aligned(overlap: float, what: str) -> None:
    if overlap < ALIGNED:
        raise TumorsegError(
            f"{what} failed (the brains overlap {overlap:.2f} once aligned, under "
            f"{ALIGNED}); check that the sequences show the same head"
        )


def to_atlas_case(sequences: dict[str, sitk.Image], space: NativeSpace, case_id: str) -> Case:
    """Each sequence on the BraTS grid through its two transforms, 0 outside the brain."""
    grid = images.brats_grid()
    brain = space.brain_in_atlas()
    channels = []
    for modality in MODALITIES:
        if modality not in sequences:
            channels.append(np.zeros(images.BRATS_SHAPE, dtype=np.float32))
            continue
        transform = space.to_atlas
        if modality in space.coregistered:  # BraTS -> reference -> sequence (ITK applies the last first)
            transform = sitk.CompositeTransform([space.coregistered[modality], space.to_atlas])
        voxels = images.array(resample(sequences[modality], grid, transform))
        channels.append(np.where(brain, np.maximum(voxels, 0), 0).astype(np.float32))
    absent = tuple(m for m in MODALITIES if m not in sequences)
    return Case(case_id, np.stack(channels), None, brats_affine(images.BRATS_SHAPE), [], absent=absent)


def read_sequence(path: str) -> sitk.Image:
    """A NIfTI file as a 3D float image (a 4D file with one volume is taken as 3D)."""
    image = sitk.ReadImage(path, sitk.sitkFloat32)
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise TumorsegError(f"{path}: expected a 3D volume, got {image.GetDimension()}D")
    return image
