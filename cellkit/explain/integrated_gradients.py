"""Integrated gradients (Sundararajan et al. 2017) from the mean-colour baseline to the crop.

``N_STEPS`` Gauss-Legendre points, all in one batch (``internal_batch_size``). Measured on six PBC
cells (lite0, 112 px): the completeness gap |sum(attr) - (p(x) - p(baseline))| / |p(x) - p(baseline)|
is 4 % median (22 % max) at 16 points, 44 % at 8, 5 % (9 % max) at 64 for 4x the time; 16 points
take about 0.4 s per crop on this CPU (target: 2 s).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from captum.attr import IntegratedGradients

from cellkit.explain._target import NodeProbability, as_input, frozen, unit_map
from cellkit.types import Heatmap

N_STEPS = 16
CLIP_PERCENTILE = 99.5


def integrated_gradients(classifier: Any, x: np.ndarray | torch.Tensor, target: str, n_steps: int = N_STEPS) -> Heatmap:
    """Integrated-gradients map of the node ``target`` (positive evidence, channels summed)."""
    x = as_input(classifier, x)
    size = x.shape[-1]
    wrapper = NodeProbability(classifier, target)
    with classifier.lock, frozen(classifier.model):
        attr = IntegratedGradients(wrapper).attribute(
            x, baselines=torch.zeros_like(x), target=0, n_steps=n_steps, internal_batch_size=n_steps
        )
    return Heatmap(unit_map(attr[0].sum(0).detach(), size, CLIP_PERCENTILE), method="ig", target=target)
