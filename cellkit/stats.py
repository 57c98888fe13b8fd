"""Dataset statistics, computed from a dataset's index (:mod:`cellkit.dataset_index`).

Counts per class, tree level, split and source; sizes; colour per class and source; exact and near
duplicates across splits; per-level balancing; boxes per image and box sizes; a mosaic. Plain functions
returning DataFrames / dicts; figures are in :mod:`cellkit.plots`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from cellkit.dataset_index import COLOUR_COLUMNS, DatasetIndex, Progress, index_dataset
from cellkit.errors import CellkitError
from cellkit.taxonomy import Taxonomy

DEFAULT_HAMMING = 4  # phash bits (of 64) at or below which two images count as near duplicates
DEFAULT_MIN_COUNT = 100  # balancing never cuts a class below this many images


def _ok(images: pd.DataFrame) -> pd.DataFrame:
    return images[images["error"].isna()]


def class_counts(images: pd.DataFrame) -> pd.DataFrame:
    """Images per folder class and taxonomy node (readable images only)."""
    df = _ok(images)
    if df["class"].isna().all():
        return pd.DataFrame(columns=["class", "node", "count"])
    out = df.fillna({"node": "(not in taxonomy)"}).groupby(["class", "node"]).size().rename("count").reset_index()
    return out.sort_values(["class", "count"], ascending=[True, False], ignore_index=True)


def level_counts(images: pd.DataFrame, taxonomy: Taxonomy) -> pd.DataFrame:
    """Images under each taxonomy node, with its level (1 = lineage); images count at every ancestor."""
    nodes = _ok(images)["node"].dropna().value_counts()
    totals: dict[str, int] = {}
    own: dict[str, int] = {}
    for node, n in nodes.items():
        if node not in taxonomy:
            continue
        own[node] = own.get(node, 0) + int(n)
        for anc in taxonomy.path(node):
            totals[anc] = totals.get(anc, 0) + int(n)
    rows = [
        {
            "level": taxonomy.depth(nid),
            "node": nid,
            "name": taxonomy.display(nid),
            "parent": taxonomy.parent(nid) or "",
            "count": totals[nid],
            "labelled_here": own.get(nid, 0),
        }
        for nid in taxonomy.ids
        if nid in totals
    ]
    return pd.DataFrame(rows, columns=["level", "node", "name", "parent", "count", "labelled_here"])


def crosstab(images: pd.DataFrame, rows: str, cols: str) -> pd.DataFrame:
    """Counts of ``rows`` x ``cols`` (e.g. class x split, source x split), readable images only."""
    df = _ok(images).fillna({rows: "(none)", cols: "(none)"})
    df = df.replace({rows: {"": "(none)"}, cols: {"": "(none)"}})
    return pd.crosstab(df[rows], df[cols])


def size_counts(images: pd.DataFrame) -> pd.DataFrame:
    """Image sizes (width x height) with counts, most common first."""
    df = _ok(images).dropna(subset=["width", "height"])
    out = df.groupby(["width", "height"]).size().rename("count").reset_index()
    return out.sort_values("count", ascending=False, ignore_index=True)


COLOUR_WORDS = {  # what each colour statistic is called on screen
    "mean_r": "Red", "mean_g": "Green", "mean_b": "Blue", "hue": "Hue (°)", "sat": "Saturation", "val": "Brightness",
    "od_r": "Optical density, red", "od_g": "Optical density, green", "od_b": "Optical density, blue",
    "od_stain": "Optical density of stain", "stained": "Stained share",
}  # fmt: skip


def colour_table(images: pd.DataFrame, by: str = "class", readable: bool = False) -> pd.DataFrame:
    """Mean and standard deviation of the colour / stain statistics per ``by`` (class, source, split); with
    ``readable``, columns in words ("Red, mean", "Hue (°), sd") for the screen."""
    df = _ok(images).dropna(subset=["mean_r"])
    if df.empty or df[by].isna().all():
        return pd.DataFrame()
    agg = df.groupby(by)[COLOUR_COLUMNS].agg(["mean", "std"])
    if readable:
        agg.columns = [f"{COLOUR_WORDS.get(c, c)}, {'mean' if s == 'mean' else 'sd'}" for c, s in agg.columns]
    else:
        agg.columns = [f"{c}_{s}" for c, s in agg.columns]
    agg.insert(0, "images" if readable else "n", df.groupby(by).size())
    out = agg.reset_index()
    return out.rename(columns={by: by.capitalize()}) if readable else out


def errors_table(images: pd.DataFrame) -> pd.DataFrame:
    """The unreadable files and why."""
    return images.loc[images["error"].notna(), ["file", "error"]].reset_index(drop=True)


def label_errors_table(images: pd.DataFrame) -> pd.DataFrame:
    """Detection images whose label / annotation file is malformed, and why."""
    if "label_error" not in images:
        return pd.DataFrame(columns=["file", "label_error"])
    return images.loc[images["label_error"].notna(), ["file", "label_error"]].reset_index(drop=True)


# ---- duplicates ------------------------------------------------------------------------------
def _hash_ints(hashes: pd.Series) -> np.ndarray:
    return np.array([int(h, 16) for h in hashes], dtype=np.uint64)


def duplicates(
    images: pd.DataFrame, threshold: int = DEFAULT_HAMMING, max_pairs: int = 20_000, block: int = 1024
) -> pd.DataFrame:
    """Pairs of exact (same bytes) and near-duplicate (phash distance <= threshold) images.

    Columns: file_a, file_b, split/class/source of each, distance (bits), exact, cross_split
    (leakage between train/val/test), label_conflict (same picture, different class).
    """
    cols = ["file", "split", "class", "node", "source", "phash", "sha1"]
    df = _ok(images).dropna(subset=["phash"]).reindex(columns=cols).reset_index(drop=True)
    pairs: list[tuple[int, int, int]] = []
    if len(df) > 1:
        h = _hash_ints(df["phash"])
        for start in range(0, len(h), block):
            a = h[start : start + block]
            dist = np.bitwise_count(a[:, None] ^ h[None, :])
            ii, jj = np.nonzero(dist <= threshold)
            upper = jj > ii + start
            for i, j in zip(ii[upper] + start, jj[upper], strict=True):
                pairs.append((int(i), int(j), int(dist[i - start, j])))
        by_sha = df.groupby("sha1").indices  # exact copies can differ in phash only if decoding differs
        seen = {(i, j) for i, j, _ in pairs}
        for idx in by_sha.values():
            for k, i in enumerate(idx):
                for j in idx[k + 1 :]:
                    if (int(i), int(j)) not in seen:
                        pairs.append((int(i), int(j), 0))
    pairs.sort(key=lambda p: (p[2], p[0], p[1]))
    truncated = len(pairs) > max_pairs
    pairs = pairs[:max_pairs]
    a = df.iloc[[p[0] for p in pairs]].reset_index(drop=True)
    b = df.iloc[[p[1] for p in pairs]].reset_index(drop=True)
    out = pd.DataFrame(
        {
            "file_a": a["file"],
            "file_b": b["file"],
            "split_a": a["split"],
            "split_b": b["split"],
            "class_a": a["class"],
            "class_b": b["class"],
            "node_a": a["node"],
            "node_b": b["node"],
            "source_a": a["source"],
            "source_b": b["source"],
            "distance": pd.Series([p[2] for p in pairs], dtype="int64"),
            "exact": (a["sha1"] == b["sha1"]).astype(bool),
        }
    )
    out["cross_split"] = (out["split_a"].fillna("") != out["split_b"].fillna("")).astype(bool)
    out["label_conflict"] = (out["class_a"].notna() & (out["class_a"] != out["class_b"])).astype(bool)
    out.attrs["truncated"] = truncated
    return out


def duplicate_summary(pairs: pd.DataFrame) -> dict[str, int]:
    """Counts of duplicate pairs: exact, near, across splits (leakage), with conflicting labels."""
    return {
        "pairs": len(pairs),
        "exact_pairs": int(pairs["exact"].sum()),
        "near_pairs": int((~pairs["exact"]).sum()),
        "cross_split_pairs": int(pairs["cross_split"].sum()),
        "label_conflict_pairs": int(pairs["label_conflict"].sum()),
        "images_involved": int(pd.concat([pairs["file_a"], pairs["file_b"]]).nunique()),
    }


def duplicates_table(pairs: pd.DataFrame, taxonomy: Taxonomy) -> pd.DataFrame:
    """:func:`duplicates` for the screen: columns in words, each image's class by its display name (the
    taxonomy node its file is labelled with, the folder's name when it has none)."""

    def name(node: object, folder: object) -> str:
        return taxonomy.display(node) if isinstance(node, str) and node in taxonomy else str(folder or "")

    out = pd.DataFrame({"Image A": pairs["file_a"], "Image B": pairs["file_b"]})
    for side in ("a", "b"):
        nodes = pairs.get(f"node_{side}", pd.Series([None] * len(pairs)))
        out[f"Class {side.upper()}"] = [name(n, c) for n, c in zip(nodes, pairs[f"class_{side}"], strict=True)]
    for side in ("a", "b"):
        out[f"Split {side.upper()}"] = pairs[f"split_{side}"].fillna("").astype(str)
    for side in ("a", "b"):
        out[f"Source {side.upper()}"] = pairs[f"source_{side}"].fillna("").astype(str)
    out["Distance (bits)"] = pairs["distance"]
    out["Exact copy"] = pairs["exact"]
    out["Across splits"] = pairs["cross_split"]
    out["Different labels"] = pairs["label_conflict"]
    return out


