"""Slide analysis: a case of one or more fields -> boxes, counts, differential, fast review, sign-off, report."""

from __future__ import annotations

import contextlib
import dataclasses
import time

import streamlit as st

from cellkit import (
    IMAGE_SUFFIXES,
    CellkitError,
    StoreError,
    add_cell,
    analyze,
    case_display,
    case_summary,
    check_field,
    config,
    count,
    field_scale_warning,
    heavy_job,
    image_sha256,
    make_demo_smear,
    read_image,
    red_cell_findings,
    review_zip,
    scale_warning,
    undo_point,
    undo_step,
    verb,
)
from ui import case as case_ui
from ui import resources, review, widgets
from ui.adapt import adapt_ui
from ui.batch import batch_jobs_ui

started = time.perf_counter()  # this run's server work, kept for bench/review_bench.py
st.title("Slide analysis")
st.caption("A case gathers the fields of one smear: upload one or more images, review the cells, sign the report.")
owner = widgets.session_owner()
state = st.session_state
db_problem: list[str] = []  # a database failure of this run, shown once


def case_store():
    """The store, or None (the failure kept in ``db_problem``) when the database cannot be used."""
    try:
        return resources.store()
    except CellkitError as exc:
        db_problem.append(str(exc))
        return None


def loaded(get):
    """``get()`` (a cached model loader), or None when the model cannot load: the page says so where it loads the
    models to analyse (:func:`load_models`); views of finished analyses go on without it."""
    try:
        return get()
    except CellkitError:
        return None


def addable(clf) -> dict:
    """{detector class: model} of the cell types a reviewer can add ("Add a missed cell"): white cells and
    platelets with the white-cell model, red cells only when a red-cell model is installed and loads."""
    red = loaded(resources.red_cell_classifier)
    return {k: m for k, m in {"wbc": clf, "platelet": clf, "rbc": red}.items() if m is not None}


def field_classifier(result):
    """The white-cell model that analysed this field (by the name in its results), so that review, "Add a missed
    cell" and "Explain this cell" never mix in another model picked in the sidebar since; the current model, with a
    warning, when that one is not installed here."""
    if not result.node_ids:
        return None
    name = result.models.get("classifier", {}).get("name")
    if name:
        try:
            return resources.classifier(name)
        except CellkitError as exc:
            shown = result.models["classifier"].get("display") or name
            st.warning(widgets.plain(f"This field was analysed with {shown}, which cannot be loaded here ({exc}); "
                                     "cells added or explained use the model chosen in the sidebar."))  # fmt: skip
    return load_models()[1]


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


DEMO_SPECIMEN = "a drawn demo smear, not a patient"  # the demo case's specimen: drawn cells never join a real case


def _field_of(slide: dict) -> tuple:
    """Who an undo step belongs to: the field's session key, its database id (None until it is saved) and image."""
    return slide["key"], slide["id"], slide["result"].image_sha256


def _is_field(entry: tuple, slide: dict) -> bool:
    """Whether undo step ``entry`` is of this field: the same image, and the same session copy or the same stored
    analysis (reopened from the field picker it has another session key). SQLite gives a deleted analysis's id to
    the next one: the image keeps a step of the deleted one off a new image."""
    key, aid, sha = entry[:3]
    return sha == slide["result"].image_sha256 and (key == slide["key"] or (aid is not None and aid == slide["id"]))


def forget_field(analysis_id: int) -> None:
    """Drop the undo steps and unsaved review steps of a deleted analysis: its id goes to the next analysis saved
    (the same image again)."""
    steps = state.get("slide_undo", [])
    steps[:] = [step for step in steps if step[1] != analysis_id]
    state.get("slide_unsaved", {}).pop(analysis_id, None)


def unsaved_field(analysis_id: int, sha256: str) -> dict | None:
    """This session's copy of a stored field whose review steps wait for the database (it was busy or gone), when
    it is of this image: opened again instead of the database's copy, which lacks them."""
    kept = state.get("slide_unsaved", {}).get(analysis_id)
    return kept if kept is not None and kept["result"].image_sha256 == sha256 else None


