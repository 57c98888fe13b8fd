"""Cases on the Slide page: pick or start a case, its progress and totals, the report, sign-off and amendments."""

from __future__ import annotations

import json
from datetime import datetime

import streamlit as st

from cellkit import DEFAULT_TARGET_WBC, CellkitError, case_pdf, case_thumbnails, history_lines
from cellkit.case import readable_time, sign_off_concerns
from cellkit.words import count, verb
from ui import widgets

NEW = -1  # the picker's "start a new case" entry


def new_case(store, owner: str, name: str = "", target: int = DEFAULT_TARGET_WBC, details: dict | None = None) -> int:
    """Create a case (named after the time when no name is given) and make it the page's current case."""
    name = name.strip() or f"Case {datetime.now().strftime('%Y-%m-%d %H:%M')}"
    cid = store.create_case(owner, name, target_wbc=target, details=details, who=widgets.reviewer_name())
    st.session_state["case_id"] = cid
    st.session_state.pop("case_fields", None)
    return cid


def _start_case(store, owner: str) -> None:
    """The "Start case" callback (before the page is drawn, so the picker can show the new case)."""
    state = st.session_state
    specimen = str(state.get("case_new_specimen") or "").strip()
    try:
        cid = new_case(store, owner, str(state.get("case_new_name") or ""), int(state.get("case_new_target") or 100),
                       {"specimen": specimen} if specimen else None)  # fmt: skip
    except CellkitError as exc:
        state.setdefault("case_errors", []).append(str(exc))
        return
    state["case_pick"] = cid
    state.pop("slide", None)
    state["case_new_open"] = False  # the popover closes on Start
    new_uploader()


def new_uploader() -> None:
    """Give the Slide page's uploader a new key: a new or other case starts with an empty file list (the previous
    case's files were analysed into it and are listed there)."""
    st.session_state["slide_upload_gen"] = st.session_state.get("slide_upload_gen", 0) + 1


def upload_key() -> str:
    """The Slide page uploader's current key (see :func:`new_uploader`)."""
    gen = st.session_state.get("slide_upload_gen", 0)
    return "slide_upload" if gen == 0 else f"slide_upload_{gen}"


def case_picker_ui(store, owner: str) -> dict | None:
    """The current case (its row from the store, with ``field_ids`` and ``events``), chosen from the user's cases,
    or a new one from the form; None while the user has none."""
    state = st.session_state
    cases = store.list_cases(owner)
    ids = [c["id"] for c in cases]
    if state.get("case_id") not in ids:  # a new session (a reload) continues the newest case: said at the uploader
        state["case_id"] = state["case_continued"] = ids[0] if ids else None
    pick_col, new_col = st.columns([3, 1], vertical_alignment="bottom")
    if cases:
        # name and start time only: they never change, so the picker's text is never stale (the browser keeps a
        # selectbox's old text when only format_func's output changes, streamlit#13788); counts and status are
        # shown below it, drawn after this run's uploads
        started = {c["id"]: str(c["created"])[:16].replace("T", " ") for c in cases}
        # the number keeps two cases of one name and minute apart: the browser returns the text of the choice
        names = {c["id"]: (c["name"] if started[c["id"]] in c["name"] else f"{c['name']} · started {started[c['id']]}")
                 + f" · no. {c['id']}" for c in cases}  # fmt: skip
        chosen = pick_col.selectbox("Case", ids, index=ids.index(state["case_id"]), format_func=names.get,
                                    key="case_pick")  # fmt: skip
        if chosen != state["case_id"]:
            state["case_id"] = chosen
            state.pop("case_fields", None)
            state.pop("slide", None)
            new_uploader()
    new = new_col.popover("New case", icon=":material/add:", width="stretch", key="case_new_open", on_change="rerun")
    with new, st.form("case_new", clear_on_submit=True):
        st.text_input("Case name (specimen or accession number)", key="case_new_name")
        st.radio("Target white-cell count", [100, 200], horizontal=True, key="case_new_target")
        st.text_input("Specimen details (optional)", key="case_new_specimen",
                      placeholder="e.g. EDTA peripheral blood, May-Grünwald-Giemsa")  # fmt: skip
        st.form_submit_button("Start case", on_click=_start_case, args=(store, owner))
    for message in state.pop("case_errors", []):
        widgets.error(message)
    if state.get("case_id") is None:
        st.info("Start a case with **New case**, or upload fields or try the demo: a case is started for them.")
        return None
    return store.case(state["case_id"], owner)


def case_results(store, owner: str, case: dict) -> dict[int, object]:
    """{analysis id: result} of the case's fields, read once per case and kept in the session (the page updates
    it as cells are reviewed)."""
    state = st.session_state
    cached = state.get("case_fields")
    if cached is None or cached["case"] != case["id"] or set(cached["results"]) != set(case["field_ids"]):
        state["case_fields"] = cached = {"case": case["id"], "results": dict(store.case_fields(case["id"], owner))}
    return cached["results"]


