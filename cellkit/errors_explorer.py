"""Where does the model go wrong? Predictions on a labelled folder, confusion per tree level, error picks.

:func:`evaluate_folder` runs a classifier on ``<folder>/<class>/<image>`` (labels from the taxonomy's
dataset rules, e.g. PBC's ``ig/MY_1.jpg`` -> myelocyte) and returns one row per image with the true
node and the leaf probabilities. Everything after that is table work on that frame, so a UI can
cache it once and slice it at any *level*: ``leaves``, a named grouping (``pbc8``) or ``depth N``.
At a level the prediction is the group with the largest summed probability; an image labelled
above the level (``IG_`` files are only ``myeloid_immature``) keeps its coarser label as its row and
counts as correct when the predicted group lies beneath it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellkit import config
from cellkit.errors import CellkitError
from cellkit.taxonomy import Taxonomy


def levels(taxonomy: Taxonomy) -> list[str]:
    """Level names for this tree: ``leaves``, its groupings, then ``depth 1`` .. ``depth max-1``."""
    return ["leaves", *taxonomy.groupings, *(f"depth {d}" for d in range(1, taxonomy.max_depth))]


def level_groups(taxonomy: Taxonomy, level: str) -> tuple[list[str], dict[str, str]]:
    """The groups of a level (display order) and the map node -> group for every node.

    A node above the level (coarser than its groups) maps to itself.
    """
    if level == "leaves":
        groups = list(taxonomy.leaves)
    elif level in taxonomy.groupings:
        groups = list(taxonomy.groupings[level])
    elif level.startswith("depth ") and level[6:].isdigit():
        depth = int(level[6:])
        cut = {taxonomy.ancestor_at(leaf, depth) for leaf in taxonomy.leaves}
        groups = [n for n in taxonomy.ids if n in cut]
    else:
        raise CellkitError(f"unknown level {level!r}; expected one of: {', '.join(levels(taxonomy))}")
    mapping = {}
    for node in taxonomy.ids:
        hit = [g for g in groups if g in taxonomy.path(node)]
        mapping[node] = hit[0] if hit else node
    return groups, mapping


def labelled_files(folder: str | Path, taxonomy: Taxonomy) -> pd.DataFrame:
    """``path`` (absolute) and ``true`` node of every labelled image under ``folder/<class>/``."""
    from cellkit.train.data import index_folder

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CellkitError(f"folder {root} not found; give a folder with one sub-folder per class")
    rel, nodes = index_folder(root, taxonomy)
    return pd.DataFrame({"path": [str(root / r) for r in rel], "true": nodes})


def held_out_files(classifier: Any, folder: str | Path) -> pd.DataFrame | None:
    """The labelled files of ``folder`` in the test part of the classifier's saved split, if it can be found."""
    name = ((classifier.spec.card or {}).get("data") or {}).get("split_file")
    if not name:
        return None
    candidates = [config.weights_dir() / name, config.cache_dir() / "train" / classifier.spec.name / name]
    split = next((p for p in candidates if p.is_file()), None)
    if split is None:
        return None
    try:
        test = set(json.loads(split.read_text(encoding="utf-8")).get("test", []))
    except (OSError, json.JSONDecodeError):
        return None
    files = labelled_files(folder, classifier.taxonomy)
    rel = [Path(p).relative_to(Path(folder).expanduser()).as_posix() for p in files["path"]]
    files = files[[r in test for r in rel]].reset_index(drop=True)
    return files if len(files) else None


def sample(files: pd.DataFrame, limit: int | None, seed: int = 0) -> pd.DataFrame:
    """At most ``limit`` rows, spread over the classes (round-robin over a seeded shuffle)."""
    if not limit or len(files) <= limit:
        return files.reset_index(drop=True)
    shuffled = files.sample(frac=1.0, random_state=seed)
    shuffled["_k"] = shuffled.groupby("true").cumcount()
    return shuffled.sort_values(["_k"], kind="stable").head(limit).drop(columns="_k").reset_index(drop=True)


