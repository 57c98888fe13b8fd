from __future__ import annotations

import numpy as np
import pytest

from cellkit.errors import CellkitError
from cellkit.taxonomy import load_taxonomy
from cellkit.types import Detections, Heatmap, Prediction


def _dets(n=3):
    xyxy = np.array([[0, 0, 10, 10], [5, 5, 20, 25], [1, 2, 3, 4]], np.float32)[:n]
    return Detections(xyxy, np.array([0.9, 0.5, 0.7])[:n], np.array([0, 1, 2])[:n])


def test_detections_index_mask_and_merge():
    d = _dets()
    assert len(d[d.class_id == 1]) == 1
    assert d[0].class_name.tolist() == ["wbc"]
    merged = Detections.merge([d, Detections.empty(), d[1:]])
    assert len(merged) == 5
    assert merged.counts() == {"wbc": 1, "rbc": 2, "platelet": 2}
    assert len(Detections.empty()) == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"xyxy": np.zeros((2, 3))}, "expected shape \\(n, 4\\)"),
        ({"confidence": np.array([0.5])}, "confidence: expected shape \\(3,\\)"),
        ({"confidence": np.array([0.5, 2.0, 0.1])}, "confidence: expected values in \\[0, 1\\]"),
        ({"class_id": np.array([0, 1, 7])}, "class_id: expected values in \\[0, 2\\]"),
        ({"xyxy": np.array([[10, 0, 0, 10]] * 3)}, "x2 >= x1"),
    ],
)
def test_detections_validation_says_expected_vs_got(kwargs, message):
    base = {"xyxy": _dets().xyxy, "confidence": _dets().confidence, "class_id": _dets().class_id}
    base.update(kwargs)
    with pytest.raises(CellkitError, match=message):
        Detections(**base)


def test_from_ultralytics_reads_attributes():
    class Boxes:
        xyxy = np.array([[1, 2, 3, 4]], np.float32)
        conf = np.array([0.8], np.float32)
        cls = np.array([2.0], np.float32)

        def __len__(self):
            return 1

    class Result:
        boxes = Boxes()

    d = Detections.from_ultralytics(Result())
    assert d.class_name.tolist() == ["platelet"] and d.confidence[0] == pytest.approx(0.8)


def test_prediction_row_has_every_node():
    t = load_taxonomy()
    probs = t.node_probs(np.eye(len(t.leaves))[0])
    p = Prediction(probs, t.ids, "promyelocyte", "promyelocyte", 1.0)
    row = p.as_dict()
    assert {f"p_{i}" for i in t.ids} <= set(row)
    assert row["leaf"] == "promyelocyte" and p.prob("myeloid") == pytest.approx(1.0)
    with pytest.raises(CellkitError, match="leaf: expected a node id"):
        Prediction(probs, t.ids, "nope", "myeloid", 1.0)


def test_heatmap_range_checked():
    Heatmap(np.zeros((4, 4)), "gradcam", "myeloid")
    with pytest.raises(CellkitError, match="expected values in \\[0, 1\\]"):
        Heatmap(np.full((4, 4), 3.0), "gradcam", "myeloid")
    with pytest.raises(CellkitError, match="expected shape \\(H, W\\)"):
        Heatmap(np.zeros((4, 4, 3)), "gradcam", "myeloid")
