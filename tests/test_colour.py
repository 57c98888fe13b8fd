"""Colour normalisation: white balance to the training data's slide background."""

from __future__ import annotations

import numpy as np
import pytest

from cellkit.colour import background_rgb, reference_background, white_balance
from cellkit.preprocess import Preprocess
from cellkit.synth import make_crop

PBC_BACKGROUND = [255.0, 228.0, 203.0]


def preprocess(images, size, mean, std, view=1.0, background=None):
    """The spec-built pipeline with these settings (no framing)."""
    return Preprocess(size, tuple(mean), tuple(std), view, tuple(background or ()))(images)


def _tinted(crop: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    return np.clip(crop.astype(np.float32) * np.array(gains), 0, 255).astype(np.uint8)


def test_background_is_the_bright_empty_slide():
    img = np.full((50, 50, 3), (240, 220, 200), np.uint8)
    img[10:40, 10:40] = (120, 60, 150)  # a dark cell covering 36 % of the field
    np.testing.assert_allclose(background_rgb(img), [240, 220, 200])


def test_white_balance_undoes_a_lab_tint():
    crop = make_crop(2, 96, 0)
    ref = background_rgb(crop)
    tinted = _tinted(crop, (0.7, 1.0, 1.1))  # a cyan-ish lab: red light absorbed, more blue
    fixed = white_balance(tinted, ref)
    assert np.abs(background_rgb(fixed) - ref).max() <= 3
    before = np.abs(tinted.astype(int) - crop).mean()
    after = np.abs(fixed.astype(int) - crop).mean()
    assert after < before / 3


def test_white_balance_is_near_identity_at_home_and_bounded_elsewhere():
    crop = make_crop(4, 64, 1)
    same = white_balance(crop, background_rgb(crop))
    assert np.abs(same.astype(int) - crop).max() <= 2
    dark = np.full((32, 32, 3), 10, np.uint8)  # no background at all: gains are clipped, not x25
    assert white_balance(dark, PBC_BACKGROUND).max() <= 10 * 1.7 + 1


def test_reference_background_is_the_median_over_images():
    imgs = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (200, 210, 250)])
    assert reference_background(imgs) == [210.0, 210.0, 210.0]


def test_preprocess_white_balances_when_given_a_background():
    crop = _tinted(make_crop(1, 80, 2), (0.75, 1.0, 1.0))
    plain = preprocess([crop], 40, [0.0] * 3, [1.0] * 3)
    balanced = preprocess([crop], 40, [0.0] * 3, [1.0] * 3, background=PBC_BACKGROUND)
    red_bg = lambda x: float(x[0, 0].flatten().quantile(0.9))  # noqa: E731
    assert red_bg(balanced) > red_bg(plain) + 0.1
    assert balanced[0, 0].max() == pytest.approx(1.0, abs=0.01)