def unsaved_steps(slide: dict) -> int:
    """How many review steps (corrections, added cells) of a field wait for the database."""
    return len(slide.get("pending") or []) + len(slide.get("pending_adds") or [])


def take_back(slide: dict, index: int, message: str) -> None:
    """Undo on the page a label the store refused for good: the page never shows a label the database lacks."""
    steps = state.get("slide_undo", [])
    mine = [k for k, entry in enumerate(steps) if _is_field(entry, slide) and entry[3] == index]
    if mine:
        *_, before = steps.pop(mine[-1])
        with contextlib.suppress(CellkitError):
            undo_step(slide["result"], index, before)
    state.setdefault("slide_upload_errors", []).append(message)


def save(slide: dict) -> None:
    """Save the analysis (when not yet saved) and the corrections made while the database was unreachable.

    A CellkitError of the store (database busy, read-only or gone) is kept in ``slide["db_error"]`` and shown
    once at the top of the page with a "Retry save" button; the analysis itself stays in this session.
    """
    try:
        db = resources.store()
        if slide["id"] is None:  # pending corrections are added below, with their notes
            if slide.get("case_id") is None and state.get("case_id") is not None and not slide.get("no_case"):
                slide["case_id"] = state["case_id"]
            bare = dataclasses.replace(slide["result"], corrections={})
            slide["id"] = db.save_analysis(bare, owner=owner, file_name=slide["name"], metadata=slide["meta"],
                                           case_id=slide.get("case_id"))  # fmt: skip
            state.pop("case_fields", None)  # the case has a new field: read again
            steps = state.setdefault("slide_undo", [])  # its steps now carry its id (in place: callers hold it)
            steps[:] = [(k, slide["id"] if k == slide["key"] and a is None else a, *rest) for k, a, *rest in steps]
        if slide["image"] is not None and not slide.get("image_kept"):
            try:
                slide["image_kept"] = db.save_image(slide["image"], slide["result"].image_sha256)
            except CellkitError as exc:  # the analysis is saved; only reopening it with crops needs the image
                slide["image_kept"] = None  # said below the uploader, once, after any rerun of the page
                state.setdefault("slide_image_warnings", []).append(f"The image is not kept for reopening: {exc}")
        adds = slide.setdefault("pending_adds", [])  # before the corrections: one may be of an added cell
        while adds:
            try:
                db.add_cell(slide["id"], slide["result"], adds[0], owner)
            except StoreError as exc:
                if exc.retryable:
                    raise  # busy or gone: kept for "Retry save"
                state.setdefault("slide_upload_errors", []).append(f"The added cell was not saved: {exc}")
            except CellkitError as exc:  # refused (the case was signed meanwhile...): said once, never retried
                state.setdefault("slide_upload_errors", []).append(f"The added cell was not saved: {exc}")
            adds.pop(0)
        pending = slide.setdefault("pending", [])
        while pending:
            index, label, note = pending[0]
            try:
                db.add_correction(slide["id"], index, label, owner=owner, note=note, author=widgets.review_author())
            except StoreError as exc:
                if exc.retryable:
                    raise  # busy or gone: kept for "Retry save"
                take_back(slide, index, f"The label of cell #{index} was not saved and is taken back: {exc}")
            except CellkitError as exc:  # refused (the case was signed meanwhile...): said once, never retried
                take_back(slide, index, f"The label of cell #{index} was not saved and is taken back: {exc}")
            pending.pop(0)
        slide["db_error"] = None
    except CellkitError as exc:
        slide["db_error"] = str(exc)
    waiting = state.setdefault("slide_unsaved", {})  # kept whichever field is on screen, until saved
    new = ("new", slide["key"])  # an analysis the database never got: kept too, when a new upload replaces it
    if slide["id"] is None and slide.get("db_error"):
        waiting[new] = slide
    else:
        waiting.pop(new, None)
    if slide["id"] is not None and unsaved_steps(slide):
        waiting[slide["id"]] = slide
    elif slide["id"] is not None and waiting.get(slide["id"]) is slide:
        del waiting[slide["id"]]


