"""Grad-CAM++ (Chattopadhay et al. 2018): higher-order gradient weights, better with several instances."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pytorch_grad_cam import GradCAMPlusPlus

from cellkit.explain.gradcam import cam_map
from cellkit.types import Heatmap


def gradcampp(classifier: Any, x: np.ndarray | torch.Tensor, target: str) -> Heatmap:
    """Grad-CAM++ map of the node ``target``."""
    return cam_map(GradCAMPlusPlus, classifier, x, target, "gradcampp")
