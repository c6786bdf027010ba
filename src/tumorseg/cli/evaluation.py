"""``tumorseg evaluate``, ``cv``, ``report`` and ``view``: measuring a model and showing what it did."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from tumorseg.cli.options import add_model_options, evaluation_variant, fold_checkpoint, segmenter_from_args
from tumorseg.errors import TumorsegError

if TYPE_CHECKING:
    from tumorseg.inference.segmenter import Segmenter
    from tumorseg.rundir import RunDir


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a trained model on its test patients (Dice, IoU, HD95, ...)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Segment every patient of a part of the run's split from the store and compute, per patient,\n"
            "Dice, IoU, HD95 (mm), sensitivity and specificity for WT, TC, ET, NCR/NET and edema, with the\n"
            "BraTS rules for empty structures; plus a per-voxel classification report, a confusion matrix,\n"
            "box plots and overlays. Writes metrics.csv and summary.json and prints a table.\n"
            "With --predictions and --references instead of a run: the same for label maps on disk\n"
            "(another tool's, or your own test set), matched by case id; no store or model needed."
        ),
        epilog="examples:\n  tumorseg evaluate runs/first --data store.h5 --split test\n"
        "  tumorseg evaluate --predictions predictions/ --references labels/ --out scores/\n"
        "      (label maps on disk matched by case id: <id>.nii.gz, <id>_seg.nii.gz or case folders)",
    )
    p.add_argument(
        "run", type=Path, nargs="?", help="run directory (uses best.pt) or a checkpoint inside one"
    )
    p.add_argument(
        "--models",
        type=Path,
        nargs="+",
        metavar="MODEL",
        help="segment the run's patients with these models instead of its own: runs, model files or "
        "folders of fold runs, their probabilities averaged (an ensemble); needs --out",
    )
    p.add_argument("--predictions", type=Path, help="instead of a run: a folder of predicted label maps")
    p.add_argument("--references", type=Path, help="with --predictions: the folder of reference label maps")
    p.add_argument(
        "--labels",
        choices=("auto", "brats", "2023"),
        default="auto",
        help="label values of the folders: brats (0/1/2/4), 2023 (0/1/2/3), auto (3 present: 2023)",
    )
    p.add_argument("--data", type=Path, help="the store (default: the one the run trained on)")
    p.add_argument(
        "--split", choices=("train", "val", "test"), default="test", help="which patients (default test)"
    )
    p.add_argument("--out", type=Path, help="output folder (default RUN/evaluation-SPLIT)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the results of an earlier evaluation there"
    )
    add_model_options(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tumorseg.checkpoint import check_run_identity
    from tumorseg.evaluation.evaluate import evaluate_run
    from tumorseg.evaluation.folders import evaluate_folders
    from tumorseg.rundir import RunDir

    folders = bool(args.predictions or args.references)
    if folders == bool(args.run) or folders and not (args.predictions and args.references and args.out):
        raise TumorsegError(
            "evaluate: give a RUN, or --predictions DIR --references DIR --out DIR (label maps on disk)"
        )
    if folders:
        labels = {"2023": "brats2023"}.get(args.labels, args.labels)
        result = evaluate_folders(
            args.predictions, args.references, args.out, labels=labels, overwrite=args.overwrite
        )
        what = "cases"
    else:
        if args.models and not args.out:
            raise TumorsegError("evaluate: --models needs --out (the run's own folders are its own model's)")
        segmenter = segmenter_from_args(args, args.models or args.run)
        if not args.models:  # the run's own model: it must be the run's, whose split it is scored on
            check_run_identity(segmenter.path)
        variant = evaluation_variant(args)
        result = evaluate_run(
            RunDir.of(args.run), segmenter, args.data, args.split, args.out, overwrite=args.overwrite,
            variant=variant,
        )  # fmt: skip
        what = f"{args.split} patients"
    print(f"{result.summary['dice_WT']['n']} {what}, mean ± std over patients:\n")
    print(result.table)
    accuracy = result.report["accuracy"]["value"]
    print(f"\nper-voxel accuracy {accuracy:.4f}; classification report, metrics.csv, figures: {result.out}")
    return 0


def add_cv(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cv",
        help="cross-validate: pool the out-of-fold evaluations of K fold runs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Evaluate each fold run's last.pt on the patients it validated on, then pool the per-patient\n"
            "metrics so that every patient is scored once by a model that never saw it, and nothing was\n"
            "chosen on them (not the epoch; the post-processing only with --choose-postprocessing, fold\n"
            "by fold on the other folds). With folds trained --group-by site, each patient is scored by a\n"
            "model that never saw its site: the estimate for new hospitals (the first line says which).\n"
            "Prints mean ± std over patients and the std of the fold means; writes FOLDS_DIR/crossval-last.\n"
            "Several folders trained on the same folds (other recipes or seeds) are measured as an\n"
            "ensemble: each patient by the averaged probabilities of the fold models that never saw it,\n"
            "one per folder (written to the first: crossval-with-OTHER-last)."
        ),
        epilog="example (5 folds over every patient):\n"
        "  for i in 0 1 2 3 4; do\n"
        "    tumorseg train --data store.h5 --out runs/cv/fold-$i --folds 5 --fold $i --test-fraction 0 \\\n"
        "      --group-by site\n"
        "  done\n"
        "  tumorseg cv runs/cv\n"
        "  tumorseg cv runs/cv runs/cv-seed1   # an ensemble with runs trained on the same folds:\n"
        "  # tumorseg train ... --split runs/cv/fold-$i/split.json --seed 1 --out runs/cv-seed1/fold-$i",
    )
    p.add_argument(
        "folds_dirs",
        type=Path,
        nargs="+",
        metavar="FOLDS_DIR",
        help="a folder holding one run per fold; several: their ensemble",
    )
    p.add_argument("--data", type=Path, help="the store (default: the one the runs trained on)")
    add_model_options(p)
    p.add_argument(
        "--best",
        action="store_true",
        help="score each fold's best.pt, whose epoch was chosen on the very patients scored (which "
        "flatters the estimate: docs/results.md), instead of last.pt, the model its fixed schedule ends "
        "with; results go to evaluation-val and crossval instead of evaluation-val-last and crossval-last",
    )
    p.add_argument("--last", action="store_true", help=argparse.SUPPRESS)  # the default; once a flag
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="evaluate every fold again (else reuse one evaluated since its checkpoints were saved)",
    )
    p.add_argument(
        "--choose-postprocessing",
        action="store_true",
        help="also choose the post-processing thresholds (tumor islands, doubtful pieces of core, small "
        "enhancing tumor) that maximize the mean out-of-fold Dice, and fit tumor growth (a logistic "
        "model adding the tumor's missed rim), kept if it helps folds it was not fitted on; writes "
        "FOLDS_DIR/postprocessing-last.json and .csv",
    )
    p.set_defaults(func=cmd_cv)


def cmd_cv(args: argparse.Namespace) -> int:
    from tumorseg.evaluation.crossval import choose_fold_postprocessing, cross_validate
    from tumorseg.rundir import variant_name

    last = not args.best

    def segmenter_of(runs: list[RunDir]) -> Segmenter:
        return segmenter_from_args(args, [fold_checkpoint(run, last) for run in runs])

    result = cross_validate(
        args.folds_dirs,
        segmenter_of,
        args.data,
        overwrite=args.overwrite,
        variant=evaluation_variant(args, last),
    )
    print(result.table)
    print(f"\npooled out-of-fold metrics, summary with fold means: {result.out}")
    if args.choose_postprocessing:
        choice, path = choose_fold_postprocessing(
            args.folds_dirs,
            segmenter_of,
            args.data,
            variant=variant_name(last=last, step=args.coarse_step),
        )
        print(f"\n{choice.table()}")
        print(
            f"\nmean out-of-fold Dice of every candidate: {path.with_suffix('.csv')}; the rule: "
            f"{path} (measure it: --postprocessing; ship it: tumorseg pack)"
        )
    return 0


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write one self-contained HTML report of a run",
        description="Write RUN/report.html: environment, training curves, metrics table, classification "
        "report, confusion matrix, overlays and the configuration, figures embedded, for any browser.",
    )
    p.add_argument("run", type=Path, help="run directory")
    p.add_argument("--evaluation", type=Path, help="evaluation folder (default RUN/evaluation-test)")
    p.add_argument("--out", type=Path, help="HTML file (default RUN/report.html)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from tumorseg.evaluation.report import build_report

    print(f"wrote {build_report(args.run, args.evaluation, args.out, overwrite=args.overwrite)}")
    return 0


def add_view(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view",
        help="write an interactive, offline HTML viewer of a case and its label maps",
        description="Write one self-contained HTML file (no network needed to open it) to scroll through a "
        "case: axial, coronal and sagittal planes, FLAIR/T1/T1ce/T2, the prediction (filled) and the "
        "reference (outlined) in BraTS colors with adjustable opacity, a crosshair with voxel coordinates "
        "and labels, and tumor volumes. A case folder's own label file is the reference.",
        epilog="example:\n  tumorseg view BraTS20_Training_001 --seg seg.nii.gz --out view.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("case", type=Path, help="a case folder")
    p.add_argument("--seg", type=Path, help="a label map to show as the prediction (e.g. from predict)")
    p.add_argument("--reference", type=Path, help="a label map to outline as the reference")
    p.add_argument("--uncertainty", type=Path, help="a voxel-wise map shown as a heat overlay")
    p.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_view)


def cmd_view(args: argparse.Namespace) -> int:
    from tumorseg.evaluation.viewer import view_case

    out = view_case(
        args.case,
        args.out,
        seg=args.seg,
        reference=args.reference,
        uncertainty=args.uncertainty,
        overwrite=args.overwrite,
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): open it in a browser")
    return 0
