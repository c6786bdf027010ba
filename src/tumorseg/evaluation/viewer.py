"""``tumorseg view``: one self-contained HTML file to scroll through a case and its label maps.

The page needs no network: the volumes are embedded (cropped to the brain, 8-bit, gzip, base64;
the browser inflates them with its own ``DecompressionStream``) and so is the viewer
(``viewer.js``, drawn on plain canvases). Axial, coronal and sagittal planes in radiological
view (anterior up, the patient's right on the viewer's left), a switch between sequences, the
prediction filled and the reference outlined in BraTS colors, their opacity, a crosshair with
the voxel's coordinates and labels, and the tumor volumes beside it.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
from pathlib import Path

import numpy as np

from tumorseg.data.brats import CaseFiles, find_case_files, open_nifti, read_case, read_voxels, volume_shape
from tumorseg.data.case import MODALITIES, voxel_spacing
from tumorseg.data.preprocess import reorient, to_training_axes
from tumorseg.errors import TumorsegError
from tumorseg.files import write_text
from tumorseg.geometry import bounding_box, voxel_ml, widened
from tumorseg.labels import CLASS_NAMES, REGIONS, region_volumes, to_internal
from tumorseg.outputs import claim_outputs

SCRIPT = Path(__file__).with_name("viewer.js")
NAMES = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce", "t2": "T2"}
MARGIN = 2
STYLE = """
.ts-viewer { font-family: system-ui, sans-serif; color: #222; margin: 1em 0; }
.ts-planes { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.ts-plane { display: flex; flex-direction: column; gap: 4px; }
.ts-plane canvas { image-rendering: pixelated; background: #000; cursor: crosshair; }
.ts-controls { display: flex; flex-wrap: wrap; gap: 14px; align-items: center; margin: .5em 0; }
.ts-legend span { display: inline-block; width: .9em; height: .9em; margin: 0 .3em 0 .8em; }
.ts-readout { font-family: ui-monospace, monospace; font-size: .9em; min-height: 1.2em; }
.ts-viewer table { border-collapse: collapse; font-size: .9em; }
.ts-viewer td, .ts-viewer th { border: 1px solid #ddd; padding: .2em .6em; text-align: right; }
"""


def to_uint8(volume: np.ndarray) -> np.ndarray:
    """Display intensities: the brain's 0.5th to 99.5th percentile stretched over 0..255."""
    brain = volume[volume != 0]
    if brain.size == 0:
        return np.zeros(volume.shape, np.uint8)
    low, high = np.percentile(brain, [0.5, 99.5])
    scaled = (volume.astype(np.float32) - low) / max(float(high - low), 1e-6)
    shown = np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)
    shown[volume == 0] = 0  # outside the brain stays black (z-scored volumes have 0 there too)
    return shown


def pack(array: np.ndarray) -> str:
    return base64.b64encode(gzip.compress(np.ascontiguousarray(array, np.uint8).tobytes(), 6)).decode()


def viewer_data(
    images: dict[str, np.ndarray], overlays: dict[str, np.ndarray], spacing: tuple[float, ...], title: str
) -> dict:
    """What the page embeds: every array (X, Y, Z) on the BraTS grid, cropped to what is shown."""
    keep = np.zeros(next(iter(images.values())).shape, bool)
    for array in [*images.values(), *overlays.values()]:
        keep |= array != 0
    box = bounding_box(keep)
    if box is None:
        raise TumorsegError(f"{title}: nothing to show (every voxel is zero)")
    crop = widened(box, keep.shape, MARGIN)
    images = {name: to_uint8(array[crop]) for name, array in images.items()}
    overlays = {name: array[crop] for name, array in overlays.items()}
    labeled = [a for name, a in overlays.items() if name != "uncertainty" and a.any()]
    focus = (
        np.argwhere(labeled[0] > 0).mean(axis=0).round().astype(int)
        if labeled
        else np.array(keep[crop].shape) // 2
    )
    volumes = {
        name: {region: round(ml, 2) for region, ml in region_volumes(a, voxel_ml(spacing)).items()}
        for name, a in overlays.items()
        if name != "uncertainty"
    }
    return {
        "title": title,
        "shape": list(images[next(iter(images))].shape),
        "spacing": [float(s) for s in spacing],
        "focus": focus.tolist(),
        "names": list(CLASS_NAMES),
        "volumes_ml": volumes,
        "images": {name: pack(a) for name, a in images.items()},
        "overlays": {name: pack(a) for name, a in overlays.items()},
    }


def stored_case_data(
    store_image: np.ndarray, reference: np.ndarray, prediction: np.ndarray, spacing: tuple, title: str
) -> dict:
    """Viewer data of a case as the store holds it ((Z, 4, H, W) slices, (Z, H, W) labels)."""
    to_grid = lambda a: np.moveaxis(a, 0, 2)  # noqa: E731 (stored Z, H, W are the grid's axes 3, 1, 2)
    images = {m: to_grid(store_image[:, c]) for c, m in enumerate(MODALITIES)}
    overlays = {
        "prediction": to_grid(prediction).astype(np.uint8),
        "reference": to_grid(reference).astype(np.uint8),
    }
    return viewer_data(images, overlays, spacing, title)


def viewer_block(data: dict, element_id: str) -> str:
    """The viewer's controls and canvases for one case, and the call that fills them."""
    buttons = "".join(f'<button data-image="{m}">{NAMES.get(m, m)}</button>' for m in data["images"])
    toggles = "".join(
        f'<label><input type="checkbox" data-overlay="{name}" checked> {name}'
        f"{' (outline)' if name == 'reference' or name in data.get('outlined', ()) else ''}</label>"
        for name in data["overlays"]
    )
    legend = "".join(  # the colors of viewer.js, named as the data name the values 1, 2, 3
        f'<span style="background: rgb{color}"></span>{html.escape(name)}'
        for name, color in zip(data["names"][1:], ((230, 25, 25), (25, 204, 51), (255, 217, 0)), strict=True)
    )
    planes = "".join(
        f'<div class="ts-plane"><canvas data-plane="{p}"></canvas>'
        f'<input type="range" min="0" data-plane="{p}"><span data-plane="{p}"></span> {p}</div>'
        for p in ("axial", "coronal", "sagittal")
    )
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{v:.2f}</td>" for v in volumes.values()) + "</tr>"
        for name, volumes in data["volumes_ml"].items()
    )
    table = (
        f"<table><tr><th>mL</th>{''.join(f'<th>{r}</th>' for r in REGIONS)}</tr>{rows}</table>"
        if rows
        else ""
    )
    payload = json.dumps(data).replace("</", "<\\/")
    return (
        f'<div class="ts-viewer" id="{element_id}"><h3>{html.escape(data["title"])}</h3>'
        f'<div class="ts-controls">{buttons}{toggles}<label>opacity <input class="ts-opacity" type="range" '
        'min="0" max="1" step="0.05" value="0.5"></label><label><input class="ts-crosshair" type="checkbox" '
        f'checked> crosshair</label><span class="ts-legend">{legend}</span></div>'
        f'<div class="ts-planes">{planes}</div><div class="ts-readout"></div>{table}'
        f'<script>tumorsegViewer(document.getElementById("{element_id}"), {payload});</script></div>'
    )


def viewer_page(blocks: list[str], title: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
        f"<script>{SCRIPT.read_text(encoding='utf-8')}</script></head><body>{''.join(blocks)}</body></html>\n"
    )


def read_on_grid(path: Path, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """The voxels of a NIfTI map that must lie on the case's grid (shape and affine)."""
    image = open_nifti(path)
    if volume_shape(image, path) != shape or not np.allclose(image.affine, affine, atol=1e-3):
        raise TumorsegError(f"{path}: not on the case's grid (shape {image.shape}, the case {shape})")
    return read_voxels(image, shape, path)


def read_labels(path: Path, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """A BraTS label map (0/1/2/4, or 2023's 0/1/2/3) on the case's grid, as internal classes."""
    values = read_on_grid(path, shape, affine)
    convention = "brats2023" if 3 in values and 4 not in values else "brats"
    try:
        return to_internal(values, convention)
    except ValueError as err:
        raise TumorsegError(f"{path}: {err}") from err


def view_case(
    case: Path | CaseFiles,
    out: Path,
    *,
    seg: Path | None = None,
    reference: Path | None = None,
    uncertainty: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the viewer of one case (its own label file, if any, is the reference)."""
    files = case if isinstance(case, CaseFiles) else find_case_files(Path(case), require_label=False)
    extra = [p for p in (seg, reference, uncertainty) if p is not None]
    claim_outputs([out], [*files.paths, *extra], overwrite)
    loaded = read_case(files)
    shape, affine = loaded.image.shape[1:], loaded.affine
    overlays = {}
    if seg is not None:
        overlays["prediction"] = read_labels(seg, shape, affine)
    if reference is not None:
        overlays["reference"] = read_labels(reference, shape, affine)
    elif loaded.label is not None:
        overlays["reference"] = loaded.label
    if uncertainty is not None:
        values = np.nan_to_num(read_on_grid(uncertainty, shape, affine).astype(np.float32))
        overlays["uncertainty"] = np.round(255 * values / max(float(values.max()), 1e-6)).astype(np.uint8)
    turned = reorient(loaded)
    images = dict(zip(MODALITIES, turned.image, strict=True))
    oriented = {name: to_training_axes(a, affine) for name, a in overlays.items()}
    data = viewer_data(images, oriented, voxel_spacing(turned.affine), files.case_id)
    write_text(out, viewer_page([viewer_block(data, "viewer")], f"tumorseg view: {files.case_id}"))
    return out