def demo_case() -> bool:
    """Whether the current case is a demo case (of drawn smears)."""
    cid = state.get("case_id")
    if cid is not None and cid in state.get("demo_cases", set()):
        return True
    return bool(case) and case["id"] == cid and (case.get("details") or {}).get("specimen") == DEMO_SPECIMEN


def run(image, name: str, key, meta: dict) -> None:
    det, clf, by_class = load_models()
    with resources.user_errors(), heavy_job(waiting=st.spinner), st.spinner(f"Analysing {name}…"):
        result = analyze(image, det, clf, name=name, by_class=by_class)
    demo = meta.get("source") == "demo"
    wrong_case = state.get("case_id") is not None and demo != demo_case()  # drawn into a patient's, or the reverse
    if (state.get("case_id") is None or wrong_case) and (db := case_store()) is not None:
        try:  # a first field starts a case; a drawn smear never joins a patient's case, nor a real one a demo's
            if state.get("case_id") is not None:
                case_ui.new_uploader()  # the other case's files stay listed there
            if demo:
                case_name = f"Demo {time.strftime('%Y-%m-%d %H:%M')}"
                state.setdefault("demo_cases", set()).add(
                    case_ui.new_case(db, owner, case_name, details={"specimen": DEMO_SPECIMEN})
                )
            else:
                case_ui.new_case(db, owner)
        except CellkitError as exc:
            db_problem.append(str(exc))
    no_case = wrong_case and demo != demo_case()  # no case of its own could be started: never the other one
    slide = {"id": None, "result": result, "image": image, "key": key, "clf": clf, "name": name, "meta": meta,
             "case_id": None if no_case else state.get("case_id")}  # fmt: skip
    slide.update(pending=[], db_error=None, no_case=no_case, standalone=no_case)
    state["slide"] = slide  # kept whatever happens to the save
    save(slide)
    images = state.setdefault("slide_images", {})  # this session's last images, to reopen with crops
    images.pop(result.image_sha256, None)
    images[result.image_sha256] = image
    widgets.keep_images(images, config.max_request_pixels())  # bounded per session, in pixels


db = case_store()
case = None
if "case_switch" in state:  # a past analysis reopened within its case
    if state["case_switch"] != state.get("case_id"):
        case_ui.new_uploader()
    state["case_id"] = state["case_pick"] = state.pop("case_switch")
    state.pop("case_fields", None)
if db is not None:
    try:
        case = case_ui.case_picker_ui(db, owner)
    except CellkitError as exc:
        db_problem.append(str(exc))
locked = bool(case and case["status"] == "signed")


def already_a_field(image) -> bool:
    """Whether the current case has this image as a field already (then it is not analysed again): the same
    file uploaded twice, or a rerun that interrupted the page after a field was saved."""
    if db is None or state.get("case_id") is None:
        return False
    try:
        return db.find_field(state["case_id"], owner, image_sha256(image)) is not None
    except CellkitError:
        return False


if case is not None and not locked and state.get("case_continued") == case["id"]:
    st.info(  # another patient's smear uploaded now would join this case: never without a word
        f"Continuing case **{widgets.plain(case['name'])}** from an earlier session "
        f"({count(case.get('fields') or 0, 'field')}): uploads are added to it. For another specimen, start a "
        "**New case**.",
        icon=":material/history:",
    )
up_col, demo_col = st.columns([3, 1], vertical_alignment="bottom")
uploads = up_col.file_uploader(
    "Smear images: one or more fields of this case",
    type=[s.lstrip(".") for s in IMAGE_SUFFIXES],
    key=case_ui.upload_key(),
    accept_multiple_files=True,
    max_upload_size=widgets.upload_limit_mb(),
    disabled=locked,
    help="Signed cases are locked: amend the case to add fields." if locked else None,
)
uploads = widgets.refuse_oversized(uploads or [])  # checked here too: the browser's check can be skipped
done = state.setdefault("slide_upload_done", set())
if demo_col.button("Try a demo smear", icon=":material/science:", disabled=locked, key="slide_demo"):
    state["demo_seed"] = state.get("demo_seed", -1) + 1
    run(
        make_demo_smear(640, 480, seed=state["demo_seed"])[0],
        "demo_smear.png",
        ("demo", state["demo_seed"]),
        {"source": "demo"},
    )
