"""Model-randomisation sanity check (Adebayo et al. 2018): a map must change when the weights do.

The check explains the same crop and node with a copy of the classifier whose weights are all
re-initialised. A method that explains the *model* gives a different map (low rank correlation and
low SSIM); one that merely outlines the image (an edge detector in disguise) gives the same map and
fails. The shared classifier is never touched: the copy is made under its lock.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from cellkit.explain._target import as_input
from cellkit.types import Heatmap

MAX_SPEARMAN = 0.5  # above this the randomised map is "the same" map
RANDOM_SEED = 20181008  # not a seed anybody builds a model with (the paper's arXiv date)


def randomised_copy(classifier: Any, seed: int = RANDOM_SEED) -> Any:
    """A shallow copy of the classifier holding a deep copy of its model with every layer re-initialised.

    The global torch RNG is forked, so other users of it see no change.
    """
    with classifier.lock:
        model = copy.deepcopy(classifier.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    model.eval()
    clone = copy.copy(classifier)
    clone.model = model
    clone.lock = threading.RLock()
    return clone


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> float:
    """Mean structural similarity of two maps in [0, 1] (Gaussian window, Wang et al. 2004)."""
    from scipy.ndimage import gaussian_filter  # scipy loads on first check only (about a second)

    c1, c2 = 0.01**2, 0.03**2
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = gaussian_filter(a, sigma), gaussian_filter(b, sigma)
    var_a = gaussian_filter(a * a, sigma) - mu_a**2
    var_b = gaussian_filter(b * b, sigma) - mu_b**2
    cov = gaussian_filter(a * b, sigma) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(np.mean(s))


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two maps; 0 when only one is constant, 1 when both are (blank = blank)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0 if np.ptp(a) == np.ptp(b) == 0 else 0.0
    from scipy.stats import spearmanr

    rho = spearmanr(a.ravel(), b.ravel()).statistic
    return 0.0 if not np.isfinite(rho) else float(rho)


def sanity_check(
    classifier: Any,
    x: np.ndarray | torch.Tensor,
    target: str,
    method: Callable[[Any, Any, str], Heatmap],
    seed: int = RANDOM_SEED,
    max_spearman: float = MAX_SPEARMAN,
) -> dict[str, float | bool]:
    """Explain with the model and with a randomised copy; ``passed`` when the maps differ.

    ``blank`` is set (and ``passed`` false) when the model's own map is empty: nothing to compare.
    """
    x = as_input(classifier, x)
    original = method(classifier, x, target).values
    randomised = method(randomised_copy(classifier, seed), x, target).values
    if np.ptp(original) == 0:  # a blank map says nothing, with or without weights: inconclusive
        return {"spearman": float("nan"), "ssim": float("nan"), "passed": False, "blank": True}
    rho = rank_correlation(original, randomised)
    return {
        "spearman": rho,
        "ssim": ssim(original, randomised),
        "passed": bool(abs(rho) < max_spearman),
        "blank": False,
    }
