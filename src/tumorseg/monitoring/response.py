"""Response categories between two visits, each by a published rule that is printed with it.

Two rules, both on the enhancing tumor, both from RANO (Response Assessment in Neuro-Oncology):

- **bidimensional** (Wen et al., J Clin Oncol 2010; kept in RANO 2.0, Wen et al., J Clin Oncol
  2023): the product of the largest enhancing lesion's perpendicular diameters; progression at an
  increase of 25 % or more, partial response at a decrease of 50 % or more.
- **volumetric** (RANO 2.0, Wen et al. 2023): the enhancing volume; progression at an increase of
  40 % or more, partial response at a decrease of 65 % or more (the volume changes that match the
  bidimensional thresholds for a sphere: 1.25^1.5 = 1.40 and 0.5^1.5 = 0.35).

Either rule calls a complete response when no enhancing tumor is left, and progression when a new
measurable enhancing lesion appears. RANO measures change against the smallest measurement since
treatment began (the nadir); with two visits that is the baseline. What RANO adds and an image
cannot tell (steroid dose, clinical state, a confirming scan 4 weeks later) is left to the reader,
and the report says so.

"Not evaluable" when the baseline has no measurable enhancing tumor (RANO: a lesion at least
10 x 10 mm; for volumes this tool takes the volume of a sphere 10 mm across, 0.52 mL), when the
follow-up could not be registered to the baseline, or when a visit lacks its T1ce (on which the
enhancing tumor is outlined: a follow-up without it is no complete response).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tumorseg.monitoring.measures import MEASURABLE_MM

#: The smallest measurable enhancing volume: a sphere of RANO's 10 mm diameter (mL).
MEASURABLE_ML = math.pi / 6 * MEASURABLE_MM**3 / 1000

COMPLETE, PARTIAL, STABLE, PROGRESSION, NOT_EVALUABLE = (
    "complete response",
    "partial response",
    "stable disease",
    "progressive disease",
    "not evaluable",
)


@dataclass(frozen=True)
class Rule:
    name: str
    measure: str  # what is compared, in words
    unit: str
    progression: float  # relative increase that is progression
    response: float  # relative decrease that is a partial response (negative)
    source: str

    def text(self) -> str:
        return (
            f"{self.name}: {self.measure}; progression at {self.progression:+.0%} or more, partial "
            f"response at {self.response:+.0%} or less, complete response when none is left, "
            f"progression on a new measurable lesion ({self.source})"
        )


BIDIMENSIONAL = Rule(
    "bidimensional", "product of the largest enhancing lesion's perpendicular diameters", "mm2",
    0.25, -0.50, "RANO, Wen et al. 2010; RANO 2.0, Wen et al. 2023",
)  # fmt: skip
VOLUMETRIC = Rule(
    "volumetric", "enhancing tumor volume", "mL", 0.40, -0.65, "RANO 2.0, Wen et al. 2023",
)  # fmt: skip


@dataclass(frozen=True)
class Response:
    rule: str
    category: str
    reason: str
    baseline: float
    followup: float
    change: float | None  # relative, when the baseline is measurable

    def record(self) -> dict:
        return asdict(self)


def categorize(
    rule: Rule,
    baseline: float,
    followup: float,
    *,
    measurable: bool,
    new_lesions: int,
    aligned: bool,
    noise: float | None = None,
    hidden: str | None = None,
) -> Response:
    """The response by ``rule`` from its measure at both visits. ``measurable``: whether the
    baseline holds a measurable enhancing lesion; ``new_lesions``: new measurable enhancing lesions
    at follow-up; ``aligned``: whether the follow-up was registered to the baseline; ``noise``: the
    measure's repeatability coefficient, when known: a progression or response by a change smaller
    than it keeps its category (the rule is the rule) and says so; ``hidden``: why the enhancing
    tumor is not shown at a visit (its T1ce missing), which leaves the response not evaluable."""
    change = (followup - baseline) / baseline if measurable and baseline > 0 else None

    def response(category: str, reason: str) -> Response:
        if category in (PROGRESSION, PARTIAL) and noise is not None and abs(followup - baseline) < noise:
            reason += f"; the change, {followup - baseline:+.2f} {rule.unit}, is within measurement noise"
        return Response(rule.name, category, reason, baseline, followup, change)

    if not aligned:
        return response(NOT_EVALUABLE, "the follow-up could not be registered to the baseline")
    if hidden:
        return response(NOT_EVALUABLE, f"the enhancing tumor is {hidden}")
    if not measurable:
        return response(NOT_EVALUABLE, "no measurable enhancing tumor at baseline")
    if new_lesions:
        return response(PROGRESSION, f"{new_lesions} new measurable enhancing lesion(s)")
    if followup == 0:
        return response(COMPLETE, "no enhancing tumor left (RANO also asks for a confirming scan)")
    if change >= rule.progression:
        return response(PROGRESSION, f"{change:+.0%} >= {rule.progression:+.0%}")
    if change <= rule.response:
        return response(PARTIAL, f"{change:+.0%} <= {rule.response:+.0%}")
    return response(STABLE, f"{change:+.0%}, between {rule.response:+.0%} and {rule.progression:+.0%}")
