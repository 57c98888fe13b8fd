"""Batched augmentations on uint8 crop tensors, fitting microscopy (all in torch, no per-image loops).

- geometry: any rotation, flips, scale/framing jitter (zoom in and out, shifts), one ``grid_sample``;
- stain/colour: HED optical-density jitter (haematoxylin/eosin amounts), hue/saturation,
  brightness/contrast/gamma;
- optics: Gaussian blur or unsharp masking, sensor noise; with ``optics > 0`` also low resolution
  (2-3x fewer pixels, as in crops cut from 640x480 smears), defocus and JPEG down to quality 30.
Crops cut from detections (cell filling 35-65 % of the field) are covered by the framing jitter.

:func:`synthetic_outliers` makes crops that are not one clear white cell (out of focus, debris-like
shuffled patches, red cells and background only, smeared "smudge" cells) for outlier exposure.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB) as used by skimage.rgb2hed
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)


def _geometry(x: torch.Tensor, out_size: int, g: torch.Generator, zoom: tuple[float, float]) -> torch.Tensor:
    n = x.shape[0]
    angle = torch.rand(n, generator=g) * 2 * math.pi
    # zoom > 1 shows less of the field (cell larger); < 1 shows more (padded with the border colour)
    scale = torch.exp(torch.empty(n).uniform_(math.log(zoom[0]), math.log(zoom[1]), generator=g))
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    shift = (torch.rand(n, 2, generator=g) - 0.5) * 0.16
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, [n, 3, out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _stain(x: torch.Tensor, g: torch.Generator, strength: float) -> torch.Tensor:
    n = x.shape[0]
    od = -torch.log(x.clamp(1 / 255, 1.0))  # optical density (n, 3, H, W)
    hed = torch.einsum("nchw,cd->ndhw", od, _HED_FROM_RGB)
    alpha = 1 + (torch.rand(n, 3, 1, 1, generator=g) - 0.5) * 2 * 0.35 * strength
    beta = (torch.rand(n, 3, 1, 1, generator=g) - 0.5) * 2 * 0.05 * strength
    hed = hed * alpha + beta
    return torch.exp(-torch.einsum("ndhw,dc->nchw", hed, _RGB_FROM_HED)).clamp(0, 1)


def _hsv_like(x: torch.Tensor, g: torch.Generator, strength: float) -> torch.Tensor:
    n = x.shape[0]
    grey = x.mean(1, keepdim=True)
    sat = 1 + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.6 * strength
    x = grey + (x - grey) * sat
    # hue: rotate the chroma around the grey axis
    ang = (torch.rand(n, generator=g) - 0.5) * 2 * 0.25 * strength
    k = torch.ones(3) / math.sqrt(3)
    kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = torch.eye(3) + torch.sin(ang)[:, None, None] * kx + (1 - torch.cos(ang))[:, None, None] * (kx @ kx)
    return torch.einsum("nchw,ndc->ndhw", x, rot)


def _tone(x: torch.Tensor, g: torch.Generator, strength: float) -> torch.Tensor:
    n = x.shape[0]
    bright = 1 + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.4 * strength
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.5 * strength
    gamma = torch.exp((torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.6 * strength)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean) * bright
    return x.clamp(0, 1) ** gamma


def _blur_sharpen(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    sigma = torch.rand(n, generator=g) * 1.2 + 0.3
    r = torch.arange(-2, 3, dtype=torch.float32)
    k1 = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)  # (n, 5)
    pad = F.pad(x, (2, 2, 2, 2), mode="replicate")
    # separable per-sample blur via grouped conv (groups = n * 3)
    flat = pad.reshape(1, n * 3, *pad.shape[2:])
    kh = k1.repeat_interleave(3, 0).view(n * 3, 1, 1, 5)
    kv = k1.repeat_interleave(3, 0).view(n * 3, 1, 5, 1)
    blurred = F.conv2d(F.conv2d(flat, kh, groups=n * 3), kv, groups=n * 3).view_as(x)
    choice = torch.rand(n, 1, 1, 1, generator=g)
    sharp = (x + (x - blurred) * 0.8).clamp(0, 1)
    return torch.where(choice < 0.25, blurred, torch.where(choice < 0.4, sharp, x))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample separable Gaussian blur of (n, 3, H, W) with ``sigma`` (n,) pixels (reflect-padded)."""
    n = x.shape[0]
    r = int(max(2, math.ceil(3 * float(sigma.max()))))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k1 = torch.exp(-(t[None] ** 2) / (2 * sigma.clamp_min(0.1)[:, None] ** 2))
    k1 = (k1 / k1.sum(1, keepdim=True)).repeat_interleave(3, 0)
    flat = F.pad(x, (r, r, r, r), mode="replicate").reshape(1, n * 3, x.shape[2] + 2 * r, x.shape[3] + 2 * r)
    out = F.conv2d(flat, k1.view(n * 3, 1, 1, -1), groups=n * 3)
    return F.conv2d(out, k1.view(n * 3, 1, -1, 1), groups=n * 3).view_as(x)


