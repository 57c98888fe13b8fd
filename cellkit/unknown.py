"""The "Unidentified — review" verdict: cells unlike any the model was taught, or that it cannot place.

A crop is flagged when any of these holds:

- **unlike the training cells**: its out-of-distribution score is above a threshold calibrated on
  held-out training-lab cells. Scores come from `pytorch-ood` detectors run on the network's
  penultimate features: ``knn`` (distance to the k-th nearest training feature, Sun et al. 2022),
  ``vim`` (virtual logit matching), ``mahalanobis``; ``energy`` uses the logits alone;
- **unsure**: no top-level class of the model's grouping (e.g. PBC-8) reaches ``min_group_prob``;
- **no cell**: the framer found no nucleus in the crop.

``OodScorer`` keeps what a detector needs as tensors (a feature bank, class means) so it travels in
the model's safetensors file and is refitted when the model loads; nothing is pickled.
Scores are divided by the calibrated threshold, so ``ood_score > 1`` means "flag" for every method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cellkit.errors import CellkitError
from cellkit.taxonomy import UNKNOWN, UNKNOWN_NAME

__all__ = ["METHODS", "UNKNOWN", "UNKNOWN_NAME", "OodScorer", "auroc", "calibrate"]

METHODS = ("knn", "vim", "mahalanobis", "energy")


@dataclass
class OodScorer:
    """A fitted out-of-distribution detector over penultimate features (and logits for ``vim`` / ``energy``).

    ``tensors`` hold the fitted state (``bank`` features, ``labels``; ``w``/``b`` the linear head for vim),
    ``params`` small settings (``k``, ``d``). Build with :meth:`fit`; :meth:`score` gives raw scores
    (higher = more unusual).
    """

    method: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CellkitError(f"OOD method: expected one of {METHODS}, got {self.method!r}")
        self._detector: Any = None

    @classmethod
    def fit(
        cls,
        method: str,
        features: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        head: torch.nn.Module | None = None,
        bank_size: int = 3000,
        k: int = 10,
        seed: int = 0,
    ) -> OodScorer:
        """Fit on in-distribution features (n, D) with class indices (n,); ``head`` is the linear classifier (vim)."""
        feats = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        labs = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        if feats.ndim != 2 or len(feats) != len(labs):
            raise CellkitError(f"OOD fit: expected features (n, D) and labels (n,), got {feats.shape} / {labs.shape}")
        if len(feats) > bank_size:
            keep = torch.from_numpy(np.random.default_rng(seed).permutation(len(feats))[:bank_size])
            feats, labs = feats[keep], labs[keep]
        _, labs = torch.unique(labs, return_inverse=True)  # contiguous 0..C-1 (pytorch-ood's Mahalanobis)
        tensors = {"bank": feats.half(), "labels": labs}
        params: dict[str, Any] = {"k": int(min(k, len(feats)))}
        if method == "vim":
            if head is None:
                raise CellkitError("OOD method 'vim' needs the model's linear head")
            tensors["w"], tensors["b"] = head.weight.detach().float().clone(), head.bias.detach().float().clone()
            params["d"] = int(min(feats.shape[1] // 2, 256))
        return cls(method, tensors, params)

    def _fitted(self) -> Any:
        if self._detector is None and self.method != "energy":
            from pytorch_ood.detector import KNN, Mahalanobis, ViM

            bank, labels = self.tensors["bank"].float(), self.tensors["labels"]
            if self.method == "knn":
                det = KNN(None, k=int(self.params.get("k", 10)))
            elif self.method == "mahalanobis":
                det = Mahalanobis(None)
            else:
                det = ViM(None, d=int(self.params["d"]), w=self.tensors["w"], b=self.tensors["b"])
            self._detector = det.fit_features(bank, labels)
        return self._detector

    def score(self, features: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """Raw outlier scores (n,), higher = less like the training cells."""
        if len(features) == 0:
            return torch.zeros(0)
        if self.method == "energy":
            if logits is None:
                raise CellkitError("OOD method 'energy' needs logits")
            return -torch.logsumexp(logits.float(), dim=1)
        if self.method == "knn":
            if self._detector is None:  # the unit-length bank, made once (re-normalising it per call cost 13 ms)
                self._detector = torch.nn.functional.normalize(self.tensors["bank"].float(), dim=1)
            return knn_distance(self._detector, features, int(self.params.get("k", 10)), bank_is_unit=True)
        return self._fitted().predict_features(features.float()).float()

    def to_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The state to save beside the model's weights (keys prefixed)."""
        return {prefix + k: v.contiguous() for k, v in self.tensors.items()}

    @classmethod
    def from_tensors(cls, method: str, tensors: dict[str, torch.Tensor], params: dict[str, Any]) -> OodScorer:
        return cls(method, dict(tensors), dict(params))


