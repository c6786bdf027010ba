"""The ``tumorseg`` command: parse arguments, call one function, print, return an exit code."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tumorseg import __version__
from tumorseg.errors import TumorsegError
from tumorseg.interrupts import Terminated, handled

if TYPE_CHECKING:  # commands import what they use when they run, to start fast
    from tumorseg.postprocess import PostProcessing
    from tumorseg.rundir import RunDir

EXAMPLES = """\
the pipeline:
  tumorseg synth phantoms --cases 8                       # synthetic BraTS-style cases
  tumorseg prepare phantoms --out store.h5                # NIfTI or Kaggle slices -> HDF5 store
  tumorseg inspect store.h5                               # what the store holds
  tumorseg train --data store.h5 --out runs/first         # train, validating every epoch
  tumorseg evaluate runs/first                            # Dice, IoU, HD95 on the test patients
  tumorseg report runs/first                              # runs/first/report.html
  tumorseg predict --model runs/first CASE --out seg.nii.gz   # a new patient
  tumorseg demo                                           # all of it, on phantoms

Run `tumorseg COMMAND --help` for each command's options.
"""


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) >= 8 for p in parts):
        raise argparse.ArgumentTypeError(f"expected a shape like 96x96x64 (each >= 8), got {text!r}")
    return tuple(int(p) for p in parts)


def cmd_synth(args: argparse.Namespace) -> int:
    from tumorseg.data.synth import synthesize

    written = synthesize(
        args.out, args.cases, shape=args.shape, seed=args.seed, layout=args.layout, overwrite=args.overwrite
    )
    what = "case folders" if args.layout == "brats" else "Kaggle slice files"
    print(f"wrote {args.cases} phantom {what} of shape {args.shape} under {args.out}")
    return 0 if written else 1


def cmd_prepare(args: argparse.Namespace) -> int:
    from tumorseg.data.prepare import prepare_store

    result = prepare_store(
        args.sources,
        args.out,
        existing=args.existing,
        skip_invalid=args.skip_invalid,
        require_label=not args.unlabeled,
    )
    print(
        f"{args.out}: added {len(result.added)} cases"
        + (f", replaced {len(result.replaced)}" if result.replaced else "")
        + (f", skipped {len(result.skipped_existing)} already there" if result.skipped_existing else "")
    )
    for where, problem in result.invalid:
        print(f"skipped invalid: {problem}" if where in problem else f"skipped invalid {where}: {problem}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from tumorseg.data.store import describe
    from tumorseg.labels import CLASS_NAMES

    summary = describe(args.store)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    cases = summary["cases"]
    labeled = sum(c["labeled"] for c in cases)
    print(f"{summary['path']}  (store format {summary['format_version']}, {summary['written_by']})")
    print(f"  size on disk  {summary['size_bytes'] / 1e6:,.1f} MB")
    print(f"  cases         {len(cases)} ({labeled} labeled)")
    print(f"  slices        {summary['slices']:,} ({summary['tumor_slices']:,} with tumor)")
    voxels = ", ".join(f"{n} {v:,}" for n, v in zip(CLASS_NAMES, summary["voxels"], strict=True))
    print(f"  voxels        {voxels}  (inside the stored crops)")
    if args.cases:
        print(f"\n  {'case':<28} {'slices':>6} {'tumor':>6}  shape (Z, C, H, W)")
        for c in cases:
            print(f"  {c['case_id']:<28} {c['slices']:>6} {c['tumor_slices']:>6}  {tuple(c['shape'])}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from tumorseg.data.splits import save_split, split_cases
    from tumorseg.data.store import Store
    from tumorseg.outputs import claim_outputs

    claim_outputs([args.out], [args.store], args.overwrite)
    with Store(args.store) as store:
        case_ids = store.labeled_case_ids
    split = split_cases(
        case_ids,
        val_fraction=args.val,
        test_fraction=args.test,
        seed=args.seed,
        folds=args.folds,
        fold=args.fold,
    )
    save_split(args.out, split, store=str(args.store), seed=args.seed, folds=args.folds, fold=args.fold)
    sizes = ", ".join(f"{part} {len(ids)}" for part, ids in split.items())
    print(f"{args.out}: {sizes} patients")
    return 0


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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tumorseg.evaluation.evaluate import evaluate_run
    from tumorseg.evaluation.folders import evaluate_folders
    from tumorseg.inference.segmenter import Segmenter
    from tumorseg.rundir import RunDir, variant_name

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
        absent, rule = missing_sequences(args), postprocessing(args)
        if args.models and not args.out:
            raise TumorsegError("evaluate: --models needs --out (the run's own folders are its own model's)")
        segmenter = Segmenter(
            args.models or args.run, device=args.device, tta=args.tta, absent=absent, postprocessing=rule,
            step=args.coarse_step,
        )  # fmt: skip
        result = evaluate_run(
            RunDir.of(args.run), segmenter, args.data, args.split, args.out, overwrite=args.overwrite,
            variant=variant_name(args.tta, absent, rule is not None, step=args.coarse_step),
        )  # fmt: skip
        what = f"{args.split} patients"
    print(f"{result.summary['dice_WT']['n']} {what}, mean ± std over patients:\n")
    print(result.table)
    accuracy = result.report["accuracy"]["value"]
    print(f"\nper-voxel accuracy {accuracy:.4f}; classification report, metrics.csv, figures: {result.out}")
    return 0


def fold_checkpoint(run: RunDir, last: bool) -> Path:
    """The model of a fold that cv scores: the run (its best.pt), or with ``last`` its last.pt."""
    if not last:
        return run.root
    if not run.last.is_file():
        raise TumorsegError(f"{run.root}: no last.pt to score (--last scores each fold's last epoch)")
    return run.last


def cmd_cv(args: argparse.Namespace) -> int:
    from tumorseg.evaluation.crossval import choose_fold_postprocessing, cross_validate
    from tumorseg.inference.segmenter import Segmenter
    from tumorseg.rundir import variant_name

    absent, rule = missing_sequences(args), postprocessing(args)
    segmenter_of = lambda runs: Segmenter(  # noqa: E731
        [fold_checkpoint(run, args.last) for run in runs],
        device=args.device,
        tta=args.tta,
        absent=absent,
        postprocessing=rule,
        step=args.coarse_step,
    )
    result = cross_validate(
        args.folds_dirs,
        segmenter_of,
        args.data,
        overwrite=args.overwrite,
        variant=variant_name(args.tta, absent, rule is not None, args.last, args.coarse_step),
    )
    print(result.table)
    print(f"\npooled out-of-fold metrics, summary with fold means: {result.out}")
    if args.choose_postprocessing:
        choice, path = choose_fold_postprocessing(
            args.folds_dirs,
            segmenter_of,
            args.data,
            variant=variant_name(last=args.last, step=args.coarse_step),
        )
        print(f"\n{choice.table()}")
        print(
            f"\nmean out-of-fold Dice of every candidate: {path.with_suffix('.csv')}; the rule: "
            f"{path} (measure it: --postprocessing; ship it: tumorseg pack)"
        )
    return 0


def postprocessing(args: argparse.Namespace) -> PostProcessing | None:
    """The rule of --postprocessing FILE, or None: the model's own."""
    from tumorseg.postprocess import PostProcessing

    return PostProcessing.from_file(args.postprocessing) if args.postprocessing else None