def progress_ui(case: dict, summary: dict) -> None:
    """Status, progress towards the target count and the case's totals."""
    counted, target = summary["white_cells_counted"], summary["target_wbc"]
    status = (
        f"Signed off by **{case['signed_by']}** at {readable_time(case['signed_at'])} "
        f"(version {case['version']}): locked" + (", signed with points open." if sign_off_concerns(summary) else ".")
        if case["status"] == "signed"
        else f"Open · version {case['version']}"
    )
    st.markdown(f"##### {widgets.plain(case['name'])}  \n{status}")
    st.progress(min(1.0, counted / max(1, target)),
                text=f"{counted} of {target} white cells counted over {count(summary['fields'], 'field')}"
                + (" — target reached" if summary["target_reached"] else ""))  # fmt: skip


def summary_ui(summary: dict, display, signed: bool = False) -> None:
    """The case's totals: differential, NRBC, platelets and red cells per field. ``signed``: the case is locked,
    so what is left undecided is said as signed, not as a step to take."""
    if not summary["fields"]:
        st.info("No fields in this case yet: upload one or more images above.")
        return
    if summary.get("off_scale_warning"):
        st.warning(summary["off_scale_warning"], icon=":material/straighten:")
    if summary.get("mixed_models_warning"):
        st.warning(summary["mixed_models_warning"], icon=":material/compare_arrows:")
    diff = summary["differential"]
    if diff:
        subtypes = summary.get("subtypes", {})
        st.dataframe([{"White cell": display(g), "Count": v["count"], "%": v["percent"],
                       "Of which": subtype_words(subtypes.get(g, {}), g, display)} for g, v in diff.items()],
                     hide_index=True, column_config=widgets.percent_column())  # fmt: skip
    nrbc = summary["nrbc"]
    per100 = f"{nrbc['per_100_wbc']:g} per 100 WBC" if nrbc["per_100_wbc"] is not None else "no white cells yet"
    cols = st.columns(4)
    cols[0].metric("NRBC", nrbc["count"], help=per100)
    cols[1].metric("Red cells per field", summary["rbc_per_field"])
    cols[2].metric("Platelets per field", summary["platelets_per_field"])
    per_1000 = summary["platelets_per_1000_rbc"]
    cols[3].metric("Platelets per 1,000 RBC", "—" if per_1000 is None else per_1000)  # 0.0 is a count, not a gap
    st.caption(f"NRBC: {nrbc['count']} ({per100}), not counted among the white cells. {summary['platelet_caveat']}")
    if summary["red_cells"]:
        st.markdown("**Red-cell morphology of the case**")
        if summary["red_cells_withheld"]:  # forms the model cannot tell here: no percentages that read as findings
            st.warning(summary["red_cells_withheld"], icon=":material/warning:")
        else:
            if summary.get("red_cells_left_out"):
                st.info(summary["red_cells_left_out"], icon=":material/straighten:")
            st.dataframe([{"Form": display(f["form"]), "Count": f["count"], "%": f["percent"],
                           "Finding": f["finding"] + (" (provisional: under 1,000 red cells)"
                                                      if f["provisional"] and f["finding"] else "")}
                          for f in summary["red_cells"]], hide_index=True,
                         column_config=widgets.percent_column())  # fmt: skip
    if summary["unidentified_review"] and signed:
        n = summary["unidentified_review"]
        st.warning(f"{count(n, 'white cell')} {verb(n, 'was', 'were')} signed as Unidentified — review (amend the "
                   f"case to decide {verb(n, 'it', 'them')}).", icon=":material/flag:")  # fmt: skip
    elif summary["unidentified_review"]:
        n = summary["unidentified_review"]
        st.warning(f"{count(n, 'white cell')} {verb(n, 'is', 'are')} Unidentified — review: decide "
                   f"{verb(n, 'it', 'them')} in *Cells & review*, or {verb(n, 'it is', 'they are')} reported as such.",
                   icon=":material/flag:")  # fmt: skip
    if summary.get("platelets_review") and signed:
        st.warning(
            f"{count(summary['platelets_review'], 'platelet')} flagged or called a white cell by the model "
            f"{verb(summary['platelets_review'], 'was', 'were')} signed unchecked and count as platelets (amend the "
            "case to check them).",
            icon=":material/flag:",
        )
    elif summary.get("platelets_review"):
        st.warning(f"{count(summary['platelets_review'], 'platelet')} "
                   f"{verb(summary['platelets_review'], 'was', 'were')} flagged or called a white cell by the model: "
                   "check them in *Cells & review* (a missed white cell, a clump); until then they count as "
                   "platelets.", icon=":material/flag:")  # fmt: skip


def subtype_words(counts: dict[str, int], group: str, display) -> str:
    """ "Band neutrophil 3, Segmented neutrophil 40" ("not subtyped" for cells labelled with the group itself)."""
    return ", ".join(f"{'not subtyped' if n == group else display(n)} {k}" for n, k in counts.items())


