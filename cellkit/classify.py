"""Hierarchical cell classifier: crops -> leaf logits -> probabilities at every node of the tree.

The network predicts the taxonomy's *leaves*; inner-node probabilities are sums of leaf
probabilities (``Taxonomy.node_matrix``), so the tree is always consistent. Each prediction carries
the argmax leaf and the deepest node whose probability passes ``spec.threshold``, plus an
out-of-distribution score and the review verdict (:mod:`cellkit.unknown`). The networks are in
:mod:`cellkit.nets`, tables of predictions in :mod:`cellkit.results_table`.

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
from cellkit.fuse import FoldedCopy
from cellkit.models import ModelSpec, check_model_ref, default_spec, load_spec, sha256_file
from cellkit.nets import build_model, in_chunks
from cellkit.preprocess import Preprocess
from cellkit.taxonomy import DEFAULT_TAXONOMY, Taxonomy, load_taxonomy
from cellkit.types import Prediction
from cellkit.unknown import METHODS, UNKNOWN, OodScorer, mahalanobis, sharpness

OOD_PREFIX = "ood."
TRAIN_HINT = "train one with `cellkit train classifier`"
MIN_CROP_SIDE = 8  # crops with a shorter side go to review: a 1 x 1 px upload got a full set of probabilities


def _fix_hint(spec: ModelSpec) -> str:
    """What to do about a model whose weights cannot be used: adapt an adapted model again (or delete its card),
    train any other one."""
    if not spec.adapted:
        return TRAIN_HINT
    return f"adapt it again (`cellkit adapt ... --name {spec.name} --replace`) or delete its card {spec.card_path}"


def _label_mismatch(spec: ModelSpec, taxonomy: Taxonomy) -> str:
    """Why a model's outputs do not fit its taxonomy's leaves, in the taxonomy's display names, and what to do."""

    def names(ids: list[str]) -> str:
        return ", ".join(taxonomy.display(i) if i in taxonomy else repr(i) for i in ids)

    missing = [leaf for leaf in taxonomy.leaves if leaf not in spec.labels]
    extra = [label for label in spec.labels if label not in taxonomy.leaves]
    why = [f"it has no output for {names(missing)}"] if missing else []
    why += [f"it outputs {names(extra)}, not among its cell types"] if extra else []
    hint = _fix_hint(spec) if spec.adapted else f"retrain with `cellkit train classifier --taxonomy {taxonomy.name}`"
    return (
        f"model {spec.name!r} does not fit the cell types of taxonomy {taxonomy.name!r} "
        f"({'; '.join(why) or 'its outputs are in another order'}); {hint}"
    )


