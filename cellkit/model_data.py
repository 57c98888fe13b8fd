"""What the bundled models were trained on, from their cards: counts per table, the notes, the image split.

The Dataset page shows these beside any dataset folder; nothing here opens an image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from cellkit import config
from cellkit.data import none_for_missing
from cellkit.errors import CellkitError
from cellkit.taxonomy import DEFAULT_DATASET, DEFAULT_TAXONOMY, load_taxonomy


def model_data_table(specs: list) -> pd.DataFrame:
    """Counts found in model cards (``card["data"]``, ``card["split"]``): model, task, table, key, count.

    Cards are free-form; every nested mapping of integers (e.g. ``split_sizes``) becomes a table.
    """
    rows: list[dict[str, Any]] = []

    def add(spec: Any, path: list[str], ints: dict[str, int]) -> None:
        for k, v in ints.items():
            if not any(word in str(k).lower() for word in NOT_COUNTS):  # a hash distance is no count of images
                shown = (spec.card or {}).get("display_name") or spec.name
                rows.append({"model": spec.name, "shown": shown, "task": spec.task, "table": ".".join(path),
                             "key": str(k), "count": v})  # fmt: skip

    def walk(node: Any, path: list[str], spec: Any, depth: int = 0) -> None:
        if not isinstance(node, dict) or depth > 4 or not node:
            return
        ints = {k: v for k, v in node.items() if isinstance(v, int) and not isinstance(v, bool)}
        if ints and len(ints) == len(node):
            add(spec, path, ints)
            return
        for k, v in node.items():
            walk(v, [*path, str(k)], spec, depth + 1)
        if ints and len(ints) < len(node):
            add(spec, path, ints)

    for spec in specs:
        card = spec.card or {}
        for top in ("data", "split"):
            walk(card.get(top), [top], spec)
    return pd.DataFrame(rows, columns=["model", "shown", "task", "table", "key", "count"])


NOT_COUNTS = ("distance", "threshold", "seed", "epoch", "px", "pixels", "version")  # integers that count no images


ACRONYMS = {"bccd": "BCCD", "bcdd": "BCDD", "cbc": "CBC", "pbc": "PBC", "rbc": "RBC", "txl": "TXL", "wbc": "WBC"}


def words(key: str) -> str:
    """A card key as words: "n_images" -> "images", "data.split_sizes" -> "split sizes", "cbc_kept" -> "CBC kept"
    (data sets' names as they are written)."""
    last = key.rsplit(".", 1)[-1]
    text = " ".join(ACRONYMS.get(w.lower(), w) for w in last.removeprefix("n_").replace("_", " ").split())
    return text[:1].upper() + text[1:] if text else key


def model_data_notes(spec: Any) -> dict[str, str]:
    """The text fields of a card's ``data`` section (dataset, splits, attribution, de-duplication)."""
    data = (spec.card or {}).get("data")
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, str) and v}


def model_split_table(spec: Any, folder: str | os.PathLike | None = None) -> pd.DataFrame | None:
    """The image split a bundled classifier was trained on, from the split file its card names.

    ``card["data"]["split_file"]`` (beside the weights) lists ``<class>/<file>`` per split; each row
    gets its class and taxonomy node (folder + file-name prefix rules) without opening any image.
    Returns None when the card names no readable split file.
    """
    import json

    from cellkit.data import _folder_rules, class_to_node, refine_by_prefix

    data = (spec.card or {}).get("data")
    name = data.get("split_file") if isinstance(data, dict) else None
    if not name:
        return None
    path = Path(folder or config.weights_dir()) / Path(str(name)).name
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        tax = load_taxonomy(spec.taxonomy or DEFAULT_TAXONOMY)
    except (OSError, ValueError, CellkitError):
        return None
    folders, prefixes = _folder_rules(tax, DEFAULT_DATASET)
    rows = []
    for split in ("train", "val", "test"):
        for rel in raw.get(split, []) if isinstance(raw, dict) else []:
            parts = Path(str(rel)).parts
            cls = parts[-2] if len(parts) > 1 else ""
            node = refine_by_prefix(tax, class_to_node(tax, cls, folders), parts[-1], prefixes)
            rows.append({"file": str(rel), "split": split, "class": cls, "node": node, "error": None})
    out = pd.DataFrame(rows, columns=["file", "split", "class", "node", "error"])
    out["node"], out["error"] = none_for_missing(out["node"]), none_for_missing(out["error"])
    return out
