"""The hierarchical loss: a sample labelled at any node of the tree teaches the sum of that node's leaves.

A leaf label is plain cross-entropy; an inner-node label (PBC's ``IG_``, ``NEUTROPHIL_``) is
``-log(sum of its leaves' probabilities)``, so it teaches the node without guessing a subtype. Samples are weighted
so every level of the tree is balanced.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cellkit.taxonomy import Taxonomy


def target_masks(nodes: list[str], taxonomy: Taxonomy) -> torch.Tensor:
    """(n, n_leaves) bool: the leaves under each sample's target node."""
    leaf_index = {leaf: j for j, leaf in enumerate(taxonomy.leaves)}
    masks = torch.zeros(len(nodes), len(taxonomy.leaves), dtype=torch.bool)
    for i, node in enumerate(nodes):
        for leaf in taxonomy.leaves_under(node):
            masks[i, leaf_index[leaf]] = True
    return masks


def hierarchical_loss(
    logits: torch.Tensor, masks: torch.Tensor, smoothing: float = 0.0, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """-log P(target node) with P(node) = sum of its leaves' softmax probabilities, label-smoothed."""
    logp = F.log_softmax(logits, dim=1)
    nll = -torch.logsumexp(logp.masked_fill(~masks, float("-inf")), dim=1)
    loss = (1 - smoothing) * nll + smoothing * (-logp.mean(dim=1))
    if weights is not None:
        return (loss * weights).sum() / weights.sum()
    return loss.mean()


def level_balanced_weights(nodes: list[str], taxonomy: Taxonomy, power: float = 0.5) -> np.ndarray:
    """Sampling weight per image: mean over tree levels of (1 / size of its class at that level)^power."""
    w = np.zeros(len(nodes))
    for depth in range(1, taxonomy.max_depth + 1):
        anc = [taxonomy.ancestor_at(n, depth) for n in nodes]
        values, counts = np.unique(anc, return_counts=True)
        size = dict(zip(values, counts, strict=True))
        w += np.array([(1.0 / size[a]) ** power for a in anc])
    return w / w.sum()


def mixed_sampling_weights(
    nodes: list[str], sources: list[int | None], taxonomy: Taxonomy, extra_share: float, power: float = 0.5
) -> np.ndarray:
    """Sampling weight per image when extra labelled folders join the main training data (``--extra``).

    ``sources`` names each image's origin: None for the main data, ``k`` for extra folder k. The extra images
    together get ``extra_share`` of the mass, shared among the folders in proportion to their image counts and
    level-balanced within each folder; the main data, level-balanced, gets the rest. Without extra images
    (or without main ones) the present part gets everything.
    """
    w = np.zeros(len(nodes))
    src = np.array([-1 if s is None else int(s) for s in sources])
    main = np.nonzero(src < 0)[0]
    extra = np.nonzero(src >= 0)[0]
    if len(main) == 0 or len(extra) == 0:
        return level_balanced_weights(list(nodes), taxonomy, power)
    w[main] = (1.0 - extra_share) * level_balanced_weights([nodes[i] for i in main], taxonomy, power)
    for k in np.unique(src[extra]):
        members = np.nonzero(src == k)[0]
        share = extra_share * len(members) / len(extra)
        w[members] = share * level_balanced_weights([nodes[i] for i in members], taxonomy, power)
    return w / w.sum()