def report_ui(
    store, owner: str, case: dict, summary: dict, results: dict, image_of, display, recount, unsaved: int = 0
) -> None:
    """The PDF, sign-off (locks the case; asks for a confirmation when cells are short, left for review or not yet
    saved), amendment (a new, logged version) and the audit trail. ``recount``: the case's summary of a list of
    fields (the page's rules), used to sign what the database holds."""
    history = history_lines(case["events"])

    def pdf() -> bytes:  # built when the button is pressed (on its own thread), not on every rerun
        thumbs = []
        for result in results.values():
            image = image_of(result)
            if image is not None:
                thumbs += case_thumbnails(image, result)
        return case_pdf(summary, display, thumbs, reviewer=case["signed_by"], signed_at=case["signed_at"],
                        history=history)  # fmt: skip

    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in case["name"])[:60] or "case"
    st.download_button("Case report (PDF)", pdf, f"{stem}.pdf", "application/pdf", icon=":material/picture_as_pdf:",
                       key="case_pdf")  # fmt: skip
    if case["status"] == "signed":
        with st.form("case_amend"):
            st.caption("Signed cases are locked. An amendment opens a new version; the signed one stays on record.")
            _prefill("case_amend_who")
            who = st.text_input("Your name", key="case_amend_who",  # never the server's account ("root")
                                placeholder="As the report's history should print it")  # fmt: skip
            reason = st.text_input("Reason for the amendment", key="case_amend_reason")
            if st.form_submit_button("Amend", icon=":material/edit_note:"):
                _try(lambda: store.amend_case(case["id"], owner, who, reason))
    else:
        for message in st.session_state.pop("case_sign_errors", []):
            widgets.error(message, icon=":material/sync_problem:")
        with st.form("case_sign"):
            # with login, the signed-in user; without it, the sidebar's reviewer (the account running the
            # dashboard, e.g. "root", is nobody's signature)
            _prefill("case_reviewer")
            reviewer = st.text_input("Reviewer", key="case_reviewer",
                                     placeholder="Your name, as the report should print it")  # fmt: skip
            concerns = sign_off_concerns(summary, unsaved)
            anyway = False
            if not concerns:
                st.caption(f"{summary['white_cells_counted']} of {summary['target_wbc']} white cells counted.")
            else:
                st.warning("Before signing: " + "; ".join(concerns) + ".", icon=":material/warning:")
                anyway = st.checkbox("I have checked these and sign anyway", key="case_sign_anyway",
                                     disabled=bool(unsaved))  # fmt: skip
            if st.form_submit_button("Sign off", icon=":material/verified:", disabled=not summary["fields"]):
                if unsaved:
                    st.error("Save the corrections first (Retry save at the top of the page), then sign.")
                elif concerns and not anyway:
                    st.error("Tick the box to sign with the points above open, or finish the review first.")
                else:
                    _try(lambda: _sign(store, owner, case, reviewer, summary, recount))
    if history:
        st.caption("  \n".join(widgets.plain(h) for h in history))
    with st.expander("Audit trail", icon=":material/history_edu:"):
        trail = store.case_audit(case["id"], owner)
        st.dataframe(
            [{"When": readable_time(t["created"]), "Version": t["version"], "What": t["what"].capitalize(),
              "Who": t["who"],
              "Field": t["field"], "Cell": "" if t["cell"] is None else f"#{t['cell']}",
              "From": display(t["from_label"]) if t["from_label"] else "",
              "To": display(t["label"]) if t["label"] else "", "Note": t["note"]} for t in trail],
            hide_index=True,
        )  # fmt: skip


def _prefill(key: str) -> None:
    """Keep a name field on the reviewer's name (sidebar or login) while nobody typed another one there: also when
    the name is typed or changed after the field was first drawn (a keyed field ignores a new default value; a
    case signed again after an amendment kept the first reviewer's name)."""
    name, filled = widgets.reviewer_name(), f"_{key}_filled"
    if name and (not st.session_state.get(key) or st.session_state.get(key) == st.session_state.get(filled)):
        st.session_state[key] = st.session_state[filled] = name


def _sign(store, owner: str, case: dict, reviewer: str, shown: dict, recount) -> None:
    """Sign what the database holds now: its fields are read again, and signed only when their counts are the ones
    on the page (another tab or reviewer may have changed cells since) and nothing changes until the signature."""
    state, fields = store.case_snapshot(case["id"], owner)
    fresh = recount([result for _, result in fields])
    if json.dumps(fresh, sort_keys=True, default=str) != json.dumps(shown, sort_keys=True, default=str):
        st.session_state.pop("case_fields", None)  # the page reads the case again
        slide = st.session_state.get("slide")
        stored = dict(fields)
        if slide and slide.get("id") in stored:  # the field on screen too: its session copy is what was stale
            slide["result"] = stored[slide["id"]]
        st.session_state.setdefault("case_sign_errors", []).append(
            "Nothing was signed: the case changed since this page read it (in another tab or by another reviewer). "
            "Its counts are shown again as the database holds them now: check them and sign."
        )
        st.rerun()
    store.sign_off(case["id"], owner, reviewer, fresh, expected_state=state)


def _try(step) -> None:
    try:
        step()
    except CellkitError as exc:
        widgets.error(exc)
    else:
        st.rerun()
