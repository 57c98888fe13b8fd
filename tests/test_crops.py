from __future__ import annotations

import numpy as np
import pytest

from cellkit.crops import crop_box
from cellkit.errors import CellkitError
from cellkit.synth import BACKGROUND, make_smear


def test_crop_is_square_relative_to_cell_size_and_centred():
    img, boxes, _ = make_smear(seed=1, n_wbc=2, n_rbc=0, n_platelet=0)
    box = boxes[0]
    crop = crop_box(img, box, scale=2.0)
    side = round(2.0 * max(box[2] - box[0], box[3] - box[1]))
    assert crop.shape == (side, side, 3)
    centre = crop[side // 2, side // 2].astype(int)
    assert np.abs(centre - np.array(BACKGROUND)).sum() > 60  # the cell, not background


def test_crop_off_the_edge_is_padded_with_background():
    img = np.zeros((50, 50, 3), np.uint8)
    img[:] = (200, 180, 190)
    crop = crop_box(img, [0, 0, 20, 20], scale=3.0)
    assert crop.shape == (60, 60, 3)
    assert (crop == np.array([200, 180, 190], np.uint8)).all()


def test_bad_boxes_raise():
    with pytest.raises(CellkitError, match="x2 > x1"):
        crop_box(np.zeros((10, 10, 3), np.uint8), [5, 5, 5, 9])