else:
    for upload in [u for u in uploads if u.file_id not in done]:
        with resources.user_errors(), heavy_job(waiting=st.spinner):  # decode + analysis hold one server slot
            try:
                image = read_image(upload.getvalue(), name=upload.name)
                check_field(image)  # one message for this file; the other uploads still run
            except CellkitError as exc:
                message = str(exc) if upload.name in str(exc) else f"{upload.name}: {exc}"
                state.setdefault("slide_upload_errors", []).append(message)
            else:
                if already_a_field(image):  # the same pixels: one field, said so (a new case re-analyses it)
                    state.setdefault("slide_upload_notes", []).append(
                        f"{upload.name}: this image is already a field of this case (the same pixels), so it was "
                        "not analysed again. To analyse it with another model, start a new case."
                    )
                else:
                    run(image, upload.name, ("upload", upload.file_id), {"source": "upload", "bytes": upload.size})
        done.add(upload.file_id)  # analysed once; reopen/delete never re-runs it
if state.get("case_id") is not None and state["case_id"] != (case or {}).get("id") and not db_problem:
    state["case_switch"] = state["case_id"]  # applied before the picker is drawn
    st.rerun()  # the uploads or the demo started a case: draw the page with it
for message in state.pop("slide_upload_errors", []):
    st.error(widgets.plain(message), icon=":material/error:")
for message in state.pop("slide_upload_notes", []):
    st.info(widgets.plain(message), icon=":material/content_copy:")
for message in state.pop("slide_image_warnings", []):
    st.warning(widgets.plain(message), icon=":material/image:")
if db is not None and state.get("case_id") is not None:
    try:
        case = db.case(state["case_id"], owner)  # again: the uploads above may have started it or added fields
        results = case_ui.case_results(db, owner, case)
    except CellkitError as exc:
        db_problem.append(str(exc))
        case, results = None, {}
else:
    results = {}
locked = bool(case and case["status"] == "signed")

slide = state.get("slide")
for aid in results:  # the page's copies, with this session's review applied (some of it not saved yet)
    copy = slide if slide and slide["id"] == aid else unsaved_field(aid, results[aid].image_sha256)
    if copy is not None:
        results[aid] = copy["result"]
if case and results:
    red_spec = getattr(loaded(resources.red_cell_classifier), "spec", None)  # withholds forms at the wrong scale
    det_spec = getattr(loaded(resources.detector), "spec", None)  # names the fields unreliable at their scale
    summary = case_summary(case["name"], list(results.values()), case["target_wbc"], case.get("details"), red_spec,
                           det_spec)  # fmt: skip
    case_ui.progress_ui(case, summary)
    ids = list(results)
    current = slide["id"] if slide and slide["id"] in results else None
    if current is None and (slide is None or (slide.get("case_id") != case["id"] and not slide.get("standalone"))):
        current = ids[-1]  # a case opened: its newest field
    if current is not None:
        key = f"case_field_{case['id']}"
        shown = state.get(f"{key}_shown")  # the field the picker showed last time
        if state.get(key) not in ids or (state[key] == shown and current != shown):
            state[key] = current  # the page moved to another field (a new upload, a reopened one): the picker follows
        chosen = st.selectbox(  # its text never changes (a count in it went stale in the browser, streamlit#13788)
            "Field", ids, key=key, format_func=lambda a: f"{ids.index(a) + 1}. {results[a].name}",
        )  # fmt: skip
        state[f"{key}_shown"] = chosen
        again = results[chosen]
        if (slide is None or slide["id"] != chosen) and (kept := unsaved_field(chosen, again.image_sha256)):
            state["slide"] = slide = kept  # with its review steps that wait for the database
        elif slide is None or slide["id"] != chosen:
            image = state.get("slide_images", {}).get(again.image_sha256)
            if image is None:
                try:
                    image = db.load_image(again.image_sha256)
                except CellkitError as exc:
                    db_problem.append(str(exc))
            state["slide"] = slide = {
                "id": chosen, "result": again, "image": image, "key": ("db", chosen),
                "clf": field_classifier(again), "name": again.name, "meta": {},
                "pending": [], "db_error": None, "case_id": case["id"], "image_kept": image is not None,
                "image_note": "" if image is not None else "The image of this field is not stored",
            }  # fmt: skip