def cmd_pack(args: argparse.Namespace) -> int:
    from tumorseg.inference.bundle import pack
    from tumorseg.outputs import claim_outputs
    from tumorseg.postprocess import PostProcessing

    rule = postprocessing(args) or PostProcessing()
    claim_outputs([args.out], [args.model], args.overwrite)
    pack(args.model, args.out, rule, half=not args.fp32)
    size = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size:.1f} MB, {'fp32' if args.fp32 else 'fp16'}; post-processing: {rule})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tumorseg.evaluation.report import build_report

    print(f"wrote {build_report(args.run, args.evaluation, args.out, overwrite=args.overwrite)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tumorseg.inference.export import export_onnx
    from tumorseg.inference.onnx import onnx_path
    from tumorseg.inference.segmenter import Segmenter
    from tumorseg.outputs import claim_outputs
    from tumorseg.rundir import RunDir

    segmenter = Segmenter(args.model)
    out = args.out or onnx_path(segmenter.path, int8=args.int8 is not None)
    inputs = [segmenter.path, *RunDir.of(segmenter.path).inputs]
    # an earlier export is among the run's files, but --overwrite may replace it with a new one
    claim_outputs([out], [path for path in inputs if path.suffix != ".onnx" or path != out], args.overwrite)
    print(f"wrote {export_onnx(segmenter, out, calibration=args.int8)}")
    return 0


def volume_notes(volumes: dict) -> str:
    """What a case's volumes record says beyond the volumes: missing sequences, uncertainty, resampling."""
    notes = []
    if "missing" in volumes:
        notes.append(f"without {', '.join(volumes['missing']).upper()}")
    if "uncertain_mL" in volumes:
        notes.append(f"uncertain {volumes['uncertain_mL']:.1f} mL")
    if "resampled_from_mm" in volumes:
        size = " x ".join(f"{s:g}" for s in volumes["resampled_from_mm"])
        notes.append(f"resampled from {size} mm")
    return f"   ({'; '.join(notes)})" if notes else ""


def cmd_predict(args: argparse.Namespace) -> int:
    from tumorseg.inference.predict import files_from_paths, predict
    from tumorseg.inference.segmenter import COARSE_STEP, Segmenter
    from tumorseg.postprocess import PostProcessing

    explicit = [args.flair, args.t1, args.t1ce, args.t2]
    if any(explicit):
        if args.input:
            raise TumorsegError("predict: give either INPUT or the files (--flair --t1 --t1ce --t2)")
        inputs = files_from_paths(*explicit)
    elif args.input:
        inputs = args.input
    else:
        raise TumorsegError(
            "predict: give INPUT (a case folder or a folder of them) or --flair --t1 --t1ce --t2"
        )

    def segmenter() -> Segmenter:
        chosen = Segmenter(
            args.model,
            device=args.device,
            tta=args.tta,
            engine=args.engine,
            postprocessing=PostProcessing() if args.no_postprocessing else None,
            step=COARSE_STEP if args.coarse_step is None else args.coarse_step,
        )
        print(f"model: {chosen.description}")
        return chosen

    result = predict(
        inputs,
        args.out,
        segmenter,
        overwrite=args.overwrite,
        labels="brats2023" if args.labels == "2023" else "brats",
        probabilities=args.probabilities,
        uncertainty=args.uncertainty,
    )
    if result.volumes:
        print(f"{'case':<28} {'WT mL':>8} {'TC mL':>8} {'ET mL':>8}")
        for case_id, volumes in result.volumes.items():
            print(
                f"{case_id:<28} {volumes['WT']:>8.1f} {volumes['TC']:>8.1f} {volumes['ET']:>8.1f}"
                + volume_notes(volumes)
            )
    print(
        f"wrote {len(result.written)} label maps under {args.out}"
        if len(result.written) != 1
        else f"wrote {args.out}"
    )
    if result.skipped:
        print(f"skipped {len(result.skipped)} cases already segmented (--overwrite to redo them)")
    for case, problem in result.failed:
        print(f"failed {case}: {problem}", file=sys.stderr)
    return 1 if result.failed else 0


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


def cmd_demo(args: argparse.Namespace) -> int:
    from tumorseg.demo import run_demo

    run_demo(args.out, seed=args.seed, overwrite=args.overwrite)
    return 0


def build_parser(command: str | None = "train") -> argparse.ArgumentParser:
    """The whole command line; the training config's flags only when ``command`` is train (they are
    the one part whose definition imports PyTorch, so that ``tumorseg --help`` stays instant)."""
    parser = argparse.ArgumentParser(
        prog="tumorseg",
        description="Segment brain tumors in multimodal MRI (FLAIR, T1, T1ce, T2) with an Attention U-Net.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tumorseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = functools.partial(add_train, with_config_flags=command == "train")
    for add in (add_synth, add_prepare, add_inspect, add_split, train, add_evaluate, add_cv, add_report,
                add_predict, add_export, add_pack, add_view, add_demo):  # fmt: skip
        add(sub)
    return parser


def add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write synthetic phantom cases (BraTS folders or Kaggle slices)",
        description="Write phantom brains with nested tumor regions whose contrast differs per "
        "modality as in real MRI. Deterministic for a given --seed.",
    )
    p.add_argument("out", type=Path, help="folder to write into")
    p.add_argument("--cases", type=int, default=8, help="number of phantoms (default 8)")
    p.add_argument("--shape", type=_shape, default=(96, 96, 64), help="volume shape XxYxZ (default 96x96x64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace phantoms of the same names there")
    p.add_argument(
        "--layout",
        choices=("brats", "kaggle"),
        default="brats",
        help="brats: one folder per case, <id>_flair.nii.gz etc.; kaggle: volume_<v>_slice_<s>.h5 files",
    )
    p.set_defaults(func=cmd_synth)


def add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="build or extend an HDF5 store from BraTS NIfTI cases or Kaggle slice files",
        description="Read BraTS case folders (2018-2021 or 2023 names, .nii or .nii.gz) or a Kaggle "
        "BraTS2020 folder of volume_<v>_slice_<s>.h5 files, check them, crop each case to its brain, "
        "and append them to an HDF5 store. The store is replaced atomically: if prepare stops half-way, "
        "the old store (or none) is left as it was.",
    )
    p.add_argument(
        "sources",
        type=Path,
        nargs="+",
        help="case folders, folders of case folders, or Kaggle folders",
    )
    p.add_argument("--out", type=Path, required=True, help="the store file, e.g. store.h5")
    p.add_argument(
        "--existing",
        choices=("error", "skip", "replace"),
        default="error",
        help="a case already in the store: stop with an error (default), skip it, or replace it",
    )
    p.add_argument("--skip-invalid", action="store_true", help="skip bad cases and list them at the end")
    p.add_argument("--unlabeled", action="store_true", help="accept cases without a label file")
    p.set_defaults(func=cmd_prepare)


