"""Point labels (Chula RBC-12 layout) and their match to detected boxes."""

from __future__ import annotations

import numpy as np
import pytest

from cellkit.errors import CellkitError
from cellkit.points import match_points, points_in_boxes, read_points


def test_read_points_and_bad_lines(tmp_path):
    good = tmp_path / "1.txt"
    good.write_text("10 20 0\n\n30.5 40 11\n")
    pts = read_points(good)
    assert len(pts) == 2 and pts.xy.tolist() == [[10, 20], [30.5, 40]] and pts.class_id.tolist() == [0, 11]
    bad = tmp_path / "2.txt"
    bad.write_text("10 20 0\n10 twenty 1\n")
    with pytest.raises(CellkitError, match="line 2: expected 'x y class'"):
        read_points(bad)
    with pytest.raises(CellkitError, match="cannot read"):
        read_points(tmp_path / "missing.txt")


def test_match_counts_found_points_and_double_boxes():
    xy = np.array([[5, 5], [50, 50], [90, 90]], np.float32)
    boxes = np.array([[0, 0, 10, 10], [40, 40, 60, 60], [45, 45, 55, 55]], np.float32)  # cell 2 boxed twice
    assert points_in_boxes(xy, boxes).sum(1).tolist() == [1, 2, 0]
    m = match_points(xy, boxes)
    assert m["recall"] == pytest.approx(2 / 3) and m["boxes_per_cell"] == pytest.approx(1.5)
    assert m["in_two_or_more"] == pytest.approx(1 / 3)
    assert match_points(xy, np.zeros((0, 4)))["recall"] == 0.0


@pytest.mark.realdata
def test_chula_labels_read(shared_data):
    pts = read_points(shared_data / "chula_rbc12" / "labels" / "1.txt")
    assert len(pts) > 20 and pts.class_id.min() >= 0 and pts.class_id.max() <= 12
    assert (pts.xy[:, 0] < 640).all() and (pts.xy[:, 1] < 480).all()
