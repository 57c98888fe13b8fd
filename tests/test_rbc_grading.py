"""Red-cell findings: the schistocyte limit of ICSH 2021 and the 1,000-cell rule."""

from __future__ import annotations

import pytest
from _fakes import result_with_red_cells

from cellkit.rbc_grading import MIN_RED_CELLS, red_cell_findings


def _comp(**counts: int) -> dict:
    total = sum(counts.values())
    return {k: {"count": v, "percent": 100 * v / total} for k, v in counts.items()}


def _row(findings, form):
    return next(f for f in findings if f.form == form)


def test_schistocytes_over_one_percent_are_flagged():
    rows = red_cell_findings(_comp(normal=980, schistocyte=15, teardrop=5))
    s = _row(rows, "schistocyte")
    assert s.percent == 1.5 and "suspicious for thrombotic microangiopathy" in s.finding and not s.provisional
    assert _row(rows, "teardrop").finding == ""  # no verified limit: counted, not graded
    assert rows[0].form == "normal"


def test_exactly_one_percent_is_within_the_reference():
    s = _row(red_cell_findings(_comp(normal=990, schistocyte=10)), "schistocyte")
    assert s.percent == 1.0 and s.finding.startswith("within the reference")


def test_fewer_than_a_thousand_red_cells_is_provisional_and_zero_is_reported():
    s = _row(red_cell_findings(_comp(normal=MIN_RED_CELLS - 1)), "schistocyte")
    assert (s.count, s.provisional) == (0, True) and "within" in s.finding


def test_no_red_cells_no_findings():
    assert red_cell_findings({}) == []


def test_red_cells_at_another_magnification_withhold_the_schistocyte_finding():
    from types import SimpleNamespace

    from cellkit.rbc_grading import scale_warning

    spec = SimpleNamespace(card={"reference_cell_px": {"median": 40.0}})
    assert scale_warning(result_with_red_cells(44), spec) == ""  # within 2/3-3/2
    text = scale_warning(result_with_red_cells(88), spec)
    assert "2.2x the size" in text and "withheld" in text
    assert scale_warning(result_with_red_cells(20), spec) != ""  # smaller too
    assert scale_warning(result_with_red_cells(88), SimpleNamespace(card={})) == ""  # no reference: no claim
    s = _row(red_cell_findings(_comp(normal=900, schistocyte=100), withheld=text), "schistocyte")
    assert s.finding.startswith("withheld") and "suspicious" not in s.finding


@pytest.mark.realdata
def test_bundled_red_cell_model_accepts_chula_and_warns_on_txl(shared_data):
    """Real smears: the model's own lab passes the check, TXL-PBC smears (another magnification) do not."""
    import glob

    from cellkit.detect import load_detector
    from cellkit.io import read_image
    from cellkit.models import load_spec
    from cellkit.rbc_boxes import chula_images
    from cellkit.rbc_grading import scale_warning
    from cellkit.slide import analyze

    det, spec = load_detector(), load_spec("rbc_lite0_80")
    chula = chula_images(shared_data / "chula_rbc12")[:3]
    txl = sorted(glob.glob(str(shared_data / "txl_pbc/images/test/*.png")))[:3]
    assert all(scale_warning(analyze(read_image(p), det), spec) == "" for p in chula)
    assert all(scale_warning(analyze(read_image(p), det), spec) != "" for p in txl)
