"""Red-cell findings: the schistocyte limit of ICSH 2021 and the 1,000-cell rule."""

from __future__ import annotations

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
