"""Classifier metrics through the tree: per-class P/R/F1 at the leaves, at a named grouping (PBC's 8
classes) and per tree level; confusion matrices; expected calibration error; temperature fitting.

Images labelled only at an inner node (PBC's ``IG_``, ``NEUTROPHIL_``) count wherever their label
decides the answer: at levels and groupings at or above their node, never at the leaves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cellkit.errors import CellkitError
from cellkit.taxonomy import Taxonomy


def per_class_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict[str, Any]:
    """Precision, recall, F1, support per label; macro-F1 and accuracy; confusion matrix (rows = truth)."""
    index = {lab: i for i, lab in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        cm[index[t], index[p]] += 1
    tp = np.diag(cm).astype(float)
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    present = support > 0
    return {
        "n": int(cm.sum()),
        "accuracy": float(tp.sum() / max(1, cm.sum())),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "per_class": {
            lab: {
                "precision": round(float(precision[i]), 4),
                "recall": round(float(recall[i]), 4),
                "f1": round(float(f1[i]), 4),
                "support": int(support[i]),
            }
            for i, lab in enumerate(labels)
        },
        "confusion": {"labels": list(labels), "matrix": cm.tolist()},
    }


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by bin size."""
    confidence = np.asarray(confidence, float)
    correct = np.asarray(correct, float)
    if len(confidence) == 0:
        return 0.0
    bins = np.clip((confidence * n_bins).astype(int), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - confidence[sel].mean())
    return float(ece)


