"""Slide analysis: upload a smear -> boxes, counts, WBC differential, cell gallery, review, export, history."""

from __future__ import annotations

import dataclasses

import streamlit as st

from cellkit import (
    IMAGE_SUFFIXES,
    CellkitError,
    analyze,
    config,
    heavy_job,
    make_demo_smear,
    read_image,
    red_cell_findings,
    review_zip,
    scale_warning,
)
from ui import resources, widgets
from ui.adapt import adapt_ui
from ui.batch import batch_jobs_ui

st.title("Slide analysis")
st.caption("Upload a blood-smear image: every cell is detected, white cells, platelets and red cells are classified.")
owner = widgets.session_owner()
state = st.session_state


def load_models():
    """The detector, the white-cell model and {detector class: model} for the other classes (red cells)."""
    with resources.user_errors():
        det = resources.detector()
    try:
        clf = resources.current_classifier()
    except CellkitError as exc:
        st.warning(widgets.plain(f"Counting only, no classification: {exc}"))
        return det, None, {}
    try:
        red = resources.red_cell_classifier()
    except CellkitError as exc:
        st.warning(widgets.plain(f"Red cells are counted, not classified: {exc}"))
        red = None
    return det, clf, ({"rbc": red} if red is not None else {})


def save(slide: dict) -> None:
    """Save the analysis (when not yet saved) and the corrections made while the database was unreachable.

    A CellkitError of the store (database busy, read-only or gone) is kept in ``slide["db_error"]`` and shown
    once at the top of the page with a "Retry save" button; the analysis itself stays in this session.
    """
    try:
        db = resources.store()
        if slide["id"] is None:  # pending corrections are added below, with their notes
            bare = dataclasses.replace(slide["result"], corrections={})
            slide["id"] = db.save_analysis(bare, owner=owner, file_name=slide["name"], metadata=slide["meta"])
        pending = slide.setdefault("pending", [])
        while pending:
            index, label, note = pending[0]
            db.add_correction(slide["id"], index, label, owner=owner, note=note)
            pending.pop(0)
        slide["db_error"] = None
    except CellkitError as exc:
        slide["db_error"] = str(exc)


def run(image, name: str, key, meta: dict) -> None:
    det, clf, by_class = load_models()
    with resources.user_errors(), heavy_job(waiting=st.spinner), st.spinner("Analysing…"):
        result = analyze(image, det, clf, name=name, by_class=by_class)
    slide = {"id": None, "result": result, "image": image, "key": key, "clf": clf, "name": name, "meta": meta}
    slide.update(pending=[], db_error=None)
    state["slide"] = slide  # kept whatever happens to the save
    save(slide)
    images = state.setdefault("slide_images", {})  # this session's last images, to reopen with crops
    images.pop(result.image_sha256, None)
    images[result.image_sha256] = image
    widgets.keep_images(images, config.max_request_pixels())  # bounded per session, in pixels


up_col, demo_col = st.columns([3, 1], vertical_alignment="bottom")
upload = up_col.file_uploader(
    "Smear image",
    type=[s.lstrip(".") for s in IMAGE_SUFFIXES],
    key="slide_upload",
    max_upload_size=widgets.upload_limit_mb(),
)
upload = next(iter(widgets.refuse_oversized([upload])), None)  # checked here too: the browser's check can be skipped
if demo_col.button("Try a demo smear", icon=":material/science:"):
    state["demo_seed"] = state.get("demo_seed", -1) + 1
    run(
        make_demo_smear(640, 480, seed=state["demo_seed"])[0],
        "demo_smear.png",
        ("demo", state["demo_seed"]),
        {"source": "demo"},
    )
elif upload is not None and state.get("slide_upload_done") != upload.file_id:
    with resources.user_errors(), heavy_job(waiting=st.spinner):  # decode + analysis hold one server slot
        try:
            image = read_image(upload.getvalue(), name=upload.name)
        except CellkitError as exc:
            message = str(exc) if upload.name in str(exc) else f"{upload.name}: {exc}"
            st.error(widgets.plain(message), icon=":material/error:")
        else:
            run(image, upload.name, ("upload", upload.file_id), {"source": "upload", "bytes": upload.size})
            state["slide_upload_done"] = upload.file_id  # analysed once; reopen/delete never re-runs it