def leakage(pairs: pd.DataFrame) -> pd.DataFrame:
    """Duplicate pairs across splits, counted per split pair (e.g. train-test)."""
    cross = pairs[pairs["cross_split"]]
    if cross.empty:
        return pd.DataFrame(columns=["splits", "exact", "near"])
    key = [" ~ ".join(sorted((str(a), str(b)))) for a, b in zip(cross["split_a"], cross["split_b"], strict=True)]
    grouped = cross.assign(splits=key).groupby("splits")["exact"]
    return pd.DataFrame({"exact": grouped.sum(), "near": grouped.size() - grouped.sum()}).reset_index()


# ---- balancing -------------------------------------------------------------------------------
def balanced_counts(images: pd.DataFrame, taxonomy: Taxonomy, min_count: int = DEFAULT_MIN_COUNT) -> pd.DataFrame:
    """Per tree level, image counts before and after the training balancing rule.

    The rule: at each level, every group (the node at that level, or a leaf that stops above it)
    is capped at the size of the smallest group, but never below ``min_count`` — a rare class may
    not shrink everything else to a handful. Images labelled only at an inner node above the
    level (e.g. "neutrophil, unspecified" at the band/segmented level) have no label there and
    are left out of that level.
    Columns: level, node, name, count, target, balanced, kept (fraction).
    """
    if min_count < 0:
        raise CellkitError(f"min_count must be >= 0, got {min_count}")
    nodes = _ok(images)["node"].dropna()
    nodes = nodes[nodes.isin(list(taxonomy.ids))]
    rows = []
    for level in range(1, taxonomy.max_depth + 1):
        usable = nodes[nodes.map(lambda n, lv=level: taxonomy.depth(n) >= lv or taxonomy.is_leaf(n))]
        groups = usable.map(taxonomy.level_map(level)).value_counts()
        if groups.empty:
            continue
        target = max(int(groups.min()), int(min_count))
        for nid in [i for i in taxonomy.ids if i in groups.index]:
            n = int(groups[nid])
            rows.append(
                {
                    "level": level,
                    "node": nid,
                    "name": taxonomy.display(nid),
                    "count": n,
                    "target": target,
                    "balanced": min(n, target),
                    "kept": min(n, target) / n,
                }
            )
    return pd.DataFrame(rows, columns=["level", "node", "name", "count", "target", "balanced", "kept"])


