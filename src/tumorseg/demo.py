"""``make demo``: the pipeline end to end on synthetic phantoms, printing where each output is."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tumorseg import cli
from tumorseg.data.store import prepare_store
from tumorseg.data.synth import synthesize

DEMO_CASES = 8
DEMO_KAGGLE_VOLUMES = 2
DEMO_SHAPE = (96, 96, 64)


def run_demo(out: Path, seed: int = 0) -> None:
    start = time.perf_counter()
    for stale in ("phantoms", "kaggle", "store.h5"):
        path = out / stale
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
    print(f"1/3 synthesize {DEMO_CASES} phantom cases and {DEMO_KAGGLE_VOLUMES} Kaggle-layout volumes")
    synthesize(out / "phantoms", DEMO_CASES, shape=DEMO_SHAPE, seed=seed)
    synthesize(
        out / "kaggle",
        DEMO_KAGGLE_VOLUMES,
        shape=DEMO_SHAPE,
        seed=seed,
        layout="kaggle",
        start=DEMO_CASES + 1,
    )
    print("2/3 prepare the HDF5 store from both layouts")
    result = prepare_store([out / "phantoms", out / "kaggle"], out / "store.h5")
    print(f"    added {len(result.added)} cases")
    print("3/3 inspect the store")
    cli.main(["inspect", str(out / "store.h5")])
    print(f"\ndone in {time.perf_counter() - start:.0f} s; outputs:")
    print(f"  {out / 'phantoms'}   BraTS-style NIfTI case folders")
    print(f"  {out / 'kaggle'}     Kaggle-style per-slice .h5 files")
    print(f"  {out / 'store.h5'}   the HDF5 store (tumorseg inspect {out / 'store.h5'} --cases)")
