"""Hierarchical cell classifier: crops -> leaf logits -> probabilities at every node of the tree.

The network predicts the taxonomy's *leaves*; inner-node probabilities are sums of leaf
probabilities (``Taxonomy.node_matrix``), so the tree is always consistent. Each prediction carries
the argmax leaf and the deepest node whose probability passes ``spec.threshold``, plus an
out-of-distribution score (class-conditional Mahalanobis distance on the penultimate features,
divided by its 99th percentile on held-out training-lab crops: > 1 means "unlike the training data").

Weights are a safetensors state dict beside a JSON model card (:class:`cellkit.models.ModelSpec`);
OOD statistics travel in the same safetensors file under the ``ood.`` prefix.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cellkit import config
from cellkit.errors import CellkitError
from cellkit.models import ModelSpec, default_spec, load_spec
from cellkit.taxonomy import Taxonomy, load_taxonomy
from cellkit.types import Prediction

OOD_PREFIX = "ood."
TRAIN_HINT = "train one with `cellkit train classifier`"


# ---- small architectures of our own (timm names are used for everything else) ------------------
class SmallCNN(nn.Module):
    """A plain conv net (stride-2 stem, then conv-bn-relu x2 + max-pool per stage) with timm's head API."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (24, 48, 96, 192), drop_rate: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        c_in = widths[0]
        for i, c in enumerate(widths):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            layers += [nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        self.features = nn.Sequential(*layers)
        self.num_features = widths[-1] * 2
        self.conv_head = nn.Conv2d(c_in, self.num_features, 1, bias=False)  # CAM target layer
        self.bn2 = nn.BatchNorm2d(self.num_features)
        self.act2 = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.bn2(self.conv_head(self.features(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.classifier(self.drop(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


LOCAL_ARCHS: dict[str, Any] = {
    "cellkit_tiny_cnn": lambda n: SmallCNN(n, widths=(8, 16, 32), drop_rate=0.0),
    "cellkit_small_cnn": lambda n: SmallCNN(n, widths=(24, 48, 96, 192)),
}


def build_model(arch: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """An untrained network by name: a :data:`LOCAL_ARCHS` entry or any timm model name."""
    if arch in LOCAL_ARCHS:
        return LOCAL_ARCHS[arch](num_classes)
    import timm

    try:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    except RuntimeError as exc:  # timm raises RuntimeError for unknown names
        raise CellkitError(
            f"unknown architecture {arch!r}: use a timm model name or one of {list(LOCAL_ARCHS)}"
        ) from exc


def penultimate_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features before the classifier and the leaf logits, in one forward pass."""
    if hasattr(model, "forward_head") and hasattr(model, "get_classifier"):
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        return feats, model.get_classifier()(feats)
    logits = model(x)
    return logits, logits


# ---- out-of-distribution score ---------------------------------------------------------------
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


# ---- the classifier ------------------------------------------------------------------------
class Classifier:
    """A model plus its spec and taxonomy; turns RGB crops into :class:`Prediction` objects."""

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        taxonomy: Taxonomy,
        ood_stats: dict[str, torch.Tensor] | None = None,
    ):
        if list(spec.labels) != list(taxonomy.leaves):
            raise CellkitError(
                f"model {spec.name!r} predicts {spec.labels} but taxonomy {taxonomy.name!r} has leaves "
                f"{list(taxonomy.leaves)}; retrain with `cellkit train classifier --taxonomy {taxonomy.name}`"
            )
        # channels-last roughly doubles CPU throughput of depthwise/1x1 convs (measured: bench/bench_classify.py)
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.spec = spec
        self.taxonomy = taxonomy
        self.ood_stats = ood_stats or {}
        self.lock = threading.RLock()
        self._node_matrix = torch.from_numpy(taxonomy.node_matrix)  # (n_nodes, n_leaves)
        self._mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def node_ids(self) -> tuple[str, ...]:
        return self.taxonomy.ids

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 crops (any size) -> normalised (n, 3, S, S) float tensor, S = spec.input_size."""
        spec = self.spec
        return preprocess(images, spec.input_size, spec.mean, spec.std, spec.view, spec.background or None)

    def leaf_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated leaf logits (n, n_leaves): raw logits / spec.temperature."""
        return self.model(x) / float(self.spec.temperature)

    def node_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities of every node (n, n_nodes) in ``taxonomy.ids`` order; differentiable."""
        return torch.softmax(self.leaf_logits(x), dim=1) @ self._node_matrix.T

    def ood_scores(self, features: torch.Tensor) -> torch.Tensor:
        """OOD score per crop: distance / calibrated 99th percentile (0 when no statistics)."""
        if not self.ood_stats:
            return torch.zeros(len(features))
        scale = float(self.spec.ood.get("threshold_distance", 1.0)) or 1.0
        return mahalanobis(self.ood_stats, features) / scale

    @torch.inference_mode()
    def predict_arrays(self, images: list[np.ndarray], batch_size: int = 64) -> dict[str, np.ndarray]:
        """Raw outputs for many crops: node_probs (n, n_nodes), ood_score (n,), features (n, D)."""
        probs, scores, feats = [], [], []
        with self.lock:
            for start in range(0, len(images), batch_size):
                x = self.preprocess(images[start : start + batch_size]).contiguous(memory_format=torch.channels_last)
                f, logits = penultimate_and_logits(self.model, x)
                p = torch.softmax(logits / float(self.spec.temperature), dim=1) @ self._node_matrix.T
                probs.append(p.numpy())
                scores.append(self.ood_scores(f).numpy())
                feats.append(f.numpy())
        n_nodes = len(self.taxonomy.ids)
        return {
            "node_probs": np.concatenate(probs) if probs else np.zeros((0, n_nodes), np.float32),
            "ood_score": np.concatenate(scores) if scores else np.zeros(0, np.float32),
            "features": np.concatenate(feats) if feats else np.zeros((0, 0), np.float32),
        }

    def predict(self, images: list[np.ndarray], batch_size: int = 64) -> list[Prediction]:
        """One :class:`Prediction` per crop (crops already framed like the training data)."""
        out = self.predict_arrays(list(images), batch_size)
        return [self._prediction(p, s) for p, s in zip(out["node_probs"], out["ood_score"], strict=True)]

    def _prediction(self, node_probs: np.ndarray, ood_score: float) -> Prediction:
        tax = self.taxonomy
        node_probs = np.clip(node_probs, 0.0, 1.0)
        leaf_rows = [tax.ids.index(leaf) for leaf in tax.leaves]
        leaf = tax.leaves[int(np.argmax(node_probs[leaf_rows]))]
        label = tax.deepest_confident(node_probs, self.spec.threshold)
        limit = float(self.spec.ood.get("flag_above", 1.0))
        return Prediction(
            node_probs=node_probs,
            node_ids=tax.ids,
            leaf=leaf,
            label=label,
            confidence=float(node_probs[tax.ids.index(label)]),
            ood_score=float(ood_score),
            ood=bool(self.ood_stats) and float(ood_score) > limit,
        )


def _to_rgb(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or min(arr.shape[:2]) < 1:
        raise CellkitError(f"expected an RGB crop of shape (H, W, 3), got {arr.shape}; read files with read_image")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr


def square_pad(image: np.ndarray) -> np.ndarray:
    """Pad a non-square crop to a square with its border colour (keeps the cell's aspect)."""
    h, w = image.shape[:2]
    if abs(h - w) <= max(2, 0.02 * max(h, w)):
        return image
    from cellkit.crops import background_colour

    side = max(h, w)
    out = np.empty((side, side, 3), np.uint8)
    out[:] = background_colour(image)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = image
    return out


def centre_view(image: np.ndarray, view: float = 1.0) -> np.ndarray:
    """The centred square that is ``view`` times the side of a square crop (view 1: unchanged)."""
    if view >= 1.0:
        return image
    side = image.shape[0]
    keep = max(1, round(side * view))
    start = (side - keep) // 2
    return image[start : start + keep, start : start + keep]


def resize_square(image: np.ndarray, size: int, view: float = 1.0) -> np.ndarray:
    """Square-pad, keep the centre ``view`` fraction, resize to (size, size) (as in training)."""
    import cv2

    img = centre_view(square_pad(_to_rgb(image)), view)
    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def preprocess(
    images: list[np.ndarray],
    size: int,
    mean: list[float],
    std: list[float],
    view: float = 1.0,
    background: list[float] | None = None,
) -> torch.Tensor:
    """Crops -> normalised float tensor (n, 3, size, size) of each crop's centre ``view`` fraction.

    With ``background`` (RGB), each crop is first white-balanced to that slide background colour.
    """
    if len(images) == 0:
        return torch.zeros((0, 3, size, size))
    batch = np.stack([resize_square(im, size, view) for im in images])
    x = torch.from_numpy(batch).permute(0, 3, 1, 2)
    if not background:
        return normalise_uint8(x, mean, std)
    from cellkit.colour import balance_gains

    gains = torch.from_numpy(np.stack([balance_gains(b, background) for b in batch])).view(-1, 3, 1, 1)
    x = (x.float() / 255.0 * gains).clamp(0, 1)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def normalise_uint8(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """(n, 3, H, W) uint8 -> float normalised with mean/std (given for 0..1 images)."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x.float() / 255.0 - m) / s


# ---- saving / loading ----------------------------------------------------------------------
def save_classifier(
    model: nn.Module,
    spec: ModelSpec,
    folder: str | Path | None = None,
    ood_stats: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``<folder>/<spec.weights>`` (safetensors) and the JSON card ``<spec.name>.json``."""
    from safetensors.torch import save_file

    folder = Path(folder or config.weights_dir())
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    tensors.update({OOD_PREFIX + k: v.detach().contiguous().clone() for k, v in (ood_stats or {}).items()})
    path = folder / spec.weights
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"name": spec.name, "arch": spec.arch})
    tmp.replace(path)
    spec.save(folder)
    return path


def classifier_from_spec(spec: ModelSpec, folder: str | Path | None = None) -> Classifier:
    """Rebuild the network named in the card and load its weights (safetensors only)."""
    from safetensors.torch import load_file

    path = Path(folder or config.weights_dir()) / spec.weights
    if not path.is_file():
        raise CellkitError(f"weights {path} for model {spec.name!r} are missing; {TRAIN_HINT}")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CellkitError(f"weights {path} could not be read ({exc}); {TRAIN_HINT}") from None
    ood = {k[len(OOD_PREFIX) :]: v for k, v in tensors.items() if k.startswith(OOD_PREFIX)}
    state = {k: v for k, v in tensors.items() if not k.startswith(OOD_PREFIX)}
    taxonomy = load_taxonomy(spec.taxonomy)
    model = build_model(spec.arch, len(spec.labels))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CellkitError(f"weights {path} do not fit architecture {spec.arch!r}: {exc}; {TRAIN_HINT}") from None
    return Classifier(model, spec, taxonomy, ood)


def load_classifier(name: str | None = None, folder: str | Path | None = None) -> Classifier:
    """The named classifier from the weights folder, or the default one (``card["default"]``)."""
    try:
        spec = load_spec(name, folder) if name else default_spec("classifier", folder)
    except CellkitError as exc:
        msg = str(exc)
        raise CellkitError(msg if TRAIN_HINT in msg else f"{msg}; {TRAIN_HINT}") from None
    if spec.task != "classifier":
        raise CellkitError(f"model {spec.name!r} is a {spec.task}, not a classifier; {TRAIN_HINT}")
    return classifier_from_spec(spec, folder)


def build_tiny_classifier(taxonomy: Taxonomy | str | None = None, input_size: int = 32, seed: int = 0) -> Classifier:
    """An untrained tiny CNN classifier (fast, deterministic) for tests and demos."""
    tax = taxonomy if isinstance(taxonomy, Taxonomy) else load_taxonomy(taxonomy or "pbc")
    torch.manual_seed(seed)
    model = build_model("cellkit_tiny_cnn", len(tax.leaves))
    spec = ModelSpec(
        name="tiny",
        task="classifier",
        arch="cellkit_tiny_cnn",
        weights="tiny.safetensors",
        input_size=input_size,
        labels=list(tax.leaves),
        taxonomy=tax.name,
        target_layer="conv_head",
        card={"note": "untrained tiny CNN for tests"},
    )
    return Classifier(model, spec, tax)


# ---- batch classification of image items (CLI and app) ----------------------------------------
def result_columns(taxonomy: Taxonomy) -> list[str]:
    """Columns of a results table: path, leaf, label, confidence, ood_score, p_<node>..., error."""
    return ["path", "leaf", "label", "confidence", "ood_score", *(f"p_{n}" for n in taxonomy.ids), "error"]


def classify_items(clf: Classifier, items: Any, batch_size: int = 64, progress: Any = None) -> list[dict[str, Any]]:
    """One row per :class:`cellkit.io.ImageItem` (file, folder member, zip member), in input order.

    Unreadable items get a row whose ``error`` says why (probabilities left empty); the rest are
    classified in batches. ``progress`` is an optional callable ``progress(n_done)``.
    """
    rows: list[dict[str, Any]] = []
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        preds = clf.predict([im for _, im in pending], batch_size=batch_size)
        for (i, _), pred in zip(pending, preds, strict=True):
            rows[i].update(pred.as_dict())
        if progress is not None:
            progress(len(pending))
        pending.clear()

    for item in items:
        rows.append({"path": item.name, "error": item.error or ""})
        if item.error or item.image is None:
            if progress is not None:
                progress(1)
            continue
        pending.append((len(rows) - 1, item.image))
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()
    return rows