# ---- detection -------------------------------------------------------------------------------
def boxes_per_image(images: pd.DataFrame) -> pd.DataFrame:
    """Long table: file, split, source, class, n (boxes of that class in the image)."""
    cols = [c for c in images.columns if c.startswith("n_") and c != "n_boxes"]
    if not cols:
        return pd.DataFrame(columns=["file", "split", "source", "class", "n"])
    long = _ok(images).melt(id_vars=["file", "split", "source"], value_vars=cols, var_name="class", value_name="n")
    long["class"] = long["class"].str.removeprefix("n_")
    return long


def box_size_table(boxes: pd.DataFrame) -> pd.DataFrame:
    """Box size per class: count and quantiles of width, height and sqrt(area) in pixels."""
    if boxes.empty:
        return pd.DataFrame()
    df = boxes.assign(side=np.sqrt(boxes["w"].clip(lower=0) * boxes["h"].clip(lower=0)))
    out = df.groupby("class")[["w", "h", "side"]].describe(percentiles=[0.5])
    out.columns = [f"{c}_{s}" for c, s in out.columns]
    keep = [c for c in out.columns if c.endswith(("_mean", "_50%", "_min", "_max")) or c == "w_count"]
    return out[keep].rename(columns={"w_count": "boxes"}).reset_index()


