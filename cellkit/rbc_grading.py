"""What the red-cell forms of an analysis mean against published limits, with the source of each limit.

Only limits verified against their publication are used. Today that is the schistocyte limit:

- ICSH 2021 (Zini G. et al., "2021 update of the 2012 ICSH Recommendations for identification, diagnostic
  value, and quantitation of schistocytes: impact and revisions", Int J Lab Hematol 2021;43(6):1264-1271):
  1 % or less in healthy adults and full-term neonates; more than 1 % is suspicious for thrombotic
  microangiopathy (5 % or less is normal in preterm infants).
- The ICSH asks for the percentage to be counted over at least 1,000 red cells (as cited by Mannem C. et
  al., J Lab Physicians 2023;15(3):437-442, doi:10.1055/s-0043-1764481); with fewer, the finding is marked
  provisional.

The 1+/2+/3+ grades of ICSH 2015 (Palmer L. et al., Int J Lab Hematol 2015, doi:10.1111/ijlh.12327)
for the other forms are not applied: their thresholds could not be checked against the paper here, and an
unverified grade on a report would be worse than none. Those forms are reported as counts and percentages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cellkit.words import count

SCALE_RANGE = (2 / 3, 3 / 2)  # a smear's median red cell outside this share of the model's: another magnification
MIN_RED_CELLS = 1000  # ICSH: count schistocytes over at least this many red cells
SCHISTOCYTE_LIMIT_PCT = 1.0  # ICSH 2021: > 1 % suspicious for thrombotic microangiopathy (adults, term neonates)
SOURCE = "ICSH 2021 schistocyte recommendations (Zini et al., Int J Lab Hematol 2021;43:1264-71)"


@dataclass(frozen=True)
class Finding:
    """One red-cell form: its count and percentage over the classified red cells, and what the limit says."""

    form: str
    count: int
    percent: float
    finding: str = ""  # "" when no verified limit applies to this form
    provisional: bool = False  # fewer red cells counted than the source asks for

    def to_dict(self) -> dict[str, Any]:
        return {"form": self.form, "count": self.count, "percent": self.percent, "finding": self.finding,
                "provisional": self.provisional}  # fmt: skip


def scale_ratio(result: Any, spec: Any) -> float | None:
    """The smear's median red-cell box side over the one the red-cell model's training smears had
    (``card["reference_cell_px"]["median"]``), or None when either is unknown."""
    from cellkit.scale import red_cell_side

    ref = (getattr(spec, "card", None) or {}).get("reference_cell_px", {}).get("median")
    side = red_cell_side(result)
    return None if not ref or side is None else side / float(ref)


def scale_warning(result: Any, spec: Any) -> str:
    """Why the red-cell forms of ``result`` should not be trusted, or "": the smear's median red-cell box side
    against the one the model's training smears had (``card["reference_cell_px"]``). The crops are cut relative
    to the smear's own cells, but another magnification or camera changes what a cell looks like, and the
    model has only seen one (tested: on TXL-PBC smears, red cells 2.2x larger, it calls most cells spherocytes
    or burr cells)."""
    ratio = scale_ratio(result, spec)
    if ratio is None or SCALE_RANGE[0] <= ratio <= SCALE_RANGE[1]:
        return ""
    ref = float(spec.card["reference_cell_px"]["median"])
    return (
        f"The red cells here are {ratio:.1f}x the size the red-cell model was trained on ({ratio * ref:.0f} px "
        f"against {ref:.0f} px): another magnification or camera. Its forms are unreliable here and are withheld, "
        "the schistocyte finding too."
    )


def case_scale_warnings(fields: Sequence[Any], spec: Any) -> tuple[list[bool], str, str]:
    """Which fields of a case have red-cell forms to count, and what to say of the others.

    Returns ``(kept, withheld, left_out)``: ``kept[i]`` is False for a field at a scale the model cannot tell
    forms at (:func:`scale_warning`); ``withheld`` replaces the case's forms when no field with red cells is
    kept; ``left_out`` names the fields left out of forms counted over the others (a field without classified red
    cells has no forms to leave out). Ratios are each field's own, never the first one's."""
    off = {i: r for i, r in enumerate(fields) if spec is not None and r.composition("rbc") and scale_warning(r, spec)}
    kept = [i not in off for i in range(len(fields))]
    if not off:
        return kept, "", ""
    ratios = [scale_ratio(r, spec) or 0.0 for r in off.values()]
    low, high = f"{min(ratios):.1f}x", f"{max(ratios):.1f}x"
    size = low if low == high else f"{low}–{high}"
    names = ", ".join(getattr(r, "name", f"field {i + 1}") for i, r in off.items())
    why = f"{size} the size the red-cell model was trained on: another magnification or camera"
    if not any(kept[i] and fields[i].composition("rbc") for i in range(len(fields))):
        withheld = (
            f"The red cells of {count(len(off), 'field')} ({names}) are {why}. Their forms are unreliable and are "
        )
        return kept, withheld + "withheld, the schistocyte finding too.", ""
    return kept, "", f"Red-cell forms of {count(len(off), 'field')} ({names}) are left out: their red cells are {why}."


def red_cell_findings(composition: dict[str, dict[str, float]], withheld: str = "") -> list[Finding]:
    """Findings per form from ``SlideResult.composition("rbc")`` (or summed over a case), largest first.
    The schistocyte row is always there when red cells were classified, as a 0 count is a finding too;
    ``withheld`` (e.g. :func:`scale_warning`'s text) replaces its finding when the forms cannot be trusted."""
    total = int(sum(v["count"] for v in composition.values()))
    if total == 0:
        return []
    rows = dict(composition)
    rows.setdefault("schistocyte", {"count": 0, "percent": 0.0})
    out = []
    for form, v in sorted(rows.items(), key=lambda kv: (-kv[1]["count"], kv[0])):
        count = int(v["count"])
        pct = round(100.0 * count / total, 2)
        finding, provisional = "", False
        if form == "schistocyte" and withheld:
            finding = "withheld: the red-cell forms are unreliable on this smear"
        elif form == "schistocyte":
            provisional = total < MIN_RED_CELLS
            finding = (
                f"above {SCHISTOCYTE_LIMIT_PCT:g} %: suspicious for thrombotic microangiopathy"
                if pct > SCHISTOCYTE_LIMIT_PCT
                else f"within the reference (≤ {SCHISTOCYTE_LIMIT_PCT:g} %)"
            )
        out.append(Finding(form, count, pct, finding, provisional))
    return out
