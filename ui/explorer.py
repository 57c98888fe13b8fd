"""Misclassification explorer (a section of the Models page): confusion per tree level -> gallery of errors.

Run the cached classifier on a labelled folder (its test split when the model card names one),
show the confusion matrix at a chosen level, and for one (true, predicted) cell the images with
Grad-CAM maps for the predicted node and for the true node side by side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from cellkit import config
from cellkit.errors_explorer import accuracy, at_level, confusion, levels, select_errors
from cellkit.explain.render import overlay
from cellkit.io import read_image
from cellkit.taxonomy import DEFAULT_DATASET
from ui import resources
from ui.widgets import plain


def level_name(level: str, taxonomy) -> str:
    """A tree level as a person reads it: "Leaves (11 cell types)", "8 classes", "Tree depth 1"."""
    if level == "leaves":
        return f"Leaves ({len(taxonomy.leaves)} cell types)"
    if level in taxonomy.groupings:
        return f"{len(taxonomy.groupings[level])} classes"
    return level.replace("depth", "Tree depth")


def confusion_figure(table, taxonomy) -> go.Figure:
    """Plotly heatmap of counts (rows = truth), row-normalised colour, counts as text."""
    counts = table.to_numpy()
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=list(table.columns),
            y=list(table.index),
            text=counts,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            customdata=[[f"{taxonomy.display(t)} → {taxonomy.display(p)}" for p in table.columns] for t in table.index],
            hovertemplate="%{customdata}: %{text} images (%{z:.0%} of the row)<extra></extra>",
            colorbar=dict(title="row share"),
        )
    )
    names = {n: taxonomy.display(n) for n in [*table.columns, *table.index]}
    fig.update_xaxes(tickmode="array", tickvals=list(table.columns), ticktext=[names[n] for n in table.columns])
    fig.update_yaxes(tickmode="array", tickvals=list(table.index), ticktext=[names[n] for n in table.index])
    fig.update_layout(
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis_autorange="reversed",
        height=120 + 32 * len(table.index),
        margin=dict(l=10, r=10, t=10, b=10),
    )
    return fig


def _clicked_cell(event) -> tuple[str, str] | None:
    try:
        point = event.selection.points[0]
        return str(point["y"]), str(point["x"])
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def explorer_section(max_gallery: int = 12) -> None:
    """Render the explorer (widgets, matrix, gallery) with the cached default classifier."""
    st.header("Misclassification explorer")
    st.caption("Where does the model go wrong? Run it on a labelled folder, pick a cell of the matrix.")
    with resources.user_errors():
        clf = resources.current_classifier()
    tax = clf.taxonomy
    default = config.data_dir()
    a, b, c = st.columns([3, 1, 1])
    folder = a.text_input(
        "Labelled folder (<class>/<image>)",
        str(default / DEFAULT_DATASET) if default else "",
        key="explorer_folder",
        help="Only folders inside the data folder(s) set by CELLKIT_DATA_DIR can be opened.",
    )
    limit = b.slider("Images", 20, 2000, 200, step=20, key="explorer_limit", help="a class-balanced sample")
    test_split = c.checkbox("Test split only", value=True, key="explorer_test", help="when the model card names one")
    if st.button("Run the model on the folder", icon=":material/play_arrow:", key="explorer_run"):
        st.session_state["explorer_args"] = (folder, limit, test_split)
    args = st.session_state.get("explorer_args")
    if not args:
        return
    with resources.user_errors():
        root = config.resolve_data_path(args[0])  # nothing outside the data folders (no /etc, .., links out)
        df = resources.folder_predictions(str(root), args[1], clf.spec.name, args[2])
    bad = int(df["error"].notna().sum())
    if bad == len(df):
        st.warning(f"None of the {bad} images could be read: nothing to score." if bad else "No images found.")
        return
    level = st.selectbox("Tree level", levels(tax), key="explorer_level", format_func=lambda v: level_name(v, tax))
    table = confusion(df, tax, level)
    st.metric(f"Accuracy, {level_name(level, tax).lower()}", f"{accuracy(df, tax, level):.1%}",
              help=f"{len(df) - bad} images")  # fmt: skip
    if bad:
        st.warning(f"{bad} unreadable image{'s' if bad > 1 else ''} left out.")
    event = st.plotly_chart(
        confusion_figure(table, tax), key="explorer_matrix", on_select="rerun", selection_mode="points"
    )
    clicked = _clicked_cell(event)
    if clicked and clicked[0] in table.index and clicked[1] in table.columns:
        st.session_state["explorer_true"], st.session_state["explorer_pred"] = clicked
    lv = at_level(df, tax, level)
    wrong = lv[~lv["correct"]]
    if wrong.empty:
        st.success("No errors at this level in this sample.")
        return
    pairs = wrong.groupby(["true_group", "pred_group"]).size().sort_values(ascending=False)
    trues = sorted(set(wrong["true_group"]), key=tax.ids.index)
    if st.session_state.get("explorer_true") not in trues:
        st.session_state["explorer_true"] = pairs.index[0][0]
    t_col, p_col = st.columns(2)
    true = t_col.selectbox("True class", trues, format_func=tax.display, key="explorer_true")
    preds = sorted(set(wrong.loc[wrong["true_group"] == true, "pred_group"]), key=tax.ids.index)
    if st.session_state.get("explorer_pred") not in preds:
        st.session_state["explorer_pred"] = preds[0]
    pred = p_col.selectbox("Predicted as", preds, format_func=tax.display, key="explorer_pred")
    errors = select_errors(df, tax, level, true, pred)
    st.caption(f"{len(errors)} images; most confident mistakes first. Grad-CAM for the predicted and the true node.")
    for _, row in errors.head(max_gallery).iterrows():
        with resources.user_errors():
            crop = read_image(row["path"])
            maps = [resources.explanation(crop, n, "gradcam", clf.spec.name, False) for n in (pred, true)]
        cols = st.columns([1, 1, 1, 2])
        cols[0].image(crop, caption=plain(Path(row["path"]).name), width=140)
        cols[1].image(
            overlay(crop, maps[0].values, 0.5, size=140, prep=clf.prep),
            caption=f"→ {tax.display(pred)}",
            width=140,
        )
        cols[2].image(
            overlay(crop, maps[1].values, 0.5, size=140, prep=clf.prep),
            caption=f"true: {tax.display(true)}",
            width=140,
        )
        p_pred, p_true = (sum(row[f"p_{lf}"] for lf in tax.leaves_under(n)) for n in (pred, true))
        cols[3].caption(plain(f"p({tax.display(pred)}) = {p_pred:.2f} · p({tax.display(true)}) = {p_true:.2f} · "
                              f"the model's label: {tax.display(row['label'])}"))  # fmt: skip
