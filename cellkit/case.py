"""A case (specimen): many fields of one smear counted together, as a hematologist reports them.

:func:`case_summary` adds up the fields' final labels (corrections applied): the white-cell differential
over every white cell of the case, NRBC per 100 white cells, red cells and platelets per field, and the
platelet estimate per 1,000 red cells, with the progress towards the target count of white cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cellkit.slide import SlideResult
from cellkit.taxonomy import UNKNOWN
from cellkit.words import count, verb

DEFAULT_TARGET_WBC = 100  # white cells a differential is counted over (100 or 200, settable)
PLATELET_CAVEAT = (
    "Platelet estimate from the fields counted: it assumes an even monolayer where red cells just touch, "
    "no platelet clumps and a normal red-cell count; confirm with an analyser count."
)
FEW_RED_CELLS = 1000  # fewer red cells than this behind "platelets per 1,000 RBC": the figure is said to be rough
FEW_RED_WORDS = " Only {n} counted: the platelet estimate is rough (one platelet moves it by {step:g})."


MODEL_ROLES = {"detector": "Detector", "classifier": "White-cell model", "classifier_rbc": "Red-cell model"}

OFF_SCALE_WORDS = (
    "{n} {have} red cells of a size the detector was never trained on ({names}): an upscaled or downscaled "
    "image, or another magnification. Their counts and differential are unreliable; analyse them at original size."
)


def _few_red_cells(rbc: int) -> str:
    """What the platelet caveat adds when few red cells stand behind "platelets per 1,000 RBC"."""
    if not 0 < rbc < FEW_RED_CELLS:
        return ""
    return FEW_RED_WORDS.format(n=f"{rbc} red cell{'s' * (rbc != 1)}", step=round(1000.0 / rbc, 1))


def case_summary(
    name: str,
    fields: Sequence[SlideResult],
    target_wbc: int = DEFAULT_TARGET_WBC,
    details: dict[str, Any] | None = None,
    red_cell_spec: Any = None,
    detector_spec: Any = None,
) -> dict[str, Any]:
    """The case's totals over its ``fields`` (see the module docstring); every figure from the final labels.
    ``details``: the specimen's details as entered (printed on the report); ``red_cell_spec``: the red-cell model's
    card, to withhold the schistocyte finding when a field's scale is off for it (``rbc_grading.scale_warning``);
    ``detector_spec``: the detector's card, to name the fields whose counts are unreliable at their scale
    (``scale.field_scale_warning``)."""
    from cellkit.rbc_grading import case_scale_warnings, red_cell_findings
    from cellkit.scale import field_scale_warning

    red: dict[str, dict[str, float]] = {}
    kept, withheld, left_out = case_scale_warnings(fields, red_cell_spec)
    for result, keep in zip(fields, kept, strict=True):
        if keep or withheld:  # all withheld: the count of classified red cells is still said
            for form, v in result.composition("rbc").items():
                red.setdefault(form, {"count": 0, "percent": 0.0})["count"] += int(v["count"])
    counts: dict[str, int] = {}
    nrbc = 0
    wbc = rbc = platelets = 0
    flagged = platelets_review = 0
    off_scale = [r.name for r in fields if detector_spec is not None and field_scale_warning(r, detector_spec)]
    rejected: dict[str, int] = {}
    subtypes: dict[str, dict[str, int]] = {}
    for result in fields:
        for k, v in result.rejected().items():
            rejected[k] = rejected.get(k, 0) + v
        for group, v in result.differential().items():
            counts[group] = counts.get(group, 0) + int(v["count"])
        for group, v in result.subtypes(only_split=False).items():
            for node, k in v.items():
                subtypes.setdefault(group, {})[node] = subtypes.get(group, {}).get(node, 0) + k
        nrbc += int(result.nrbc().get("count", 0))
        reviewed = result.reviewed_counts()  # rejected boxes out, boxes a reviewer moved counted where they went
        wbc += result.white_cells()  # the one white-cell count: NRBC apart, as on the Slide page
        rbc += reviewed["rbc"]
        platelets += reviewed["platelet"]
        flagged += sum(1 for lab in result.labels() if lab == UNKNOWN)
        platelets_review += len(result.platelets_to_review())
    white = sum(counts.values())
    ranked = fields[0].rank(counts) if fields else []
    n = len(fields)
    return {
        "case": name,
        "details": dict(details or {}),
        "fields": n,
        "images": [r.name for r in fields],
        "target_wbc": int(target_wbc),
        "white_cells_counted": white,
        "target_reached": white >= target_wbc,
        "differential": {g: {"count": counts[g], "percent": round(100.0 * counts[g] / white, 2)} for g in ranked}
        if white
        else {},
        "subtypes": {g: dict(sorted(v.items())) for g, v in subtypes.items() if g in counts and set(v) != {g}},
        "unidentified_review": counts.get(UNKNOWN, 0),
        "platelets_review": platelets_review,  # platelet boxes the model flagged or called a white cell, undecided
        "nrbc": {"count": nrbc, "per_100_wbc": round(100.0 * nrbc / white, 1) if white else None},
        "counted": {"wbc": wbc, "nrbc": nrbc, "rbc": rbc, "platelet": platelets},  # after review: rejected out
        "rbc_per_field": round(rbc / n, 1) if n else None,
        "platelets_per_field": round(platelets / n, 1) if n else None,
        "platelets_per_1000_rbc": round(1000.0 * platelets / rbc, 1) if rbc else None,
        "platelet_caveat": PLATELET_CAVEAT + _few_red_cells(rbc),
        "red_cells": [f.to_dict() for f in red_cell_findings(red, withheld=withheld)],
        "red_cells_withheld": withheld,
        "red_cells_left_out": left_out,
        "off_scale_fields": off_scale,
        "off_scale_warning": OFF_SCALE_WORDS.format(
            n=count(len(off_scale), "field"), have=verb(len(off_scale), "has", "have"), names=", ".join(off_scale)
        )
        if off_scale
        else "",
        "flagged_cells": flagged,
        "rejected": rejected,
        "models": _models(fields),
        "mixed_models": (mixed := _mixed(fields)),
        "mixed_models_warning": _mixed_words(mixed),
    }


def case_display(fields: Sequence[SlideResult]):
    """The display name of any node of a case's fields (a case whose first field had no red-cell model still
    names the red-cell forms of the others): one function for the case's page, PDF and CSV."""
    names: dict[str, str] = {}
    for r in fields:
        names.update(r._display_names())
    return lambda node: names.get(node, node)


