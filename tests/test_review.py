"""Review steps: a cell added by a reviewer, and what it must never change."""

from __future__ import annotations

import pytest
from _fakes import ColourDetector

from cellkit.classify import build_tiny_classifier
from cellkit.errors import CellkitError
from cellkit.review import add_cell
from cellkit.slide import analyze
from cellkit.synth import make_smear


@pytest.fixture(scope="module")
def smear():
    img, *_ = make_smear(320, 240, n_wbc=2, n_rbc=6, n_platelet=1, seed=5)
    clf = build_tiny_classifier()
    return img, clf, analyze(img, ColourDetector(), clf, name="f1.png")


def test_an_added_cell_leaves_the_result_it_came_from_as_it_was(smear):
    img, clf, result = smear
    more, idx = add_cell(img, result, 100.0, 80.0, clf, author="dr.a")
    more.corrections[0] = "basophil"  # the page keeps a review made while the database was busy like this
    more.added[idx + 1] = "someone"
    assert result.corrections == {} and result.added == {}
    assert len(result.detections) == idx


def test_a_cell_cannot_be_added_to_an_analysis_that_only_counted(smear):
    """Its boxes have no labels: the added one would have made a "wbc" group of them in the differential."""
    img, clf, _ = smear
    counted = analyze(img, ColourDetector())
    assert counted.differential() == {} and len(counted.detections)
    with pytest.raises(CellkitError, match="without classifying them"):
        add_cell(img, counted, 100.0, 80.0, clf, author="dr.a")
