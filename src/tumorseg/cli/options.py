"""The options every command that runs a model shares, defined once, and the one way a command
turns them into a ``Segmenter``.

Defining an option imports nothing heavy: ``tumorseg --help`` stays instant.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tumorseg.errors import TumorsegError

if TYPE_CHECKING:
    from tumorseg.inference.segmenter import Segmenter
    from tumorseg.postprocessing import PostProcessing
    from tumorseg.rundir import RunDir

SEQUENCES = ("flair", "t1", "t1ce", "t2")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", default="auto", help="auto (default: the GPU when there is one), cpu or cuda[:N]"
    )


def add_model_options(p: argparse.ArgumentParser, predicting: bool = False) -> None:
    """--device, --tta and --coarse-step for any command that segments; for predict (``predicting``)
    also --engine and --no-postprocessing, else --missing and --postprocessing, which measure a model
    in other conditions than it ships with. The options a command lacks get their neutral default."""
    add_device(p)
    tta_help = "average over the four in-plane flips" + (" (about 4x slower)" if predicting else "")
    p.add_argument("--tta", action="store_true", help=tta_help)
    add_coarse_step(p, default=None if predicting else 1)
    if predicting:
        add_engine(p)
        p.add_argument(
            "--no-postprocessing",
            action="store_true",
            help="skip the post-processing the model file holds (the shipped models': tumor islands under "
            "4 mL removed, an enhancing tumor under 1 mL in all relabeled necrosis; a file of your own may "
            "hold other rules, see `tumorseg pack --help`)",
        )
        p.set_defaults(missing=[], postprocessing=None)
    else:
        add_missing(p)
        add_postprocessing(p)
        p.set_defaults(engine="torch", no_postprocessing=False)


def add_model_source(p: argparse.ArgumentParser) -> None:
    """--model, for the commands that segment new patients (predict, compare)."""
    p.add_argument(
        "--model",
        type=Path,
        action="append",
        help="a run directory (uses best.pt) or a model file (default: the models that ship with tumorseg, "
        "two networks trained on 28 BraTS 2018 patients and ensembled, and for a case lacking sequences "
        "a third; see MODEL_CARD.md); repeated, or a folder of fold runs: an ensemble, their "
        "probabilities averaged",
    )


def announced_segmenter(args: argparse.Namespace) -> Callable[[], Segmenter]:
    """A function that loads the model --model names (``segmenter_from_args``) and prints which it is:
    a command calls it only once it has a case to segment."""

    def load() -> Segmenter:
        chosen = segmenter_from_args(args, args.model)
        print(f"model: {chosen.description}")
        return chosen

    return load


def add_input_options(p: argparse.ArgumentParser, cases: str) -> None:
    """--preprocess and --labels, for the commands that segment new patients (``cases``: what the
    preprocessing applies to, in words)."""
    p.add_argument(
        "--preprocess",
        choices=("auto", "raw", "brats"),
        default="auto",
        help=f"raw: run the BraTS preprocessing on {cases}; brats: on none; auto (default): where it is "
        "needed (DICOM, sequences on different grids, or a background that is not 0)",
    )
    p.add_argument(
        "--labels", choices=("brats", "2023"), default="brats", help="2023: enhancing tumor is 3, not 4"
    )


def label_convention(args: argparse.Namespace) -> str:
    """The label convention --labels names."""
    return "brats2023" if args.labels == "2023" else "brats"


def add_engine(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=("auto", "torch", "onnx", "onnx-int8"),
        default="auto",
        help="onnx: ONNX Runtime (after tumorseg export); onnx-int8: its 8-bit export (after tumorseg "
        "export --int8 STORE; the bundled models ship one), about 3x faster than torch on a CPU; auto "
        "(default): onnx-int8 on a CPU when the model has an 8-bit export (ONNX Runtime, installed with "
        "tumorseg; the command then never imports PyTorch), else torch",
    )


def add_coarse_step(p: argparse.ArgumentParser, default: int | None) -> None:
    """--coarse-step; ``default`` None stands for predict's (``sliding_window.COARSE_STEP``)."""
    p.add_argument(
        "--coarse-step",
        type=int,
        default=default,
        metavar="K",
        help="a 2D model segments every K-th slice first (each within its brain's box, widened by 16 "
        "pixels), then only the slices closer than K to one with tumor, within the tumor's in-plane "
        "box widened by 32 pixels; the rest is left tumor-free "
        "(4, predict's default: on the 28 shared cases 1.9x faster with the shipped models, mean "
        f"Dice within 0.0005 of segmenting it all; 1{', the default' if default == 1 else ''}: every "
        "slice, whole)" + ("; results go to evaluation-SPLIT-coarse-step-K" if default == 1 else ""),
    )


def add_postprocessing(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--postprocessing",
        type=Path,
        metavar="JSON",
        help="apply this post-processing rule instead of the model's (a FOLDS_DIR/postprocessing.json of "
        "cv --choose-postprocessing); results go to evaluation-SPLIT-postprocessed",
    )


def add_missing(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--missing",
        nargs="+",
        default=[],
        choices=SEQUENCES,
        metavar="SEQUENCE",
        help="segment as if these sequences (flair, t1, t1ce, t2) were not acquired: zeroed, as predict "
        "does for a case lacking them (a model trained with --modality-dropout); results go to "
        "evaluation-SPLIT-without-SEQUENCE",
    )


def missing_sequences(args: argparse.Namespace) -> tuple[str, ...]:
    """The sequences of --missing in the modality order, as evaluation folders name them."""
    return tuple(m for m in SEQUENCES if m in args.missing)


def evaluation_variant(args: argparse.Namespace, last: bool = False) -> str:
    """The suffix of the folders an evaluation with these options writes (``rundir.variant_name``)."""
    from tumorseg.rundir import variant_name

    ruled = args.postprocessing is not None
    return variant_name(args.tta, missing_sequences(args), ruled, last, args.coarse_step)


def postprocessing(args: argparse.Namespace) -> PostProcessing | None:
    """The rule the flags ask for: none with --no-postprocessing, the rule of --postprocessing FILE,
    or None: the model's own."""
    from tumorseg.postprocessing import PostProcessing

    if args.no_postprocessing:
        return PostProcessing()
    return PostProcessing.from_file(args.postprocessing) if args.postprocessing else None


def segmenter_from_args(args: argparse.Namespace, source: Path | list[Path] | None) -> Segmenter:
    """The model of ``source`` (None: the bundled one) as the options of ``add_model_options`` set it."""
    from tumorseg.inference.segmenter import Segmenter
    from tumorseg.inference.sliding_window import COARSE_STEP, Search

    return Segmenter(
        source,
        device=args.device,
        engine=args.engine,
        tta=args.tta,
        search=Search(COARSE_STEP if args.coarse_step is None else args.coarse_step),
        absent=missing_sequences(args),
        postprocessing=postprocessing(args),
    )


def fold_checkpoint(run: RunDir, last: bool) -> Path:
    """The model of a fold that cv scores: its last.pt, or without ``last`` the run (its best.pt)."""
    if not last:
        return run.root
    if not run.last.is_file():
        raise TumorsegError(f"{run.root}: no last.pt to score (--best scores each fold's best.pt)")
    return run.last
