"""Red-cell boxes from labelled points, and the slide-scale crop export split by image."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cellkit.errors import CellkitError
from cellkit.points import match_points
from cellkit.rbc_boxes import boxes_from_points, export_point_crops, image_split
from cellkit.synth import make_smear


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_each_point_gets_its_own_cells_box():
    img, boxes, cls = make_smear(320, 240, n_wbc=0, n_rbc=14, n_platelet=0, seed=4)
    rbc = boxes[cls == 1]
    labelled = rbc[:10]  # four cells left unlabelled, as on real point-labelled smears
    xy = (labelled[:, :2] + labelled[:, 2:]) / 2
    found = boxes_from_points(img, xy)
    assert found.found.all()
    ious = [_iou(f, t) for f, t in zip(found.xyxy, labelled, strict=True)]
    assert np.median(ious) > 0.6, ious
    m = match_points(xy, found.xyxy)
    assert m["recall"] == 1.0 and m["boxes_per_cell"] < 1.3
    assert len(found.extra) >= 2  # some of the unlabelled cells are boxed too (for detector training)


def test_bad_image_is_a_clear_error():
    with pytest.raises(CellkitError, match="expected an RGB uint8 image"):
        boxes_from_points(np.zeros((10, 10), np.uint8), np.zeros((0, 2)))


def test_image_split_is_seeded_and_complete():
    stems = [str(i) for i in range(20)]
    a, b = image_split(stems), image_split(stems)
    assert a == b and set(a) == set(stems)
    assert sum(v == "train" for v in a.values()) == 14 and sum(v == "val" for v in a.values()) == 3


def test_export_crops_split_by_image(tmp_path):
    root = tmp_path / "chula"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for k in range(1, 7):
        img, boxes, _cls = make_smear(200, 160, n_wbc=0, n_rbc=6, n_platelet=0, seed=k)
        Image.fromarray(img).save(root / "images" / f"{k}.jpg", quality=95)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        (root / "labels" / f"{k}.txt").write_text("\n".join(f"{x:.0f} {y:.0f} {k % 3}" for x, y in centres) + "\n")
    counts = export_point_crops(root, tmp_path / "crops")
    split = json.loads((tmp_path / "crops" / "split.json").read_text())
    assert sum(counts.values()) == 36 and split["by"] == "image"
    images_of = {part: {f.split("/")[1].split("_")[0] for f in split[part]} for part in ("train", "val", "test")}
    assert not images_of["train"] & images_of["test"] and not images_of["train"] & images_of["val"]
    crop = np.asarray(Image.open(tmp_path / "crops" / split["train"][0]))
    assert crop.shape[0] == crop.shape[1] > 10  # a square at the slide's scale
