"""The offline viewer: what it embeds, and what a browser draws from it."""

import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest

from tumorseg.cli import main
from tumorseg.data.synth import synthesize

CASE = "Phantom_001"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--virtual-time-budget=10000",
    "--window-size=1200,700",
]  # fmt: skip


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("viewer")
    synthesize(root / "cases", 1, shape=(64, 64, 40), seed=5, progress=False)
    case = root / "cases" / CASE
    out = root / "view.html"
    assert main(["view", str(case), "--seg", str(case / f"{CASE}_seg.nii.gz"), "--out", str(out)]) == 0
    return out


def test_the_page_is_self_contained(page):
    text = page.read_text()
    assert "tumorsegViewer(" in text and "DecompressionStream" in text
    assert "http://" not in text and "https://" not in text and "<script src" not in text


def test_a_real_case_fits_the_size_budget(real_root, tmp_path):
    case = real_root / "Brats18_CBICA_AME_1"
    out = tmp_path / "real.html"
    assert (
        main(["view", str(case), "--seg", str(case / "Brats18_CBICA_AME_1_seg.nii.gz"), "--out", str(out)])
        == 0
    )
    assert out.stat().st_size < 15e6


def screenshot(browser, page, fragment, tmp_path, name):
    shot = tmp_path / f"{name}.png"
    profile = f"--user-data-dir={tmp_path / name}"
    command = [browser, *CHROMIUM_FLAGS, profile, f"--screenshot={shot}", f"{page.as_uri()}#{fragment}"]
    subprocess.run(command, capture_output=True, timeout=120)
    return matplotlib.image.imread(shot)[..., :3]


def overlay_pixels(pixels):
    """Pixels in the BraTS overlay hues (red, green, yellow), below the legend row."""
    r, g, b = (pixels[100:, :, i] for i in range(3))
    red, green, yellow = (r - g > 0.3) & (r - b > 0.3), (g - r > 0.25) & (g - b > 0.25), (r > 0.8) & (b < 0.4)
    return int((red | green | yellow).sum())


def test_a_browser_draws_the_overlay_where_the_tumor_is_and_the_slider_moves(page, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (.ci/run installs it)")
    edges = "coronal=0&sagittal=0&crosshair=off"  # the other planes at an edge of the crop: no tumor
    tumor = screenshot(browser, page, edges, tmp_path, "tumor")  # opens at the tumor's centroid
    empty = screenshot(browser, page, f"axial=0&{edges}", tmp_path, "empty")
    hidden = screenshot(browser, page, f"overlay=off&{edges}", tmp_path, "hidden")
    assert overlay_pixels(tumor) > 500  # the tumor's slice shows its labels in BraTS colors
    assert overlay_pixels(empty) < 50 and overlay_pixels(hidden) < 50
    assert np.abs(tumor - empty).mean() > 0.005  # moving the axial slider changed the picture


def test_an_uncertainty_map_is_shown_and_a_misfit_one_named(page, tmp_path, capsys):
    import nibabel as nib

    case = page.parent / "cases" / CASE
    flair = nib.load(case / f"{CASE}_flair.nii.gz")
    nib.save(
        nib.Nifti1Image(np.random.default_rng(0).random(flair.shape, np.float32), flair.affine),
        tmp_path / "u.nii.gz",
    )
    assert (
        main(
            [
                "view",
                str(case),
                "--uncertainty",
                str(tmp_path / "u.nii.gz"),
                "--out",
                str(tmp_path / "v.html"),
            ]
        )
        == 0
    )
    text = (tmp_path / "v.html").read_text(encoding="utf-8")
    assert (
        '"uncertainty"' in text and "reference (outline)" in text
    )  # the case's own label file is the reference
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), flair.affine), tmp_path / "small.nii.gz")
    args = ["view", str(case), "--seg", str(tmp_path / "small.nii.gz"), "--out", str(tmp_path / "w.html")]
    assert main(args) == 1
    assert "small.nii.gz: not on the case's grid" in capsys.readouterr().err
    assert main(["view", str(case), "--out", str(case / f"{CASE}_t1.nii.gz"), "--overwrite"]) == 1