# ---- the classifier ------------------------------------------------------------------------
class Classifier:
    """A model plus its spec and taxonomy; turns RGB crops into :class:`Prediction` objects."""

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        taxonomy: Taxonomy,
        ood_stats: dict[str, torch.Tensor] | None = None,
        scorer: OodScorer | None = None,
    ):
        if list(spec.labels) != list(taxonomy.leaves):
            raise CellkitError(_label_mismatch(spec, taxonomy))
        self.model = model
        self.spec = spec
        self.taxonomy = taxonomy
        self.ood_stats = ood_stats or {}
        self.scorer = scorer
        self.lock = threading.RLock()
        self._node_matrix = torch.from_numpy(taxonomy.node_matrix)  # (n_nodes, n_leaves)

    @property
    def model(self) -> nn.Module:
        """The network as trained (training, adaptation and explanations use it; inference a folded copy)."""
        return self._model

    @model.setter
    def model(self, model: nn.Module) -> None:
        # channels-last roughly doubles CPU throughput of depthwise/1x1 convs (measured: bench/bench_classify.py)
        self._model = model.eval().to(memory_format=torch.channels_last)
        self._folded = FoldedCopy(self._model)  # BatchNorm folded into the convs; rebuilt if the model changes

    @property
    def prep(self) -> Preprocess:
        """The preprocessing built from the spec (rebuilt each time, so it always follows the spec)."""
        return Preprocess.from_spec(self.spec)

    @property
    def node_ids(self) -> tuple[str, ...]:
        return self.taxonomy.ids

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 crops (any size) -> normalised (n, 3, S, S) float tensor, as built from the spec."""
        return self.prep(images)

    def leaf_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated leaf logits (n, n_leaves): raw logits / spec.temperature."""
        return self.model(x) / float(self.spec.temperature)

    def node_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities of every node (n, n_nodes) in ``taxonomy.ids`` order; differentiable."""
        return torch.softmax(self.leaf_logits(x), dim=1) @ self._node_matrix.T

    @property
    def has_ood(self) -> bool:
        return self.scorer is not None or bool(self.ood_stats)

    def ood_scores(self, features: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """OOD score per crop, divided by its calibrated threshold: > 1 flags (0 when the model has none)."""
        if self.scorer is not None:
            return self.scorer.score(features, logits) / float(self.spec.ood.get("threshold", 1.0) or 1.0)
        if not self.ood_stats:
            return torch.zeros(len(features))
        scale = float(self.spec.ood.get("threshold_distance", 1.0)) or 1.0
        return mahalanobis(self.ood_stats, features) / scale

    @torch.inference_mode()
    def predict_arrays(self, images: list[np.ndarray], batch_size: int = 64) -> dict[str, Any]:
        """Raw outputs: node_probs (n, n_nodes), ood_score (n,), features (n, D), logits (n, L), locations (n,),
        sharpness (n,) of the network's input, cell_fraction (n,): the found cell's side / the crop's (NaN if none)."""
        probs, scores, feats, logit_list, locations, sharp, fractions = [], [], [], [], [], [], []
        with self.lock:
            for start in range(0, len(images), batch_size):
                x, locs = self.prep.batch(images[start : start + batch_size])
                net = self._folded.get()
                f, logits = in_chunks(net, x.contiguous(memory_format=torch.channels_last))
                logits = logits / float(self.spec.temperature)
                probs.append((torch.softmax(logits, dim=1) @ self._node_matrix.T).numpy())
                scores.append(self.ood_scores(f, logits).numpy())
                feats.append(f.numpy())
                logit_list.append(logits.numpy())
                locations.extend(locs)
                sharp.append(sharpness(x).numpy())
                chunk = images[start : start + batch_size]
                fractions.extend(_cell_fraction(loc, im.shape) for loc, im in zip(locs, chunk, strict=True))
        n_nodes = len(self.taxonomy.ids)
        return {
            "node_probs": np.concatenate(probs) if probs else np.zeros((0, n_nodes), np.float32),
            "ood_score": np.concatenate(scores) if scores else np.zeros(0, np.float32),
            "features": np.concatenate(feats) if feats else np.zeros((0, 0), np.float32),
            "logits": np.concatenate(logit_list)
            if logit_list
            else np.zeros((0, len(self.taxonomy.leaves)), np.float32),
            "locations": locations,
            "sharpness": np.concatenate(sharp) if sharp else np.zeros(0, np.float32),
            "cell_fraction": np.asarray(fractions, np.float32),
        }

    def predict(
        self, images: list[np.ndarray], batch_size: int = 64, threshold: float | None = None
    ) -> list[Prediction]:
        """One :class:`Prediction` per crop; crops are framed the model's way first (``spec.framing``).

        ``threshold`` overrides ``spec.threshold`` for the deepest confident node.
        """
        images = list(images)
        out = self.predict_arrays(images, batch_size)
        return [
            self.verdict(p, s, threshold, location=loc, sharpness=f, cell_fraction=c, crop_side=min(im.shape[:2]))
            for im, p, s, loc, f, c in zip(
                images,
                out["node_probs"],
                out["ood_score"],
                out["locations"],
                out["sharpness"],
                out["cell_fraction"],
                strict=True,
            )
        ]

    def verdict(
        self,
        node_probs: np.ndarray,
        ood_score: float,
        threshold: float | None = None,
        location: Any = None,
        sharpness: float | None = None,
        cell_fraction: float | None = None,
        crop_side: int | None = None,
    ) -> Prediction:
        """The prediction for one crop's node probabilities: label, confidence and the review verdict.

        ``label`` is the deepest node whose probability reaches ``threshold`` (default ``spec.threshold``),
        or :data:`~cellkit.unknown.UNKNOWN` when the crop is unlike the training cells, when no top-level
        group of the taxonomy reaches ``spec.ood["min_group_prob"]``, when no cell was found in it, or when
        its ``sharpness`` is below ``spec.ood["min_sharpness"]`` (out of focus), or when the predicted leaf's
        object fills more of the crop than that leaf ever did in training (``spec.ood["max_cell_fraction"]``, e.g.
        a white cell framed like a white-cell crop and called platelet), or when the crop's shorter side
        ``crop_side`` is under :data:`MIN_CROP_SIDE` pixels (a 1 x 1 px upload was classified).
        """
        tax = self.taxonomy
        node_probs = np.clip(node_probs, 0.0, 1.0)
        leaf_rows = [tax.ids.index(leaf) for leaf in tax.leaves]
        leaf = tax.leaves[int(np.argmax(node_probs[leaf_rows]))]
        label = tax.deepest_confident(node_probs, self.spec.threshold if threshold is None else threshold)
        confidence = float(node_probs[tax.ids.index(label)])
        ood = self.has_ood and float(ood_score) > float(self.spec.ood.get("flag_above", 1.0))
        reasons = []
        if crop_side is not None and crop_side < MIN_CROP_SIDE:
            reasons.append(f"the crop is {crop_side} px a side: too small to show a cell (at least {MIN_CROP_SIDE} px)")
        if location is not None and not location.found:
            reasons.append("no cell found in the crop")
        min_sharp = float(self.spec.ood.get("min_sharpness", 0.0))
        if sharpness is not None and float(sharpness) < min_sharp:
            reasons.append(f"out of focus or too blurred (sharpness {float(sharpness):.3f} < {min_sharp:.3f})")
        max_fraction = (self.spec.ood.get("max_cell_fraction") or {}).get(leaf)
        if max_fraction is not None and cell_fraction is not None and float(cell_fraction) > float(max_fraction):
            reasons.append(
                f"called {tax.display(leaf).lower()}, but the object fills {float(cell_fraction):.0%} of the crop's "
                f"side, like a white cell (at most {float(max_fraction):.0%} in training)"
            )
        if ood:
            reasons.append(f"unlike the cells the model was trained on (score {float(ood_score):.2f} > 1)")
        min_group = float(self.spec.ood.get("min_group_prob", 0.0))
        group_p = max(float(node_probs[tax.ids.index(g)]) for g in tax.group_ids)
        if group_p < min_group:
            reasons.append(f"unsure: no class reaches {min_group:.2f} (best {group_p:.2f})")
        return Prediction(
            node_probs=node_probs,
            node_ids=tax.ids,
            leaf=leaf,
            label=UNKNOWN if reasons else label,
            confidence=confidence,
            ood_score=float(ood_score),
            ood=ood,
            review="; ".join(reasons),
            note=location.note if location is not None else "",
        )