elif case:
    case_ui.progress_ui(case, case_summary(case["name"], [], case["target_wbc"]))
others = [f for f in state.get("slide_unsaved", {}).values() if f is not slide]  # fields left with unsaved steps
if (slide and slide.get("db_error")) or others:
    err_col, retry_col = st.columns([4, 1], vertical_alignment="center")
    if slide and slide.get("db_error"):
        said = widgets.plain(f"Not saved to the database: {slide['db_error']}")
        said += "  \nThe analysis is kept in this browser session: retry, or download it under *Export*."
    else:
        said = widgets.plain(f"Not saved to the database: {others[0].get('db_error') or 'it could not be used'}")
    if others:
        names = widgets.plain(", ".join(f["name"] for f in others))
        steps = sum(unsaved_steps(f) for f in others)
        said += f"  \n{count(steps, 'review step')} of {names} {verb(steps, 'waits', 'wait')} in this session too."
        if any(f["id"] is None for f in others):
            said += " Some of these analyses were never saved: Retry save stores them with their review."
    err_col.error(said, icon=":material/database:")
    if retry_col.button("Retry save", icon=":material/refresh:", key="slide_retry_save"):
        for field in [slide, *others] if slide and slide.get("db_error") else others:
            save(field)
        st.rerun()
elif db_problem:
    st.error(widgets.plain(f"The database cannot be used: {db_problem[0]}"), icon=":material/database:")


def act(kind: str, value) -> None:
    """A review step from a key, a button or a click (in its callback, before the page is drawn again)."""
    slide = state["slide"]
    result = slide["result"]
    undo = state.setdefault("slide_undo", [])
    cells = [i for i, c in enumerate(result.detections.class_name) if c in ("wbc", "platelet")]
    pick = state.get("slide_cell")
    if kind == "move":
        state["slide_cell"] = value
    elif kind == "label" and pick is not None:
        undo.append((*_field_of(slide), pick, undo_point(result, pick)))
        relabel(slide, pick, value, "")
        state["slide_cell"] = review.next_cell(cells, pick)
    elif kind == "undo" and undo:
        mine = [k for k, entry in enumerate(undo) if _is_field(entry, slide)]
        if mine:  # this field's last step (the stack holds every field's steps of the session)
            *_, index, before = undo.pop(mine[-1])
            try:
                label = undo_step(result, index, before)
            except CellkitError as exc:  # a step of a cell this field does not have: said, nothing written
                state.setdefault("slide_upload_errors", []).append(str(exc))
                return
            slide.setdefault("pending", []).append((index, label, "undo"))
            save(slide)  # None withdraws the reviewer's label: the cell is undecided again
            state["rbc_cell" if result.detections.class_name[index] == "rbc" else "slide_cell"] = index
    elif kind == "add":
        cls, x, y = value
        models = addable(slide.get("clf") or load_models()[1])  # the field's own model, never another one
        try:
            more, index = add_cell(slide["image"], result, x, y, models, widgets.review_author(), cls)
        except CellkitError as exc:  # the user's request (no model for that cell type...), not the database
            state.setdefault("slide_upload_errors", []).append(str(exc))
            return
        slide["result"] = more  # kept in this session whatever the database says; saved now or by "Retry save"
        if slide["id"] is not None:
            slide.setdefault("pending_adds", []).append(index)
        save(slide)
        undo.append((*_field_of(slide), index, ""))
        if cls != "rbc":
            state["slide_cell"] = index


def reviewed_zip(slide: dict, clf) -> bytes:
    """The field's reviewed crops as a labelled zip, built once per state of its review (not on every rerun)."""
    result = slide["result"]
    version = (len(result.detections), tuple(sorted(result.corrections.items())))
    cached = slide.get("reviewed_zip")
    if cached is None or cached[0] != version:
        slide["reviewed_zip"] = cached = (version, review_zip(slide["image"], result, clf.spec.crop_scale))
    return cached[1]


