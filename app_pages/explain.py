"""Explain: why does the model give this crop this probability, at any node of the tree?"""

from __future__ import annotations

import hashlib

import streamlit as st

from cellkit import (
    COLORMAPS,
    DEFAULT_DATASET,
    IMAGE_SUFFIXES,
    METHOD_NAMES,
    CellkitError,
    config,
    get_explainer,
    maps_zip,
    overlay,
    printable,
    read_image,
    sanity_check,
)
from ui import resources, widgets

st.title("Explain")
st.caption(
    "Where does the model look when it calls a cell a monocyte — or an immature granulocyte? "
    "Pick a crop, a node of the tree and one or more methods."
)
state = st.session_state

with resources.user_errors():
    clf = resources.current_classifier()
tax = clf.taxonomy

sources = ["Upload a crop", "Image of a dataset folder"]
if state.get("explain_crop") is not None:
    sources.insert(0, "Cell from the slide analysis")
source = st.radio("Crop", sources, horizontal=True, key="explain_source")
crop = None
if source == "Cell from the slide analysis":
    crop = state["explain_crop"]
    field_model = state.get("explain_model")
    if field_model and field_model != clf.spec.name:  # explain the call the slide shows, with the model that made it
        with resources.user_errors():
            clf = resources.classifier(field_model)
        tax = clf.taxonomy
        st.info(f"Explained with {widgets.plain(widgets.model_display_name(field_model))}, the model that analysed "
                "this cell's field (not the one chosen in the sidebar).", icon=":material/info:")  # fmt: skip
    if state.get("explain_label"):
        st.caption(f"Label on the slide: {widgets.plain(state['explain_label'])}")
elif source == "Upload a crop":
    opened = widgets.uploader_is_new("explain_upload")
    upload = st.file_uploader(
        "Single-cell crop",
        type=[s.lstrip(".") for s in IMAGE_SUFFIXES],
        key="explain_upload",
        max_upload_size=widgets.upload_limit_mb(),
    )
    upload = (widgets.kept_uploads(widgets.refuse_oversized([upload]), "explain_kept", opened) or [None])[0]
    if upload is not None:
        with resources.user_errors():
            crop = read_image(upload.getvalue(), name=upload.name)
else:
    default = config.data_dir()
    typed = st.text_input(
        "Folder with one sub-folder per class",
        str(default / DEFAULT_DATASET) if default else "",
        key="explain_folder",
        help="Only folders inside the data folder(s) set by CELLKIT_DATA_DIR can be opened.",
    )
    with resources.user_errors():
        root = config.resolve_data_path(typed)  # refuses anything outside the data folders (links, ..)
    try:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    except OSError:
        classes = []
    if not classes:
        st.error(widgets.plain(f"No class sub-folders in {typed}; give a folder like {default or 'data'}/pbc."))
        st.stop()
    cls = st.selectbox("Class folder", classes, format_func=printable)  # names need not be UTF-8
    with resources.user_errors():
        folder = config.resolve_data_path(root / cls)  # a class folder may be a link out of the data folders
        try:
            files = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:500]
        except OSError as exc:
            raise CellkitError(f"cannot list the folder {cls}: {exc.strerror or exc}") from None
    name = st.selectbox("Image", files, format_func=printable)
    if name:
        with resources.user_errors():
            crop = read_image(config.resolve_data_path(folder / name))
if crop is None:
    st.info("Upload a crop of one white cell (any framing: the model finds the cell and frames it itself).")
    st.stop()

