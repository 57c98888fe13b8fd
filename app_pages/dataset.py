"""Dataset: counts per class / tree level / split / source, colour by source, sizes, duplicates, balancing."""

from __future__ import annotations

import os

import streamlit as st

from cellkit import (
    DEFAULT_DATASET,
    DEFAULT_TAXONOMY,
    CellkitError,
    config,
    list_specs,
    list_taxonomies,
    load_taxonomy,
    model_data_notes,
    model_data_table,
    model_split_table,
    plots,
    read_image,
    stats,
)
from ui import resources
from ui.widgets import model_display_name, plain, thumbnail


def named_nodes(table, tax):
    """The table with its ``node`` ids as a "cell type" column of display names (a folder outside the tree: blank)."""
    names = {n: tax.display(n) for n in tax.ids}  # "(not in taxonomy)" and other placeholders stay as they are
    return table.assign(**{"cell type": [names.get(n, n if isinstance(n, str) else "") for n in table["node"]]})


st.title("Dataset", anchor=False)
st.caption(
    "Any image folder: class folders, YOLO or Pascal VOC detection sets, or a folder holding several datasets. "
    "Images are indexed once (colour, perceptual hash) and cached on disk."
)

default = config.data_dir()
if default is None:
    st.info(
        "No dataset folder configured. Set `CELLKIT_DATA_DIR=/path/to/datasets` (several folders separated by "
        f"`{os.pathsep}`) before `streamlit run app.py`, or put datasets in `../shared/data`: only folders inside "
        "them can be opened here.",
        icon=":material/info:",
    )
left, mid, right = st.columns([3, 1.2, 1])
path = left.text_input(
    "Dataset folder",
    value=str(default or ""),
    placeholder="/path/to/dataset",
    help="A folder inside the data folder(s) set by CELLKIT_DATA_DIR.",
).strip()
taxonomies = list_taxonomies()
taxonomy = right.selectbox(
    "Taxonomy", taxonomies, index=taxonomies.index(DEFAULT_TAXONOMY), help="maps folder names to tree nodes"
)