def relabel(slide: dict, index: int, label: str, note: str) -> None:
    """Apply a reviewer's label at once and save it (or keep it for "Retry save")."""
    slide["result"].corrections[index] = label
    slide.setdefault("pending", []).append((index, label, note))
    save(slide)


if slide:
    result, image, clf = slide["result"], slide["image"], slide.get("clf")
    try:
        sidebar = resources.current_classifier().spec.name
    except CellkitError:
        sidebar = None
    if clf is not None and sidebar and sidebar != clf.spec.name:
        st.caption(f"This field was analysed with {widgets.plain(widgets.model_display_name(clf.spec.name))}: its "
                   "review, added cells and explanations use that model. The model chosen in the sidebar applies to "
                   "new uploads.")  # fmt: skip
    if (slide.get("meta") or {}).get("source") == "demo":
        st.info(
            "A drawn smear, not a real one: it shows the detector, the counts and the review workflow. "
            "The classifier learned from real stained cells, so its white-cell labels for drawn cells mean "
            "nothing; upload a real smear to judge them.",
            icon=":material/draw:",
        )
    counts, found = result.reviewed_counts(), result.counts  # after review; as the detector found them
    nrbc_boxes = int(result.nrbc().get("count", 0))  # white-cell boxes that are NRBC: not white cells (differential)
    cols = st.columns(4)
    for col, cls in zip(cols, ("wbc", "rbc", "platelet"), strict=False):
        notes = []
        if cls == "wbc" and nrbc_boxes:
            notes.append(f"{count(nrbc_boxes, 'nucleated red cell')} (NRBC) among the white-cell boxes "
                         f"{verb(nrbc_boxes, 'is', 'are')} not counted as white cells, as in the "
                         "differential")  # fmt: skip
        if found[cls] != counts[cls]:
            notes.append(f"{found[cls]} found by the detector; rejected or relabelled boxes are counted where the "
                         "review put them")  # fmt: skip
        shown = result.white_cells() if cls == "wbc" else counts[cls]  # NRBC out: the one white-cell count
        col.metric(cls.upper() if cls != "platelet" else "Platelets", shown, help="; ".join(notes) or None)
    cols[3].metric("Time (s)", f"{result.timings.get('total_s', 0):.2f}")
    if not len(result.detections):
        st.info("No cells found in this image. Is it a stained blood smear at a usual magnification?")
    off_scale = field_scale_warning(result, getattr(loaded(resources.detector), "spec", None))
    if off_scale:
        st.warning(off_scale, icon=":material/straighten:")
    tabs = st.tabs(["Cells & review", "Case & report", "Image", "WBC differential", "Red cells", "Export"])
    tab_cells, tab_case, tab_img, tab_diff, tab_red, tab_export = tabs
    with tab_case:
        if case and results:
            display = case_display(list(results.values()))
            case_ui.summary_ui(summary, display, signed=case["status"] == "signed")
            try:
                unsaved = unsaved_steps(slide) + sum(unsaved_steps(f) for f in others if f["id"] in results)

                def recount(fields: list) -> dict:
                    return case_summary(case["name"], fields, case["target_wbc"], case.get("details"), red_spec,
                                        det_spec)  # fmt: skip

                case_ui.report_ui(db, owner, case, summary, results, lambda r: db.load_image(r.image_sha256), display,
                                  recount, unsaved=unsaved)  # fmt: skip
            except CellkitError as exc:
                st.error(widgets.plain(exc), icon=":material/database:")
        else:
            st.info("This analysis is not part of a saved case (the database could not be used when it was made).")
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
                column_config=widgets.percent_column(),
            )
            nrbc = result.nrbc()
            n_white = sum(v["count"] for v in diff.values())
            st.caption(
                f"This field: {count(n_white, 'white cell')}, in the usual reporting order"
                + (" (the whole case is under *Case & report*). " if case and results else ". ")
                + (f"**NRBC: {nrbc['count']}** ({nrbc['per_100_wbc']:g} per 100 WBC), not counted among the white "
                   "cells. " if nrbc.get("count") else "No nucleated red cells. ")
                + f"Platelets: {counts['platelet']}, after review."
            )  # fmt: skip
            rejected = result.rejected()
            if rejected:
                st.caption(
                    "Rejected in review, not counted: "
                    + ", ".join(f"{result.display_name(k).split(': ', 1)[1]} {n}" for k, n in rejected.items())
                )
            if "unknown" in diff:
                st.warning(
                    f"{count(diff['unknown']['count'], 'white cell')} {verb(diff['unknown']['count'], 'is', 'are')} "
                    "Unidentified — review: unlike the cells the model was taught, or not placed with confidence. "
                    "Check them in *Cells & review*.",
                    icon=":material/flag:",
                )
            to_check = len(result.platelets_to_review())
            if to_check:
                st.warning(
                    f"{count(to_check, 'platelet')} {verb(to_check, 'was', 'were')} flagged or called a white cell by "
                    "the model: check them in *Cells & review* (a missed white cell, a clump). Until then they count "
                    "as platelets.",
                    icon=":material/flag:",
                )
        else:
            st.info("No classified white cells in this analysis.")
    with tab_red:
        red = result.composition("rbc")
        if red:
            red_clf = loaded(resources.red_cell_classifier)
            unreliable = scale_warning(result, red_clf.spec) if red_clf is not None else ""
            if unreliable:
                st.warning(unreliable, icon=":material/warning:")
            findings = red_cell_findings(red, withheld=unreliable)
            if unreliable:  # a percentage of forms the model cannot tell here reads as a finding: none is shown
                st.caption("No form counts or percentages at this magnification; the cells stay reviewable below.")
            else:
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
                    column_config=widgets.percent_column(),
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
                st.markdown("#### Red cells by the model's form" + (", not reported here" if unreliable else ""))
                st.caption("Click a cell to select it." + (" The groups are the model's guesses at a magnification it "
                           "was not trained on: for review, not findings." if unreliable else ""))  # fmt: skip
                review.gallery_ui(image, result, red_clf, red_cells, key="rbc", per_group=16,
                                  guesses=bool(unreliable))  # fmt: skip
                picked = widgets.cell_review_ui(image, result, red_clf, red_cells, key="rbc", locked=locked)
                if picked:  # a red-cell correction is kept, saved and undone like a white-cell one
                    step = (*_field_of(slide), picked[0], undo_point(result, picked[0]))
                    state.setdefault("slide_undo", []).append(step)
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
            if locked:
                st.info(f"Signed off by {case['signed_by']}: review is locked. Amend the case (under *Case & report*) "
                        "to change it.", icon=":material/lock:")  # fmt: skip
            gallery_col, cell_col = st.columns([3, 2])
            with gallery_col:
                st.caption("Click a cell to select it; keys relabel it (see the right).")
                review.gallery_ui(image, result, clf, cells, key="slide")
            with cell_col:
                review.selected_ui(image, result, clf, cells, "slide")
                review.shortcuts_ui(clf, cells, "slide", locked, act)
            st.markdown("#### The selected cell")
            picked = widgets.cell_review_ui(image, result, clf, cells, locked=locked)
            with st.expander("Add a missed cell", icon=":material/add_circle:"):
                review.add_cell_ui(image, result, "slide", locked, act, kinds=list(addable(clf)))
            if picked:  # applied here at once; saved now, or with "Retry save" when the database is unreachable
                state.setdefault("slide_undo", []).append((*_field_of(slide), picked[0], undo_point(result, picked[0])))
                result.corrections[picked[0]] = picked[1]
                slide.setdefault("pending", []).append(picked)
                save(slide)
                st.rerun()
    with tab_export:
        stem = (result.name or "slide").rsplit(".", 1)[0]
        # built when pressed (deferred), not on every review step
        st.download_button("Report CSV", lambda: result.to_frame().to_csv(index=False), f"{stem}_cells.csv", "text/csv")
        st.download_button("Report JSON", result.to_json, f"{stem}_report.json", "application/json")
        if image is not None and clf is not None:
            st.download_button(
                "Reviewed crops (zip, one folder per label)",
                lambda: review_zip(image, result, clf.spec.crop_scale),
                f"{stem}_crops.zip",
                "application/zip",
            )
            with st.expander("Adapt a model to your lab from these cells", icon=":material/tune:"):
                st.caption(
                    "Uses every classified cell of this analysis under its final label (your corrections included; "
                    "cells left as Unidentified — review are not used). Review all cells first."
                )
                if st.checkbox("I have reviewed every cell of this analysis", key=f"slide_adapt_ok_{slide['id']}"):
                    adapt_ui("slide_adapt", labelled_zip=reviewed_zip(slide, clf), base=clf.spec.name)