# ---- mosaic ----------------------------------------------------------------------------------
def mosaic(
    index: DatasetIndex, per_group: int = 8, size: int = 96, seed: int = 0, max_groups: int = 24
) -> tuple[np.ndarray, list[str]]:
    """A grid image of sample thumbnails: one row per class (classification) or box class (crops).

    Returns the RGB uint8 image and the row labels.
    """
    from cellkit.crops import crop_box
    from cellkit.io import read_image

    rng = np.random.default_rng(seed)
    rows: list[tuple[str, list[np.ndarray]]] = []
    images = _ok(index.images)
    if index.dataset.is_detection and not index.boxes.empty:
        paths = images.set_index("file")["path"]
        boxes = index.boxes[index.boxes["file"].isin(paths.index)]
        for cls, grp in list(boxes.groupby("class", sort=False))[:max_groups]:
            pick = grp.iloc[rng.permutation(len(grp))[:per_group]]
            tiles = []
            for _, b in pick.iterrows():
                img = read_image(paths[b["file"]])
                tiles.append(crop_box(img, np.array([b["x1"], b["y1"], b["x2"], b["y2"]]), scale=1.5))
            rows.append((str(cls), tiles))
    else:
        key = "node" if images["class"].isna().all() else "class"
        groups = images.groupby(images[key].fillna("(unlabelled)"), sort=True) if len(images) else []
        for label, grp in list(groups)[:max_groups]:
            pick = grp.iloc[rng.permutation(len(grp))[:per_group]]
            rows.append((str(label), [read_image(p) for p in pick["path"]]))
    if not rows:
        raise CellkitError("no readable images to show")
    grid = np.full((len(rows) * size, per_group * size, 3), 255, dtype=np.uint8)
    for r, (_, tiles) in enumerate(rows):
        for c, tile in enumerate(tiles):
            t = np.asarray(ImageOps.contain(Image.fromarray(tile), (size, size)).convert("RGB"))  # up or down
            y, x = r * size + (size - t.shape[0]) // 2, c * size + (size - t.shape[1]) // 2
            grid[y : y + t.shape[0], x : x + t.shape[1]] = t
    return grid, [label for label, _ in rows]


# ---- summary ---------------------------------------------------------------------------------
def summary(
    index: DatasetIndex, *, threshold: int = DEFAULT_HAMMING, min_count: int = DEFAULT_MIN_COUNT
) -> dict[str, Any]:
    """Everything `cellkit stats` prints, as plain JSON-able data."""
    images, tax = index.images, index.taxonomy

    def counts(col: str) -> dict[str, int]:
        s = _ok(images)[col].fillna("(none)").replace("", "(none)").value_counts()
        return {str(k): int(v) for k, v in s.items()}

    pairs = duplicates(images, threshold=threshold)
    out: dict[str, Any] = {
        "dataset": index.name,
        "path": str(index.dataset.info.path),
        "kind": index.kind,
        "images": len(images),
        "readable": int(images["error"].isna().sum()),
        "unreadable": errors_table(images).to_dict("records"),
        "per_split": counts("split"),
        "per_source": counts("source"),
        "sizes": {f"{r.width}x{r.height}": int(r.count) for r in size_counts(images).itertuples()},
        "duplicates": {**duplicate_summary(pairs), "threshold_bits": threshold},
        "leakage": leakage(pairs).to_dict("records"),
        "index_seconds": round(index.seconds, 3),
        "indexed_now": index.n_computed,
    }
    if not images["class"].isna().all():
        out["per_class"] = counts("class")
        levels = level_counts(images, tax)
        out["per_node"] = {r.node: int(r.count) for r in levels.itertuples()}
        out["per_label"] = {str(r.node): int(r.labelled_here) for r in levels.itertuples() if r.labelled_here}
        out["per_level"] = {
            f"level {lv}": {r.node: int(r.count) for r in grp.itertuples()} for lv, grp in levels.groupby("level")
        }
        out["unmapped_classes"] = sorted(set(_ok(images).loc[_ok(images)["node"].isna(), "class"].dropna()))
        bal = balanced_counts(images, tax, min_count=min_count)
        out["balanced"] = {
            f"level {lv}": {r.node: [int(r.count), int(r.balanced)] for r in grp.itertuples()}
            for lv, grp in bal.groupby("level")
        }
    if index.dataset.is_detection:
        boxes = index.boxes
        out["boxes"] = {str(k): int(v) for k, v in boxes["class"].value_counts().items()}
        out["boxes_per_image_mean"] = {
            c.removeprefix("n_"): round(float(_ok(images)[c].mean()), 2) for c in images.columns if c.startswith("n_")
        }
        out["label_errors"] = int(images["label_error"].notna().sum()) if "label_error" in images else 0
    return out


def dataset_stats(
    path: str | os.PathLike,
    taxonomy: Taxonomy | str | None = None,
    *,
    dataset: str | None = None,
    threshold: int = DEFAULT_HAMMING,
    min_count: int = DEFAULT_MIN_COUNT,
    progress: bool | Progress = False,
) -> dict[str, Any]:
    """Index a dataset folder (cached) and summarise it: counts, sizes, duplicates, balancing."""
    index = index_dataset(path, taxonomy, dataset=dataset, progress=progress)
    return summary(index, threshold=threshold, min_count=min_count)