def evaluate_files(
    classifier: Any,
    files: pd.DataFrame,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Predict every file of ``files`` (path, true): adds leaf, label, confidence, ood_score, p_<leaf>.

    Unreadable images get an ``error`` and no probabilities; they are left out of every matrix.
    """
    from cellkit.io import read_image

    tax = classifier.taxonomy
    leaf_rows = [tax.ids.index(lf) for lf in tax.leaves]
    rows: list[dict[str, Any]] = []
    paths = list(files["path"])
    for start in range(0, len(paths), batch_size):
        images, kept = [], []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                images.append(read_image(paths[i]))
                kept.append(i)
            except CellkitError as exc:
                rows.append({"index": i, "error": str(exc)})
        if images:
            out = classifier.predict_arrays(images, batch_size=batch_size)
            for i, p, s in zip(kept, out["node_probs"], out["ood_score"], strict=True):
                label = tax.deepest_confident(p, classifier.spec.threshold)
                row = {"index": i, "leaf": tax.leaves[int(np.argmax(p[leaf_rows]))], "label": label}
                row.update(confidence=float(p[tax.ids.index(label)]), ood_score=float(s))
                row.update({f"p_{lf}": float(p[r]) for lf, r in zip(tax.leaves, leaf_rows, strict=True)})
                rows.append(row)
        if progress:
            progress(min(start + batch_size, len(paths)), len(paths))
    pred = (
        pd.DataFrame(rows).set_index("index").sort_index() if rows else pd.DataFrame(index=pd.Index([], name="index"))
    )
    out = files.reset_index(drop=True).join(pred)
    if "error" not in out:
        out["error"] = None
    return out


def evaluate_folder(
    classifier: Any, folder: str | Path, limit: int | None = None, seed: int = 0, test_split: bool = True
) -> pd.DataFrame:
    """Predictions on a labelled folder (its test split when the classifier's card names one)."""
    files = held_out_files(classifier, folder) if test_split else None
    if files is None:
        files = labelled_files(folder, classifier.taxonomy)
    return evaluate_files(classifier, sample(files, limit, seed))


def at_level(df: pd.DataFrame, taxonomy: Taxonomy, level: str) -> pd.DataFrame:
    """Adds ``true_group``, ``pred_group`` and ``correct`` for one level (rows with errors dropped)."""
    groups, mapping = level_groups(taxonomy, level)
    leaf_cols = [f"p_{lf}" for lf in taxonomy.leaves]
    ok = df[df[leaf_cols[0]].notna()].copy() if leaf_cols[0] in df else df.iloc[0:0].copy()
    if ok.empty:
        return ok.assign(true_group=[], pred_group=[], correct=[])
    leaf_probs = ok[leaf_cols].to_numpy(np.float64)
    member = np.array([[mapping[lf] == g for g in groups] for lf in taxonomy.leaves], np.float64)  # (L, G)
    ok["pred_group"] = [groups[j] for j in (leaf_probs @ member).argmax(1)]
    ok["true_group"] = [mapping[t] for t in ok["true"]]
    ok["correct"] = [t in taxonomy.path(p) for t, p in zip(ok["true_group"], ok["pred_group"], strict=True)]
    return ok


def confusion(df: pd.DataFrame, taxonomy: Taxonomy, level: str) -> pd.DataFrame:
    """Counts, rows = true group (coarser labels included), columns = predicted group, tree order."""
    groups, _ = level_groups(taxonomy, level)
    lv = at_level(df, taxonomy, level)
    rows = [n for n in taxonomy.ids if n in set(lv["true_group"])]
    table = pd.crosstab(lv["true_group"], lv["pred_group"]) if len(lv) else pd.DataFrame()
    return table.reindex(index=rows, columns=groups, fill_value=0).astype(int)


def accuracy(df: pd.DataFrame, taxonomy: Taxonomy, level: str) -> float:
    """Share of readable images whose predicted group is at or under their true label, at ``level``."""
    lv = at_level(df, taxonomy, level)
    return float(lv["correct"].mean()) if len(lv) else float("nan")


def select_errors(
    df: pd.DataFrame, taxonomy: Taxonomy, level: str, true: str | None = None, pred: str | None = None
) -> pd.DataFrame:
    """The misclassified rows at ``level`` (optionally one true / predicted group), most confident mistakes first."""
    lv = at_level(df, taxonomy, level)
    lv = lv[~lv["correct"]]
    if true is not None:
        lv = lv[lv["true_group"] == true]
    if pred is not None:
        lv = lv[lv["pred_group"] == pred]
    return lv.sort_values("confidence", ascending=False)