def show_db_error(exc: CellkitError, what: str = "Past analyses") -> None:
    """One st.error per run for the database: a caption when an error above already says it."""
    if (slide and slide.get("db_error")) or db_problem:
        st.caption(f"{what} are not available while the database cannot be used (see above).")
    else:
        db_problem.append(str(exc))
        st.error(widgets.plain(exc), icon=":material/database:")


def reopen(analysis_id: int, result, image, image_note: str = "", case_id: int | None = None) -> None:
    """Show a stored analysis on this page (with its image when there is one; else ``image_note`` says why); a
    field of a case opens within its case; a field whose review steps wait for the database opens as this session
    has it."""
    if case_id is not None:
        state["case_switch"] = case_id  # applied before the case picker is drawn
    kept = unsaved_field(analysis_id, result.image_sha256)
    if kept is not None:
        state["slide"] = kept
        st.rerun()
    if image is None:
        try:
            image = resources.store().load_image(result.image_sha256)
        except CellkitError:
            image = None
        image_note = image_note if image is None else ""
    state["slide"] = {
        "id": analysis_id,
        "result": result,
        "image": image,
        "key": ("db", analysis_id),
        "clf": field_classifier(result),
        "name": result.name,
        "meta": {},
        "pending": [],
        "db_error": None,
        "image_note": image_note,
        "case_id": case_id,
        "standalone": case_id is None,  # not replaced by the current case's newest field
        "image_kept": image is not None,
    }
    st.rerun()


