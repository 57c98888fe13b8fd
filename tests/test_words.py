"""Counts in words (cellkit.words): what every message a person reads says instead of "(s)"."""

from __future__ import annotations

from cellkit.case import sign_off_concerns
from cellkit.words import count, verb


def test_a_count_agrees_with_its_noun_and_verb():
    assert [count(n, "field") for n in (0, 1, 2)] == ["0 fields", "1 field", "2 fields"]
    assert count(3, "white cell") == "3 white cells" and count(2, "is", "are") == "2 are"
    assert [verb(n, "is", "are") for n in (0, 1, 5)] == ["are", "is", "are"]


def test_sign_off_concerns_read_as_sentences_for_one_and_for_many():
    one = {"target_reached": True, "unidentified_review": 1, "platelets_review": 1, "off_scale_fields": ["a.png"]}
    assert sign_off_concerns(one, unsaved=1) == [
        "1 correction is not saved to the database yet",
        "1 white cell is still Unidentified — review",
        "1 platelet was flagged or called a white cell by the model and is not yet checked",
        "1 field is at a scale the detector was never trained on",
    ]
    many = {**one, "unidentified_review": 2, "platelets_review": 3, "off_scale_fields": ["a.png", "b.png"]}
    assert sign_off_concerns(many, unsaved=2) == [
        "2 corrections are not saved to the database yet",
        "2 white cells are still Unidentified — review",
        "3 platelets were flagged or called a white cell by the model and are not yet checked",
        "2 fields are at a scale the detector was never trained on",
    ]
    assert not any("(s)" in line for line in sign_off_concerns(many, unsaved=2))
