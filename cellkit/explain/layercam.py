"""LayerCAM (Jiang et al. 2021): element-wise positive-gradient weighting, finer than Grad-CAM."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pytorch_grad_cam import LayerCAM

from cellkit.explain.gradcam import cam_map
from cellkit.types import Heatmap


def layercam(classifier: Any, x: np.ndarray | torch.Tensor, target: str) -> Heatmap:
    """LayerCAM map of the node ``target``."""
    return cam_map(LayerCAM, classifier, x, target, "layercam")
