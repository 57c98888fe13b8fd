"""The printable case report (fpdf2): one PDF per case, what a reviewer signs.

It holds the specimen, every image of the case by its file name, the white-cell differential with its
flags, NRBC per 100 white cells, the platelet estimate with its caveat, thumbnails of the flagged and
corrected cells, the models with their sha256, and the reviewer and sign-off (or "not signed").
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cellkit.case import MODEL_ROLES, readable_time, sign_off_concerns
from cellkit.taxonomy import UNKNOWN
from cellkit.words import count, verb

MAX_THUMBNAILS = 40
CAPTION_LINES = 3  # a thumbnail's caption: file and cell, reported label, the model's label or who added it


def _fit(pdf: Any, text: str, width: float, size: float = 5.0, smallest: float = 3.5) -> str:
    """``text`` in a font size that fits ``width`` mm (set on ``pdf``), down to ``smallest``; cut with "…" only
    when even that is too wide, so a caption is never cut mid-word silently."""
    pdf.set_font("DejaVu", "", size)
    while size > smallest and pdf.get_string_width(text) > width:
        size -= 0.25
        pdf.set_font("DejaVu", "", size)
    if pdf.get_string_width(text) <= width:
        return text
    while len(text) > 1 and pdf.get_string_width(text + "…") > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _or_na(value: object) -> str:
    """A figure, or "n/a" where it could not be computed (no red cells, no white cells)."""
    return "n/a" if value is None else f"{value}"


def _font_path() -> Path:
    """DejaVu Sans from matplotlib (a dependency): a Unicode font, so "—" and "µ" print."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


@functools.cache
def _printable_chars() -> frozenset[int]:
    """The code points the report's font can draw."""
    from fontTools.ttLib import TTFont

    with TTFont(str(_font_path()), lazy=True) as font:
        return frozenset(font.getBestCmap())


def pdf_text(text: str) -> str:
    """``text`` as the report can print it: a character its font cannot draw (a Thai or Chinese case name) is
    written as its code, ``<U+0E01>``, never left blank, so a specimen is always identifiable on what is signed."""
    ok = _printable_chars()
    return "".join(c if ord(c) in ok or c in "\n\r\t" else f"<U+{ord(c):04X}>" for c in text)


