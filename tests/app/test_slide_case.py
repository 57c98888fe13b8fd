"""AppTest of cases on the Slide page: fields of one case, keys and undo, sign-off locks, amendments, the PDF."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from cellkit.io import encode_png
from cellkit.synth import make_smear
from tests.app._markdown import visible
from tests.app.test_slide_page import ROOT, _fake_models, db_down  # noqa: F401  (the same test doubles)


def _page() -> AppTest:
    return AppTest.from_file(str(ROOT / "app_pages/slide.py"), default_timeout=60)


def _fields(at: AppTest, n: int = 3) -> AppTest:
    up = at.file_uploader(key="slide_upload")
    for k in range(n):
        img, *_ = make_smear(640, 480, n_wbc=2 + k, n_rbc=12, n_platelet=2, seed=30 + k)
        up.upload(f"field{k + 1}.png", encode_png(img), "image/png")
    return at.run()


def _store():
    from cellkit.store import Store

    return Store()


def test_three_fields_uploaded_at_once_make_one_case_with_progress_and_totals():
    at = _fields(_page().run())
    assert not at.exception and not at.error
    (case,) = _store().list_cases(at.session_state["owner"])
    assert case["fields"] == 3 and case["name"].startswith("Case ")
    assert at.session_state["case_id"] == case["id"]
    fields = _store().case_fields(case["id"], at.session_state["owner"])
    assert [r.name for _, r in fields] == ["field1.png", "field2.png", "field3.png"]
    white = sum(sum(v["count"] for v in r.differential().values()) for _, r in fields)
    assert any(f"{white} of 100 white cells counted over 3 fields" in p.proto.text for p in at.get("progress"))
    # the differential tab counts the field on screen, and says so (it read as the case's, beside the case's)
    assert any(visible(c.value).startswith("This field: ") and "the whole case is under Case & report" in
               visible(c.value) for c in at.caption)  # fmt: skip
    field = at.selectbox(key=f"case_field_{case['id']}")
    assert len(field.options) == 3
    field.set_value(fields[0][0]).run()  # another field of the case opens with its stored image
    assert not at.exception and at.session_state["slide"]["id"] == fields[0][0]
    assert at.session_state["slide"]["image"] is not None
    again = _fields(_page().run(), n=1)  # the same image again: not a second field
    assert not again.exception and _store().list_cases(again.session_state["owner"])[0]["fields"] == 3
    assert any("this image is already a field of this case" in i.value for i in again.info)  # and it is said


def test_a_key_relabels_the_selected_cell_moves_on_and_undo_puts_it_back():
    at = _fields(_page().run(), n=1)
    slide = at.session_state["slide"]
    cell = at.selectbox(key="slide_cell").value
    model_label = slide["result"].labels()[cell]
    at.button(key="slide_key_basophil").click().run()  # what pressing its key does
    assert not at.exception
    result = at.session_state["slide"]["result"]
    assert result.corrections[cell] == "basophil"
    assert at.session_state["slide_cell"] != cell  # moved to the next cell
    stored = _store().corrections(slide["id"], at.session_state["owner"])
    assert [(c["index"], c["from_label"], c["label"]) for c in stored] == [(cell, model_label, "basophil")]
    at.button(key="slide_key_reject_smudge").click().run()
    second = [c for c in _store().corrections(slide["id"], at.session_state["owner"]) if c["label"] == "reject_smudge"]
    assert len(second) == 1
    at.button(key="slide_undo_button").click().run()
    at.button(key="slide_undo_button").click().run()
    assert not at.exception
    result = at.session_state["slide"]["result"]
    assert result.labels()[cell] == model_label  # undone, and every step kept in the audit trail
    trail = _store().corrections(slide["id"], at.session_state["owner"])
    assert sorted(c["note"] for c in trail) == ["", "", "undo", "undo"]
    assert at.button(key="slide_undo_button").disabled


def test_sign_off_locks_the_case_and_an_amendment_opens_version_2():
    at = _fields(_page().run(), n=2)
    owner = at.session_state["owner"]
    cid = at.session_state["case_id"]
    assert {b.proto.label for b in at.get("download_button")} >= {"Case report (PDF)"}
    assert at.text_input(key="case_reviewer").value == ""  # no login: never the server's account ("root")
    at.text_input(key="case_reviewer").set_value("Dr Ada")
    sign = lambda: next(b for b in at.get("form_submit_button") if b.proto.form_id == "case_sign")  # noqa: E731
    assert any("Before signing: only" in w.value and "of the target 100 white cells" in w.value for w in at.warning)
    sign().click().run()  # two small fields are far from 100 cells: not signed without the reviewer's tick
    assert len(at.error) == 1 and "Tick the box" in at.error[0].value
    assert _store().case(cid, owner)["status"] == "open"
    at.checkbox(key="case_sign_anyway").check()
    sign().click().run()
    assert not at.exception and not at.error
    case = _store().case(cid, owner)
    assert case["status"] == "signed" and case["signed_by"] == "Dr Ada"
    assert at.button(key="slide_key_basophil").disabled and at.file_uploader(key="slide_upload").disabled
    assert any("review is locked" in i.value for i in at.info)
    assert any("signed with points open" in visible(m.value) for m in at.markdown)  # ticked: said
    assert not any("decide them in" in w.value or "check them in" in w.value for w in at.warning)  # it is locked
    at.text_input(key="case_amend_reason").set_value("second look at cell 3")
    amend = lambda: next(b for b in at.get("form_submit_button") if b.proto.form_id == "case_amend")  # noqa: E731
    assert at.text_input(key="case_amend_who").value == ""  # no login: never the server's account ("root")
    amend().click().run()
    assert any(e.value.startswith("An amendment needs the name of who amends") for e in at.error)  # a sentence
    assert _store().case(cid, owner)["status"] == "signed"
    at.text_input(key="case_amend_who").set_value("Dr Ada")
    amend().click().run()
    assert not at.exception
    case = _store().case(cid, owner)
    assert case["events"][-1]["who"] == "Dr Ada"
    assert case["status"] == "open" and case["version"] == 2
    assert [e["kind"] for e in case["events"]] == ["created", "signed", "amended"]
    assert not at.button(key="slide_key_basophil").disabled
    assert any("Amended by" in c.value and "second look at cell 3" in c.value for c in at.caption)


def test_new_case_form_and_the_picker_switch_cases():
    at = _fields(_page().run(), n=1)
    first = at.session_state["case_id"]
    at.text_input(key="case_new_name").set_value("S-26-0042")
    at.radio(key="case_new_target").set_value(200)
    at.text_input(key="case_new_specimen").set_value("EDTA blood, MGG")
    next(b for b in at.get("form_submit_button") if b.proto.form_id == "case_new").click().run()
    assert not at.exception
    new = at.session_state["case_id"]
    assert new != first
    case = _store().case(new, at.session_state["owner"])
    assert (case["name"], case["target_wbc"], case["details"]) == ("S-26-0042", 200, {"specimen": "EDTA blood, MGG"})
    assert "slide" not in at.session_state  # an empty case shows no field
    assert any("0 of 200 white cells counted" in p.proto.text for p in at.get("progress"))
    assert at.session_state["case_new_open"] is False  # the popover closed on Start
    assert len(at.file_uploader) == 1 and not at.file_uploader(key="slide_upload_1").value  # an empty list
    at.selectbox(key="case_pick").set_value(first).run()
    assert not at.exception and at.session_state["slide"]["case_id"] == first


@pytest.mark.parametrize("mode", ["files", "off"])
def test_a_reload_reopens_the_case_with_its_image_when_images_are_stored(monkeypatch, mode):
    monkeypatch.setenv("CELLKIT_IMAGE_STORE", mode)
    first = _fields(_page().run(), n=1)
    assert not any("Continuing case" in i.value for i in first.info)  # this session started it
    again = _page().run()  # a reload: a new session, the same user
    assert not again.exception
    slide = again.session_state["slide"]
    assert slide["case_id"] == first.session_state["case_id"]
    name = _store().case(slide["case_id"], again.session_state["owner"])["name"]
    # the next specimen's smear would join this case: the page says so before any upload
    assert any(visible(i.value).startswith(f"Continuing case {name} from an earlier session (1 field): uploads are "
                                           "added") for i in again.info)  # fmt: skip
    assert (slide["image"] is not None) == (mode == "files")
    if mode == "off":
        assert any("not stored" in i.value for i in again.info)


def test_a_past_analysis_reopens_within_its_case_with_its_stored_image():
    at = _fields(_page().run(), n=2)
    first_case = at.session_state["case_id"]
    first_field = _store().case(first_case, at.session_state["owner"])["field_ids"][0]
    at = _page().run()  # a new session, with another case current
    at.text_input(key="case_new_name").set_value("Other")
    next(b for b in at.get("form_submit_button") if b.proto.form_id == "case_new").click().run()
    assert at.session_state["case_id"] != first_case
    at.selectbox(key="slide_past").set_value(first_field)
    next(b for b in at.button if b.label == "Reopen").click().run()
    assert not at.exception
    slide = at.session_state["slide"]
    assert slide["id"] == first_field and at.session_state["case_id"] == first_case
    assert slide["image"] is not None  # from the image store: this session never had the pixels


def test_sign_off_names_what_is_open_and_refuses_unsaved_corrections():
    from cellkit.case import sign_off_concerns

    summary = {"target_reached": False, "white_cells_counted": 45, "target_wbc": 200, "unidentified_review": 42}
    assert sign_off_concerns(summary) == [
        "only 45 of the target 200 white cells are counted",
        "42 white cells are still Unidentified — review",
    ]
    assert sign_off_concerns(summary, unsaved=2)[0] == "2 corrections are not saved to the database yet"
    assert sign_off_concerns({**summary, "target_reached": True, "unidentified_review": 0}) == []
    off = {**summary, "target_reached": True, "unidentified_review": 0, "off_scale_fields": ["big.png"]}
    assert sign_off_concerns(off) == ["1 field is at a scale the detector was never trained on"]


def test_a_field_uploaded_while_another_is_open_is_the_one_shown():
    at = _fields(_page().run(), n=2)
    (case,) = _store().list_cases(at.session_state["owner"])
    fields = [a for a, _ in _store().case_fields(case["id"], at.session_state["owner"])]
    picker = lambda: at.selectbox(key=f"case_field_{case['id']}")  # noqa: E731
    assert picker().value == fields[-1]
    picker().set_value(fields[0]).run()  # the reviewer goes back to field 1 ...
    assert at.session_state["slide"]["id"] == fields[0]
    img, *_ = make_smear(640, 480, n_wbc=3, n_rbc=12, n_platelet=2, seed=77)
    at.file_uploader(key="slide_upload").upload("field3.png", encode_png(img), "image/png")
    at.run()  # ... and uploads a third: it is analysed and shown, and the picker says so
    assert not at.exception
    new = at.session_state["slide"]["id"]
    assert new not in fields and at.session_state["slide"]["result"].name == "field3.png"
    assert picker().value == new and len(picker().options) == 3
    assert picker().format_func(new) == "3. field3.png"
    assert any("over 3 fields" in p.proto.text for p in at.get("progress"))


def test_subtype_words_read_as_a_person_says_them():
    from cellkit.taxonomy import load_taxonomy
    from ui.case import subtype_words

    tax = load_taxonomy("pbc")
    words = subtype_words({"band_neutrophil": 1, "neutrophil": 2, "segmented_neutrophil": 9}, "neutrophil", tax.display)
    assert words == "Band neutrophil 1, not subtyped 2, Segmented neutrophil 9"


def test_two_cases_of_one_name_and_minute_are_told_apart_in_the_picker():
    at = _page().run()
    for _ in range(2):
        at.text_input(key="case_new_name").set_value("S-1")
        next(b for b in at.get("form_submit_button") if b.proto.form_id == "case_new").click().run()
    first, second = sorted(c["id"] for c in _store().list_cases(at.session_state["owner"]))
    assert at.session_state["case_id"] == second
    picker = at.selectbox(key="case_pick")
    assert len(set(picker.options)) == 2
    picker.set_value(first).run()
    assert not at.exception and at.session_state["case_id"] == first


def test_a_demo_smear_never_joins_a_patients_case():
    at = _fields(_page().run(), n=1)
    patient = at.session_state["case_id"]
    at.button(key="slide_demo").click().run()
    assert not at.exception
    demo = at.session_state["case_id"]
    assert demo != patient
    owner = at.session_state["owner"]
    assert [r.name for _, r in _store().case_fields(patient, owner)] == ["field1.png"]
    assert [r.name for _, r in _store().case_fields(demo, owner)] == ["demo_smear.png"]
    assert _store().case(demo, owner)["details"]["specimen"].startswith("a drawn demo smear")
    at.button(key="slide_demo").click().run()  # a second demo joins the demo case
    assert at.session_state["case_id"] == demo and len(_store().case_fields(demo, owner)) == 2


def test_sign_off_signs_what_the_database_holds_and_refuses_counts_another_tab_changed():
    from sqlalchemy import select

    from cellkit import case_summary
    from cellkit.store import CaseEvent

    at = _fields(_page().run(), n=2)
    owner, cid = at.session_state["owner"], at.session_state["case_id"]
    at.button(key="slide_key_basophil").click().run()  # this session's own correction: signed as it is
    at.text_input(key="case_reviewer").set_value("Dr Ada")
    at.checkbox(key="case_sign_anyway").check()
    store = _store()
    aid = store.case_fields(cid, owner)[0][0]
    store.add_correction(aid, 0, "reject_artefact", owner, author="other tab")  # a change this page never saw
    sign = lambda: next(b for b in at.get("form_submit_button") if b.proto.form_id == "case_sign")  # noqa: E731
    sign().click().run()
    assert not at.exception
    assert store.case(cid, owner)["status"] == "open"  # nothing signed
    assert any("Nothing was signed" in e.value and "another tab" in e.value for e in at.error)
    at.checkbox(key="case_sign_anyway").check()
    sign().click().run()  # the page now shows the database's counts: they are signed
    assert not at.exception and not at.error
    assert store.case(cid, owner)["status"] == "signed"
    with store._session() as session:
        signed = select(CaseEvent.summary).where(CaseEvent.case_id == cid, CaseEvent.kind == "signed")
        (frozen,) = session.scalars(signed)
    truth = case_summary(frozen["case"], [r for _, r in store.case_fields(cid, owner)], 100)
    assert frozen["white_cells_counted"] == truth["white_cells_counted"]
    assert frozen["differential"] == truth["differential"]


def test_the_wbc_headline_leaves_out_nrbc_as_the_differential_does():
    at = _fields(_page().run(), n=1)
    before = int({m.label: m.value for m in at.metric}["WBC"])
    at.button(key="slide_key_erythroblast").click().run()  # a reviewer calls one white-cell box an NRBC
    assert not at.exception
    wbc = next(m for m in at.metric if m.label == "WBC")
    assert int(wbc.value) == before - 1 and "NRBC" in wbc.help
    result = at.session_state["slide"]["result"]
    assert int(wbc.value) == sum(v["count"] for v in result.differential().values())


def test_a_change_another_tab_made_to_the_field_on_screen_is_shown_and_then_signed():
    at = _fields(_page().run(), n=2)
    owner, cid = at.session_state["owner"], at.session_state["case_id"]
    store = _store()
    shown = at.session_state["slide"]["id"]  # the newest field is on screen
    store.add_correction(shown, 0, "reject_artefact", owner, author="other tab")
    at.text_input(key="case_reviewer").set_value("Dr Ada")
    sign = lambda: next(b for b in at.get("form_submit_button") if b.proto.form_id == "case_sign")  # noqa: E731
    at.checkbox(key="case_sign_anyway").check()
    sign().click().run()
    assert store.case(cid, owner)["status"] == "open" and any("Nothing was signed" in e.value for e in at.error)
    assert at.session_state["slide"]["result"].labels()[0] == "reject_artefact"  # the page now shows it
    at.checkbox(key="case_sign_anyway").check()
    sign().click().run()
    assert not at.exception and store.case(cid, owner)["status"] == "signed"


def test_undo_after_going_to_another_field_and_back_undoes_this_fields_step():
    at = _fields(_page().run(), n=2)
    cid = at.session_state["case_id"]
    second = at.session_state["slide"]["id"]
    cell = at.selectbox(key="slide_cell").value
    model_label = at.session_state["slide"]["result"].labels()[cell]
    at.button(key="slide_key_basophil").click().run()
    picker = lambda: at.selectbox(key=f"case_field_{cid}")  # noqa: E731
    first = next(a for a in _store().case(cid, at.session_state["owner"])["field_ids"] if a != second)
    picker().set_value(first).run()
    assert at.session_state["slide"]["id"] == first  # really on the other field
    picker().set_value(second).run()  # reopened from the database: another session key
    assert at.session_state["slide"]["id"] == second
    at.button(key="slide_undo_button").click().run()
    assert not at.exception
    assert at.session_state["slide"]["result"].labels()[cell] == model_label


def test_a_correction_waiting_for_a_busy_database_survives_a_switch_to_another_field_and_is_saved(db_down):  # noqa: F811
    """Going to another field and back rebuilt the field without its unsaved correction: still shown, never
    saved, and the sign-off was later refused as "changed in another tab"."""
    at = _fields(_page().run(), n=2)
    owner, cid = at.session_state["owner"], at.session_state["case_id"]
    second = at.session_state["slide"]["id"]
    cell = at.selectbox(key="slide_cell").value
    db_down("add_correction")
    at.button(key="slide_key_basophil").click().run()
    assert at.session_state["slide"]["pending"] == [(cell, "basophil", "")]
    picker = lambda: at.selectbox(key=f"case_field_{cid}")  # noqa: E731
    first = _store().case(cid, owner)["field_ids"][0]
    picker().set_value(first).run()
    assert not at.exception and at.session_state["slide"]["id"] == first
    assert any("1 review step of field2.png waits" in e.value for e in at.error)  # said on the other field
    assert any("1 correction is not saved to the database yet" in w.value for w in at.warning)  # sign-off
    picker().set_value(second).run()
    slide = at.session_state["slide"]
    assert slide["id"] == second and slide["pending"] == [(cell, "basophil", "")]
    assert slide["result"].labels()[cell] == "basophil"
    picker().set_value(first).run()
    db_down.up()
    at.button(key="slide_retry_save").click().run()  # from the other field: every field's steps are saved
    assert not at.exception and not at.error
    saved = _store().corrections(second, owner)
    assert [(c["index"], c["label"]) for c in saved] == [(cell, "basophil")]
    at.text_input(key="case_reviewer").set_value("Dr Ada")
    at.checkbox(key="case_sign_anyway").check()
    next(b for b in at.get("form_submit_button") if b.proto.form_id == "case_sign").click().run()
    assert not at.exception and not at.error and _store().case(cid, owner)["status"] == "signed"


def test_a_cell_added_while_the_database_is_busy_survives_a_switch_and_a_reopen_and_is_saved(db_down, monkeypatch):  # noqa: F811
    import streamlit as st

    import ui.review

    def add_here(image, result, key, locked, act, kinds=None):  # AppTest cannot click the field: a button acts
        st.button("add here", key="test_add", on_click=act, args=("add", ("wbc", 300.0, 200.0)))

    monkeypatch.setattr(ui.review, "add_cell_ui", add_here)
    at = _fields(_page().run(), n=2)
    owner, cid = at.session_state["owner"], at.session_state["case_id"]
    second = at.session_state["slide"]["id"]
    n = len(at.session_state["slide"]["result"].detections)
    db_down("add_cell")
    at.button(key="test_add").click().run()
    assert at.session_state["slide"]["pending_adds"] == [n]
    at.selectbox(key=f"case_field_{cid}").set_value(_store().case(cid, owner)["field_ids"][0]).run()
    at.selectbox(key="slide_past").set_value(second)
    next(b for b in at.button if b.label == "Reopen").click().run()  # back by "Your past analyses"
    slide = at.session_state["slide"]
    assert not at.exception and slide["id"] == second and slide["pending_adds"] == [n] and n in slide["result"].added
    db_down.up()
    at.button(key="slide_retry_save").click().run()
    assert not at.exception and not at.error
    assert n in _store().load_analysis(second, owner).added


def test_without_login_corrections_and_the_sign_off_carry_the_reviewer_s_name_never_the_server_account():
    """Single-user mode logged every correction under the account running the dashboard ("root")."""
    import getpass

    at = _page()
    at.session_state["reviewer_name"] = "  Dr   Ada "  # typed in the sidebar (app.py)
    at = _fields(at.run(), n=1)
    slide = at.session_state["slide"]
    at.button(key="slide_key_basophil").click().run()
    assert not at.exception
    stored = _store().corrections(slide["id"], at.session_state["owner"])
    assert [c["author"] for c in stored] == ["Dr Ada"] and getpass.getuser() != "Dr Ada"
    assert at.text_input(key="case_reviewer").value == "Dr Ada"  # the sign-off starts with the same name
    late = _fields(_page().run(), n=1)
    assert late.text_input(key="case_reviewer").value == ""
    late.session_state["reviewer_name"] = "Dr Bo"  # typed in the sidebar after the form was first drawn
    late.run()
    assert late.text_input(key="case_reviewer").value == "Dr Bo"
    late.session_state["reviewer_name"] = "Dr Cy"  # another reviewer takes over (e.g. after an amendment)
    late.run()
    assert late.text_input(key="case_reviewer").value == "Dr Cy"


def test_the_sidebar_asks_for_the_reviewer_s_name_only_without_login():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    box = at.sidebar.text_input(key="reviewer_name")
    assert box.value == "" and "audit trail" in box.proto.placeholder


def test_without_a_name_review_steps_are_logged_as_unnamed_and_an_added_cell_stays_added(monkeypatch):
    """With the sidebar's Reviewer empty, corrections fell back to the server account and an added cell was stored
    without its "added" mark (gone after a reload)."""
    import getpass

    import streamlit as st

    import ui.review

    def add_here(image, result, key, locked, act, kinds=None):
        st.button("add here", key="test_add", on_click=act, args=("add", ("wbc", 300.0, 200.0)))

    monkeypatch.setattr(ui.review, "add_cell_ui", add_here)
    at = _fields(_page().run(), n=1)
    slide, owner = at.session_state["slide"], at.session_state["owner"]
    n = len(slide["result"].detections)
    at.button(key="slide_key_basophil").click().run()
    at.button(key="test_add").click().run()
    assert not at.exception
    authors = {c["author"] for c in _store().corrections(slide["id"], owner)}
    assert authors == {"reviewer not named"} and getpass.getuser() not in authors
    assert _store().load_analysis(slide["id"], owner).added == {n: "reviewer not named"}


def test_percentages_on_screen_have_one_decimal_as_in_the_pdf():
    """The case table showed 33.33, the field's bar 50.0 and the PDF 33.3: one rounding on screen and paper."""
    import json

    at = _fields(_page().run(), n=1)
    tables = [d for d in at.dataframe if "%" in d.value.columns]
    assert tables
    for table in tables:
        config = json.loads(table.proto.columns)
        assert config["%"]["type_config"]["format"] == "%.1f", config