def add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="print what a store holds",
        description="Print a store's cases, slices, label volumes and size on disk.",
    )
    p.add_argument("store", type=Path)
    p.add_argument("--cases", action="store_true", help="also list every case")
    p.add_argument("--json", action="store_true", help="print the full summary as JSON")
    p.set_defaults(func=cmd_inspect)


def add_split(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "split",
        help="write a patient-level train/val/test split",
        description="Shuffle the labeled patients with --seed and write train/val/test lists as JSON. "
        "Patients, never slices, are split. With --folds K, the test set is held out and the rest cut into K "
        "folds; --fold i makes fold i the validation set.",
    )
    p.add_argument("store", type=Path)
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing split file")
    p.add_argument("--val", type=float, default=0.2, help="validation fraction (default 0.2)")
    p.add_argument("--test", type=float, default=0.2, help="test fraction (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=0, help="k-fold cross-validation with K folds")
    p.add_argument("--fold", type=int, default=0, help="which fold is validation (0..K-1)")
    p.set_defaults(func=cmd_split)


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
    p.add_argument("--tta", action="store_true", help="average over the four in-plane flips")
    add_coarse_step(p, default=1)
    add_missing(p)
    add_postprocessing(p)
    p.add_argument(
        "--device", default="auto", help="auto (default: the GPU when there is one), cpu or cuda[:N]"
    )
    p.set_defaults(func=cmd_evaluate)


def missing_sequences(args: argparse.Namespace) -> tuple[str, ...]:
    """The sequences of --missing in the modality order, as evaluation folders name them."""
    from tumorseg.data.case import MODALITIES

    return tuple(m for m in MODALITIES if m in args.missing)


def add_coarse_step(p: argparse.ArgumentParser, default: int | None) -> None:
    """--coarse-step; ``default`` None stands for predict's (segmenter.COARSE_STEP)."""
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
        choices=("flair", "t1", "t1ce", "t2"),
        metavar="SEQUENCE",
        help="segment as if these sequences (flair, t1, t1ce, t2) were not acquired: zeroed, as predict "
        "does for a case lacking them (a model trained with --modality-dropout); results go to "
        "evaluation-SPLIT-without-SEQUENCE",
    )


