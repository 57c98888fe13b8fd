"""A field at a magnification the detector never saw says its counts are unreliable; one measure for both rules."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from _fakes import labelled_result, result_with_red_cells

from cellkit.case import case_summary
from cellkit.scale import DETECTOR_MARGIN, MIN_RED_CELLS, field_scale_warning, red_cell_side

DETECTOR = SimpleNamespace(card={"reference_cell_px": {"range_5_95": [33.0, 177.0]}})


def test_the_median_red_cell_side_needs_enough_red_cells():
    assert red_cell_side(result_with_red_cells(60)) == pytest.approx(60)
    assert red_cell_side(result_with_red_cells(60, n=MIN_RED_CELLS - 1)) is None


@pytest.mark.parametrize("side", [34.0, 100.0, 177.0 * DETECTOR_MARGIN - 1])
def test_within_the_trained_range_no_warning(side):
    assert field_scale_warning(result_with_red_cells(side), DETECTOR) == ""


def test_an_upscaled_or_downscaled_field_is_warned():
    big = field_scale_warning(result_with_red_cells(240), DETECTOR)
    assert "240 px" in big and "larger" in big and "unreliable" in big
    assert "smaller" in field_scale_warning(result_with_red_cells(20), DETECTOR)


def test_no_reference_or_too_few_red_cells_claims_nothing():
    assert field_scale_warning(result_with_red_cells(240), SimpleNamespace(card={})) == ""
    assert field_scale_warning(result_with_red_cells(240, n=3), DETECTOR) == ""


def test_the_case_names_its_off_scale_fields():
    big = result_with_red_cells(240)
    big.name = "upscaled.png"
    ok = labelled_result(["lymphocyte"], ["wbc"], "fine.png")
    s = case_summary("C-1", [big, ok], detector_spec=DETECTOR)
    assert s["off_scale_fields"] == ["upscaled.png"] and "upscaled.png" in s["off_scale_warning"]
    assert case_summary("C-1", [big, ok])["off_scale_warning"] == ""  # no detector card given: no claim


@pytest.mark.realdata
def test_the_bundled_detectors_card_passes_its_own_smears_and_warns_on_an_upscaled_one(shared_data):
    import glob

    import numpy as np
    from PIL import Image

    from cellkit.detect import load_detector
    from cellkit.io import read_image
    from cellkit.slide import analyze

    det = load_detector()
    assert det.spec.card["reference_cell_px"]["range_5_95"]
    image = read_image(sorted(glob.glob(str(shared_data / "cbc/Training/Images/*.jpg")))[0])
    assert field_scale_warning(analyze(image, det), det.spec) == ""
    h, w = image.shape[:2]
    upscaled = np.asarray(Image.fromarray(image).resize((w * 3, h * 3)))
    assert "larger" in field_scale_warning(analyze(upscaled, det), det.spec)
