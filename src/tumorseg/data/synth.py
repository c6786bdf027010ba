"""Synthetic "phantom" brains for the demo and fast tests.

Each phantom is an ellipsoidal brain (white matter core, gray matter shell, ventricles and a
CSF rim) holding one tumor: edema around a core, the core an enhancing rim around necrosis.
Shapes are irregular (smooth random deformations) and placed at random. Tissue contrast per
modality follows real MRI, so no single modality separates every class and a model has to
combine them: edema is bright on FLAIR and T2 (but CSF is bright on T2 and dark on FLAIR), the
enhancing rim is bright only on T1ce, necrosis is dark on T1 and bright on T2. About one
phantom in seven has no enhancing tumor, as in lower-grade gliomas.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from tumorseg.data import kaggle
from tumorseg.data.case import MODALITIES, brats_affine
from tumorseg.labels import BRATS_VALUES, EDEMA, ENHANCING, NECROSIS, to_internal
from tumorseg.outputs import claim_outputs

TISSUES = ("csf", "gray", "white", "edema", "necrosis", "enhancing")
#: Relative intensity of each tissue (columns as TISSUES) in each modality (rows as MODALITIES).
CONTRAST = np.array(
    [
        [0.10, 0.60, 0.50, 0.95, 0.45, 0.75],  # FLAIR: fluid suppressed, edema brightest
        [0.20, 0.55, 0.80, 0.45, 0.30, 0.55],  # T1
        [0.20, 0.55, 0.80, 0.45, 0.30, 1.00],  # T1ce: contrast uptake in the enhancing rim
        [1.00, 0.55, 0.40, 0.85, 0.90, 0.60],  # T2: fluid bright
    ]
)
NO_ENHANCEMENT_PROBABILITY = 1 / 7
DEFAULT_SHAPE = (96, 96, 64)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: coarse random values upsampled smoothly."""
    coarse = rng.uniform(-1, 1, size=(6, 6, 6))
    return ndimage.zoom(coarse, [n / 6 for n in shape], order=1, mode="nearest")


def _blob(grid: np.ndarray, center: np.ndarray, radii: np.ndarray, wobble: np.ndarray) -> np.ndarray:
    """Inside of an ellipsoid whose surface is pushed in and out by ``wobble``."""
    distance = np.sqrt((((grid - center[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0))
    return distance * (1 + wobble) < 1


def phantom(
    rng: np.random.Generator, shape: tuple[int, int, int] = DEFAULT_SHAPE, tumor_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: image (4, X, Y, Z) int16 in MODALITIES order, labels (X, Y, Z) BraTS 0/1/2/4.

    ``tumor_scale`` multiplies the tumor's radii (and so its volume by about its cube, less what
    leaves the brain) and changes nothing else: the same generator gives the same brain, noise
    and tumor shape, as a visit after the tumor grew or shrank."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    center = rng.normal(0, 0.03, 3)
    axes = rng.uniform(0.72, 0.88, 3)

    def wobble(amount: float) -> np.ndarray:
        return amount * _smooth_field(rng, shape)

    brain = _blob(grid, center, axes, wobble(0.04))
    white = _blob(grid, center, axes * 0.62, wobble(0.15))
    sulci = brain & ~_blob(grid, center, axes * 0.94, wobble(0.04))
    ventricles = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        offset = center + np.array([side * 0.12 * axes[0], 0.0, 0.05])
        ventricles |= _blob(grid, offset, axes * np.array([0.07, 0.25, 0.12]), wobble(0.1))

    tumor_center = center + rng.uniform(-0.4, 0.4, 3) * axes
    edema_radii = rng.uniform(0.16, 0.3) * rng.uniform(0.8, 1.2, 3) * tumor_scale
    core_radii = edema_radii * rng.uniform(0.4, 0.65)
    necrosis_radii = core_radii * rng.uniform(0.35, 0.7)
    edema = _blob(grid, tumor_center, edema_radii, wobble(0.3)) & brain
    core = _blob(grid, tumor_center, core_radii, wobble(0.2)) & edema
    necrosis = _blob(grid, tumor_center, necrosis_radii, wobble(0.2)) & core
    enhancing = core & ~necrosis
    if rng.random() < NO_ENHANCEMENT_PROBABILITY:
        necrosis, enhancing = core, np.zeros_like(core)

    tissue = np.full(shape, TISSUES.index("gray"))
    for name, mask in [
        ("white", white),
        ("csf", sulci | ventricles),
        ("edema", edema),
        ("necrosis", necrosis),
        ("enhancing", enhancing),
    ]:
        tissue[mask] = TISSUES.index(name)
    label = np.zeros(shape, dtype=np.uint8)  # BraTS values, as the files hold them
    for internal, mask in ((EDEMA, edema), (NECROSIS, necrosis), (ENHANCING, enhancing)):
        label[mask] = BRATS_VALUES["brats"][internal]

    image = np.zeros((len(MODALITIES), *shape), dtype=np.int16)
    for channel in range(len(MODALITIES)):
        gain = rng.uniform(0.85, 1.15)
        bias = 1 + 0.08 * _smooth_field(rng, shape)
        signal = ndimage.gaussian_filter(CONTRAST[channel][tissue], sigma=0.7) * gain * bias
        signal += rng.normal(0, 0.03, shape)
        values = np.clip(np.round(signal * 1000), 1, 32767)
        image[channel][brain] = values[brain]
    label[~brain] = 0
    return image, label


def write_brats_case(folder: Path, case_id: str, image: np.ndarray, label: np.ndarray | None) -> None:
    """Write a case folder with BraTS 2020 file names (``<id>_flair.nii.gz``, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = brats_affine(image.shape[1:])
    volumes = dict(zip(MODALITIES, image, strict=True))
    if label is not None:
        volumes["seg"] = label
    for name, volume in volumes.items():
        nifti = nib.Nifti1Image(volume, affine)
        nifti.header.set_xyzt_units("mm")
        nib.save(nifti, folder / f"{case_id}_{name}.nii.gz")


def synthesize(
    out: Path,
    cases: int,
    *,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    seed: int = 0,
    layout: str = "brats",
    start: int = 1,
    tumor_scale: float = 1.0,
    overwrite: bool = False,
    progress: bool | None = None,
) -> list[Path]:
    """Write ``cases`` phantoms under ``out`` as BraTS case folders or Kaggle slice files.

    Case i is drawn from its own seed (``seed``, i), so it is the same whatever the count; with
    another ``tumor_scale`` it is the same brain with a grown or shrunk tumor (``phantom``).
    Returns the case folders (brats) or the one folder of slice files (kaggle).
    """
    if layout not in ("brats", "kaggle"):
        raise ValueError(f"layout must be brats or kaggle, not {layout!r}")
    numbers = range(start, start + cases)
    planned = (
        [out / f"Phantom_{n:03d}" for n in numbers]
        if layout == "brats"
        else [out / kaggle.META_FILE, *(out / f"volume_{n}_slice_0.h5" for n in numbers)]
    )
    claim_outputs(planned, [], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    meta_rows: list[dict] = []
    for number in tqdm(
        numbers, desc="synth", unit="case", disable=None if progress is None else not progress
    ):
        image, label = phantom(np.random.default_rng([seed, number]), shape, tumor_scale)
        if layout == "brats":
            case_id = f"Phantom_{number:03d}"
            write_brats_case(out / case_id, case_id, image, label)
            written.append(out / case_id)
        else:
            meta_rows += kaggle.write_volume(out, number, image, to_internal(label))
    if layout == "kaggle":
        kaggle.write_meta(out, meta_rows)
        written.append(out)
    return written
