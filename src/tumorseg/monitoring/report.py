"""The HTML report of a comparison: the numbers, the rules they were judged by, their measurement
noise, and the two visits and the change map in the viewer (``tumorseg.evaluation.viewer``)."""

from __future__ import annotations

import html

from tumorseg.data.case import MODALITIES
from tumorseg.evaluation.viewer import viewer_block, viewer_data, viewer_page
from tumorseg.monitoring import measures, response
from tumorseg.monitoring.comparison import Comparison

STYLE = """
body { font-family: system-ui, sans-serif; color: #222; max-width: 80em; margin: 1em auto; padding: 0 1em; }
table.numbers { border-collapse: collapse; margin: .5em 0 1em; }
table.numbers td, table.numbers th { border: 1px solid #ccc; padding: .25em .7em; text-align: right; }
table.numbers th:first-child, table.numbers td:first-child { text-align: left; }
.noise { color: #777; } .note { color: #555; font-size: .9em; }
"""

FAILED = ", too little: the registration failed, and the change map and the responses are not evaluable"


def _number(value: float | None, form: str) -> str:
    return "" if value is None else format(value, form)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="numbers"><tr>{head}</tr>{body}</table>'


def volume_table(comparison: Comparison) -> str:
    rows = []
    for row in comparison.regions():
        noise = row["within_noise"]
        verdict = "" if noise is None else "within measurement noise" if noise else "beyond measurement noise"
        verdict = row["not_shown"] or verdict
        verdict = f'<span class="{"noise" if noise else ""}">{verdict}</span>'
        rows.append([
            row["region"], _number(row["baseline_ml"], ".2f"), _number(row["followup_ml"], ".2f"),
            _number(row["change_ml"], "+.2f"), _number(row["change_percent"], "+.1f"),
            _number(row["repeatability_ml"], ".2f"), verdict,
        ])  # fmt: skip
    return _table(
        ["region", "baseline mL", "follow-up mL", "change mL", "change %", "repeatability mL", ""], rows
    )


def response_table(comparison: Comparison) -> str:
    rows = []
    for name in ("baseline", "followup"):
        lesion = comparison.bidimensional[name]
        rows.append([
            name, f"{lesion.longest_mm:.1f} x {lesion.perpendicular_mm:.1f}", f"{lesion.product_mm2:.0f}",
            "yes" if lesion.measurable else "no", str(lesion.lesions),
        ])  # fmt: skip
    lesions = _table(["visit", "diameters mm", "product mm2", "measurable", "enhancing lesions"], rows)
    judged = _table(
        ["rule", "category", "why"],
        [[r.rule, f"<b>{html.escape(r.category)}</b>", html.escape(r.reason)] for r in comparison.responses],
    )
    return lesions + judged


def report_page(comparison: Comparison) -> str:
    """The whole report as one self-contained HTML page."""
    before, after, alignment = comparison.baseline, comparison.followup, comparison.alignment
    parts = [
        f"<h1>tumorseg compare: {html.escape(before.case_id)} and {html.escape(after.case_id)}</h1>",
        f"<p>baseline <code>{html.escape(before.source)}</code>, "
        f"follow-up <code>{html.escape(after.source)}</code>"
        + "".join(
            f"; the {v.name} went through the raw pipeline ({html.escape(v.raw)})"
            for v in (before, after)
            if v.raw
        )  # fmt: skip
        + "</p>",
        "<h2>Response</h2>",
        response_table(comparison),
        '<p class="note">Rules: '
        + "<br>".join(
            html.escape(rule.text()) for rule in (response.BIDIMENSIONAL, response.VOLUMETRIC)
        )  # fmt: skip
        + ". RANO's categories also weigh steroid dose, the clinical state and a confirming scan, which "
        "no image holds: these are the imaging part only.</p>",
        "<h2>Volumes</h2>",
        volume_table(comparison),
        '<p class="note">Each visit is counted on its own grid. Repeatability: the change two segmentations '
        "of one unchanged visit stay under for 95 % of pairs (Bland and Altman), measured on 28 BraTS "
        "patients moved and resampled (benchmarks/repeatability.py), in mL and in % of the volume; the "
        "larger of the two is shown, and a change smaller than it is measurement noise.</p>",
        "<h2>Registration</h2>",
        f"<p>follow-up {alignment.sequence} registered rigidly to the baseline's: the brains overlap "
        f"{alignment.overlap:.3f} (Dice){'' if alignment.aligned else FAILED}.</p>",
    ]
    names = [m for m in MODALITIES if m not in before.absent]
    images = {m: before.image[MODALITIES.index(m)] for m in names}
    blocks = [
        viewer_block(
            viewer_data(images, {"baseline": before.classes}, before.spacing, "baseline"), "baseline"
        )
    ]
    if alignment.aligned:
        shown = {m: alignment.images[MODALITIES.index(m)] for m in MODALITIES if m not in after.absent}
        overlays = {"follow-up": alignment.labels, "baseline": before.classes}
        followup = viewer_data(shown, overlays, before.spacing, "follow-up, on the baseline's grid")
        followup["outlined"] = ["baseline"]  # the follow-up filled, the baseline's outline over it
        blocks.append(viewer_block(followup, "followup"))
        change = viewer_data(
            images, {"change": comparison.change}, before.spacing, "change of the whole tumor"
        )
        change["names"], change["volumes_ml"] = list(measures.CHANGE_NAMES), {}
        blocks.append(viewer_block(change, "change"))
    page = viewer_page(["".join(parts), *blocks], f"tumorseg compare: {before.case_id}")
    return page.replace("</style>", STYLE + "</style>", 1)