def knn_distance(bank: torch.Tensor, features: torch.Tensor, k: int, bank_is_unit: bool = False) -> torch.Tensor:
    """Distance of each L2-normalised feature to its k-th nearest normalised bank feature (n,).

    The score of pytorch-ood's ``KNN`` detector (Sun et al. 2022), computed with one matrix product so that
    inference needs neither scikit-learn nor pytorch-ood's import (~1 s); a test checks both agree.
    """
    z = torch.nn.functional.normalize(features.float(), dim=1)
    b = bank if bank_is_unit else torch.nn.functional.normalize(bank.float(), dim=1)
    d2 = (2 - 2 * z @ b.T).clamp_min(0)  # squared distance between unit vectors
    return d2.topk(min(k, len(b)), dim=1, largest=False).values[:, -1].sqrt()


def calibrate(scores: np.ndarray, unsure: np.ndarray | None = None, flag_share: float = 0.05) -> float:
    """The score threshold at which ``flag_share`` of known (held-out, in-distribution) cells are flagged.

    Cells already flagged as unsure count towards the share, so the verdict as a whole flags about
    ``flag_share`` of known cells.
    """
    scores = np.asarray(scores, np.float64)
    if len(scores) == 0:
        raise CellkitError("calibrate: no held-out scores to calibrate on")
    unsure = np.zeros(len(scores), bool) if unsure is None else np.asarray(unsure, bool)
    budget = flag_share - unsure.mean()
    rest = np.sort(scores[~unsure])
    if budget <= 0 or len(rest) == 0:
        return float(rest[-1]) + 1e-6 if len(rest) else float(scores.max()) + 1e-6
    n_flag = round(budget * len(scores))
    return float(rest[max(0, len(rest) - n_flag - 1)]) if n_flag else float(rest[-1]) + 1e-6


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Area under the ROC curve of scores separating unknown (positive) from known cells."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
    return float(roc_auc_score(y, np.r_[known, unknown]))


def sharpness(x: torch.Tensor) -> torch.Tensor:
    """Focus of each network input (n, 3, S, S): std of the grey image's Laplacian / std of the grey image.

    Contrast-free, so stain and brightness do not move it. On PBC's validation crops it is 0.12 or more
    (1st percentile); crops blurred with sigma 6 px and more, or synthetic defocus, fall to about 0.02-0.03.
    """
    g = x.float().mean(1)
    c = g[:, 1:-1, 1:-1]
    lap = g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:] - 4 * c  # 4-neighbour Laplacian
    inner = (slice(None), slice(1, -1), slice(1, -1))  # one more pixel off each border
    return lap[inner].flatten(1).std(1) / c[inner].flatten(1).std(1).clamp_min(1e-3)


# ---- the score of the first model cards (``ood_stats``: class-conditional Mahalanobis, tied covariance) ----
def fit_ood(features: np.ndarray, leaf_index: np.ndarray, dim: int = 128) -> dict[str, torch.Tensor]:
    """Class-conditional Gaussian statistics (tied covariance) of features in a PCA subspace."""
    f = np.asarray(features, np.float64)
    mu = f.mean(0)
    _, _, vt = np.linalg.svd(f - mu, full_matrices=False)
    k = int(min(dim, vt.shape[0], max(1, len(f) - 1)))
    proj = vt[:k].T  # (D, k)
    z = (f - mu) @ proj
    classes = np.unique(leaf_index)
    means = np.stack([z[leaf_index == c].mean(0) for c in classes])
    resid = z - means[np.searchsorted(classes, leaf_index)]
    cov = resid.T @ resid / max(1, len(z) - len(classes))
    cov += np.eye(k) * (1e-3 * np.trace(cov) / k + 1e-8)
    return {
        "mu": torch.tensor(mu, dtype=torch.float32),
        "proj": torch.tensor(proj, dtype=torch.float32),
        "means": torch.tensor(means, dtype=torch.float32),
        "precision": torch.tensor(np.linalg.inv(cov), dtype=torch.float32),
    }


def mahalanobis(stats: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    """Distance to the nearest class mean (n,), in the whitened PCA subspace."""
    z = (features.float() - stats["mu"]) @ stats["proj"]
    diff = z[:, None, :] - stats["means"][None]  # (n, C, k)
    d2 = torch.einsum("nck,kl,ncl->nc", diff, stats["precision"], diff)
    return d2.clamp_min(0).min(dim=1).values.sqrt()
