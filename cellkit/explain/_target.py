"""Shared plumbing for every explainer: the node target, input handling, hygiene on the shared model.

Every method explains ONE node of the taxonomy (a leaf or an inner node such as ``myeloid_immature``)
through :class:`NodeProbability`, a module whose output is that node's probability, i.e. the sum of
the probabilities of the leaves beneath it. Nothing here leaves state on the classifier's model:
:func:`frozen` restores ``requires_grad`` and ``training`` flags and clears ``.grad`` on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cellkit.errors import CellkitError


class NodeProbability(nn.Module):
    """``x (n,3,S,S) -> (n, 1)``: probability of one taxonomy node (summed leaf probabilities)."""

    def __init__(self, classifier: Any, node: str):
        super().__init__()
        self.node = check_node(classifier, node)
        self.index = classifier.taxonomy.ids.index(self.node)
        self.net = classifier.model  # registered as a submodule so CAM target layers are reachable
        self._classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._classifier.node_probs(x)[:, self.index : self.index + 1]


def check_node(classifier: Any, node: str) -> str:
    """The node id, or a CellkitError listing the valid ids."""
    tax = classifier.taxonomy
    if node not in tax:
        raise CellkitError(
            f"unknown node {node!r} for model {classifier.spec.name!r}; expected one of: {', '.join(tax.ids)}"
        )
    return node


def as_input(classifier: Any, image_or_tensor: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A preprocessed (1, 3, S, S) float tensor from an RGB crop or an already preprocessed tensor."""
    size = int(classifier.spec.input_size)
    if isinstance(image_or_tensor, torch.Tensor):
        x = image_or_tensor.detach().float()
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise CellkitError(f"expected a preprocessed tensor of shape (1, 3, {size}, {size}), got {tuple(x.shape)}")
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x.contiguous()
    return classifier.preprocess([np.asarray(image_or_tensor)])


def predicted_node(classifier: Any, x: torch.Tensor) -> str:
    """The deepest confident node (the prediction's ``label``) for a preprocessed (1,3,S,S) tensor."""
    with classifier.lock, torch.no_grad():
        probs = classifier.node_probs(x)[0].numpy()
    return classifier.taxonomy.deepest_confident(probs, classifier.spec.threshold)


def target_layer(model: nn.Module, name: str) -> nn.Module:
    """The CAM layer by dotted path (``spec.target_layer``), else the model's last Conv2d."""
    if name:
        try:
            return model.get_submodule(name)
        except AttributeError:
            raise CellkitError(
                f"target layer {name!r} not found in the model; fix target_layer in the model card"
            ) from None
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise CellkitError("the model has no Conv2d layer for CAM methods; set target_layer in the model card")
    return convs[-1]


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and no weight gradients inside the block; every flag restored and ``.grad`` cleared after."""
    flags = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        for p, _, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, req, grad in flags:
            p.requires_grad_(req)
            p.grad = grad
        for m, mode in modes:
            m.training = mode


def unit_map(values: np.ndarray | torch.Tensor, size: int, clip_percentile: float | None = None) -> np.ndarray:
    """Keep the positive evidence, resize to (size, size), scale into [0, 1].

    ``clip_percentile`` divides by that percentile of the positive values instead of the maximum,
    so a few extreme pixels (pixel-level gradients) do not flatten the rest of the map.
    """
    v = torch.as_tensor(np.asarray(values, dtype=np.float32))
    v = torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0)
    if tuple(v.shape) != (size, size):
        v = F.interpolate(v[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0].clamp_min(0)
    arr = v.numpy()
    positive = arr[arr > 0]
    if positive.size == 0:
        return np.zeros((size, size), np.float32)
    top = float(np.percentile(positive, clip_percentile)) if clip_percentile else float(positive.max())
    if top <= 0:
        top = float(positive.max())
    return np.clip(arr / top, 0.0, 1.0).astype(np.float32)
