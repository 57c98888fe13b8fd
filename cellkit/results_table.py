"""Tables of predictions (``cellkit classify`` and the Classify page): the columns, one row per crop, batches.

One home for what a results row holds, so the CLI's CSV and the page's table never differ.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cellkit.taxonomy import Taxonomy
from cellkit.types import Prediction
from cellkit.unknown import UNKNOWN


def result_columns(taxonomy: Taxonomy) -> list[str]:
    """Columns of a results table: path, leaf, label, confidence, ood_score, review, note, shown_as, p_<node>..., error.

    ``shown_as`` is what a person is shown ("Unidentified — review" for a flagged cell); ``label`` is its id
    (``unknown`` when flagged, ``review`` says why) and ``leaf`` is still the best guess.
    """
    probs = [f"p_{n}" for n in taxonomy.ids]
    return ["path", "leaf", "label", "confidence", "ood_score", "review", "note", "shown_as", *probs, "error"]


def prediction_row(pred: Prediction, taxonomy: Taxonomy) -> dict[str, Any]:
    """One results-table row of a prediction (see :func:`result_columns`), without the path."""
    return {**pred.as_dict(), "shown_as": taxonomy.display(pred.label)}


def readable_results(table: Any, taxonomy: Taxonomy) -> Any:
    """The results table as a person reads it: display names for columns and cell types, probabilities as
    ``P(<name>)``. The CSV keeps :func:`result_columns` (ids), so that scripts and ``cellkit classify`` agree."""
    import pandas as pd

    def name(node: Any) -> str:
        return taxonomy.display(node) if isinstance(node, str) and node else ""

    def p_of(row: Any, node: Any) -> float:
        column = f"p_{node}"
        return float(row[column]) if isinstance(node, str) and column in row.index else float("nan")

    flagged = table["label"] == UNKNOWN
    out = pd.DataFrame({
        "File": table["path"],
        "Shown as": table["shown_as"].fillna(""),
        # each probability sits beside the name it belongs to: "Confidence" beside the best guess read as the
        # guess's own (a basophil guess of 0.32 was shown with the 0.55 of mature myeloid)
        "Confidence": table["confidence"].where(~flagged),
        "Best guess": [name(n) for n in table["leaf"]],
        "P(best guess)": [p_of(row, n) for (_, row), n in zip(table.iterrows(), table["leaf"], strict=True)],
        "Unusualness (flagged above 1)": table["ood_score"],
        "Why review": table["review"].fillna(""),
        "Framing": table["note"].fillna(""),
        **{f"P({taxonomy.display(n)})": table[f"p_{n}"] for n in taxonomy.ids},
        "Error": table["error"].fillna(""),
    })  # fmt: skip
    return out


PENDING_PIXELS = 20_000_000  # classify_items: images held before a batch is sent (~60 MB of RGB)


def classify_items(
    clf: Any, items: Any, batch_size: int = 64, progress: Any = None, rows: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One row per :class:`cellkit.io.ImageItem` (file, folder member, zip member), in input order.

    Unreadable items get a row whose ``error`` says why (probabilities left empty); the rest are
    classified in batches of at most ``batch_size`` crops and ``PENDING_PIXELS`` pixels (so a few
    huge images are not all held at once). ``progress`` is an optional callable ``progress(n_done)``.
    ``rows``: a list to fill as it goes (the caller keeps what was finished when interrupted; see
    :func:`finished_rows`).
    """
    rows = [] if rows is None else rows
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        preds = clf.predict([im for _, im in pending], batch_size=batch_size)
        for (i, _), pred in zip(pending, preds, strict=True):
            rows[i].update(prediction_row(pred, clf.taxonomy))
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
        if len(pending) >= batch_size or sum(im.shape[0] * im.shape[1] for _, im in pending) >= PENDING_PIXELS:
            flush()
    if pending:
        flush()
    return rows


def finished_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of :func:`classify_items` that are complete: classified, or with their error (an interrupted run
    leaves the last batch's rows without probabilities)."""
    return [r for r in rows if r.get("error") or "leaf" in r]