def _cell_fraction(location: Any, shape: tuple[int, ...]) -> float:
    """The found cell's box side over the crop's longer side; NaN when no cell was found."""
    if location is None or not location.found:
        return float("nan")
    x1, y1, x2, y2 = location.xyxy
    return float(max(x2 - x1, y2 - y1) / max(shape[:2]))


# ---- saving / loading ----------------------------------------------------------------------
def save_classifier(
    model: nn.Module,
    spec: ModelSpec,
    folder: str | Path | None = None,
    ood_stats: dict[str, torch.Tensor] | None = None,
    half: bool = False,
) -> Path:
    """Write ``<folder>/<spec.weights>`` (safetensors) and the JSON card ``<spec.name>.json``.

    ``half``: store the network's floating-point weights as float16 (half the file; they load back into
    float32 layers, so inference is unchanged up to rounding).
    """
    from safetensors.torch import save

    from cellkit.writes import atomic_write_bytes

    folder = Path(folder or config.weights_dir())
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    tensors.update({OOD_PREFIX + k: v.detach().contiguous().clone() for k, v in (ood_stats or {}).items()})
    path = folder / spec.weights
    atomic_write_bytes(path, save(tensors, metadata={"name": spec.name, "arch": spec.arch}))
    spec.save(folder)
    return path


def classifier_from_spec(spec: ModelSpec, folder: str | Path | None = None) -> Classifier:
    """Rebuild the network named in the card and load its weights (safetensors only)."""
    from safetensors.torch import load_file

    path = Path(folder) / spec.weights if folder else spec.weights_path
    if not path.is_file():
        whose = f"the adapted model {spec.name!r}" if spec.adapted else f"model {spec.name!r}"
        raise CellkitError(f"the weights {path} of {whose} are missing; {_fix_hint(spec)}")
    if spec.card.get("sha256") and spec.card["sha256"] != sha256_file(path):
        raise CellkitError(
            f"weights {path.name} do not match the sha256 in {spec.name}.json: the file was changed or replaced"
        )
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CellkitError(f"weights {path} could not be read ({exc}); {_fix_hint(spec)}") from None
    ood = {k[len(OOD_PREFIX) :]: v for k, v in tensors.items() if k.startswith(OOD_PREFIX)}
    state = {k: v for k, v in tensors.items() if not k.startswith(OOD_PREFIX)}
    taxonomy = load_taxonomy(spec.taxonomy)
    model = build_model(spec.arch, len(spec.labels))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        raise CellkitError(
            f"weights {path.name} do not fit architecture {spec.arch!r} with {len(spec.labels)} labels "
            f"({lines[0].rstrip(':.')}; {len(lines) - 1} more line(s)); {_fix_hint(spec)}"
        ) from None
    if spec.ood.get("method") in METHODS:
        try:
            scorer = OodScorer(spec.ood["method"], ood, spec.ood.get("params", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise CellkitError(
                f"weights {path.name} lack the {spec.ood['method']} review statistics its card names ({exc})"
            ) from None
        return Classifier(model, spec, taxonomy, scorer=scorer)
    return Classifier(model, spec, taxonomy, ood)  # models before 0.2: Mahalanobis statistics


def load_classifier(name: str | None = None, folder: str | Path | None = None) -> Classifier:
    """The named classifier from the weights folder, or the default one (``card["default"]``)."""
    if name is not None:  # a bad name is said as it is, without the training hint
        check_model_ref(name)
    try:
        spec = load_spec(name, folder) if name is not None else default_spec("classifier", folder)
    except CellkitError as exc:
        msg = str(exc)
        raise CellkitError(msg if "train one with" in msg else f"{msg}; {TRAIN_HINT}") from None
    if spec.task != "classifier":
        raise CellkitError(f"model {spec.name!r} is a {spec.task}, not a classifier; {TRAIN_HINT}")
    return classifier_from_spec(spec, folder)


def build_tiny_classifier(taxonomy: Taxonomy | str | None = None, input_size: int = 32, seed: int = 0) -> Classifier:
    """An untrained tiny CNN classifier (fast, deterministic) for tests and demos."""
    tax = taxonomy if isinstance(taxonomy, Taxonomy) else load_taxonomy(taxonomy or DEFAULT_TAXONOMY)
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