def add_cv(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cv",
        help="cross-validate: pool the out-of-fold evaluations of K fold runs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Evaluate each fold run's model (best.pt) on the patients it validated on, then pool the\n"
            "per-patient metrics so that every patient is scored once by a model that never saw it.\n"
            "Prints mean ± std over patients and the std of the fold means; writes FOLDS_DIR/crossval.\n"
            "Several folders trained on the same folds (other recipes or seeds) are measured as an\n"
            "ensemble: each patient by the averaged probabilities of the fold models that never saw it,\n"
            "one per folder (written to the first: crossval-with-OTHER)."
        ),
        epilog="example (5 folds over every patient):\n"
        "  for i in 0 1 2 3 4; do\n"
        "    tumorseg train --data store.h5 --out runs/cv/fold-$i --folds 5 --fold $i --test-fraction 0\n"
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
    p.add_argument("--tta", action="store_true", help="average over the four in-plane flips")
    add_coarse_step(p, default=1)
    add_missing(p)
    add_postprocessing(p)
    p.add_argument(
        "--device", default="auto", help="auto (default: the GPU when there is one), cpu or cuda[:N]"
    )
    p.add_argument(
        "--last",
        action="store_true",
        help="score each fold's last.pt, the model its schedule ends with, instead of best.pt, whose "
        "epoch was chosen on the very patients scored (which flatters the result: README); results "
        "go to evaluation-val-last and crossval-last",
    )
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
        "FOLDS_DIR/postprocessing.json and .csv",
    )
    p.set_defaults(func=cmd_cv)


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


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment new patients: NIfTI modalities in, BraTS label map out",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Segment cases with a trained model. The label map (0 background, 1 NCR/NET, 2 edema,\n"
            "4 enhancing) is written on the input's grid, with its affine and header; tumor volumes\n"
            "in mL are printed and saved as JSON. No ground truth is needed. A model trained with\n"
            "--modality-dropout also segments cases that lack sequences (a case folder missing files, or\n"
            "some of --flair --t1 --t1ce --t2 left out); the JSON records which were missing.\n\n"
            "The sequences are expected as BraTS preprocesses them: co-registered, and skull-stripped\n"
            "with a background of 0 (a sequence of which fewer than 5 % of voxels are 0 is refused).\n"
            "Another voxel size is resampled to the model's and the labels back to the input's grid."
        ),
        epilog="examples:\n"
        "  tumorseg predict BraTS20_Training_001 --out seg.nii.gz     # the models that ship with tumorseg\n"
        "  tumorseg predict --model runs/first BraTS20_Training_001 --out seg.nii.gz\n"
        "  tumorseg predict --model runs/first/best.pt --flair f.nii.gz --t1 t1.nii.gz --t1ce c.nii.gz \\\n"
        "      --t2 t2.nii.gz --out seg.nii.gz\n"
        "  tumorseg predict --model runs/first cases/ --out predictions/ --tta     # every case folder\n"
        "  tumorseg predict --model runs/cv CASE --out seg.nii.gz     # the fold models of a cv\n"
        "  tumorseg predict --model runs/a --model runs/b CASE --out seg.nii.gz     # any models, averaged",
    )
    p.add_argument("input", type=Path, nargs="?", help="a case folder, or a folder of case folders")
    p.add_argument(
        "--model",
        type=Path,
        action="append",
        help="a run directory (uses best.pt) or a model file (default: the models that ship with tumorseg, "
        "two networks trained on 28 BraTS 2018 patients and ensembled, and for a case lacking sequences "
        "a third; see MODEL_CARD.md); repeated, or a folder of fold runs: an ensemble, their "
        "probabilities averaged",
    )
    p.add_argument("--out", type=Path, required=True, help="output .nii.gz (one case) or folder (several)")
    for modality in ("flair", "t1", "t1ce", "t2"):
        p.add_argument(f"--{modality}", type=Path, help=f"the {modality.upper()} file, instead of INPUT")
    p.add_argument(
        "--labels", choices=("brats", "2023"), default="brats", help="2023: enhancing tumor is 3, not 4"
    )
    p.add_argument(
        "--tta", action="store_true", help="average over the four in-plane flips (about 4x slower)"
    )
    add_coarse_step(p, default=None)
    p.add_argument(
        "--no-postprocessing",
        action="store_true",
        help="skip the model's post-processing (removing small tumor islands, doubtful pieces of core "
        "relabeled edema, small enhancing tumor relabeled necrosis, with thresholds chosen on "
        "cross-validation)",
    )
    p.add_argument("--probabilities", action="store_true", help="also write <out>_probabilities.nii.gz")
    p.add_argument(
        "--uncertainty",
        action="store_true",
        help="also write <out>_uncertainty.nii.gz: per voxel, the largest binary entropy (bits, 0..1) of "
        "the region probabilities (with --tta, averaged over the flips); the volume at least 0.5 "
        "uncertain is printed and saved as uncertain_mL",
    )
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    p.add_argument(
        "--device", default="auto", help="auto (default: the GPU when there is one), cpu or cuda[:N]"
    )
    p.add_argument(
        "--engine",
        choices=("auto", "torch", "onnx", "onnx-int8"),
        default="auto",
        help="onnx: ONNX Runtime (after tumorseg export); onnx-int8: its 8-bit export (after tumorseg "
        "export --int8 STORE; the bundled models ship one), about 3x faster than torch on a CPU; auto "
        "(default): onnx-int8 on a CPU when the model has an 8-bit export (ONNX Runtime, installed with "
        "tumorseg; the command then never imports PyTorch), else torch",
    )
    p.set_defaults(func=cmd_predict)


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained model to ONNX",
        description="Write the model of a run (best.pt) or checkpoint as ONNX beside it (best.onnx), with "
        "its output activation, for `tumorseg predict --engine onnx` or any ONNX runtime. Input: z-scored "
        "slices (B, 4, H, W) (a 3D model: patches (B, 4, D, H, W)), sizes multiples of 2**depth; output: "
        "probabilities. With --int8 STORE, the graph is quantized to 8 bits (best.int8.onnx).",
    )
    p.add_argument("model", type=Path, help="run directory or checkpoint")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="the export format (default onnx)")
    p.add_argument("--out", type=Path, help="output file (default: beside the checkpoint, .onnx)")
    p.add_argument(
        "--int8",
        type=Path,
        metavar="STORE",
        help="quantize to 8-bit integers (weights per channel, activations with ranges measured on "
        "slices of up to 8 cases of STORE) and write .int8.onnx, for predict --engine onnx-int8",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.set_defaults(func=cmd_export)


def add_pack(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pack",
        help="pack a trained model into one small file, with its post-processing",
        description="Write the model of a run (best.pt) or checkpoint as a standalone model file: the "
        "network's config and weights (fp16: half the size; read back as float32), and a post-processing "
        "rule chosen by `tumorseg cv --choose-postprocessing`, which predict and evaluate then apply. "
        "No optimizer or training state. The models that ship with tumorseg are such files.",
        epilog="example:\n"
        "  tumorseg cv runs/cv --choose-postprocessing\n"
        "  tumorseg pack runs/final --postprocessing runs/cv/postprocessing.json --out model.pt\n"
        "  tumorseg predict --model model.pt CASE --out seg.nii.gz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", type=Path, help="run directory or checkpoint")
    p.add_argument("--out", type=Path, required=True, help="the model file to write")
    p.add_argument("--postprocessing", type=Path, metavar="JSON", help="the rule to store (default none)")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights (default: fp16)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_pack)


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


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(next((w for w in words if not w.startswith("-")), None)).parse_args(argv)
    try:
        with handled():
            return args.func(args)
    except TumorsegError as err:
        print(f"tumorseg: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a full disk, a read-only folder, ... met outside the checked paths
        print(f"tumorseg: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(
            "tumorseg: terminated" if isinstance(err, Terminated) else "tumorseg: interrupted",
            file=sys.stderr,
        )
        return 143 if isinstance(err, Terminated) else 130