pred = clf.predict([crop])[0]
ids = list(tax.ids)
left, right = st.columns([2, 1])
node = left.selectbox(
    "Node to explain",
    ids,
    index=ids.index(pred.label if pred.label in ids else tax.deepest_confident(pred.node_probs, clf.spec.threshold)),
    format_func=lambda i: f"{'· ' * (tax.depth(i) - 1)}{tax.display(i)} — p={pred.prob(i):.2f}",
    help="Any node of the tree: an inner node is explained through the sum of its leaves' probabilities.",
)
methods = left.multiselect(
    "Methods", list(METHOD_NAMES), default=["gradcam", "ig"], format_func=METHOD_NAMES.get, key="explain_methods"
)
c1, c2 = left.columns(2)
alpha = c1.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05)
cmap = c2.selectbox("Colour map", COLORMAPS)
right.plotly_chart(widgets.probability_sunburst(tax, pred.node_probs), key="explain_tree")
model_name = clf.spec.card.get("display_name") or clf.spec.name  # an adapted model's name is the user's own
if pred.review:  # a flagged cell has no confidence of its own: the probability belongs to its best guess
    verdict = f"**{tax.display(pred.label)}**, best guess {tax.display(pred.leaf)} (p = {pred.prob(pred.leaf):.2f})"
else:
    verdict = f"**{tax.display(pred.label)}** ({pred.confidence:.2f}), best leaf {tax.display(pred.leaf)}"
right.caption(f"Model {widgets.plain(model_name)}: {verdict}")
if pred.review:
    right.warning(
        f"{tax.display(pred.label)}: {pred.review}. Maps of such a cell explain a guess.", icon=":material/flag:"
    )
if pred.note:
    right.info(pred.note, icon=":material/crop:")
if pred.prob(node) < widgets.LOW_NODE_P:
    st.warning(
        f"The model gives this cell only p = {pred.prob(node):.2f} for {tax.display(node)}. The maps below show what "
        f"would make it look more like {tax.display(node)}, not why it is one; each map is stretched to its own "
        "range, so a faint signal looks as strong as a real one.",
        icon=":material/warning:",
    )

heatmaps = []
with st.spinner("Computing explanations…"), resources.user_errors():
    for m in methods:
        heatmaps.append(resources.explanation(crop, node, m, clf.spec.name))
    ref = resources.explanation_reference(crop, node, clf.spec.name) if methods else {}

PER_ROW = 4  # crop + 3 maps per row keeps the maps big enough to read
cols = [c for start in range(0, 1 + len(heatmaps), PER_ROW) for c in st.columns(PER_ROW)]
cols[0].image(clf.prep.canonical(crop, 256), caption="Crop (as the model sees it)", width="stretch")
sanity = state.setdefault("explain_sanity", {})
crop_id = hashlib.sha1(crop.tobytes()).hexdigest()
for col, hm in zip(cols[1:], heatmaps, strict=False):
    col.image(
        overlay(crop, hm.values, alpha, cmap, size=256, prep=clf.prep),
        caption=METHOD_NAMES[hm.method],
        width="stretch",
    )
    s = hm.scores
    col.caption(f"{widgets.faithfulness_words(s, ref)} · {s['seconds']:.2f} s")
    check = sanity.get((crop_id, clf.spec.name, node, hm.method))
    if check:
        verdict = "passed: the map changes with the weights" if check["passed"] else "FAILED: same map without weights"
        verdict = "inconclusive: the map is blank" if check.get("blank") else verdict
        col.caption(f"Sanity check {verdict} (Spearman {check['spearman']:.2f}, SSIM {check['ssim']:.2f})")

if heatmaps:
    b1, b2 = st.columns(2)
    if b1.button(
        "Sanity check (randomised model)", icon=":material/shuffle:", help="Explain again with random weights"
    ):
        with st.spinner("Explaining with a randomised copy of the model…"), resources.user_errors():
            for hm in heatmaps:
                sanity[(crop_id, clf.spec.name, node, hm.method)] = sanity_check(
                    clf, crop, node, get_explainer(hm.method)
                )
        st.rerun()
    b2.download_button(
        "Download maps (PNG + .npy, zip)",
        maps_zip(crop, heatmaps, alpha, cmap, clf.prep),
        file_name=f"explain_{node}.zip",
        mime="application/zip",
        icon=":material/download:",
    )
    st.caption(
        "Maps show evidence *for* the node (1 = strongest). Deletion AUC ↓: blurring the top-ranked pixels "
        "first should make the node's probability fall faster than a random order (lower is better). "
        "Insertion AUC ↑: restoring them first should make it rise faster (higher is better). "
        "The sanity check explains again with random weights: a trustworthy map must change."
    )
