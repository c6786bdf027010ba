"""``make demo``: the pipeline end to end on synthetic phantoms, printing where each output is."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tumorseg import cli
from tumorseg.data.store import prepare_store
from tumorseg.data.synth import synthesize
from tumorseg.training.config import TrainConfig
from tumorseg.training.loop import train

DEMO_CASES = 8
DEMO_KAGGLE_VOLUMES = 2
DEMO_SHAPE = (96, 96, 64)
#: A small model and schedule that learns the phantoms in about a minute on 2 CPU cores.
DEMO_TRAINING = TrainConfig(
    channels=[8, 16, 32, 64], size=[96, 96], batch_size=8, epochs=6, workers=0, val_batch_size=64
)


def run_demo(out: Path, seed: int = 0) -> None:
    start = time.perf_counter()
    for stale in ("phantoms", "kaggle", "store.h5", "run"):
        path = out / stale
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
    print(f"1/4 synthesize {DEMO_CASES} phantom cases and {DEMO_KAGGLE_VOLUMES} Kaggle-layout volumes")
    synthesize(out / "phantoms", DEMO_CASES, shape=DEMO_SHAPE, seed=seed)
    synthesize(
        out / "kaggle",
        DEMO_KAGGLE_VOLUMES,
        shape=DEMO_SHAPE,
        seed=seed,
        layout="kaggle",
        start=DEMO_CASES + 1,
    )
    print("2/4 prepare the HDF5 store from both layouts")
    result = prepare_store([out / "phantoms", out / "kaggle"], out / "store.h5")
    print(f"    added {len(result.added)} cases")
    print("3/4 inspect the store")
    cli.main(["inspect", str(out / "store.h5")])
    print(f"4/4 train an Attention U-Net for {DEMO_TRAINING.epochs} epochs on CPU")
    config = TrainConfig(**{**DEMO_TRAINING.to_dict(), "seed": seed})
    last = train(out / "store.h5", out / "run", config)
    regions = ", ".join(f"{r} {last[f'val_dice_{r}']:.3f}" for r in ("WT", "TC", "ET"))
    seconds = time.perf_counter() - start
    print(f"\ndone in {seconds:.0f} s; validation Dice {last['val_dice']:.3f} ({regions}); outputs:")
    print(f"  {out / 'phantoms'}   BraTS-style NIfTI case folders")
    print(f"  {out / 'kaggle'}     Kaggle-style per-slice .h5 files")
    print(f"  {out / 'store.h5'}   the HDF5 store (tumorseg inspect {out / 'store.h5'} --cases)")
    print(f"  {out / 'run'}        the training run: history.csv, dice_iou.png, loss_accuracy.png, best.pt")