def _models(fields: Sequence[SlideResult]) -> dict[str, dict[str, str]]:
    """The model of each role (name and sha256) that analysed the case's fields: the latest; see :func:`_mixed`."""
    out: dict[str, dict[str, str]] = {}
    for r in fields:
        out.update(r.models)
    return out


def _mixed(fields: Sequence[SlideResult]) -> dict[str, list[dict[str, str]]]:
    """{role: every model of that role, in field order} for the roles whose fields were analysed by more than one
    model (told apart by sha256): such a case's counts come from two models, which the report must say."""
    seen: dict[str, dict[str, dict[str, str]]] = {}
    for r in fields:
        for role, m in r.models.items():
            seen.setdefault(role, {}).setdefault(str(m.get("sha256") or m.get("name", "")), dict(m))
    return {role: list(ms.values()) for role, ms in seen.items() if len(ms) > 1}


def _mixed_words(mixed: dict[str, list[dict[str, str]]]) -> str:
    """The warning for a case whose fields several models of one role analysed ("" when none)."""
    return " ".join(
        MIXED_WORDS.format(
            role=MODEL_ROLES.get(role, role.replace("_", " ")).lower(),
            names=", ".join(m.get("display") or m.get("name", "") for m in ms),
        )
        for role, ms in mixed.items()
    )


MIXED_WORDS = (
    "The fields of this case were analysed with more than one {role}: {names}. A differential should come from one "
    "model; start a new case for the fields of the other model, or delete them from this one (Past analyses)."
)


def case_thumbnails(image: np.ndarray, result: SlideResult, most: int = 40) -> list[tuple[np.ndarray, str]]:
    """Small crops (96 px) of a field's cells that are flagged for review, corrected or added by a reviewer, with
    a caption for the case report: file and cell number, the label it is reported as, and the model's label when a
    reviewer changed it (lines split by newlines)."""
    import cv2

    from cellkit.crops import crop_box

    out = []
    for i, lab in enumerate(result.labels()):
        if len(out) >= most:
            break
        corrected = result.is_corrected(i)
        if lab == UNKNOWN or corrected or i in result.added:
            crop = crop_box(image, result.detections.xyxy[i], 1.5)
            small = cv2.resize(crop, (96, 96), interpolation=cv2.INTER_AREA)
            lines = [f"{Path(result.name).stem[:10]} #{i}", result.display_name(lab)]
            if i in result.added:
                lines.append(f"added by {result.added[i]}" if result.added[i] else "added in review")
            elif corrected:
                lines.append(f"model: {result.display_name(str(result.detections.data['label'][i]))}")
            out.append((small, "\n".join(lines)))
    return out


def readable_time(iso: str) -> str:
    """A stored time as people read it, "2026-12-02 12:39 UTC" (the store keeps UTC; a time without a zone is
    read as UTC), or the text unchanged when it is no time."""
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def history_lines(events: Sequence[dict[str, Any]]) -> list[str]:
    """The case's sign-offs and amendments (``Store.case(...)["events"]``), one sentence each, oldest first."""
    out = []
    for e in events:
        if e["kind"] == "signed":
            note = f" {e['note']}" if e["note"] else ""
            out.append(f"Version {e['version']} signed by {e['who']} at {readable_time(e['created'])}.{note}")
        elif e["kind"] == "amended":
            when = readable_time(e["created"])
            out.append(f"Amended by {e['who']} at {when}, opening version {e['version']}: {e['note']}")
    return out


def sign_off_concerns(summary: dict, unsaved: int = 0) -> list[str]:
    """What a reviewer should know before signing: fewer cells than the target, cells still left for review, fields
    whose counts are unreliable at their scale."""
    out = []
    if unsaved:
        out.append(f"{count(unsaved, 'correction')} {verb(unsaved, 'is', 'are')} not saved to the database yet")
    if not summary.get("target_reached"):
        out.append(
            f"only {summary['white_cells_counted']} of the target {summary['target_wbc']} white cells are counted"
        )
    if summary.get("unidentified_review"):
        n = summary["unidentified_review"]
        out.append(f"{count(n, 'white cell')} {verb(n, 'is', 'are')} still Unidentified — review")
    if summary.get("platelets_review"):
        n = summary["platelets_review"]
        out.append(f"{count(n, 'platelet')} {verb(n, 'was', 'were')} flagged or called a white cell by the model and "
                   f"{verb(n, 'is', 'are')} not yet checked")  # fmt: skip
    if summary.get("off_scale_fields"):
        n = len(summary["off_scale_fields"])
        out.append(f"{count(n, 'field')} {verb(n, 'is', 'are')} at a scale the detector was never trained on")
    if summary.get("mixed_models"):
        out.append("the fields were analysed with more than one " + " and ".join(
            MODEL_ROLES.get(r, r).lower() for r in summary["mixed_models"]))  # fmt: skip
    return out
