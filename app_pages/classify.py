"""Classify crops: upload single-cell crops (or a zip) -> probabilities through the lineage tree."""

from __future__ import annotations

import contextlib
import hashlib

import pandas as pd
import streamlit as st

from cellkit import (
    IMAGE_SUFFIXES,
    UNKNOWN,
    UNKNOWN_NAME,
    CellkitError,
    ImageItem,
    PixelBudget,
    count,
    heavy_job,
    iter_zip,
    prediction_row,
    read_image,
    readable_results,
    result_columns,
)
from ui import resources, widgets

MAX_DETAILED = 12
HELP = (
    "Upload crops of white cells, framed any way: the model finds the cell (the central one when a crop "
    "holds several) and frames it as in training. Whole smears belong on the *Slide analysis* page. The label "
    "is the deepest node of the tree whose probability passes the threshold, so an unsure myelocyte/metamyelocyte "
    "is reported as *Immature granulocyte*. Cells unlike anything the model was taught (e.g. blasts, smudge "
    "cells, artefacts), or that it cannot place, are shown as **Unidentified — review**."
)

st.title("Classify cell crops")
st.caption(HELP)
opened = widgets.uploader_is_new("classify_upload")
files = st.file_uploader(
    "Cell crops (PNG, JPEG, TIFF, BMP, WebP, GIF) or a zip of crops",
    type=[s.lstrip(".") for s in IMAGE_SUFFIXES] + ["zip"],
    accept_multiple_files=True,
    key="classify_upload",
    max_upload_size=widgets.upload_limit_mb(),
)
files = widgets.kept_uploads(widgets.refuse_oversized(files or []), "classify_kept", opened)
if not files:
    st.info("Upload one or more crops to classify them.", icon=":material/upload:")
    st.stop()

with resources.user_errors():
    clf = resources.current_classifier()
tax = clf.taxonomy
threshold = st.sidebar.slider("Confidence threshold for the label", 0.3, 0.95, float(clf.spec.threshold), 0.05)


def request_key(files, clf, threshold: float) -> tuple:
    """What the classification depends on: the files' bytes, the model and the threshold. A rerun for anything
    else (a download, a click) reuses the last answer instead of decoding and classifying again."""
    digest = hashlib.blake2b(digest_size=16)
    for f in files:
        digest.update(f.name.encode("utf-8", "replace") + b"\0" + f.getvalue())
    return digest.hexdigest(), clf.spec.name, str(clf.spec.card.get("sha256", "")), float(threshold)


items: list[ImageItem] = []
budget = PixelBudget()  # all files of this upload together (CELLKIT_MAX_REQUEST_PIXELS), from headers
preds = []
key = request_key(files, clf, threshold)
cached = st.session_state.get("classify_last")
if cached is not None and cached[0] == key:
    items, preds = cached[1], cached[2]
# one server slot for the whole request: decoded images are held until they are classified
with resources.user_errors(), heavy_job(waiting=st.spinner) if not items else contextlib.nullcontext():
    for f in files if not items else []:
        data = f.getvalue()
        if f.name.lower().endswith(".zip"):
            try:
                members = list(iter_zip(data, name=f.name, budget=budget))
            except CellkitError as exc:  # an item, so the answer kept for reruns still shows it
                items.append(ImageItem(f.name, error=str(exc)))
            else:
                items.extend(members)
                if not members:  # empty, or only files that are no images (.txt, .gif...)
                    names = ", ".join(IMAGE_SUFFIXES)
                    items.append(ImageItem(f.name, error=f"{f.name}: no image in the zip (read: {names})"))
        else:
            try:
                items.append(ImageItem(f.name, read_image(data, name=f.name, budget=budget)))
            except CellkitError as exc:
                items.append(ImageItem(f.name, error=str(exc)))
    good = [it for it in items if not it.error]
    if good and not preds:
        with st.spinner(f"Classifying {count(len(good), 'crop')}…"):
            preds = clf.predict([it.image for it in good], threshold=threshold)
    st.session_state["classify_last"] = (key, items, preds)  # one request kept: bounded like the upload

for item in items:  # names may repeat (two uploads, zip members): nothing below is keyed by name
    if item.error:
        message = item.error if item.name in item.error else f"{item.name}: {item.error}"
        widgets.error(message)
if not good:
    st.warning("No readable crop to classify.")
    st.stop()

found = iter(preds)
rows = [
    {"path": it.name, "error": it.error} if it.error else {"path": it.name, **prediction_row(next(found), tax)}
    for it in items
]
table = pd.DataFrame(rows, columns=result_columns(tax))
table["error"] = table["error"].astype(object).fillna("")  # an all-NaN float column takes no str fill in pandas 4

n_review = sum(p.label == UNKNOWN for p in preds)
c1, c2, c3 = st.columns(3)
c1.metric("Crops classified", len(good))
c2.metric("Unreadable", len(items) - len(good))
c3.metric("Unidentified — review", n_review)
st.caption(widgets.plain(f"Classified with {clf.spec.card.get('display_name') or clf.spec.name} (the sidebar's "
                         "white-cell model)."))  # which model ran: the sidebar can be another tab's choice  # fmt: skip

st.subheader("Per crop")
if len(good) > MAX_DETAILED:
    st.caption(f"Showing the first {MAX_DETAILED} crops; all are in the table below.")
for k, (item, pred) in enumerate(list(zip(good, preds, strict=True))[:MAX_DETAILED]):
    with st.container(border=True):
        left, mid, right = st.columns([1, 2, 2])
        views = [widgets.thumbnail(item.image), clf.prep.canonical(item.image, 96)]
        left.image(views, caption=["Uploaded", "Model's view"], width=96)
        left.text(item.name)  # plain text: a file name is never rendered as Markdown
        guess = tax.deepest_confident(pred.node_probs, threshold)
        path = " › ".join(f"{tax.display(n)} {pred.prob(n):.2f}" for n in tax.path(guess))
        if pred.label == UNKNOWN:
            left.warning(
                f"**{UNKNOWN_NAME}** — {pred.review}. Best guess: {tax.display(pred.leaf)} "
                f"({pred.prob(pred.leaf):.2f}), as in the table and on the Explain page."
            )
        else:
            left.markdown(f"**{tax.display(pred.label)}** ({pred.confidence:.2f})")
            left.caption(f"Unusualness {pred.ood_score:.2f} (above 1 is flagged)")
        if pred.note:
            left.info(pred.note, icon=":material/crop:")
        mid.caption(f"Path: {path}")
        mid.plotly_chart(widgets.probability_sunburst(tax, pred.node_probs), key=f"sun_{k}")
        right.plotly_chart(widgets.top_leaves_bar(tax, pred), key=f"top_{k}")

st.subheader("All results")
shown = readable_results(table, tax)
shown["Confidence"] = [widgets.plain_number(v, 2) for v in shown["Confidence"]]  # a flagged crop's: a dash
st.dataframe(
    shown,
    hide_index=True,
    column_config={
        **{c: st.column_config.NumberColumn(format="%.2f") for c in shown.columns if c.startswith("P(")},
        "Unusualness (flagged above 1)": st.column_config.NumberColumn(format="%.2f"),
        "Why review": st.column_config.TextColumn(width="large"),
    },
)
st.caption("The CSV keeps the cell types' ids and one `p_<id>` column per node, as `cellkit classify` writes it.")
st.download_button("Download CSV", table.to_csv(index=False).encode(), "cellkit_predictions.csv", "text/csv")
