"""``tumorseg predict``, ``export`` and ``pack``: segmenting new patients, and a model's files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tumorseg.cli.options import (
    add_input_options,
    add_model_options,
    add_model_source,
    announced_segmenter,
    label_convention,
)
from tumorseg.errors import TumorsegError


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
            "some of --flair --t1 --t1ce --t2 left out); the JSON records which were missing. A region\n"
            "none of whose sequences is given (the whole tumor without FLAIR and T2, the core and the\n"
            "enhancing tumor without T1ce) gets no volume ('-'; null in the JSON); T1 alone is refused.\n\n"
            "BraTS-preprocessed sequences (co-registered, skull-stripped, background 0) are segmented\n"
            "as they are; another voxel size is resampled to the model's and the labels back.\n\n"
            "Raw scans (a DICOM study, DICOM series folders or NIfTI files on their own grids, skull on)\n"
            "go through the BraTS preprocessing first, on the CPU: skull stripping (deepbet), rigid\n"
            "co-registration of every sequence to the T1ce, rigid registration to the SRI24 atlas and\n"
            "1 mm resampling. The label map is written on the T1ce's own grid, with OUT_atlas.nii.gz\n"
            "(the labels in BraTS space, 240 x 240 x 155) and OUT_brain.nii.gz (the brain mask) beside\n"
            "it (and from DICOM, OUT_seg.dcm and OUT_sr.dcm: a DICOM Segmentation over the T1ce's series\n"
            "and its volumes as a Structured Report); volumes are counted on the native grid.\n"
            "--preprocess auto (the default) decides per case and prints why a case is raw: DICOM,\n"
            "sequences on different grids, or a first sequence with a background that is not 0.\n"
            "Otherwise, as with --preprocess brats, a sequence of which fewer than 5 % of voxels are 0\n"
            "is refused."
        ),
        epilog="examples:\n"
        "  tumorseg predict BraTS20_Training_001 --out seg.nii.gz     # the models that ship with tumorseg\n"
        "  tumorseg predict --model runs/first BraTS20_Training_001 --out seg.nii.gz\n"
        "  tumorseg predict --model runs/first/best.pt --flair f.nii.gz --t1 t1.nii.gz --t1ce c.nii.gz \\\n"
        "      --t2 t2.nii.gz --out seg.nii.gz\n"
        "  tumorseg predict --model runs/first cases/ --out predictions/ --tta     # every case folder\n"
        "  tumorseg predict --model runs/cv CASE --out seg.nii.gz     # the fold models of a cv\n"
        "  tumorseg predict --model runs/a --model runs/b CASE --out seg.nii.gz     # any models, averaged\n"
        "  tumorseg predict STUDY_DICOM_FOLDER --out seg.nii.gz     # a raw study, series found by name\n"
        "  tumorseg predict --flair fl.nii.gz --t1 t1.nii.gz --t1ce t1c_dicom/ --t2 t2.nii.gz \\\n"
        "      --out seg.nii.gz     # files or series folders, each on its own grid",
    )
    p.add_argument(
        "input", type=Path, nargs="?", help="a case folder, a folder of case folders, or a DICOM study folder"
    )
    add_model_source(p)
    p.add_argument("--out", type=Path, required=True, help="output .nii.gz (one case) or folder (several)")
    for modality in ("flair", "t1", "t1ce", "t2"):
        p.add_argument(
            f"--{modality}",
            type=Path,
            help=f"the {modality.upper()} NIfTI file or DICOM series folder, instead of INPUT",
        )
    add_input_options(p, "every case")
    add_model_options(p, predicting=True)
    p.add_argument(
        "--keep-preprocessed",
        type=Path,
        metavar="DIR",
        help="write each raw case's sequences in BraTS space as the case folder DIR/CASE, for "
        "`tumorseg view DIR/CASE --seg OUT_atlas.nii.gz`",
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
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from tumorseg.inference.predict import files_from_paths, predict

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

    result = predict(
        inputs,
        args.out,
        announced_segmenter(args),
        overwrite=args.overwrite,
        labels=label_convention(args),
        probabilities=args.probabilities,
        uncertainty=args.uncertainty,
        preprocess=args.preprocess,
        keep_preprocessed=args.keep_preprocessed,
    )
    if result.volumes:
        print(f"{'case':<28} {'WT mL':>8} {'TC mL':>8} {'ET mL':>8}")
        for case_id, volumes in result.volumes.items():
            cells = " ".join(f"{millilitres(volumes[r]):>8}" for r in ("WT", "TC", "ET"))
            print(f"{case_id:<28} {cells}" + volume_notes(volumes))
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


def add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="write a DICOM study's series as NIfTI, named by sequence",
        description="Find the series of a DICOM study (a folder, searched four levels deep), name each "
        "from its header (series description, sequence name, contrast agent) and write the FLAIR, T1, "
        "T1ce and T2 series as OUT/flair.nii.gz, t1.nii.gz, t1ce.nii.gz, t2.nii.gz, on their own grids "
        "in patient coordinates. Prints the table of the series found and what each was taken for.",
        epilog="example:\n  tumorseg convert study/ --out nifti/\n"
        "  tumorseg predict --flair nifti/flair.nii.gz --t1ce nifti/t1ce.nii.gz --out seg.nii.gz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("study", type=Path, help="a folder holding one patient's DICOM series")
    p.add_argument("--out", type=Path, required=True, help="the folder to write into")
    p.add_argument("--overwrite", action="store_true", help="replace files that exist")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    from tumorseg.files import made_folder
    from tumorseg.inference.writing import write_together
    from tumorseg.outputs import claim_outputs
    from tumorseg.raw import dicom

    if not args.study.is_dir():
        raise TumorsegError(f"{args.study}: not a folder")
    series = dicom.find_series(args.study)
    chosen = dicom.choose(series, args.study)
    print(dicom.table(series, chosen))
    targets = {sequence: args.out / f"{sequence}.nii.gz" for sequence in chosen}
    if args.out.exists() and not args.out.is_dir():
        raise TumorsegError(f"{args.out}: is a file; give a folder")
    claim_outputs(list(targets.values()), [args.study], args.overwrite)
    volumes = {sequence: dicom.read_series(item) for sequence, item in chosen.items()}  # before any write
    with made_folder(args.out):  # nothing written: no empty folder left
        write_together(
            [
                (path, lambda p, image=volumes[s]: sitk.WriteImage(image, str(p)))
                for s, path in targets.items()
            ]
        )
    print(f"wrote {', '.join(path.name for path in targets.values())} in {args.out}")
    return 0


def millilitres(volume: float | None) -> str:
    """A region's volume as the table prints it; "-" for one the case's sequences cannot show."""
    return "-" if volume is None else f"{volume:.1f}"


def volume_notes(volumes: dict) -> str:
    """What a case's volumes record says beyond the volumes: missing sequences, uncertainty, resampling."""
    notes = []
    if "missing" in volumes:
        notes.append(f"without {', '.join(volumes['missing']).upper()}")
    if "not_shown" in volumes:
        notes.append(f"{', '.join(volumes['not_shown'])} not shown by the sequences given")
    if "uncertain_mL" in volumes:
        notes.append(f"uncertain {volumes['uncertain_mL']:.1f} mL")
    if "resampled_from_mm" in volumes:
        size = " x ".join(f"{s:g}" for s in volumes["resampled_from_mm"])
        notes.append(f"resampled from {size} mm")
    return f"   ({'; '.join(notes)})" if notes else ""


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


