"""The printable case report: its text (pypdf) and, where poppler is installed, its rendered page."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
from test_case import field

from cellkit.case import case_summary
from cellkit.report_pdf import case_pdf


@pytest.fixture
def report(tmp_path):
    a = field(["segmented_neutrophil", "band_neutrophil", "unknown", "erythroblast", ""],
              ["wbc", "wbc", "wbc", "wbc", "rbc"], "field_01.png")  # fmt: skip
    summary = case_summary("Ward 3 / bed 12", [a])
    crop = np.full((96, 96, 3), (200, 120, 180), np.uint8)
    path = tmp_path / "case.pdf"
    summary["models"] = {"classifier": {"name": "classifier_x", "display": "White cells (x)", "sha256": "ab"}}
    summary["platelets_per_1000_rbc"] = None  # no red cells counted
    path.write_bytes(case_pdf(summary, a.display_name, [(crop, "field_01 #1\nLymphocyte\nmodel: Basophil")]))
    return path


def test_report_text_names_everything_a_reviewer_signs(report):
    pypdf = pytest.importorskip("pypdf")
    text = " ".join(p.extract_text() for p in pypdf.PdfReader(report).pages)
    for expected in ("Ward 3 / bed 12", "field_01.png", "Neutrophil", "Unidentified — review",
                     "NRBC: 1", "per 100 WBC", "Platelets per 1,000 red cells", "Not signed", "sha256", "ab",
                     "target 100: NOT reached", "not a medical device", "White cells (x) (classifier_x)",
                     "Platelets per 1,000 red cells: n/a", "model: Basophil", "Band neutrophil",
                     "Segmented neutrophil"):  # fmt: skip
        assert expected in text, expected
    assert "segmented_neutrophil" not in text and "unknown" not in text and "None" not in text  # display names only


def test_report_renders(report, tmp_path):
    if not shutil.which("pdftoppm"):
        pytest.skip("pdftoppm (Debian poppler-utils) is not installed")
    subprocess.run(["pdftoppm", "-r", "40", "-png", "-f", "1", "-l", "1", str(report), str(tmp_path / "p")], check=True)
    from PIL import Image

    page = np.asarray(Image.open(next(tmp_path.glob("p*.png"))).convert("L"))
    assert page.shape[0] > page.shape[1] and (page < 128).mean() > 0.005  # a portrait page with text on it


def test_a_signed_and_amended_case_prints_its_specimen_and_history(tmp_path):
    pypdf = pytest.importorskip("pypdf")
    from cellkit.case import history_lines

    a = field(["lymphocyte", "monocyte"], ["wbc", "wbc"], "field_02.png")
    summary = case_summary("S-26-0042", [a], details={"specimen": "EDTA blood, MGG", "ward": ""})
    events = [
        {"version": 1, "kind": "created", "who": "ann", "note": "", "created": "2026-12-01T09:00:00+00:00"},
        {"version": 1, "kind": "signed", "who": "Dr A", "note": "", "created": "2026-12-01T10:00:00+00:00"},
        {"version": 2, "kind": "amended", "who": "Dr A", "note": "a blast missed", "created": "2026-12-01T11:00:00"},
        {"version": 2, "kind": "signed", "who": "Dr B", "note": "second look", "created": "2026-12-01T12:00:00"},
    ]
    history = history_lines(events)
    assert history == [
        "Version 1 signed by Dr A at 2026-12-01 10:00 UTC.",  # times as people read them, never raw ISO
        "Amended by Dr A at 2026-12-01 11:00 UTC, opening version 2: a blast missed",
        "Version 2 signed by Dr B at 2026-12-01 12:00 UTC. second look",
    ]
    path = tmp_path / "signed.pdf"
    path.write_bytes(
        case_pdf(summary, a.display_name, reviewer="Dr B", signed_at="2026-12-01T12:00:00", history=history)
    )
    text = " ".join(p.extract_text() for p in pypdf.PdfReader(path).pages)
    for expected in ("Specimen: EDTA blood, MGG", "Reviewed and signed by Dr B at 2026-12-01 12:00 UTC",
                     "opening version 2: a blast missed"):  # fmt: skip
        assert expected in text, expected
    assert "Ward:" not in text and "T12:00" not in text  # empty details are left out


def test_an_off_scale_field_is_named_on_the_report(tmp_path):
    from types import SimpleNamespace

    from _fakes import result_with_red_cells

    pypdf = pytest.importorskip("pypdf")
    big = result_with_red_cells(240)
    big.name = "upscaled.png"
    detector = SimpleNamespace(card={"reference_cell_px": {"range_5_95": [33.0, 177.0]}})
    summary = case_summary("S-1", [big, field(["lymphocyte"], ["wbc"], "f.png")], detector_spec=detector)
    path = tmp_path / "scale.pdf"
    path.write_bytes(case_pdf(summary, big.display_name))
    text = " ".join(" ".join(p.extract_text().split()) for p in pypdf.PdfReader(path).pages)
    assert "1 field has red cells of a size the detector was never trained on (upscaled.png)" in text


def test_a_case_name_the_font_cannot_draw_is_printed_as_its_codes_never_blank(tmp_path, recwarn):
    pypdf = pytest.importorskip("pypdf")
    a = field(["lymphocyte"], ["wbc"], "f.png")
    summary = case_summary("ผู้ป่วย 7 / 病例", [a])
    path = tmp_path / "thai.pdf"
    path.write_bytes(case_pdf(summary, a.display_name))
    text = " ".join(p.extract_text() for p in pypdf.PdfReader(path).pages)
    assert "<U+0E1C>" in text and "<U+75C5><U+4F8B>" in text and " 7 / " in text
    assert not [w for w in recwarn if "missing glyphs" in str(w.message)]


def test_an_empty_case_and_unchecked_platelets_read_plainly():
    pypdf = pytest.importorskip("pypdf")
    empty = case_summary("S-0", [])
    text = " ".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(case_pdf(empty, str))).pages)
    assert "Red cells per field: n/a" in text and "Platelets per field: n/a" in text and "None" not in text
    a = field(["segmented_neutrophil", "unknown"], ["wbc", "platelet"], "f1.png")
    text = " ".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(
        case_pdf(case_summary("S-1", [a]), a.display_name))).pages)  # fmt: skip
    assert "1 platelet was flagged or called a white cell by the model" in text


def test_the_report_names_every_model_of_a_case_two_models_analysed():
    pypdf = pytest.importorskip("pypdf")
    a = field(["segmented_neutrophil"], ["wbc"], "f1.png")
    b = field(["lymphocyte"], ["wbc"], "f2.png")
    a.models["classifier"] = {"name": "classifier_lite0_v4", "display": "White cells, any lab (v4)", "sha256": "aa"}
    b.models["classifier"] = {"name": "classifier_lite0", "display": "White cells, PBC framing (v1)", "sha256": "bb"}
    text = " ".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(
        case_pdf(case_summary("S-2", [a, b]), a.display_name))).pages)  # fmt: skip
    assert "(classifier_lite0_v4)" in text and "(classifier_lite0)" in text and "more than one white-cell" in text


def test_red_cell_forms_the_model_cannot_tell_at_this_scale_get_no_percentages(tmp_path):
    """A warning said the forms were unreliable while the report still printed "Burr cell 20.7 %" beside it."""
    from types import SimpleNamespace

    from _fakes import result_with_red_cells

    pypdf = pytest.importorskip("pypdf")
    big = result_with_red_cells(240)
    big.name = "upscaled.png"
    for i in range(20):
        big.corrections[i] = "burr_cell" if i < 5 else "normal"
    red_model = SimpleNamespace(card={"reference_cell_px": {"median": 80.0}})
    summary = case_summary("S-2", [big], red_cell_spec=red_model)
    assert "3.0x the size" in summary["red_cells_withheld"]
    path = tmp_path / "forms.pdf"
    path.write_bytes(case_pdf(summary, big.display_name))
    text = " ".join(" ".join(p.extract_text().split()) for p in pypdf.PdfReader(path).pages)
    assert "Red-cell morphology of 20 classified red cells: not reported" in text and "withheld" in text
    assert "25.0 %" not in text and "75.0 %" not in text
    summary = case_summary("S-2", [big], red_cell_spec=SimpleNamespace(card={"reference_cell_px": {"median": 240.0}}))
    path.write_bytes(case_pdf(summary, big.display_name))
    text = " ".join(" ".join(p.extract_text().split()) for p in pypdf.PdfReader(path).pages)
    assert "25.0 %" in text and "not reported" not in text  # at the model's own scale the forms are printed


def test_a_field_left_out_of_the_red_cell_forms_is_named_on_the_report():
    from types import SimpleNamespace

    from _fakes import result_with_red_cells

    pypdf = pytest.importorskip("pypdf")
    fields = []
    for name, side in (("ok.png", 80), ("big.png", 240)):
        r = result_with_red_cells(side)
        r.name = name
        for i in range(20):
            r.corrections[i] = "burr_cell" if i < 5 else "normal"
        fields.append(r)
    summary = case_summary("S-4", fields, red_cell_spec=SimpleNamespace(card={"reference_cell_px": {"median": 80.0}}))
    text = " ".join(" ".join(p.extract_text().split()) for p in pypdf.PdfReader(
        io.BytesIO(case_pdf(summary, fields[0].display_name))).pages)  # fmt: skip
    assert "over 20 classified red cells" in text and "25.0 %" in text
    assert "field (big.png) are left out" in text


def test_a_long_thumbnail_caption_is_shrunk_to_fit_never_cut_mid_word():
    """ "model: Unidentified — review" was cut to "model: Unidentified —" under a thumbnail."""
    pypdf = pytest.importorskip("pypdf")
    a = field(["lymphocyte"], ["wbc"], "field_01.png")
    crop = np.full((96, 96, 3), 200, np.uint8)
    captions = "field_01 #0\nSegmented neutrophil\nmodel: Unidentified — review"
    text = " ".join(" ".join(p.extract_text().split()) for p in pypdf.PdfReader(io.BytesIO(
        case_pdf(case_summary("S-5", [a]), a.display_name, [(crop, captions)]))).pages)  # fmt: skip
    assert "model: Unidentified — review" in text and "Segmented neutrophil" in text
    far_too_long = "x" * 200
    text = " ".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(
        case_pdf(case_summary("S-5", [a]), a.display_name, [(crop, far_too_long)]))).pages)  # fmt: skip
    assert "x…" in text and far_too_long not in text  # cut only past the smallest size, and visibly
