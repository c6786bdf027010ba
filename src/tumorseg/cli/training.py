"""``tumorseg train`` and ``demo``: training a network, and the whole pipeline on phantoms."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tumorseg.errors import TumorsegError


def add_train(sub: argparse._SubParsersAction, with_config_flags: bool = True) -> None:
    p = sub.add_parser(
        "train",
        help="train an Attention U-Net on a store, validating every epoch",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Train on 2D axial slices of the store's training patients and validate every epoch on whole\n"
            "volumes of the validation patients (loss, pixel accuracy, Dice and IoU per region). The run\n"
            "directory gets the resolved config, environment, split, history, figures and checkpoints.\n\n"
            "Configuration: defaults < --config FILE.yaml < flags. Several GPUs or machines:\n"
            "  torchrun --nproc_per_node N -m tumorseg train --data store.h5 --out runs/ddp"
        ),
        epilog="examples:\n"
        "  tumorseg train --data store.h5 --out runs/first --epochs 20\n"
        "  tumorseg train --data store.h5 --out runs/labels --target labels --config base.yaml\n"
        "  tumorseg train --resume runs/first --epochs 40     # continue, with a longer schedule",
    )
    p.add_argument("--data", type=Path, help="the store (from `tumorseg prepare`)")
    p.add_argument("--out", type=Path, help="run directory to create")
    p.add_argument("--config", type=Path, help="YAML file of config keys (see the flags below)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from last.pt")
    p.add_argument(
        "--stop-after",
        type=int,
        default=0,
        metavar="N",
        help="end this invocation after N epochs (resume later)",
    )
    if with_config_flags:  # they import torch: only for the command that needs them
        from tumorseg.training.config import add_arguments

        add_arguments(p)
    else:
        p.add_argument_group("configuration", "every config key is a flag too: see `tumorseg train --help`")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from tumorseg.rundir import RunDir
    from tumorseg.training.config import from_mapping, load_config, overrides
    from tumorseg.training.loop import train

    if args.resume:
        if args.config:
            raise TumorsegError("train: --config cannot be combined with --resume (the run keeps its config)")
        run, base = args.resume, None
    else:
        if args.out is None:
            raise TumorsegError("train: --out RUN_DIR is required (or --resume RUN_DIR)")
        run = args.out
        base = from_mapping(load_config(args.config), str(args.config)) if args.config else None
    try:
        last = train(
            args.data,
            run,
            base,
            resume=bool(args.resume),
            overrides=overrides(args),
            stop_after=args.stop_after,
        )
    except KeyboardInterrupt:
        if RunDir(Path(run)).last.exists():
            print(f"interrupted; continue with: tumorseg train --resume {run}", file=sys.stderr)
        raise
    if last:
        print(f"run: {run}  (best.pt, last.pt, history.csv, dice_iou.png, loss_accuracy.png)")
    return 0


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the pipeline end to end on synthetic phantoms",
        description="On synthetic phantoms: synthesize BraTS folders and Kaggle slices, prepare one store, "
        "train a small Attention U-Net, evaluate it on held-out phantoms, write the HTML report and "
        "segment a new phantom to NIfTI; ends with the test Dice and where every output is.",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("demo-output"),
        help="folder for everything (default demo-output)",
    )
    p.add_argument("--overwrite", action="store_true", help="use a non-empty folder the demo did not make")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from tumorseg.demo import run_demo

    run_demo(args.out, seed=args.seed, overwrite=args.overwrite)
    return 0