def case_pdf(
    summary: dict[str, Any],
    display: Callable[[str], str],
    thumbnails: Sequence[tuple[np.ndarray, str]] = (),
    reviewer: str = "",
    signed_at: str = "",
    history: Sequence[str] = (),
) -> bytes:
    """The case report as PDF bytes. ``display`` turns a node id into its display name; ``thumbnails`` are
    (RGB crop, caption) of the flagged and corrected cells (at most ``MAX_THUMBNAILS`` are printed); ``history``
    the case's sign-offs and amendments, one line each (:func:`cellkit.case.history_lines`)."""
    from fpdf import FPDF
    from PIL import Image

    class Report(FPDF):
        def normalize_text(self, text: str) -> str:  # every string drawn passes here
            return super().normalize_text(pdf_text(text))

    pdf = Report(format="A4", unit="mm")
    pdf.set_auto_page_break(auto=True, margin=15)
    font = _font_path()
    pdf.add_font("DejaVu", "", str(font))
    pdf.add_font("DejaVu", "B", str(font.with_name("DejaVuSans-Bold.ttf")))
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def heading(text: str) -> None:
        pdf.ln(2)
        pdf.set_font("DejaVu", "B", 12)
        pdf.cell(width, 7, text, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("DejaVu", "", 10)

    def line(text: str) -> None:
        pdf.multi_cell(width, 5, text, align="L", new_x="LMARGIN", new_y="NEXT")

    pdf.set_font("DejaVu", "B", 16)
    pdf.cell(width, 10, f"Blood smear case report: {summary['case']}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 9)
    line(f"Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by cellkit. Research tool, not a medical "
         "device: every figure is the software's count and must be checked by a qualified person.")  # fmt: skip

    heading("Specimen")
    line(f"Case: {summary['case']}    Fields analysed: {summary['fields']}")
    for key, value in (summary.get("details") or {}).items():
        if str(value).strip():
            line(f"{str(key).replace('_', ' ').capitalize()}: {value}")
    line("Images: " + ", ".join(Path(n).name for n in summary["images"]))

    heading("White-cell differential")
    white, target = summary["white_cells_counted"], summary["target_wbc"]
    line(f"{white} white cells counted (target {target}: {'reached' if summary['target_reached'] else 'NOT reached'}).")
    pdf.set_font("DejaVu", "B", 10)
    cols = (width * 0.6, width * 0.2, width * 0.2)
    for text, w in zip(("Cell type", "Count", "%"), cols, strict=True):
        pdf.cell(w, 6, text, border=1)
    pdf.ln()
    pdf.set_font("DejaVu", "", 10)
    subtypes = summary.get("subtypes", {})
    for group, v in summary["differential"].items():
        name = display(group) + ("  (flagged: a person decides)" if group == UNKNOWN else "")
        for text, w in zip((name, str(v["count"]), f"{v['percent']:.1f}"), cols, strict=True):
            pdf.cell(w, 6, text, border=1)
        pdf.ln()
        for node, k in subtypes.get(group, {}).items():  # e.g. band and segmented neutrophils, indented
            sub = "not subtyped" if node == group else display(node)
            pct = 100.0 * k / summary["white_cells_counted"] if summary["white_cells_counted"] else 0.0
            for text, w in zip((f"    {sub}", str(k), f"{pct:.1f}"), cols, strict=True):
                pdf.cell(w, 5, text, border=1)
            pdf.ln()
    if summary.get("off_scale_warning"):
        line(summary["off_scale_warning"])
    if summary["unidentified_review"]:
        n = summary["unidentified_review"]
        line(f"{count(n, 'cell')} {verb(n, 'is', 'are')} Unidentified — review and {verb(n, 'is', 'are')} not yet in "
             "any class.")  # fmt: skip
    if summary.get("rejected"):
        line("Rejected in review, not counted: "
             + ", ".join(f"{display(k).removeprefix('Rejected: ')} {n}" for k, n in summary["rejected"].items())
             + ".")  # fmt: skip
    nrbc = summary["nrbc"]
    per100 = f"{nrbc['per_100_wbc']:g}" if nrbc["per_100_wbc"] is not None else "n/a"
    line(f"NRBC: {nrbc['count']} ({per100} per 100 WBC), not counted among the white cells.")

    heading("Red cells and platelets")
    line(f"Red cells per field: {_or_na(summary['rbc_per_field'])}.   "
         f"Platelets per field: {_or_na(summary['platelets_per_field'])}.   "
         f"Platelets per 1,000 red cells: {_or_na(summary['platelets_per_1000_rbc'])}.")  # fmt: skip
    if summary.get("platelets_review"):
        n = summary["platelets_review"]
        line(f"{count(n, 'platelet')} {verb(n, 'was', 'were')} flagged or called a white cell by the model and "
             f"{verb(n, 'was', 'were')} not checked by a reviewer; {verb(n, 'it is', 'they are')} counted as "
             f"{verb(n, 'a platelet', 'platelets')}.")  # fmt: skip
    line(summary["platelet_caveat"])
    forms = summary.get("red_cells") or []
    if forms and summary.get("red_cells_withheld"):  # no percentages of forms the model cannot tell here
        n_red = sum(f["count"] for f in forms)
        line(f"Red-cell morphology of {n_red} classified red cells: not reported. {summary['red_cells_withheld']}")
    elif forms:
        n_red = sum(f["count"] for f in forms)
        line(f"Red-cell morphology over {n_red} classified red cells: "
             + "; ".join(f"{display(f['form'])} {f['percent']:.1f} %" + (f" ({f['finding']}"
                         + (", provisional: under 1,000 red cells" if f["provisional"] else "") + ")"
                         if f["finding"] else "") for f in forms) + ".")  # fmt: skip
        if summary.get("red_cells_left_out"):
            line(summary["red_cells_left_out"])

    if thumbnails:
        heading(f"Flagged and corrected cells ({len(thumbnails)})")
        side, gap = 22.0, 3.0
        per_row = int((width + gap) // (side + gap))
        for k, (crop, caption) in enumerate(thumbnails[:MAX_THUMBNAILS]):
            if k % per_row == 0:
                if pdf.get_y() + side + 2.2 * CAPTION_LINES + 3 > pdf.h - pdf.b_margin:
                    pdf.add_page()
                y = pdf.get_y()
            x = pdf.l_margin + (k % per_row) * (side + gap)
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(crop)).save(buf, format="PNG")
            pdf.image(buf, x=x, y=y, w=side, h=side)
            for j, text in enumerate(caption.split("\n")[:CAPTION_LINES]):
                pdf.set_xy(x, y + side + 2.2 * j)
                pdf.cell(side, 2.2, _fit(pdf, text, side))
            if k % per_row == per_row - 1 or k == min(len(thumbnails), MAX_THUMBNAILS) - 1:
                pdf.set_xy(pdf.l_margin, y + side + 2.2 * CAPTION_LINES + 2)
        pdf.set_font("DejaVu", "", 10)

    heading("Models")
    mixed = summary.get("mixed_models") or {}
    for role, m in summary["models"].items():
        for one in mixed.get(role, [m]):  # every model of a role whose fields two models analysed
            name = one.get("name", "")
            shown = one.get("display") or name
            label = f"{shown} ({name})" if shown != name else name
            line(f"{MODEL_ROLES.get(role, role.replace('_', ' '))}: {label}  sha256 {one.get('sha256', '')}")
    if summary.get("mixed_models_warning"):
        line(summary["mixed_models_warning"])

    heading("Review and sign-off")
    signed = f"Reviewed and signed by {reviewer} at {readable_time(signed_at)}."
    if reviewer and (open_points := sign_off_concerns(summary)):  # signed anyway: the report says with what open
        signed = signed[:-1] + ", with these points open: " + "; ".join(open_points) + "."
    line(signed if reviewer else "Not signed: no reviewer has signed.")
    for text in history:
        line(text)
    return bytes(pdf.output())
