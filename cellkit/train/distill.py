"""Distillation from clean-image teachers: the student sees augmented crops, the teachers saw the clean file.

Training for other labs (stain, optics, framing jitter) costs accuracy at home. Here each teacher classifies
every training image once, *through its own preprocessing* (its framing, view, colour norm), and the student is
taught those leaf probabilities while it sees the shifted crop: robustness from the augmentation, the home
lab's fine distinctions (band vs segmented, promyelocyte vs myelocyte) from the teachers. Several teachers are
combined by the geometric mean of their probabilities (an ensemble the student learns, at one model's cost).
The probabilities are cached in the run's work folder, so a resumed run does not recompute them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cellkit.errors import CellkitError
from cellkit.taxonomy import Taxonomy


def teacher_leaf_probs(
    names: list[str],
    root: str | Path,
    paths: list[str],
    idx: np.ndarray,
    taxonomy: Taxonomy,
    cache: Path | None = None,
    batch: int = 256,
) -> np.ndarray:
    """(len(paths), n_leaves) float32: the teachers' combined leaf probabilities for the images ``idx`` (other
    rows 0). Every teacher must name the same leaves, in the same order, as ``taxonomy``."""
    from cellkit.classify import load_classifier
    from cellkit.io import read_image

    key = hashlib.sha256(repr((sorted(names), [paths[i] for i in idx])).encode()).hexdigest()[:16]
    if cache is not None and cache.is_file():
        saved = np.load(cache)
        if str(saved["key"]) == key:
            return saved["probs"]
    out = np.zeros((len(paths), len(taxonomy.leaves)), dtype=np.float64)
    for name in names:
        clf = load_classifier(name)
        if list(clf.taxonomy.leaves) != list(taxonomy.leaves):
            raise CellkitError(
                f"--distill-from {name}: its leaves {list(clf.taxonomy.leaves)} are not this model's "
                f"{list(taxonomy.leaves)}"
            )
        rows = [clf.taxonomy.ids.index(leaf) for leaf in taxonomy.leaves]
        for start in range(0, len(idx), batch):
            part = idx[start : start + batch]
            images = [read_image(Path(root) / paths[i]) for i in part]
            probs = clf.predict_arrays(images, batch_size=batch)["node_probs"][:, rows]
            out[part] += np.log(np.clip(probs, 1e-8, 1.0)) / len(names)
    probs = np.exp(out[idx] - out[idx].max(1, keepdims=True))
    out[idx] = probs / probs.sum(1, keepdims=True)
    result = out.astype(np.float32)
    if cache is not None:
        from cellkit.writes import atomic_write

        atomic_write(cache, lambda fh: np.savez(fh, probs=result, key=np.array(key)), fallback=False)
    return result


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """KL(teacher || student) with both softened at ``temperature``, times T^2 (Hinton et al. 2015), so its
    gradient keeps the scale of the label loss."""
    soft = teacher.clamp_min(1e-8) ** (1.0 / temperature)
    soft = soft / soft.sum(1, keepdim=True)
    logp = F.log_softmax(logits / temperature, dim=1)
    return F.kl_div(logp, soft, reduction="batchmean") * temperature**2