def add_pack(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pack",
        help="pack a trained model into one small file, with its post-processing",
        description="Write the model of a run (best.pt) or checkpoint as a standalone model file: the "
        "network's config and weights (fp16: half the size; read back as float32), and a post-processing "
        "rule chosen by `tumorseg cv --choose-postprocessing`, which predict and evaluate then apply; "
        "with them the patients it learned from and the run's training configuration. No optimizer or "
        "training state. The models that ship with tumorseg are such files.",
        epilog="example:\n"
        "  tumorseg cv runs/cv --choose-postprocessing\n"
        "  tumorseg pack runs/final --postprocessing runs/cv/postprocessing-last.json --out model.pt\n"
        "  tumorseg predict --model model.pt CASE --out seg.nii.gz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", type=Path, help="run directory or checkpoint")
    p.add_argument("--out", type=Path, required=True, help="the model file to write")
    p.add_argument("--postprocessing", type=Path, metavar="JSON", help="the rule to store (default none)")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights (default: fp16)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_pack)


def cmd_pack(args: argparse.Namespace) -> int:
    from tumorseg.inference.bundle import pack
    from tumorseg.outputs import claim_outputs
    from tumorseg.postprocessing import PostProcessing

    rule = PostProcessing.from_file(args.postprocessing) if args.postprocessing else PostProcessing()
    claim_outputs([args.out], [args.model], args.overwrite)
    pack(args.model, args.out, rule, half=not args.fp32)
    size = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size:.1f} MB, {'fp32' if args.fp32 else 'fp16'}; post-processing: {rule})")
    return 0
