"""Slide analysis: upload a smear -> boxes, counts, WBC differential, cell gallery, review, export, history."""

from __future__ import annotations

import streamlit as st

from cellkit.errors import CellkitError
from cellkit.io import IMAGE_SUFFIXES, read_image
from cellkit.slide import analyze, review_zip
from cellkit.synth import make_demo_smear
from ui import resources, widgets
from ui.adapt import adapt_ui

st.title("Slide analysis")
st.caption("Upload a blood-smear image: every cell is detected, white cells and platelets are classified.")
owner = widgets.session_owner()
store = resources.store()
state = st.session_state


def load_models():
    with resources.user_errors():
        det = resources.detector()
    try:
        return det, resources.current_classifier()
    except CellkitError as exc:
        st.warning(f"Counting only, no classification: {exc}")
        return det, None


def run(image, name: str, key, meta: dict) -> None:
    det, clf = load_models()
    with resources.user_errors(), st.spinner("Analysing…"):
        result = analyze(image, det, clf, name=name)
        aid = store.save_analysis(result, owner=owner, file_name=name, metadata=meta)
    state["slide"] = {"id": aid, "result": result, "image": image, "key": key, "clf": clf}
    images = state.setdefault("slide_images", {})  # this session's last few images, to reopen with crops
    images[result.image_sha256] = image
    for old in list(images)[:-5]:
        images.pop(old)


up_col, demo_col = st.columns([3, 1], vertical_alignment="bottom")
upload = up_col.file_uploader("Smear image", type=[s.lstrip(".") for s in IMAGE_SUFFIXES], key="slide_upload")
if demo_col.button("Try a demo smear", icon=":material/science:"):
    state["demo_seed"] = state.get("demo_seed", -1) + 1
    run(
        make_demo_smear(640, 480, seed=state["demo_seed"])[0],
        "demo_smear.png",
        ("demo", state["demo_seed"]),
        {"source": "demo"},
    )
elif upload is not None and state.get("slide_upload_done") != upload.file_id:
    try:
        image = read_image(upload.getvalue(), name=upload.name)
    except CellkitError as exc:
        st.error(f"{upload.name}: {exc}", icon=":material/error:")
    else:
        run(image, upload.name, ("upload", upload.file_id), {"source": "upload", "bytes": upload.size})
        state["slide_upload_done"] = upload.file_id  # analysed once; reopen/delete never re-runs it

slide = state.get("slide")
if slide:
    result, image, clf = slide["result"], slide["image"], slide.get("clf")
    counts = result.counts
    cols = st.columns(4)
    for col, cls in zip(cols, ("wbc", "rbc", "platelet"), strict=False):
        col.metric(cls.upper() if cls != "platelet" else "Platelets", counts[cls])
    cols[3].metric("Time (s)", f"{result.timings.get('total_s', 0):.2f}")
    if not len(result.detections):
        st.info("No cells found in this image. Is it a stained blood smear at a usual magnification?")
    tab_img, tab_diff, tab_cells, tab_export = st.tabs(["Image", "WBC differential", "Cells & review", "Export"])
    with tab_img:
        if image is None:
            st.info("Images are not stored in the database; upload this one again to see its boxes and crops.")
        else:
            st.plotly_chart(widgets.slide_figure(image, result), width="stretch")
    with tab_diff:
        diff = result.differential()
        if diff:
            tax = clf.taxonomy if clf is not None else None
            st.plotly_chart(widgets.differential_bar(diff, tax), width="stretch")
            st.dataframe([{"class": widgets.label_name(tax, k), **v} for k, v in diff.items()], hide_index=True)
            if "unknown" in diff:
                st.warning(
                    f"{diff['unknown']['count']} white cell(s) are Unidentified — review: unlike the cells the model "
                    "was taught, or not placed with confidence. Check them in *Cells & review*.",
                    icon=":material/flag:",
                )
        else:
            st.info("No classified white cells in this analysis.")
    with tab_cells:
        cells = [i for i, c in enumerate(result.detections.class_name) if c in ("wbc", "platelet")]
        if not cells or clf is None or image is None:
            st.info("No classified cells to review here.")
        else:
            widgets.cell_gallery_ui(image, result, clf, cells)
            picked = widgets.cell_review_ui(image, result, clf, cells)
            if picked:
                with resources.user_errors():
                    store.add_correction(slide["id"], picked[0], picked[1], owner=owner, note=picked[2])
                result.corrections[picked[0]] = picked[1]
                st.rerun()
    with tab_export:
        stem = (result.name or "slide").rsplit(".", 1)[0]
        st.download_button("Report CSV", result.to_frame().to_csv(index=False), f"{stem}_cells.csv", "text/csv")
        st.download_button("Report JSON", result.to_json(), f"{stem}_report.json", "application/json")
        if image is not None and clf is not None:
            reviewed = review_zip(image, result, clf.spec.crop_scale)
            st.download_button(
                "Reviewed crops (zip, one folder per label)", reviewed, f"{stem}_crops.zip", "application/zip"
            )
            with st.expander("Adapt a model to your lab from these cells", icon=":material/tune:"):
                st.caption(
                    "Uses every classified cell of this analysis under its final label (your corrections included; "
                    "cells left as Unidentified — review are not used). Review all cells first."
                )
                if st.checkbox("I have reviewed every cell of this analysis", key="slide_adapt_ok"):
                    adapt_ui("slide_adapt", labelled_zip=reviewed)

with st.expander("Past analyses (this session)", icon=":material/history:"):
    past = store.list_analyses(owner)
    if not past:
        st.caption("Nothing saved yet.")
    else:
        st.dataframe(past, hide_index=True)
        chosen = st.selectbox(
            "Analysis",
            [p["id"] for p in past],
            key="slide_past",
            format_func=lambda a: next(f"#{p['id']} {p['file_name']}" for p in past if p["id"] == a),
        )
        c1, c2 = st.columns(2)
        if c1.button("Reopen", icon=":material/folder_open:"):
            with resources.user_errors():
                again = store.load_analysis(chosen, owner=owner)
            keep = state.get("slide_images", {}).get(again.image_sha256)
            state["slide"] = {
                "id": chosen,
                "result": again,
                "image": keep,
                "key": ("db", chosen),
                "clf": load_models()[1] if again.node_ids else None,
            }
            st.rerun()
        if c2.button("Delete", icon=":material/delete:"):
            with resources.user_errors():
                store.delete_analysis(chosen, owner=owner)
            if slide and slide["id"] == chosen:
                state.pop("slide")
            st.rerun()
