"""Vanilla gradient saliency (Simonyan et al. 2014): |d p(node) / d pixel|, max over colour channels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from captum.attr import Saliency

from cellkit.explain._target import NodeProbability, as_input, frozen, unit_map
from cellkit.types import Heatmap

CLIP_PERCENTILE = 99.5


def saliency(classifier: Any, x: np.ndarray | torch.Tensor, target: str) -> Heatmap:
    """Gradient-magnitude map of the node ``target``."""
    x = as_input(classifier, x)
    size = x.shape[-1]
    wrapper = NodeProbability(classifier, target)
    with classifier.lock, frozen(classifier.model):
        attr = Saliency(wrapper).attribute(x.clone().requires_grad_(True), target=0, abs=True)
    return Heatmap(unit_map(attr[0].amax(0).detach(), size, CLIP_PERCENTILE), method="saliency", target=target)