slide = state.get("slide")
if slide and slide.get("db_error"):
    err_col, retry_col = st.columns([4, 1], vertical_alignment="center")
    err_col.error(
        widgets.plain(f"Not saved to the database: {slide['db_error']}")
        + "  \nThe analysis is kept in this browser session: retry, or download it under *Export*.",
        icon=":material/database:",
    )
    if retry_col.button("Retry save", icon=":material/refresh:", key="slide_retry_save"):
        save(slide)
        st.rerun()
if slide:
    result, image, clf = slide["result"], slide["image"], slide.get("clf")
    if (slide.get("meta") or {}).get("source") == "demo":
        st.info(
            "A drawn smear, not a real one: it shows the detector, the counts and the review workflow. "
            "The classifier learned from real stained cells, so its white-cell labels for drawn cells mean "
            "nothing; upload a real smear to judge them.",
            icon=":material/draw:",
        )
    counts = result.counts
    cols = st.columns(4)
    for col, cls in zip(cols, ("wbc", "rbc", "platelet"), strict=False):
        col.metric(cls.upper() if cls != "platelet" else "Platelets", counts[cls])
    cols[3].metric("Time (s)", f"{result.timings.get('total_s', 0):.2f}")
    if not len(result.detections):
        st.info("No cells found in this image. Is it a stained blood smear at a usual magnification?")
    tabs = st.tabs(["Image", "WBC differential", "Red cells", "Cells & review", "Export"])
    tab_img, tab_diff, tab_red, tab_cells, tab_export = tabs
    with tab_img:
        if image is None:
            note = slide.get("image_note") or "Images are not stored in the database"
            st.info(widgets.plain(f"{note}; upload this image again to see its boxes and crops."))
        else:
            tax = clf.taxonomy if clf is not None else None
            st.plotly_chart(widgets.slide_figure(image, result, taxonomy=tax), width="stretch")
    with tab_diff:
        diff = result.differential()
        if diff:
            tax = clf.taxonomy if clf is not None else None
            st.plotly_chart(widgets.differential_bar(diff, tax), width="stretch")
            st.dataframe(
                [
                    {"White cell": result.display_name(k), "Count": v["count"], "%": v["percent"]}
                    for k, v in diff.items()
                ],
                hide_index=True,
            )
            nrbc = result.nrbc()
            n_white = sum(v["count"] for v in diff.values())
            st.caption(
                f"{n_white} white cell(s), in the usual reporting order. "
                + (f"**NRBC: {nrbc['count']}** ({nrbc['per_100_wbc']:g} per 100 WBC), not counted among the white "
                   "cells. " if nrbc.get("count") else "No nucleated red cells. ")
                + f"Platelets: {result.counts['platelet']}, counted by the detector and never relabelled."
            )  # fmt: skip
            rejected = result.rejected()
            if rejected:
                st.caption(
                    "Rejected in review, not counted: "
                    + ", ".join(f"{result.display_name(k).split(': ', 1)[1]} {n}" for k, n in rejected.items())
                )
            if "unknown" in diff:
                st.warning(
                    f"{diff['unknown']['count']} white cell(s) are Unidentified — review: unlike the cells the model "
                    "was taught, or not placed with confidence. Check them in *Cells & review*.",
                    icon=":material/flag:",
                )
        else:
            st.info("No classified white cells in this analysis.")
    with tab_red:
        red = result.composition("rbc")
        if red:
            red_clf = resources.red_cell_classifier()
            unreliable = scale_warning(result, red_clf.spec) if red_clf is not None else ""
            if unreliable:
                st.warning(unreliable, icon=":material/warning:")
            findings = red_cell_findings(red, withheld=unreliable)
            st.dataframe(
                [
                    {
                        "Form": result.display_name(f.form),
                        "Count": f.count,
                        "%": f.percent,
                        "Finding": f.finding
                        + (" (provisional: under 1,000 red cells)" if f.provisional and f.finding else ""),
                    }
                    for f in findings
                ],
                hide_index=True,
            )
            n_red = sum(f.count for f in findings)
            st.caption(
                f"Red-cell morphology of {n_red} red cells by the red-cell model (trained on one lab's smears at "
                "1000x; size forms are judged against this image's median red cell). *Uncategorised* includes the "
                "red cells the model flagged for review. Schistocytes are compared with the ICSH 2021 limit (more "
                "than 1 % is suspicious for thrombotic microangiopathy, counted over at least 1,000 red cells). "
                "The other forms are counted, not graded: the ICSH 2015 grade thresholds could not be verified here."
            )
            red_cells = [i for i, c in enumerate(result.detections.class_name) if c == "rbc"]
            if image is not None and red_clf is not None and red_cells:
                st.markdown("#### Red cells by form")
                widgets.cell_gallery_ui(image, result, red_clf, red_cells, per_group=12)
                picked = widgets.cell_review_ui(image, result, red_clf, red_cells, key="rbc")
                if picked:  # a red-cell correction is kept and saved like a white-cell one
                    result.corrections[picked[0]] = picked[1]
                    slide.setdefault("pending", []).append(picked)
                    save(slide)
                    st.rerun()
        else:
            st.info("No red-cell morphology in this analysis (no red-cell model, or no red cells).")
    with tab_cells:
        cells = [i for i, c in enumerate(result.detections.class_name) if c in ("wbc", "platelet")]
        if not cells or clf is None or image is None:
            st.info("No classified cells to review here.")
        else:
            widgets.cell_gallery_ui(image, result, clf, cells)
            picked = widgets.cell_review_ui(image, result, clf, cells)
            if picked:  # applied here at once; saved now, or with "Retry save" when the database is unreachable
                result.corrections[picked[0]] = picked[1]
                slide.setdefault("pending", []).append(picked)
                save(slide)
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