if path:
    with resources.user_errors():
        path = str(config.resolve_data_path(path))  # nothing outside the data folders (no /etc, .., links out)
        found = resources.dataset_list(path)
    names = [d.name for d in found]
    pick = names.index(DEFAULT_DATASET) if DEFAULT_DATASET in names else 0
    label = lambda n: next(f"{d.name} · {d.kind} · {d.n_images} images" for d in found if d.name == n)  # noqa: E731
    name = mid.selectbox("Sub-dataset", names, index=pick, format_func=label, disabled=len(names) == 1)
    dataset = name if len(found) > 1 else None
    with resources.user_errors():
        index = resources.dataset_index(path, dataset, taxonomy)
    images, boxes, tax = index.images, index.boxes, index.taxonomy
    ok = images[images["error"].isna()]

    c = st.columns(6)
    c[0].metric("Images", len(images))
    c[1].metric("Unreadable", len(images) - len(ok))
    c[2].metric("Classes", ok["class"].nunique() if index.kind == "classification" else len(index.dataset.class_names))
    c[3].metric("Splits", ok["split"].replace("", None).nunique())
    c[4].metric("Sources", ok["source"].nunique())
    if index.dataset.is_detection:
        c[5].metric("Boxes", len(boxes))
    else:
        c[5].metric("Image sizes", len(ok[["width", "height"]].drop_duplicates()))
    n_label_errors = len(stats.label_errors_table(images))
    if len(ok) < len(images) or n_label_errors:
        st.warning(
            f"{len(images) - len(ok)} files could not be read and {n_label_errors} label files are malformed; "
            "they are listed under *Duplicates & errors*."
        )

    labelled = index.kind == "classification" and ok["node"].notna().any()
    tab_names = ["Counts", "Colour & size", "Duplicates & errors", "Mosaic"]
    tab_names[1:1] = ["Balancing"] if labelled else []
    tab_names[1:1] = ["Boxes"] if index.dataset.is_detection else []
    tabs = dict(zip(tab_names, st.tabs(tab_names), strict=True))

    with tabs["Counts"]:
        if labelled:
            a, b = st.columns(2)
            a.plotly_chart(plots.taxonomy_sunburst(stats.level_counts(images, tax), tax), width="stretch")
            title = "Images per folder class (colour: finest node)"
            b.plotly_chart(
                plots.counts_bar(named_nodes(stats.class_counts(images), tax), "class", color="cell type", title=title),
                width="stretch",
            )
            unmapped = sorted(ok.loc[ok["node"].isna(), "class"].dropna().unique())
            if unmapped:
                st.caption(
                    plain(f"Folders not in taxonomy {tax.name!r} (kept as their own label): {', '.join(unmapped)}")
                )
        by = "class" if index.kind == "classification" else "source"
        if ok["split"].replace("", None).notna().any():
            fig = plots.crosstab_bar(stats.crosstab(images, by, "split"), title=f"Images per {by} and split")
            st.plotly_chart(fig, width="stretch")
        if by != "source" and ok["source"].nunique() > 1:
            fig = plots.crosstab_bar(stats.crosstab(images, "source", "split"), title="Images per source and split")
            st.plotly_chart(fig, width="stretch")

    if "Boxes" in tabs:
        with tabs["Boxes"]:
            st.plotly_chart(plots.boxes_per_image_hist(stats.boxes_per_image(images)), width="stretch")
            if not boxes.empty:
                st.plotly_chart(plots.box_size_box(boxes), width="stretch")
                st.dataframe(stats.box_size_table(boxes), hide_index=True)

    if "Balancing" in tabs:
        with tabs["Balancing"]:
            min_count = st.number_input("Never cut a class below (images)", 0, 100_000, stats.DEFAULT_MIN_COUNT, 50)
            bal = stats.balanced_counts(images, tax, min_count=int(min_count))
            st.caption(
                "Training rule: at each level of the tree, cap every group at the smallest group's size, "
                "but never below the threshold. Images labelled only above a level are left out of it."
            )
            st.plotly_chart(plots.balance_bars(bal), width="stretch")
            st.dataframe(bal.drop(columns=["node"]), hide_index=True)  # the display name, never the id

    with tabs["Colour & size"]:
        groups = [g for g in ("class", "source", "split") if ok[g].replace("", None).nunique() > 1] or ["dataset"]
        by = st.radio("Compare by", groups, horizontal=True, index=groups.index("source") if "source" in groups else 0)
        metric = st.selectbox("Statistic", list(plots.COLOUR_LABELS), format_func=plots.COLOUR_LABELS.get)
        a, b = st.columns(2)
        a.plotly_chart(plots.colour_box(ok, by, metric), width="stretch")
        b.plotly_chart(plots.colour_scatter(ok, by), width="stretch")
        st.plotly_chart(plots.size_scatter(stats.size_counts(images)), width="stretch")
        st.dataframe(stats.colour_table(images, by, readable=True).round(3), hide_index=True)

    with tabs["Duplicates & errors"]:
        question = "Near-duplicate if perceptual hashes differ in at most (bits of 64)"
        threshold = st.slider(question, 0, 16, stats.DEFAULT_HAMMING)
        pairs = resources.dataset_duplicates(path, dataset, taxonomy, threshold)
        summary = stats.duplicate_summary(pairs)
        c = st.columns(4)
        c[0].metric("Exact pairs", summary["exact_pairs"])
        c[1].metric("Near pairs", summary["near_pairs"])
        c[2].metric("Across splits (leakage)", summary["cross_split_pairs"])
        c[3].metric("Different labels", summary["label_conflict_pairs"])
        if len(pairs):
            st.plotly_chart(plots.distance_hist(pairs), width="stretch")
            leaks = stats.leakage(pairs)
            if len(leaks):
                st.dataframe(leaks.rename(columns={"splits": "Splits", "exact": "Exact copies", "near": "Near"}),
                             hide_index=True)  # fmt: skip
            st.dataframe(stats.duplicates_table(pairs, tax), hide_index=True)
            with st.expander("Look at the closest pairs"):
                paths = images.set_index("file")["path"]
                for row in pairs.head(8).itertuples():
                    a, b = st.columns(2)
                    for col, file, caption in (
                        (a, row.file_a, f"{row.file_a} ({row.split_a or 'no split'})"),
                        (b, row.file_b, f"{row.file_b} · distance {row.distance}"),
                    ):
                        try:  # decoded by cellkit (16-bit, CMYK...), not handed to st.image as a path
                            col.image(thumbnail(read_image(paths[file])), caption=plain(caption), width=220)
                        except CellkitError as exc:
                            col.caption(plain(f"{caption}: {exc}"))
        else:
            st.success("No duplicate pairs at this threshold.")
        for title, table in (
            ("Unreadable files", stats.errors_table(images)),
            ("Label errors", stats.label_errors_table(images)),
        ):
            if len(table):
                st.subheader(title, anchor=False)
                st.dataframe(table.rename(columns={"file": "File", "error": "Why", "label_error": "Why"}),
                             hide_index=True)  # fmt: skip

    with tabs["Mosaic"]:
        a, b = st.columns(2)
        per = a.slider("Images per row", 4, 16, 8)
        seed = b.number_input("Sample seed", 0, 10_000, 0)
        with resources.user_errors():
            grid, labels = resources.dataset_mosaic(path, dataset, taxonomy, per, int(seed))
        st.plotly_chart(plots.mosaic_figure(grid, labels), width="stretch")

st.divider()
st.subheader("Bundled models' training data", anchor=False)
specs = list_specs()
table = model_data_table(specs)
if not specs:
    st.info(
        "No bundled models in `weights/` yet: train one with `cellkit train classifier` / `cellkit train detector`."
    )
elif table.empty:
    st.info("The bundled model cards carry no data counts (card['data'] / card['split']).")
else:
    st.plotly_chart(plots.model_data_bar(table), width="stretch")
for spec in specs:
    notes, split = model_data_notes(spec), model_split_table(spec)
    shown = plain(model_display_name(spec.name))
    if split is not None and len(split):
        spec_tax = load_taxonomy(spec.taxonomy or DEFAULT_TAXONOMY)
        names = {n: spec_tax.display(n) for n in spec_tax.ids}
        named = split.assign(node=split["node"].replace(names)).rename(columns={"node": "cell type"})
        fig = plots.crosstab_bar(
            stats.crosstab(named, "cell type", "split"),
            title=f"{model_display_name(spec.name)}: images per cell type and split",  # a chart title: no Markdown
        )
        st.plotly_chart(fig, width="stretch", key=f"split-{spec.name}")
        train = split[split["split"] == "train"]
        bal = stats.balanced_counts(train, spec_tax, stats.DEFAULT_MIN_COUNT)
        st.caption(f"{shown}: per-level balanced counts of its train split (min {stats.DEFAULT_MIN_COUNT})")
        st.dataframe(bal.drop(columns=["node"]), hide_index=True)
    if notes:
        with st.expander(f"{shown}: data"):
            st.markdown("\n".join(f"- **{plain(k)}**: {plain(v)}" for k, v in notes.items()))
