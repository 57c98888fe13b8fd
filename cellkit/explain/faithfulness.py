"""Faithfulness of a map: deletion and insertion curves (Petsiuk et al., RISE, 2018).

Pixels are ranked by the map. *Deletion* replaces the top-ranked pixels with a blurred copy of the
crop, step by step, and records the node's probability: a faithful map makes it fall fast (low AUC).
*Insertion* starts from the blurred crop and puts the top-ranked pixels back: it should rise fast
(high AUC). Both AUCs are means over the curve, so they lie in [0, 1]. :func:`random_reference`
gives the same AUCs for a random pixel order (once per crop and node), the level a map has to beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

from cellkit.explain._target import NodeProbability, as_input

STEPS = 12  # 13 points per curve; both curves in one batch of 26 images


@dataclass
class Curves:
    """Probability of the node after each step (``steps + 1`` points, fraction removed/inserted 0 -> 1)."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray

    def scores(self, prefix: str = "") -> dict[str, float]:
        def auc(c: np.ndarray) -> float:
            return float(np.clip(np.trapezoid(c, self.fractions), 0.0, 1.0))

        return {f"{prefix}deletion_auc": auc(self.deletion), f"{prefix}insertion_auc": auc(self.insertion)}


def blurred(x: torch.Tensor) -> torch.Tensor:
    """The 'removed' version of the crop: a strong Gaussian blur (keeps colour, drops shape)."""
    size = x.shape[-1]
    k = (size // 4) | 1
    return gaussian_blur(x, kernel_size=[k, k], sigma=[size / 10, size / 10])


def curves(
    classifier: Any, x: np.ndarray | torch.Tensor, target: str, values: np.ndarray | None, steps: int = STEPS
) -> Curves:
    """Deletion and insertion curves of the map ``values`` (H, W) for ``target``; ``None`` = random order."""
    x = as_input(classifier, x)
    size = x.shape[-1]
    n = size * size
    gen = torch.Generator().manual_seed(0)
    if values is None:
        order = torch.randperm(n, generator=gen)
    else:
        v = torch.as_tensor(np.asarray(values, np.float32))
        if tuple(v.shape) != (size, size):
            v = torch.nn.functional.interpolate(v[None, None], size=(size, size), mode="bilinear")[0, 0]
        # Ties (flat regions of the map) are broken by a fixed random order, not by raster order.
        order = torch.argsort(-(v.flatten() + torch.rand(n, generator=gen) * 1e-6))
    counts = torch.round(torch.linspace(0, 1, steps + 1) * n).long()
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    masks = (rank[None, :] < counts[:, None]).float().view(steps + 1, 1, size, size)  # 1 = top pixels
    base = blurred(x)
    batch = torch.cat([x * (1 - masks) + base * masks, base * (1 - masks) + x * masks])
    wrapper = NodeProbability(classifier, target)
    with classifier.lock, torch.no_grad():
        p = wrapper(batch)[:, 0].numpy()
    return Curves(np.linspace(0, 1, steps + 1), p[: steps + 1], p[steps + 1 :])


def faithfulness(classifier: Any, x: np.ndarray | torch.Tensor, target: str, values: np.ndarray) -> dict[str, float]:
    """``deletion_auc`` (lower is better) and ``insertion_auc`` (higher is better) of one map."""
    return curves(classifier, x, target, values).scores()


def random_reference(classifier: Any, x: np.ndarray | torch.Tensor, target: str) -> dict[str, float]:
    """``random_deletion_auc`` / ``random_insertion_auc``: the AUCs of a random pixel order."""
    return curves(classifier, x, target, None).scores(prefix="random_")