def show_db_error(exc: CellkitError) -> None:
    """One st.error per database failure (a caption when the save error above already says it)."""
    if slide and slide.get("db_error"):
        st.caption("Past analyses are not available while the database cannot be reached (see above).")
    else:
        st.error(widgets.plain(exc), icon=":material/database:")


def reopen(analysis_id: int, result, image, image_note: str = "") -> None:
    """Show a stored analysis on this page (with its image when there is one; else ``image_note`` says why)."""
    state["slide"] = {
        "id": analysis_id,
        "result": result,
        "image": image,
        "key": ("db", analysis_id),
        "clf": load_models()[1] if result.node_ids else None,
        "name": result.name,
        "meta": {},
        "pending": [],
        "db_error": None,
        "image_note": image_note,
    }
    st.rerun()


def open_batch_smear(analysis_id: int, job_owner: str, image, image_note: str) -> None:
    try:
        again = resources.store().load_analysis(analysis_id, owner=job_owner)
    except CellkitError as exc:
        show_db_error(exc)
    else:
        reopen(analysis_id, again, image, image_note)


with st.expander("Your past analyses", icon=":material/history:"):
    try:
        store = resources.store()
        past = store.list_analyses(owner)
    except CellkitError as exc:
        show_db_error(exc)
        past = None
    if past is None:
        pass
    elif not past:
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
            try:
                again = store.load_analysis(chosen, owner=owner)
            except CellkitError as exc:
                show_db_error(exc)
            else:
                reopen(chosen, again, state.get("slide_images", {}).get(again.image_sha256))
        if c2.button("Delete", icon=":material/delete:"):
            try:
                store.delete_analysis(chosen, owner=owner)
            except CellkitError as exc:
                show_db_error(exc)
            else:
                if slide and slide["id"] == chosen:
                    state.pop("slide")
                st.rerun()

with st.expander("Batch jobs", icon=":material/dataset:"):
    try:
        batch_jobs_ui(resources.store(), open_batch_smear)
    except CellkitError as exc:
        show_db_error(exc)
