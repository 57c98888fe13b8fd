"""One preprocessing object per model, built from its spec: the same steps in training, evaluation and inference.

A crop goes through, in order:

1. ``frame`` — (models with ``framing="nucleus"``) find the white cell and re-cut the crop at
   ``crop_scale x`` the cell's size, padded with slide background (:mod:`cellkit.framing`);
2. ``canonical`` — pad to a square, keep the centre ``view`` fraction, resize (uint8): first to
   ``resample_size`` (the training cache's size) when the spec has one, then to the input size, so a
   crop at inference is resampled exactly as the training crops were;
3. ``to_tensor`` — white-balance to the model's slide background (when the spec has one), scale to
   [0, 1], normalise with mean/std.

Training caches the output of step 2 (at its cache size) and augments it before step 3, so the
network never sees a crop framed or coloured another way than at inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from cellkit.errors import CellkitError

FRAMINGS = ("", "nucleus")


def to_rgb(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 view of a grey, RGB or RGBA array; raises for anything else."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or min(arr.shape[:2]) < 1:
        raise CellkitError(f"expected an RGB crop of shape (H, W, 3), got {arr.shape}; read files with read_image")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr


def square_pad(image: np.ndarray) -> np.ndarray:
    """Pad a non-square crop to a square with the slide's background colour (keeps the cell's aspect)."""
    h, w = image.shape[:2]
    if abs(h - w) <= max(2, 0.02 * max(h, w)):
        return image
    from cellkit.framing import cut_square

    side = max(h, w)
    return cut_square(image, (w - side) // 2, (h - side) // 2, side)


def centre_view(image: np.ndarray, view: float = 1.0) -> np.ndarray:
    """The centred square that is ``view`` times the side of a square crop (view 1: unchanged)."""
    if view >= 1.0:
        return image
    side = image.shape[0]
    keep = max(1, round(side * view))
    start = (side - keep) // 2
    return image[start : start + keep, start : start + keep]


def resize_square(image: np.ndarray, size: int, view: float = 1.0) -> np.ndarray:
    """Square-pad, keep the centre ``view`` fraction, resize to (size, size) uint8."""
    img = centre_view(square_pad(to_rgb(image)), view)
    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def normalise_uint8(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """(n, 3, H, W) uint8 -> float normalised with mean/std (given for 0..1 images)."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x.float() / 255.0 - m) / s


@dataclass(frozen=True)
class Preprocess:
    """Crop -> network input, exactly as the model was trained (build it with :meth:`from_spec`)."""

    size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    view: float = 1.0
    background: tuple[float, ...] = ()
    source_background: tuple[float, ...] = ()  # a lab's fixed slide background (cellkit adapt); () = per crop
    framing: str = ""
    crop_scale: float = 2.5
    resample_size: int = 0  # training cache size: crops are resized to it first, then to ``size`` (0: directly)

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise CellkitError(f"framing: expected one of {FRAMINGS}, got {self.framing!r}")
        if self.size <= 0:
            raise CellkitError(f"size: expected a positive number of pixels, got {self.size}")

    @classmethod
    def from_spec(cls, spec: Any) -> Preprocess:
        return cls(
            size=int(spec.input_size),
            mean=tuple(spec.mean),
            std=tuple(spec.std),
            view=float(spec.view),
            background=tuple(spec.background or ()),
            source_background=tuple(getattr(spec, "source_background", None) or ()),
            framing=str(getattr(spec, "framing", "") or ""),
            crop_scale=float(spec.crop_scale),
            resample_size=int(getattr(spec, "resample_size", 0) or 0),
        )

    def frame(self, image: np.ndarray) -> tuple[np.ndarray, Any]:
        """The crop re-framed around its white cell, and the :class:`CellLocation` (None without framing)."""
        image = to_rgb(image)
        if not self.framing:
            return image, None
        from cellkit.framing import frame_crop, locate_cell

        loc = locate_cell(image)
        return frame_crop(image, self.crop_scale, loc), loc

    def canonical(self, image: np.ndarray, size: int | None = None) -> np.ndarray:
        """Framed, squared, centre-``view`` crop resized to ``size`` (default: the network's input), uint8."""
        return self._resize(self.frame(image)[0], size)

    def _resize(self, framed: np.ndarray, size: int | None = None) -> np.ndarray:
        """Square, view and resize a framed crop; to the input size through ``resample_size``, as in training."""
        if size is not None and size != self.size:
            return resize_square(framed, size, self.view)
        if not self.resample_size or self.resample_size == self.size:
            return resize_square(framed, self.size, self.view)
        return resize_square(resize_square(framed, self.resample_size, self.view), self.size)

    def to_tensor(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Canonical uint8 crops (n, S, S, 3) -> white-balanced, normalised float (n, 3, S, S)."""
        x = torch.as_tensor(np.asarray(batch)).permute(0, 3, 1, 2)
        if not self.background:
            return normalise_uint8(x, list(self.mean), list(self.std))
        from cellkit.colour import GAIN_LIMITS, balance_gains

        arr = np.asarray(batch)
        if self.source_background:  # one lab, one set of gains (tight crops show no background of their own)
            fixed = np.clip(np.divide(self.background, self.source_background), *GAIN_LIMITS).astype(np.float32)
            gains = torch.from_numpy(np.tile(fixed, (len(arr), 1))).view(-1, 3, 1, 1)
        else:
            gains = torch.from_numpy(np.stack([balance_gains(b, self.background) for b in arr])).view(-1, 3, 1, 1)
        x = (x.float() / 255.0 * gains).clamp(0, 1)
        return (x - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)

    def batch(self, images: list[np.ndarray]) -> tuple[torch.Tensor, list[Any]]:
        """RGB crops of any size -> the network's input (n, 3, size, size) and each crop's cell location."""
        if len(images) == 0:
            return torch.zeros((0, 3, self.size, self.size)), []
        framed = [self.frame(im) for im in images]
        canon = np.stack([self._resize(img) for img, _ in framed])
        return self.to_tensor(canon), [loc for _, loc in framed]

    def __call__(self, images: list[np.ndarray]) -> torch.Tensor:
        """RGB crops of any size -> the network's input tensor (n, 3, size, size)."""
        return self.batch(images)[0]