def _cut_report(
    true_nodes: list[str], node_probs: np.ndarray, taxonomy: Taxonomy, classes: list[str]
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Metrics when the tree is cut at ``classes`` (nodes partitioning the leaves)."""
    rows = [taxonomy.ids.index(c) for c in classes]
    class_probs = node_probs[:, rows]
    keep, truth = [], []
    for i, node in enumerate(true_nodes):
        hit = [c for c in classes if c in taxonomy.path(node)]  # the class at or above the true node
        if hit:
            keep.append(i)
            truth.append(hit[0])
    keep_arr = np.array(keep, dtype=np.int64)
    if len(keep_arr) == 0:  # no image is labelled this deep (e.g. plain "neutrophil" folders at the leaf cut)
        return {**per_class_metrics([], [], classes), "ece": None}, np.zeros(0), np.zeros(0)
    pred = [classes[j] for j in class_probs[keep_arr].argmax(1)]
    metrics = per_class_metrics(truth, pred, classes)
    conf = class_probs[keep_arr].max(1)
    correct = np.array([t == p for t, p in zip(truth, pred, strict=True)])
    metrics["ece"] = round(expected_calibration_error(conf, correct), 4)
    return metrics, conf, correct


def classification_report(
    true_nodes: list[str], leaf_probs: np.ndarray, taxonomy: Taxonomy, grouping: str = "pbc8", threshold: float = 0.5
) -> dict[str, Any]:
    """All classifier metrics for true node ids and predicted leaf probabilities (n, n_leaves)."""
    leaf_probs = np.asarray(leaf_probs, dtype=np.float64)
    if len(true_nodes) != len(leaf_probs):
        raise CellkitError(f"expected one probability row per label, got {len(leaf_probs)} rows for {len(true_nodes)}")
    node_probs = leaf_probs @ taxonomy.node_matrix.T.astype(np.float64)
    report: dict[str, Any] = {"n": len(true_nodes)}
    leaf, _, _ = _cut_report(true_nodes, node_probs, taxonomy, list(taxonomy.leaves))
    report["leaf"] = leaf
    cal = {"ece_leaf": leaf["ece"]}
    if grouping in taxonomy.groupings:
        group, _, _ = _cut_report(true_nodes, node_probs, taxonomy, list(taxonomy.groupings[grouping]))
        report[grouping] = group
        cal[f"ece_{grouping}"] = group["ece"]
    levels = {}
    for depth in range(1, taxonomy.max_depth + 1):
        classes = sorted({taxonomy.ancestor_at(lf, depth) for lf in taxonomy.leaves}, key=taxonomy.ids.index)
        m, _, _ = _cut_report(true_nodes, node_probs, taxonomy, classes)
        levels[str(depth)] = {k: m[k] for k in ("n", "accuracy", "macro_f1", "ece", "per_class")}
    report["levels"] = levels
    # log-loss of the true node (works for inner-node labels too)
    rows = [taxonomy.ids.index(n) for n in true_nodes]
    p_true = node_probs[np.arange(len(rows)), rows] if rows else np.zeros(0)
    cal["nll"] = round(float(-np.log(np.clip(p_true, 1e-12, 1)).mean()) if rows else 0.0, 4)
    report["calibration"] = cal
    # the deepest confident node: how often it is on the true path, and how deep it goes
    labels = [taxonomy.deepest_confident(p, threshold) for p in node_probs]
    on_path = [lab in taxonomy.path(t) or t in taxonomy.path(lab) for lab, t in zip(labels, true_nodes, strict=True)]
    report["deepest_confident"] = {
        "threshold": threshold,
        "consistent_with_truth": round(float(np.mean(on_path)) if on_path else 0.0, 4),
        "stops_above_leaf": round(float(np.mean([not taxonomy.is_leaf(lab) for lab in labels])) if labels else 0.0, 4),
    }
    for key in ("leaf", grouping):
        if key in report:
            for k in ("accuracy", "macro_f1", "macro_precision", "macro_recall"):
                report[key][k] = round(report[key][k], 4)
    return report


def fit_temperature(logits: np.ndarray, target_masks: np.ndarray) -> float:
    """Temperature T minimising the NLL of the target nodes (sum of their leaves) of ``logits / T``."""
    logits = np.asarray(logits, np.float64)
    masks = np.asarray(target_masks, bool)
    if len(logits) == 0:
        return 1.0

    def nll(t: float) -> float:
        z = logits / t
        z = z - z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        p_node = np.where(masks, np.exp(logp), 0.0).sum(1)
        return float(-np.log(np.clip(p_node, 1e-12, 1)).mean())

    grid = np.exp(np.linspace(np.log(0.2), np.log(10), 121))
    best = grid[int(np.argmin([nll(t) for t in grid]))]
    fine = best * np.exp(np.linspace(-0.04, 0.04, 41))
    return float(fine[int(np.argmin([nll(t) for t in fine]))])


def evaluate_classifier(
    clf: Any, data: str | Path, split_file: str | Path | None = None, part: str = "test", progress: bool = True
) -> dict[str, Any]:
    """Metrics of a loaded Classifier on a labelled folder (optionally only one part of a saved split)."""
    from cellkit.io import read_image
    from cellkit.train.data import index_folder, load_split

    # the files themselves, through the classifier's own preprocessing: exactly what inference sees
    unlabelled: list[str] = []
    paths, nodes = index_folder(data, clf.taxonomy, unlabelled=unlabelled)
    idx = np.arange(len(paths))
    if split_file:
        idx = load_split(split_file, paths)[part]
        if len(idx) == 0:
            raise CellkitError(
                f"no image of split part {part!r} of {split_file} found under {data}; to score every image of your "
                "own labelled folder, add --all"
            )
    chunks, read, unreadable = [], [], []
    for start in range(0, len(idx), 256):
        images = []
        for i in idx[start : start + 256]:
            try:
                images.append(read_image(Path(data) / paths[i]))
                read.append(i)
            except CellkitError as exc:  # one corrupt file is skipped and named, not the end of the evaluation
                unreadable.append(str(exc))
        if images:
            chunks.append(clf.predict_arrays(images, batch_size=128))
    if not chunks:
        raise CellkitError(f"none of the {len(idx)} images under {data} could be read; first: {unreadable[0]}")
    out = {k: np.concatenate([c[k] for c in chunks]) for k in ("node_probs", "ood_score")}
    leaf_rows = [clf.taxonomy.ids.index(lf) for lf in clf.taxonomy.leaves]
    leaf_probs = out["node_probs"][:, leaf_rows]
    report = classification_report([nodes[i] for i in read], leaf_probs, clf.taxonomy)
    report["unreadable"] = {"count": len(unreadable), "first": unreadable[:20]}
    report["unlabelled"] = {"count": len(unlabelled), "first": unlabelled[:20]}  # in no folder that names a node
    report["ood_score"] = {
        "median": round(float(np.median(out["ood_score"])), 4),
        "flagged_fraction": round(float(np.mean(out["ood_score"] > clf.spec.ood.get("flag_above", 1.0))), 4),
    }
    return report


# ---- model comparison (app_pages/models.py shows weights/classifier_comparison.json) ----------------
COMPARISON_FILE = "classifier_comparison.json"


def comparison_row(spec: Any, speed: dict[str, Any] | None = None, shipped: bool = False) -> dict[str, Any]:
    """One row of the comparison table from a classifier's model card: test-split metrics, and the robustness
    bench's PBC-8 accuracy under shifts (mean and worst over its shifted conditions) when the card has it."""
    card = spec.card
    test = card.get("metrics_test", {})
    leaf, pbc8 = test.get("leaf", {}), test.get("pbc8", {})
    cfg = card.get("training", {}).get("config", {})
    speed = speed or card.get("speed", {})
    shifted = [
        c["pbc8_accuracy"]
        for name, c in card.get("robustness", {}).get("conditions", {}).items()
        if name != "clean" and c.get("pbc8_accuracy") is not None
    ]
    init = "ImageNet" if cfg.get("pretrained") else "scratch"
    other = card.get("other_labs_labelled", {})
    other_acc = other.get("rows", {}).get("all three", {}).get("accuracy")
    return {  # the order is the table's: what tells models apart first
        "name": spec.name,
        "model": card.get("display_name") or spec.name,
        "pbc8_f1": pbc8.get("macro_f1"),
        "leaf_f1": leaf.get("macro_f1"),
        "shift_mean_acc": round(float(np.mean(shifted)), 3) if shifted else None,
        "shift_worst_acc": round(float(np.min(shifted)), 3) if shifted else None,
        # bench/other_labs_labelled.py: 5-class accuracy on 143 white cells of three other labs, labelled by us;
        # "seen" when the model trained on other cells of those labs (then it is not a zero-shot figure)
        "other_labs_acc": other_acc,
        "other_labs_seen": (bool(other.get("trained_on_these_labs")) if other_acc is not None else None),
        "ece": test.get("calibration", {}).get("ece_leaf"),
        "ms_per_crop": speed.get("single_crop_ms_median"),
        "crops_per_s": speed.get("batched_crops_per_s"),
        "arch": spec.arch,
        "init": f"{init}, then {cfg['init_from']}" if cfg.get("init_from") else init,
        "input_px": spec.input_size,
        "params_M": round(card.get("params", 0) / 1e6, 2),
        "train_images_seen": cfg.get("epochs", 0) * (cfg.get("samples_per_epoch") or 0) or None,
        "train_min": card.get("training", {}).get("train_minutes"),
        "pbc8_precision": pbc8.get("macro_precision"),
        "pbc8_recall": pbc8.get("macro_recall"),
        "leaf_precision": leaf.get("macro_precision"),
        "leaf_recall": leaf.get("macro_recall"),
        "shipped": shipped,
    }


def classifier_comparison(specs: list[Any], folder: str | Path | None = None) -> dict[str, Any] | None:
    """White-cell classifiers side by side: one row per installed model (from its card, so the default model is
    always there), then the rows of ``weights/classifier_comparison.json`` for models measured but not shipped.
    None when there is nothing to compare."""
    rows = [comparison_row(spec, shipped=True) for spec in specs if spec.card.get("metrics_test")]
    saved = load_comparison(folder) or {}
    have = {r["name"] for r in rows}
    for row in saved.get("rows", []):
        name = row.get("name") or row.get("model")
        if name not in have:
            rows.append({**row, "name": name, "model": row.get("display_name") or name, "shipped": False})
    if not rows:
        return None
    shown = {r["name"]: r["model"] for r in rows}  # installed or not, a model is named by its display name
    for row in rows:  # "ImageNet, then classifier_lite0" -> the starting model's display name
        start = str(row.get("init") or "").rpartition(", then ")[2]
        if start in shown:
            row["init"] = row["init"].replace(start, shown[start])
    return {"rows": [{k: v for k, v in r.items() if k != "display_name"} for r in rows], "note": saved.get("note", "")}


RBC_COMPARISON_FILE = "rbc_comparison.json"  # rows of red-cell models measured but not all shipped


def red_cell_comparison(specs: list[Any], folder: str | Path | None = None) -> list[dict[str, Any]]:
    """Red-cell models side by side: one row per installed model (from its card: held-out Chula figures on the
    labelled points and end to end from ``bench/rbc_morphology.py --card``, size, speed), then the rows of
    ``weights/rbc_comparison.json`` for models measured but not shipped."""
    import json

    from cellkit import config

    rows = _red_cell_rows(specs)
    path = Path(folder or config.weights_dir()) / RBC_COMPARISON_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8")).get("rows", []) if path.is_file() else []
    except (OSError, ValueError):
        saved = []
    have = {r["name"] for r in rows}
    return rows + [{**r, "shipped": False} for r in saved if r.get("name") not in have]


def _red_cell_rows(specs: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for spec in specs:
        card = spec.card
        bench = card.get("chula_bench", {})
        points, e2e = bench.get("on_points", {}), bench.get("end_to_end", {})
        cfg = card.get("training", {}).get("config", {})
        rows.append(
            {
                "name": spec.name,  # the order is the table's: what tells models apart first
                "model": card.get("display_name") or spec.name,
                "macro_F1_end_to_end": e2e.get("macro_f1_12_forms"),
                "accuracy_end_to_end": e2e.get("accuracy_12_forms"),
                "macro_F1_points": points.get("macro_f1_12_forms"),
                "accuracy_points": points.get("accuracy_12_forms"),
                "cells_missed": e2e.get("missed"),
                "ms_per_crop": card.get("speed", {}).get("single_crop_ms_median"),
                "arch": spec.arch,
                "init": "ImageNet" if cfg.get("pretrained") else "scratch",
                "input_px": spec.input_size,
                "params_M": round(card.get("params", 0) / 1e6, 2),
                "weights_MB": card.get("weights_mb"),
                "shipped": True,
            }
        )
    return rows


def load_comparison(folder: str | Path | None = None) -> dict[str, Any] | None:
    """The saved comparison table, or None when none was made yet."""
    import json

    from cellkit import config

    path = Path(folder or config.weights_dir()) / COMPARISON_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
