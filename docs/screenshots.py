"""Regenerate docs/viewer.png and docs/report.png from a fresh `make demo`, and docs/compare.png
from two phantom visits (the README's comparison), as headless Chromium draws them:
`make screenshots`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tumorseg.cli import main

DOCS = Path("docs")  # run from the repository root (make screenshots): the pages show relative paths
DEMO = Path("demo-output")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--virtual-time-budget=15000",
]  # fmt: skip


def shoot(browser: str, page: Path, out: Path, size: str, fragment: str = "") -> None:
    profile = DEMO / ".chromium-profile"
    command = [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}", f"--screenshot={out}"]
    subprocess.run(
        [*command, page.resolve().as_uri() + fragment], capture_output=True, timeout=180, check=True
    )
    shutil.rmtree(profile, ignore_errors=True)
    Image.open(out).convert("RGB").quantize(256).save(
        out, optimize=True
    )  # a palette PNG: a fraction of the size
    print(f"wrote {out}")


def run() -> int:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("screenshots need headless Chromium (apt-get install chromium)", file=sys.stderr)
        return 1
    if main(["demo", "--out", str(DEMO), "--overwrite"]) != 0:
        return 1
    case = DEMO / "new-patient" / "Phantom_011"
    view = DEMO / "view.html"
    main(
        ["view", str(case), "--seg", str(DEMO / "new-patient-seg.nii.gz"), "--out", str(view), "--overwrite"]
    )
    shoot(browser, view, DOCS / "viewer.png", "1200,640")
    shoot(browser, DEMO / "run" / "report.html", DOCS / "report.png", "1200,6200")
    visits = DEMO / "visits"
    for name, scale in (("visit1", "1"), ("visit2", "1.5")):
        main(["synth", str(visits / name), "--cases", "3", "--shape", "128x128x96", "--tumor-scale", scale,
              "--overwrite"])  # fmt: skip
    one, two = (visits / name / "Phantom_003" for name in ("visit1", "visit2"))
    segs = [str(v / "Phantom_003_seg.nii.gz") for v in (one, two)]
    change = visits / "change"
    main(["compare", str(one), str(two), "--out", str(change), "--seg", *segs, "--overwrite"])
    shoot(browser, change / "report.html", DOCS / "compare.png", "1200,1900")
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
