"""``tumorseg synth``, ``prepare``, ``inspect`` and ``split``: phantoms, the store and its splits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) >= 8 for p in parts):
        raise argparse.ArgumentTypeError(f"expected a shape like 96x96x64 (each >= 8), got {text!r}")
    return tuple(int(p) for p in parts)


def add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write synthetic phantom cases (BraTS folders or Kaggle slices)",
        description="Write phantom brains with nested tumor regions whose contrast differs per "
        "modality as in real MRI. Deterministic for a given --seed. With --tumor-scale, the same "
        "phantoms with their tumors grown or shrunk: a follow-up visit of known change.",
        epilog="examples:\n"
        "  tumorseg synth phantoms --cases 8\n"
        "  tumorseg synth visit1 --cases 1 && tumorseg synth visit2 --cases 1 --tumor-scale 1.3\n"
        "  tumorseg compare visit1/Phantom_001 visit2/Phantom_001 --out change/ \\\n"
        "      --seg visit1/Phantom_001/Phantom_001_seg.nii.gz visit2/Phantom_001/Phantom_001_seg.nii.gz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", type=Path, help="folder to write into")
    p.add_argument("--cases", type=int, default=8, help="number of phantoms (default 8)")
    p.add_argument("--shape", type=_shape, default=(96, 96, 64), help="volume shape XxYxZ (default 96x96x64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace phantoms of the same names there")
    p.add_argument(
        "--tumor-scale",
        type=_scale,
        default=1.0,
        help="multiply every tumor's radii by this (default 1): the same brains, tumors grown or shrunk",
    )
    p.add_argument(
        "--layout",
        choices=("brats", "kaggle"),
        default="brats",
        help="brats: one folder per case, <id>_flair.nii.gz etc.; kaggle: volume_<v>_slice_<s>.h5 files",
    )
    p.set_defaults(func=cmd_synth)


def _scale(text: str) -> float:
    value = float(text)
    if not 0 < value <= 10:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 10, not {text}")
    return value


def cmd_synth(args: argparse.Namespace) -> int:
    from tumorseg.data.synth import synthesize

    written = synthesize(
        args.out,
        args.cases,
        shape=args.shape,
        seed=args.seed,
        layout=args.layout,
        overwrite=args.overwrite,
        tumor_scale=args.tumor_scale,
    )
    what = "case folders" if args.layout == "brats" else "Kaggle slice files"
    print(f"wrote {args.cases} phantom {what} of shape {args.shape} under {args.out}")
    return 0 if written else 1


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
    p.add_argument(
        "--group-by",
        choices=("site",),
        default="",
        help="site: keep each site's patients (read from BraTS 2017-2019 case ids) in one fold",
    )
    p.set_defaults(func=cmd_split)


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
        group_by=args.group_by,
    )
    provenance = {"seed": args.seed, "folds": args.folds, "fold": args.fold, "group_by": args.group_by}
    save_split(args.out, split, store=str(args.store), **provenance)
    sizes = ", ".join(f"{part} {len(ids)}" for part, ids in split.items())
    print(f"{args.out}: {sizes} patients")
    return 0
