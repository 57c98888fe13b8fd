"""Grad-CAM (Selvaraju et al. 2017): target-layer activations weighted by their mean gradient.

Uses pytorch-grad-cam; its hooks live only inside the ``with`` block, under the classifier's lock.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from cellkit.errors import CellkitError
from cellkit.explain._target import NodeProbability, as_input, frozen, target_layer, unit_map
from cellkit.types import Heatmap


def cam_map(cam_class: type, classifier: Any, x: np.ndarray | torch.Tensor, target: str, method: str) -> Heatmap:
    """Run one pytorch-grad-cam class for the node ``target`` and return its map at input size."""
    x = as_input(classifier, x)
    size = x.shape[-1]
    wrapper = NodeProbability(classifier, target)
    layer = target_layer(classifier.model, classifier.spec.target_layer)
    grayscale = None
    # The input carries the gradient so activations are differentiable while weights stay frozen.
    with classifier.lock, frozen(classifier.model), cam_class(model=wrapper, target_layers=[layer]) as cam:
        grayscale = cam(input_tensor=x.clone().requires_grad_(True), targets=[ClassifierOutputTarget(0)])
    if grayscale is None:  # pytorch-grad-cam swallows IndexError in __exit__
        raise CellkitError(f"{method} failed on layer {classifier.spec.target_layer!r}; check target_layer in the card")
    return Heatmap(unit_map(grayscale[0], size), method=method, target=target)


def gradcam(classifier: Any, x: np.ndarray | torch.Tensor, target: str) -> Heatmap:
    """Grad-CAM map of the node ``target``."""
    return cam_map(GradCAM, classifier, x, target, "gradcam")
