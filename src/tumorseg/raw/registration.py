"""Rigid registration by mutual information (SimpleITK), as the BraTS pipeline registers with ANTs:
every sequence to the reference sequence, and the reference's brain to the SRI24 atlas.

A transform maps points of the fixed image to points of the moving one (ITK's convention), so
resampling the moving image through it puts it on the fixed grid.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

#: Mattes mutual information, with the histogram ANTs uses in the BraTS pipeline (32 bins).
BINS = 32
#: The share of the fixed voxels the metric samples (at random, seeded) at each level, and the most
#: samples a level takes: beyond about 50,000 the solution moves by less than 0.1 mm.
SAMPLING = 0.1
MAX_SAMPLES = 50_000
#: Two brains overlap at least this much (Dice of their skull-stripping masks) once aligned, or the
#: registration failed grossly (another head, a slide off the brain). Aligned pairs scored 0.81 to
#: 0.98 (the 0.81: a FLAIR whose mask deepbet cut short, registered within 0.6 mm of the truth),
#: brains 20 mm and 20 degrees off 0.49 to 0.86, a sequence of noise 0.44 (docs/results.md, "Raw
#: scans"): the check catches gross failures, not a few millimetres.
ALIGNED = 0.75
#: The smoothing (mm) at each shrink factor of the coarse-to-fine levels.
SIGMAS = {8: 4.0, 4: 2.0, 2: 1.0, 1: 0.0}


def register(
    fixed: sitk.Image,
    moving: sitk.Image,
    *,
    same_contrast: bool = False,
    by_moments: bool = False,
    seed: int = 0,
    shrink: tuple[int, ...] = (4, 2, 1),
) -> sitk.Transform:
    """The rigid transform that aligns ``moving`` to ``fixed``, coarse to fine.

    It starts from the images' centres (their intensities' centres of mass ``by_moments``, for
    images that frame different fields of view, such as a brain and an atlas) and ends at about
    1 mm: the images are first averaged down to about 1 mm voxels (``about_1mm``), then the levels
    shrink the fixed image 4, 2 and 1 times (``shrink``). Images of one contrast (a T1 and the T1
    atlas) are compared by correlation, others by mutual information: on 28 shared patients made raw,
    correlation put the brain 4.1 mm from the truth on average, mutual information 5.3 (paired
    +1.18 mm, s.e. 0.33; ``experiments/atlas_registration.py``).

    The whole images are compared, never a masked part: restricted to the brain, a T2 of 5 mm
    slices slid 20 mm off, and on three made-raw patients the atlas registration came back 6 to
    16 mm from the truth against 1.4 to 3.3 mm without the mask."""
    fixed, moving = about_1mm(fixed), about_1mm(moving)
    start = sitk.CenteredTransformInitializer(
        fixed,
        moving,
        sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS
        if by_moments
        else sitk.CenteredTransformInitializerFilter.GEOMETRY,
    )
    method = sitk.ImageRegistrationMethod()
    if same_contrast:
        method.SetMetricAsCorrelation()
    else:
        method.SetMetricAsMattesMutualInformation(BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    voxels = [np.prod([max(1, n // f) for n in fixed.GetSize()]) for f in shrink]
    share = [min(SAMPLING, MAX_SAMPLES / n) for n in voxels]
    method.SetMetricSamplingPercentagePerLevel(share, seed + 1)  # 0 would mean "seed from the clock"
    method.SetInterpolator(sitk.sitkLinear)
    # a step that shrinks slowly to 1e-4: stopped at 1e-3, a phantom moved by 4 to 7 degrees came
    # back 1.6 mm off on average, 0.4 mm with these settings (tests/test_raw.py)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=500, relaxationFactor=0.7
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel([SIGMAS[f] for f in shrink])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(start, inPlace=False)
    # one thread: ITK sums the metric's threads in an order that varies from run to run, and a
    # 1e-8 difference in a co-registration moved the atlas registration after it by 0.03 (rad, mm)
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        transform = method.Execute(fixed, moving)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    if isinstance(transform, sitk.CompositeTransform) or transform.GetName() == "CompositeTransform":
        transform = sitk.CompositeTransform(transform).GetNthTransform(0).Downcast()  # the one Euler3D
    return transform


def about_1mm(image: sitk.Image) -> sitk.Image:
    """``image`` as float, its voxels finer than 1 mm averaged in blocks to about 1 mm: finer
    detail moves no rigid transform, and registering a 0.47 mm T1ce took 4 times longer."""
    factors = [max(1, int(1.0 / spacing)) for spacing in image.GetSpacing()]
    image = sitk.Cast(image, sitk.sitkFloat32)
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


def overlap(fixed_mask: sitk.Image, moving_mask: sitk.Image, transform: sitk.Transform) -> float:
    """Dice of two masks once the moving one is resampled through ``transform``."""
    fixed = sitk.GetArrayViewFromImage(fixed_mask) > 0
    moved = sitk.GetArrayViewFromImage(resample(moving_mask, fixed_mask, transform, labels=True)) > 0
    total = np.count_nonzero(fixed) + np.count_nonzero(moved)
    return 2.0 * np.count_nonzero(fixed & moved) / total if total else 0.0


def displacement(a: sitk.Transform, b: sitk.Transform, points: np.ndarray) -> np.ndarray:
    """How far apart (mm) two transforms put each of ``points`` (N x 3, LPS)."""
    return np.array([np.linalg.norm(np.subtract(a.TransformPoint(p), b.TransformPoint(p))) for p in points])


def resample(
    image: sitk.Image, onto: sitk.Image, transform: sitk.Transform, *, labels: bool = False
) -> sitk.Image:
    """``image`` on the grid of ``onto`` through ``transform`` (onto's points -> image's points);
    linear for intensities, nearest for a mask; 0 outside the image."""
    interpolator = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    pixel = image.GetPixelID() if labels else sitk.sitkFloat32
    return sitk.Resample(image, onto, transform, interpolator, 0.0, pixel)
