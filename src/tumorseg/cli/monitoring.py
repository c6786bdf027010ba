"""``tumorseg compare``: two visits of one patient, and what changed between them."""

from __future__ import annotations

import argparse
from pathlib import Path

from tumorseg.cli.options import (
    add_input_options,
    add_model_options,
    add_model_source,
    announced_segmenter,
    label_convention,
)


def add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two visits of one patient: volumes, RANO response, change map, report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Segment two visits of one patient (or read their label maps, --seg), register the\n"
            "follow-up rigidly to the baseline, and measure what changed:\n"
            "  - volumes of WT, TC, ET, NCR and edema at both visits, their change in mL and %, each\n"
            "    flagged when it is smaller than the measurement's repeatability (noise, not change);\n"
            "  - the bidimensional product of the largest enhancing lesion (RANO) at both visits;\n"
            "  - a response category by RANO's bidimensional rule (+25 % / -50 %) and by RANO 2.0's\n"
            "    volumetric rule (+40 % / -65 %), each printed with its rule; 'not evaluable' without a\n"
            "    measurable enhancing tumor at baseline, when the registration failed, or when a visit\n"
            "    lacks its T1ce (the enhancing tumor is outlined on it; regions a visit's sequences\n"
            "    cannot show get no change);\n"
            "  - a change map on the baseline's grid (1 vanished, 2 persisting, 3 new whole tumor).\n\n"
            "A visit is anything `predict` takes as one case: a BraTS-preprocessed case folder, a raw\n"
            "NIfTI case folder or a DICOM study (these go through the raw pipeline and are compared in\n"
            "BraTS space). OUT receives baseline.nii.gz and followup.nii.gz (when segmented here),\n"
            "followup_on_baseline.nii.gz, change.nii.gz, comparison.json, comparison.csv and\n"
            "report.html, all written together or not at all."
        ),
        epilog="examples:\n"
        "  tumorseg compare visit1/ visit2/ --out change/          # the models that ship with tumorseg\n"
        "  tumorseg compare visit1/ visit2/ --out change/ --seg seg1.nii.gz seg2.nii.gz\n"
        "  tumorseg compare STUDY_2025_DICOM/ STUDY_2026_DICOM/ --out change/",
    )
    p.add_argument("baseline", type=Path, help="the first visit: a case folder or a DICOM study folder")
    p.add_argument("followup", type=Path, help="the later visit, as the first")
    p.add_argument("--out", type=Path, required=True, help="the folder to write into")
    p.add_argument(
        "--seg",
        type=Path,
        nargs=2,
        metavar=("BASELINE_SEG", "FOLLOWUP_SEG"),
        help="the visits' label maps (BraTS values, on each visit's grid) instead of segmenting them",
    )
    add_model_source(p)
    add_input_options(p, "both visits")
    add_model_options(p, predicting=True)
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from tumorseg.monitoring.compare import compare

    result = compare(
        args.baseline,
        args.followup,
        args.out,
        announced_segmenter(args),
        seg=tuple(args.seg) if args.seg else None,
        preprocess=args.preprocess,
        labels=label_convention(args),
        overwrite=args.overwrite,
    )
    print(f"{'region':<7}{'baseline mL':>12}{'follow-up mL':>13}{'change mL':>10}{'change %':>9}")
    for row in result.regions():
        percent = "" if row["change_percent"] is None else f"{row['change_percent']:+.1f}"
        noise = {None: "", True: "  within measurement noise", False: ""}[row["within_noise"]]
        change = "-" if row["change_ml"] is None else f"{row['change_ml']:+.2f}"
        note = f"  {row['not_shown']}" if row["not_shown"] else noise
        print(f"{row['region']:<7}{row['baseline_ml']:12.2f}{row['followup_ml']:13.2f}"
              f"{change:>10}{percent:>9}{note}")  # fmt: skip
    for name, lesion in result.bidimensional.items():
        size = f"{lesion.longest_mm:.1f} x {lesion.perpendicular_mm:.1f} mm = {lesion.product_mm2:.0f} mm2"
        print(f"{name}: largest enhancing lesion {size}{'' if lesion.measurable else ' (not measurable)'}")
    for judged in result.responses:
        print(f"{judged.rule}: {judged.category} ({judged.reason})")
    if not result.alignment.aligned:
        print(f"registration failed: the brains overlap {result.alignment.overlap:.2f} once aligned")
    print(f"wrote {len(result.written)} files under {args.out}; open {args.out / 'report.html'}")
    return 0