def _optics(x: torch.Tensor, g: torch.Generator, p: float) -> torch.Tensor:
    """Low resolution (down 1.5-3x, back up), defocus (sigma up to 2 px) and JPEG (quality 30-90), each with p."""
    n, _, h, w = x.shape
    pick = torch.rand(n, 3, generator=g) < p
    for i in torch.nonzero(pick[:, 0]).flatten().tolist():
        f = float(torch.empty(1).uniform_(1.5, 3.0, generator=g))
        small = F.interpolate(x[i : i + 1], size=(max(8, round(h / f)), max(8, round(w / f))), mode="area")
        x[i] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
    if pick[:, 1].any():
        sigma = torch.where(pick[:, 1], torch.rand(n, generator=g) * 1.4 + 0.6, torch.zeros(n))
        x = torch.where(pick[:, 1, None, None, None], gaussian_blur(x, sigma.clamp_min(0.1)), x)
    if pick[:, 2].any():
        from torchvision.io import decode_jpeg, encode_jpeg

        for i in torch.nonzero(pick[:, 2]).flatten().tolist():
            q = int(torch.randint(30, 91, (1,), generator=g))
            img = (x[i].clamp(0, 1) * 255).round().to(torch.uint8)
            x[i] = decode_jpeg(encode_jpeg(img, quality=q)).float() / 255.0
    return x


def augment_batch(
    x: torch.Tensor,
    out_size: int,
    generator: torch.Generator,
    strength: float = 1.0,
    zoom: tuple[float, float] = (0.8, 1.35),
    optics: float = 0.0,
) -> torch.Tensor:
    """uint8 (n, 3, H, W) -> augmented float (n, 3, out_size, out_size) in [0, 1]."""
    g = generator
    x = x.float() / 255.0
    x = _geometry(x, out_size, g, zoom)
    x = _stain(x, g, strength)
    x = _hsv_like(x, g, strength).clamp(0, 1)
    x = _tone(x, g, strength)
    x = _blur_sharpen(x, g)
    if optics > 0:
        x = _optics(x, g, optics)
    noise = torch.randn(x.shape, generator=g) * (torch.rand(x.shape[0], 1, 1, 1, generator=g) * 0.02)
    return (x + noise).clamp(0, 1)


OUTLIER_KINDS = ("defocus", "shuffled", "no_cell", "smudge")


def synthetic_outliers(x: torch.Tensor, g: torch.Generator, kind: str | None = None) -> torch.Tensor:
    """Float crops (n, 3, S, S) in [0, 1] -> crops that show no classifiable white cell (a random kind each,
    or all of ``kind``, one of :data:`OUTLIER_KINDS`).

    - defocus: Gaussian blur with sigma 4-8 % of the side (an out-of-focus cell);
    - shuffled: the crop's 4x4 patches in random order (debris, no cell shape);
    - no_cell: a corner quarter of the crop enlarged (red cells and background only);
    - smudge: the centre smeared along one direction and washed out (a broken, smudged cell).
    """
    n, _, s, _ = x.shape
    if kind is None:
        kind = torch.randint(0, len(OUTLIER_KINDS), (n,), generator=g)
    else:
        kind = torch.full((n,), OUTLIER_KINDS.index(kind))
    out = x.clone()
    blur = gaussian_blur(x, torch.rand(n, generator=g) * s * 0.04 + s * 0.04)
    out = torch.where((kind == 0)[:, None, None, None], blur, out)
    p = s // 4
    for i in torch.nonzero(kind == 1).flatten().tolist():
        tiles = x[i, :, : p * 4, : p * 4].unfold(1, p, p).unfold(2, p, p).reshape(3, 16, p, p)
        tiles = tiles[:, torch.randperm(16, generator=g)].reshape(3, 4, 4, p, p).permute(0, 1, 3, 2, 4)
        out[i] = F.interpolate(tiles.reshape(1, 3, 4 * p, 4 * p), size=(s, s), mode="nearest")[0]
    for i in torch.nonzero(kind == 2).flatten().tolist():
        cy, cx = (int(v) * (s - s // 3) for v in torch.randint(0, 2, (2,), generator=g))
        out[i] = F.interpolate(x[i : i + 1, :, cy : cy + s // 3, cx : cx + s // 3], size=(s, s), mode="bilinear")[0]
    for i in torch.nonzero(kind == 3).flatten().tolist():
        ang = float(torch.rand(1, generator=g)) * math.pi
        theta = torch.tensor([[[math.cos(ang), -math.sin(ang), 0.0], [math.sin(ang), math.cos(ang), 0.0]]])
        theta[0, :, :2] = theta[0, :, :2] @ torch.tensor([[2.5, 0.0], [0.0, 0.6]])  # stretch along one axis
        grid = F.affine_grid(theta, [1, 3, s, s], align_corners=False)
        smear = F.grid_sample(x[i : i + 1], grid, mode="bilinear", padding_mode="border", align_corners=False)
        out[i] = (0.5 * smear[0] + 0.5 * gaussian_blur(smear, torch.tensor([s * 0.03]))[0]) * 0.8 + 0.2
    return out.clamp(0, 1)


def center_batch(x: torch.Tensor, out_size: int) -> torch.Tensor:
    """uint8 (n, 3, H, W) -> float in [0, 1] resized to out_size (evaluation, no augmentation)."""
    x = x.float() / 255.0
    if x.shape[-1] != out_size:
        x = F.interpolate(x, size=(out_size, out_size), mode="bilinear", antialias=True, align_corners=False)
    return x
