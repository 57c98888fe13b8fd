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


def test_undoing_the_only_correction_leaves_the_cell_undecided_as_the_model_left_it():
    """The undo wrote the model's own label back as a correction: a platelet box the model called a lymphocyte
    moved into the white cells, and a flagged platelet left the review list, though nobody decided them."""
    from _fakes import labelled_result

    from cellkit.review import undo_point, undo_step

    r = labelled_result(["lymphocyte", "unknown", "segmented_neutrophil"], ["platelet", "platelet", "wbc"])
    assert r.final_classes() == ["platelet", "platelet", "wbc"] and r.platelets_to_review() == [0, 1]
    for cell in (0, 1):
        before = undo_point(r, cell)  # as the page records the step, before it relabels
        r.corrections[cell] = "reject_artefact"
        assert undo_step(r, cell, before) is None  # nothing to go back to: the correction is withdrawn
    assert r.corrections == {}
    assert r.final_classes() == ["platelet", "platelet", "wbc"] and r.platelets_to_review() == [0, 1]


def test_undoing_a_second_correction_restores_the_first_one_as_a_decision():
    from _fakes import labelled_result

    from cellkit.review import undo_point, undo_step

    r = labelled_result(["lymphocyte", "unknown"], ["platelet", "platelet"])
    r.corrections[0] = "lymphocyte"  # a reviewer confirms the model: a white cell, though the detector saw a platelet
    before = undo_point(r, 0)
    r.corrections[0] = "reject_smudge"
    assert undo_step(r, 0, before) == "lymphocyte" and r.corrections == {0: "lymphocyte"}
    assert r.final_classes()[0] == "wbc" and r.platelets_to_review() == [1]  # still decided


def test_undoing_an_added_cell_rejects_it_and_undoing_a_label_of_it_keeps_it(smear):
    from cellkit.review import UNDO_ADDED, undo_point, undo_step

    img, clf, result = smear
    more, idx = add_cell(img, result, 100.0, 80.0, clf, author="dr.a")
    before = undo_point(more, idx)
    more.corrections[idx] = "basophil"
    assert undo_step(more, idx, before) is None and idx not in more.corrections  # the added cell, as the model said
    assert undo_step(more, idx, "") == UNDO_ADDED and more.labels()[idx] == UNDO_ADDED  # the add itself: rejected


def test_an_undo_of_a_cell_the_field_does_not_have_is_refused_and_changes_nothing():
    from _fakes import labelled_result

    from cellkit.review import undo_step

    r = labelled_result(["lymphocyte", "monocyte"])
    r.corrections[1] = "basophil"
    for cell in (2, -1):  # -1 would have undone the last cell of this field
        with pytest.raises(CellkitError, match=f"no cell #{cell} \\(it has 2\\)"):
            undo_step(r, cell, None)
    assert r.corrections == {1: "basophil"}
