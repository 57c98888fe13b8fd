"""Plotly figure builders shared by the pages (cellkit never imports streamlit; pages render these).

Each function takes the plain tables of :mod:`cellkit.stats` and returns a ``plotly`` Figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from cellkit.taxonomy import Taxonomy

LAYOUT = {"margin": {"l": 10, "r": 10, "t": 40, "b": 10}, "template": "plotly_white"}


def _fig(fig: go.Figure, title: str, **layout) -> go.Figure:
    fig.update_layout(title=title, **{**LAYOUT, **layout})
    return fig


def taxonomy_sunburst(levels: pd.DataFrame, taxonomy: Taxonomy, title: str = "Images per taxonomy node") -> go.Figure:
    """Sunburst over the tree from :func:`cellkit.stats.level_counts` (totals include descendants)."""
    df = levels[levels["count"] > 0]
    labels = [taxonomy.node(n).name for n in df["node"]]  # names, as on every other page (hover: with counts)
    fig = go.Figure(
        go.Sunburst(
            ids=df["node"],
            labels=labels,
            parents=df["parent"],
            values=df["count"],
            branchvalues="total",
            hovertext=[f"{name}: {c} images" for name, c in zip(df["name"], df["count"], strict=True)],
            hoverinfo="text",
            insidetextorientation="radial",
        )
    )
    return _fig(fig, title, height=480)


def counts_bar(table: pd.DataFrame, x: str, y: str = "count", color: str | None = None, title: str = "") -> go.Figure:
    """A bar chart of counts (optionally stacked by ``color``)."""
    fig = px.bar(table, x=x, y=y, color=color, text_auto=True)
    return _fig(fig, title, xaxis_title=None)


def crosstab_bar(table: pd.DataFrame, title: str = "", ylabel: str = "images") -> go.Figure:
    """Stacked bars from a crosstab (rows on x, one colour per column)."""
    long = table.reset_index().melt(id_vars=table.index.name or "index", var_name=table.columns.name or "group")
    x = table.index.name or "index"
    fig = px.bar(long, x=x, y="value", color=table.columns.name or "group", text_auto=True)
    return _fig(fig, title, yaxis_title=ylabel, xaxis_title=None)


def size_scatter(sizes: pd.DataFrame, title: str = "Image sizes (pixels)") -> go.Figure:
    """Width x height, marker area ~ number of images of that size."""
    df = sizes.astype({"width": "float64", "height": "float64"})
    fig = px.scatter(df, x="width", y="height", size="count", hover_data=["count"], size_max=40)
    return _fig(fig, title)


COLOUR_LABELS = {
    "hue": "mean hue (° from red, < 0 towards purple)",
    "sat": "saturation",
    "val": "brightness",
    "od_stain": "stain OD (stained pixels)",
    "stained": "stained fraction",
    "od_b": "blue-channel OD",
}


def colour_box(images: pd.DataFrame, by: str, metric: str, title: str | None = None) -> go.Figure:
    """Distribution of one colour / stain statistic per group (class, source, split)."""
    df = images.dropna(subset=[metric]).fillna({by: "(none)"})
    fig = px.box(df, x=by, y=metric, color=by, points=False)
    fig.update_layout(showlegend=False)
    label = COLOUR_LABELS.get(metric, metric)
    return _fig(fig, title or f"{label} per {by}", yaxis_title=label, xaxis_title=None)


def colour_scatter(images: pd.DataFrame, by: str, max_points: int = 4000, title: str | None = None) -> go.Figure:
    """Each image as a dot in (mean red, mean blue), coloured by group: stain / scanner shifts show as clusters."""
    df = images.dropna(subset=["mean_r"]).fillna({by: "(none)"})
    if len(df) > max_points:
        df = df.sample(max_points, random_state=0)
    fig = px.scatter(
        df,
        x="mean_r",
        y="mean_b",
        color=by,
        opacity=0.5,
        hover_data=["file"],
        labels={"mean_r": "mean R", "mean_b": "mean B"},
    )
    fig.update_traces(marker={"size": 4})
    return _fig(fig, title or f"Colour of each image by {by}")


def balance_bars(balanced: pd.DataFrame, title: str = "Balancing per level: before / after") -> go.Figure:
    """Grouped bars (before, after) per node, one panel per level."""
    long = balanced.melt(
        id_vars=["level", "name"], value_vars=["count", "balanced"], var_name="stage", value_name="images"
    )
    long["stage"] = long["stage"].map({"count": "before", "balanced": "after"})
    long["level"] = "level " + long["level"].astype(str)
    n_levels = long["level"].nunique()
    fig = px.bar(
        long, x="name", y="images", color="stage", barmode="group", facet_row="level", text_auto=True,
        height=max(300, 230 * n_levels),
    )  # fmt: skip
    fig.update_xaxes(matches=None, showticklabels=True, title=None)
    fig.update_yaxes(matches=None)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
    return _fig(fig, title)


def distance_hist(pairs: pd.DataFrame, title: str = "Duplicate pairs by perceptual-hash distance") -> go.Figure:
    """How many pairs at each phash distance, split into within-split and cross-split (leakage)."""
    df = pairs.assign(where=np.where(pairs["cross_split"], "across splits", "within a split"))
    top = int(df["distance"].max() or 0)
    fig = px.histogram(df, x="distance", color="where", barmode="stack", nbins=top + 1)
    fig.update_xaxes(dtick=1, range=[-0.5, top + 0.5])  # whole bits: no axis from -0.4 to 0.4 for exact copies
    return _fig(fig, title, xaxis_title="hamming distance (bits of 64)")


def boxes_per_image_hist(long: pd.DataFrame, title: str = "Boxes per image") -> go.Figure:
    """Histogram of boxes per image, one colour per class (from :func:`cellkit.stats.boxes_per_image`)."""
    fig = px.histogram(long, x="n", color="class", barmode="overlay", opacity=0.6)
    return _fig(fig, title, xaxis_title="boxes in the image", yaxis_title="images")


def box_size_box(boxes: pd.DataFrame, by: str = "class", title: str = "Box size per class") -> go.Figure:
    """sqrt(box area) in pixels per class (and source when several)."""
    df = boxes.assign(side=np.sqrt(boxes["w"].clip(lower=0) * boxes["h"].clip(lower=0)))
    color = "source" if "source" in df and df["source"].nunique() > 1 else None
    fig = px.box(df, x=by, y="side", color=color, points=False)
    return _fig(fig, title, yaxis_title="sqrt(box area), px", xaxis_title=None)


def mosaic_figure(grid: np.ndarray, labels: list[str], title: str = "Sample images") -> go.Figure:
    """The mosaic image from :func:`cellkit.stats.mosaic` with its row labels on the y axis."""
    rows = len(labels)
    tile = grid.shape[0] // max(rows, 1)
    fig = px.imshow(grid)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(tickvals=[tile * (i + 0.5) for i in range(rows)], ticktext=labels, showgrid=False)
    fig.update_traces(hoverinfo="skip", hovertemplate=None)
    return _fig(fig, title, height=max(300, 60 + rows * 90))


def model_data_bar(table: pd.DataFrame, title: str = "Training data of the bundled models") -> go.Figure:
    """Counts found in the model cards (from :func:`cellkit.model_data.model_data_table`), one panel per model."""
    from cellkit.model_data import words

    shown = table.assign(
        key=table["key"].map(words), table=table["table"].map(words),
        model=table["shown"] if "shown" in table else table["model"],
    )  # fmt: skip
    fig = px.bar(shown, x="key", y="count", color="table", facet_col="model", text_auto=True,
                 labels={"key": "", "count": "images", "table": "part of the card"})  # fmt: skip
    fig.update_xaxes(matches=None, title=None)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
    return _fig(fig, title)
