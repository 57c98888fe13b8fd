"""Training augmentations: shapes, seeding, colour strength and framing jitter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellkit.train.augment import augment_batch, center_batch


def _discs(n: int = 8, size: int = 64, diameter: float = 0.4) -> torch.Tensor:
    """uint8 (n, 3, size, size): a red disc of ``diameter`` x size, centred, on a beige field."""
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 <= (diameter * size / 2) ** 2
    img = np.empty((size, size, 3), np.uint8)
    img[:] = (240, 225, 200)
    img[inside] = (200, 30, 40)
    return torch.from_numpy(np.stack([img] * n)).permute(0, 3, 1, 2).contiguous()


def _red_fraction(x: torch.Tensor) -> float:
    return float(((x[:, 0] - x[:, 1]) > 0.4).float().mean())


def test_shape_range_and_seeding():
    x = _discs(6)
    a = augment_batch(x, 48, torch.Generator().manual_seed(1))
    b = augment_batch(x, 48, torch.Generator().manual_seed(1))
    c = augment_batch(x, 48, torch.Generator().manual_seed(2))
    assert a.shape == (6, 3, 48, 48) and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert center_batch(x, 48).shape == (6, 3, 48, 48)


def test_colour_strength_scales_the_colour_jitter():
    x = _discs(64)
    spread = []
    for strength in (0.0, 1.0, 2.0):
        out = augment_batch(x, 64, torch.Generator().manual_seed(0), strength=strength, zoom=(1.0, 1.0))
        spread.append(float(out.mean(dim=(2, 3)).std(dim=0).mean()))  # per-image mean colour, spread over images
    assert spread[0] < spread[1] < spread[2]
    # strength 0 leaves colour alone: the mean colour stays that of the input
    still = augment_batch(x, 64, torch.Generator().manual_seed(0), strength=0.0, zoom=(1.0, 1.0))
    assert torch.allclose(still.mean(dim=(0, 2, 3)), center_batch(x, 64).mean(dim=(0, 2, 3)), atol=0.02)


@pytest.mark.parametrize("zoom", [1.0, 1.5])
def test_zoom_enlarges_the_cell_by_its_factor(zoom):
    x = _discs(16)
    base = _red_fraction(augment_batch(x, 64, torch.Generator().manual_seed(0), strength=0.0, zoom=(1.0, 1.0)))
    out = _red_fraction(augment_batch(x, 64, torch.Generator().manual_seed(0), strength=0.0, zoom=(zoom, zoom)))
    assert out / base == pytest.approx(zoom**2, rel=0.12)  # area grows with the square of the zoom
