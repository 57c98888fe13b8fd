"""Explanations at any node of the taxonomy: one verb, many methods, each map with trust scores.

``explain(classifier, crop, "myeloid_immature", "gradcam")`` returns a :class:`~cellkit.types.Heatmap`
(values (S, S) in [0, 1] at the model's input size, square-padded frame of the crop) whose ``scores``
hold ``seconds`` (the method alone) and the faithfulness AUCs. Every explainer in :data:`EXPLAINERS`
is a function ``(classifier, x, target) -> Heatmap``; all of them take the classifier's lock and
leave no hooks, gradients or flags behind, so the cached model can serve many sessions.
"""

from __future__ import annotations

import importlib
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from cellkit.errors import CellkitError
from cellkit.explain._target import as_input, check_node, predicted_node
from cellkit.explain.faithfulness import curves, faithfulness, random_reference
from cellkit.explain.sanity import sanity_check
from cellkit.types import Heatmap

Explainer = Callable[..., Heatmap]

# name -> (module, function). Modules load on first use: pytorch-grad-cam pulls in scikit-learn and
# captum pulls in IPython, seconds each on this CPU, and a CLI call needs only one of them.
_METHODS: dict[str, tuple[str, str]] = {
    "gradcam": ("cellkit.explain.gradcam", "gradcam"),
    "gradcampp": ("cellkit.explain.gradcampp", "gradcampp"),
    "layercam": ("cellkit.explain.layercam", "layercam"),
    "occlusion": ("cellkit.explain.occlusion", "occlusion"),
    "ig": ("cellkit.explain.integrated_gradients", "integrated_gradients"),
    "saliency": ("cellkit.explain.saliency", "saliency"),
}


def _lazy(module: str, name: str) -> Explainer:
    def explainer(classifier: Any, x: Any, target: str, **kwargs: Any) -> Heatmap:
        return getattr(importlib.import_module(module), name)(classifier, x, target, **kwargs)

    explainer.__name__ = explainer.__qualname__ = name
    explainer.__doc__ = f"``{module}.{name}(classifier, x, target) -> Heatmap`` (imported on first call)."
    return explainer


EXPLAINERS: dict[str, Explainer] = {name: _lazy(*where) for name, where in _METHODS.items()}

METHOD_NAMES: dict[str, str] = {
    "gradcam": "Grad-CAM",
    "gradcampp": "Grad-CAM++",
    "layercam": "LayerCAM",
    "occlusion": "Occlusion",
    "ig": "Integrated gradients",
    "saliency": "Saliency",
}

_ALIASES = {"integrated_gradients": "ig", "grad-cam": "gradcam", "gradcam++": "gradcampp", "grad-cam++": "gradcampp"}


def get_explainer(method: str) -> Explainer:
    """The explainer registered under ``method`` (a few spellings accepted)."""
    key = _ALIASES.get(method.lower(), method.lower())
    if key not in EXPLAINERS:
        raise CellkitError(f"unknown method {method!r}; expected one of: {', '.join(EXPLAINERS)}")
    return EXPLAINERS[key]


def explain(
    classifier: Any,
    image_or_tensor: np.ndarray | torch.Tensor,
    target_node: str | None = None,
    method: str = "gradcam",
    with_faithfulness: bool = True,
) -> Heatmap:
    """Explain the classifier's probability of ``target_node`` (default: the predicted label).

    ``image_or_tensor`` is an RGB crop (H, W, 3) or a preprocessed (1, 3, S, S) tensor.
    """
    fn = get_explainer(method)
    x = as_input(classifier, image_or_tensor)
    target = check_node(classifier, target_node) if target_node else predicted_node(classifier, x)
    start = time.perf_counter()
    heatmap = fn(classifier, x, target)
    heatmap.scores["seconds"] = time.perf_counter() - start
    if with_faithfulness:
        start = time.perf_counter()
        heatmap.scores.update(faithfulness(classifier, x, target, heatmap.values))
        heatmap.scores["faithfulness_seconds"] = time.perf_counter() - start
    return heatmap


class _CallableModule(types.ModuleType):
    """``cellkit.explain`` is both this package and the verb: once the package is imported,
    ``from cellkit import explain`` returns the module, so calling the module calls :func:`explain`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Heatmap:
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = [
    "EXPLAINERS",
    "METHOD_NAMES",
    "Explainer",
    "curves",
    "explain",
    "faithfulness",
    "get_explainer",
    "random_reference",
    "sanity_check",
]