def open_batch_smear(analysis_id: int, job_owner: str, image, image_note: str) -> None:
    try:
        again = resources.store().load_analysis(analysis_id, owner=job_owner)
    except CellkitError as exc:
        show_db_error(exc)
    else:
        reopen(analysis_id, again, image, image_note)


def usable_store():
    """The store for the sections below; not asked again once the database failed in this run (a locked
    SQLite file would make each of them wait for its timeout): the failure is raised again instead."""
    if db_problem:
        raise CellkitError(db_problem[0])
    return resources.store()


with st.expander("Your past analyses", icon=":material/history:"):
    try:
        store = usable_store()
        past = store.list_analyses(owner)
    except CellkitError as exc:
        show_db_error(exc)
        past = None
    if past is None:
        pass
    elif not past:
        st.caption("Nothing saved yet.")
    else:
        st.dataframe(
            [{"Analysis": p["id"], "Saved": p["created"].replace("T", " "), "File": p["file_name"],
              "Size (px)": f"{p['width']} × {p['height']}", "White cells found": p.get("wbc", 0),
              "Red cells found": p.get("rbc", 0), "Platelets found": p.get("platelet", 0),
              "White-cell model": widgets.model_display_name(p["classifier"]), "Case": p["case_id"],
              "Image fingerprint": (p["image_sha256"] or "")[:12]} for p in past],
            hide_index=True,
        )  # fmt: skip
        st.caption("Counts as the detector found them; open an analysis for its counts after review.")
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
                row = next(p for p in past if p["id"] == chosen)
                reopen(chosen, again, state.get("slide_images", {}).get(again.image_sha256), case_id=row["case_id"])
        if c2.button("Delete", icon=":material/delete:"):
            try:
                store.delete_analysis(chosen, owner=owner)
            except CellkitError as exc:
                show_db_error(exc)
            else:
                forget_field(chosen)
                if slide and slide["id"] == chosen:
                    state.pop("slide")
                st.rerun()

with st.expander("Batch jobs", icon=":material/dataset:"):
    try:
        batch_jobs_ui(usable_store(), open_batch_smear)
    except CellkitError as exc:
        show_db_error(exc, "Batch jobs")

state["slide_run_s"] = time.perf_counter() - started
