"""AppTest of the Slide page with a colour-threshold detector and an untrained tiny classifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from cellkit.io import encode_png
from cellkit.synth import make_smear
from tests.app._markdown import visible

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fake_models(monkeypatch, tmp_path):
    """Pages import ``ui`` from the repo root; models are swapped for deterministic test doubles."""
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from _fakes import ColourDetector

    import cellkit.classify
    import cellkit.detect

    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{tmp_path / 'page.db'}")
    monkeypatch.setattr(cellkit.detect, "load_detector", lambda name=None: ColourDetector())
    from _fakes import tiny_classifier_for

    monkeypatch.setattr(cellkit.classify, "load_classifier", tiny_classifier_for)
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def _page() -> AppTest:
    return AppTest.from_file(str(ROOT / "app_pages/slide.py"), default_timeout=60)


def _reclassify_box(at, key: str = "slide"):
    """The form's "Reclassify as" box of the selected cell (one widget per field, cell and current label)."""
    return next(w for w in at.selectbox if (w.key or "").startswith(f"{key}_reclassify_as_"))


def _note_box(at, key: str = "slide"):
    return next(w for w in at.text_input if (w.key or "").startswith(f"{key}_note_"))


def _submit(at: AppTest, form: str):
    """The submit button of one form (the page has a white-cell and a red-cell review form)."""
    return next(b for b in at.get("form_submit_button") if b.proto.form_id == form)


def _upload(at: AppTest, data: bytes, name: str, mime: str = "image/png") -> AppTest:
    at.file_uploader(key="slide_upload").upload(name, data, mime)
    return at.run()


def test_upload_smear_shows_counts_and_saves():
    img, _boxes, _cls = make_smear(640, 480, n_wbc=3, n_rbc=30, n_platelet=5, seed=3)
    at = _upload(_page().run(), encode_png(img), "smear.png")
    assert not at.exception
    values = {m.label: m.value for m in at.metric}
    assert values["WBC"] == "3" and values["RBC"] == "30" and values["Platelets"] == "5"
    red = next(d.value for d in at.dataframe if "Form" in d.value.columns)  # the Red cells tab
    assert red["Count"].sum() == 30 and not red["Form"].str.contains("_").any()  # display names, never ids
    schisto = red[red["Form"] == "Schistocyte"].iloc[0]  # always reported, with the ICSH 2021 limit
    assert "provisional: under 1,000 red cells" in schisto["Finding"]
    assert at.session_state["slide"]["id"] >= 1
    assert len(at.session_state["slide"]["result"].differential()) >= 1
    next(b for b in at.button if b.label == "Reopen").click().run()  # reopening never re-analyses the upload
    assert not at.exception
    from cellkit.store import Store

    assert len(Store().list_analyses(at.session_state["owner"])) == 1
    assert at.session_state["slide"]["image"] is not None  # this session still has the pixels for the crops


def test_reclassify_updates_labels():
    img, *_ = make_smear(640, 480, n_wbc=2, n_rbc=10, n_platelet=2, seed=4)
    at = _upload(_page().run(), encode_png(img), "smear.png")
    cell = at.selectbox(key="slide_cell").value
    _reclassify_box(at).set_value("basophil")  # the form's "Reclassify as" box
    _submit(at, "slide_reclassify").click().run()
    assert not at.exception
    result = at.session_state["slide"]["result"]
    assert result.corrections == {cell: "basophil"}
    assert result.labels()[cell] == "basophil"
    next(b for b in at.button if b.label == "Explain this cell").click().run()
    assert not at.exception
    assert at.session_state["explain_crop"].shape[2] == 3  # handed over to the Explain page


def test_red_cells_have_a_gallery_and_are_reclassified_like_white_cells():
    img, *_ = make_smear(640, 480, n_wbc=1, n_rbc=12, n_platelet=1, seed=6)
    at = _upload(_page().run(), encode_png(img), "smear.png")
    assert not at.exception and any("Red cells by the model's form" in m.value for m in at.markdown)
    result = at.session_state["slide"]["result"]
    cell = at.selectbox(key="rbc_cell").value
    assert result.detections.class_name[cell] == "rbc"
    _reclassify_box(at, "rbc").set_value("schistocyte")
    _submit(at, "rbc_reclassify").click().run()
    assert not at.exception
    result = at.session_state["slide"]["result"]
    assert result.corrections == {cell: "schistocyte"} and result.labels()[cell] == "schistocyte"
    red = next(d.value for d in at.dataframe if "Form" in d.value.columns)
    assert red.loc[red["Form"] == "Schistocyte", "Count"].iloc[0] >= 1  # the corrected label is counted
    from cellkit.store import Store

    stored = Store().load_analysis(at.session_state["slide"]["id"], owner=at.session_state["owner"])
    assert stored.corrections == {cell: "schistocyte"}  # saved like a white-cell correction


def test_corrupt_upload_is_an_error_not_a_crash():
    at = _upload(_page().run(), b"\x89PNG\r\n\x1a\nthis is not really a png", "broken.png")
    assert not at.exception
    assert at.error and "broken.png" in at.error[0].value
    assert "slide" not in at.session_state


def test_blank_image_reports_no_cells():
    import numpy as np

    from cellkit.synth import BACKGROUND

    blank = np.full((200, 300, 3), BACKGROUND, np.uint8)
    at = _upload(_page().run(), encode_png(blank), "blank.png")
    assert not at.exception
    assert any("No cells found" in i.value for i in at.info)


def test_demo_button_and_history_reopen_delete():
    at = _page().run()
    at.button(key="slide_demo").click().run()  # "Try a demo smear"
    assert not at.exception and at.session_state["slide"]["result"].name == "demo_smear.png"
    assert any("A drawn smear, not a real one" in i.value for i in at.info)
    first = at.session_state["slide"]["id"]
    reopen = next(b for b in at.button if b.label == "Reopen")
    reopen.click().run()
    assert not at.exception and at.session_state["slide"]["id"] == first
    delete = next(b for b in at.button if b.label == "Delete")
    delete.click().run()
    assert not at.exception and "slide" not in at.session_state


def _png_header_only(width: int, height: int) -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + (struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))
    )


def _tiff16_gray() -> bytes:
    import io

    import numpy as np
    import tifffile

    img, *_ = make_smear(320, 240, n_wbc=2, n_rbc=8, n_platelet=2, seed=12)
    buf = io.BytesIO()
    tifffile.imwrite(buf, (img.mean(-1) * 257).astype(np.uint16))
    return buf.getvalue()


def _rgba_png() -> bytes:
    import numpy as np

    img, *_ = make_smear(320, 240, n_wbc=2, n_rbc=8, n_platelet=2, seed=13)
    return encode_png(np.dstack([img, np.full(img.shape[:2], 255, np.uint8)]))


@pytest.mark.parametrize(
    ("make", "name", "ok"),
    [
        (_tiff16_gray, "gray16.tif", True),
        (_rgba_png, "rgba.png", True),
        (lambda: _png_header_only(60000, 60000), "huge.png", False),
    ],
)
def test_unusual_formats_and_bombs(make, name, ok):
    at = _upload(_page().run(), make(), name, "image/png" if name.endswith("png") else "image/tiff")
    assert not at.exception
    if ok:
        assert "slide" in at.session_state and [m.label for m in at.metric][:3] == ["WBC", "RBC", "Platelets"]
    else:
        assert at.error and name in at.error[0].value and "slide" not in at.session_state


# ---- a database that is busy, read-only or gone: the analysis is kept, one error, retry and downloads ----
BUSY = "cannot save the analysis: the database /x/[db](http://evil).db is busy; try again"


@pytest.fixture
def db_down(monkeypatch):
    """``db_down(method)`` makes that Store method raise a busy database's StoreError until ``db_down.up()``."""
    from cellkit.store import Store, StoreError

    down: set[str] = set()

    def switch(method: str) -> None:
        original = getattr(Store, method)

        def maybe_fail(self, *args, **kwargs):
            if method in down:
                raise StoreError(BUSY, kind="busy")
            return original(self, *args, **kwargs)

        down.add(method)
        monkeypatch.setattr(Store, method, maybe_fail)

    switch.up = down.clear
    return switch


def _downloads(at: AppTest) -> list[str]:
    return [b.proto.label for b in at.get("download_button")]


def _smear_png(seed: int = 3) -> bytes:
    img, *_ = make_smear(640, 480, n_wbc=3, n_rbc=20, n_platelet=3, seed=seed)
    return encode_png(img)


def test_failed_save_keeps_the_analysis_and_retry_saves_it(db_down):
    from tests.app._markdown import rendered

    db_down("save_analysis")
    at = _upload(_page().run(), _smear_png(), "smear.png")
    assert not at.exception
    assert len(at.error) == 1 and "Not saved to the database" in at.error[0].value
    html, text = rendered(at.error[0].value)
    assert "/x/[db](http://evil).db is busy" in text and "<a" not in html  # the message shown as plain text
    slide = at.session_state["slide"]
    assert slide["id"] is None and len(slide["result"].detections) > 0  # the finished analysis is kept
    assert {m.label: m.value for m in at.metric}["WBC"] == "3"
    assert {"Report CSV", "Report JSON"} <= set(_downloads(at))
    db_down.up()  # the database is back
    at.button(key="slide_retry_save").click().run()
    assert not at.exception and not at.error
    assert at.session_state["slide"]["id"] >= 1
    from cellkit.store import Store

    assert len(Store().list_analyses(at.session_state["owner"])) == 1


def test_undo_works_on_a_field_saved_only_after_its_first_review(db_down):
    """The undo step was recorded under the field's database id, which a delayed save gives later: undo did nothing."""
    db_down("save_analysis")
    at = _upload(_page().run(), _smear_png(), "smear.png")
    cell = at.selectbox(key="slide_cell").value
    model_label = at.session_state["slide"]["result"].labels()[cell]
    at.button(key="slide_key_basophil").click().run()  # reviewed while the database is busy
    assert at.session_state["slide"]["result"].labels()[cell] == "basophil"
    db_down.up()
    at.button(key="slide_retry_save").click().run()
    assert at.session_state["slide"]["id"] is not None
    at.button(key="slide_undo_button").click().run()
    assert not at.exception
    assert at.session_state["slide"]["result"].labels()[cell] == model_label


def test_an_analysis_the_database_never_got_is_kept_when_another_image_is_uploaded(db_down):
    """A new upload replaced the unsaved analysis (and its review) in the session: lost without a word."""
    from cellkit.store import Store

    db_down("save_analysis")
    at = _upload(_page().run(), _smear_png(4), "first.png")
    at.button(key="slide_key_basophil").click().run()  # reviewed while the database is busy
    at = _upload(at, _smear_png(5), "second.png")
    assert not at.exception and at.session_state["slide"]["name"] == "second.png"
    assert any("first.png" in e.value and "were never saved" in e.value for e in at.error)
    db_down.up()
    at.button(key="slide_retry_save").click().run()
    assert not at.exception and not at.error
    stored = {a["file_name"]: a["id"] for a in Store().list_analyses(at.session_state["owner"])}
    assert set(stored) == {"first.png", "second.png"}
    assert "basophil" in Store().load_analysis(stored["first.png"], at.session_state["owner"]).corrections.values()


def test_database_under_a_regular_file_is_one_error_and_nothing_lost(monkeypatch, tmp_path):
    (tmp_path / "file.txt").write_text("not a folder")
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{tmp_path / 'file.txt' / 'cellkit.db'}")
    at = _upload(_page().run(), _smear_png(), "smear.png")
    assert not at.exception
    assert len(at.error) == 1 and "Not saved to the database" in at.error[0].value
    assert at.session_state["slide"]["id"] is None and {"Report CSV", "Report JSON"} <= set(_downloads(at))
    at.button(key="slide_retry_save").click().run()  # still gone: the same single error, the analysis kept
    assert not at.exception and len(at.error) == 1 and at.session_state["slide"]["id"] is None


@pytest.mark.parametrize("unusable", ["folder", "not_a_database"])
def test_an_unusable_database_is_one_error_and_the_rest_of_the_page_quiet(monkeypatch, tmp_path, unusable):
    if unusable == "folder":
        target = tmp_path / "a-folder"
        target.mkdir()
    else:
        target = tmp_path / "notes.db"
        target.write_bytes(b"this is not sqlite" * 100)
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{target}")
    at = _page().run()
    assert not at.exception
    assert len(at.error) == 1 and "The database cannot be used" in at.error[0].value
    captions = [c.value for c in at.caption]
    assert "Past analyses are not available while the database cannot be used (see above)." in captions
    assert "Batch jobs are not available while the database cannot be used (see above)." in captions
    at = _upload(at, _smear_png(), "smear.png")  # an analysis still runs, and is kept: still one error
    assert not at.exception and len(at.error) == 1 and "Not saved to the database" in at.error[0].value
    assert {m.label: m.value for m in at.metric}["WBC"] == "3"


def test_an_image_not_kept_is_said_on_the_first_upload_of_a_session(db_down):
    db_down("save_image")
    at = _upload(_page().run(), _smear_png(), "smear.png")  # starts a case, so the page runs again
    assert not at.exception and at.session_state["case_id"] is not None
    warnings = [w.value for w in at.warning if "not kept for reopening" in w.value]
    assert len(warnings) == 1 and "is busy" in warnings[0]
    assert at.session_state["slide"]["id"] >= 1  # the analysis itself is saved
    at.run()  # said once, not on every rerun
    assert not any("not kept for reopening" in w.value for w in at.warning)


@pytest.mark.parametrize("red_model", [True, False])
def test_add_a_missed_cell_offers_only_the_cell_types_a_model_classifies(monkeypatch, tmp_path, red_model):
    import shutil

    weights = tmp_path / "weights"
    weights.mkdir()
    for card in (ROOT / "weights").glob("*.json"):  # the cards (the loaders are test doubles), red-cell or not
        spec = json.loads(card.read_text())
        if isinstance(spec, dict) and "task" in spec and (red_model or "rbc" not in spec.get("applies_to", [])):
            shutil.copy(card, weights / card.name)
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(weights))
    at = _upload(_page().run(), _smear_png(), "smear.png")
    assert not at.exception
    kinds = at.radio(key="slide_add_kind")
    expected = ["White cell", "Platelet", "Red cell"] if red_model else ["White cell", "Platelet"]
    assert list(kinds.options) == expected


def test_corrections_made_while_the_database_is_gone_are_saved_on_retry(db_down):
    db_down("save_analysis")
    at = _upload(_page().run(), _smear_png(4), "smear.png")
    cell = at.selectbox(key="slide_cell").value
    _reclassify_box(at).set_value("basophil")
    _note_box(at).set_value("looks basophilic")
    _submit(at, "slide_reclassify").click().run()
    assert not at.exception and len(at.error) == 1
    slide = at.session_state["slide"]
    assert slide["result"].corrections == {cell: "basophil"}  # shown and in the downloads at once
    assert slide["pending"] == [(cell, "basophil", "looks basophilic")]
    db_down.up()
    at.button(key="slide_retry_save").click().run()
    assert not at.exception and not at.error
    from cellkit.store import Store

    slide = at.session_state["slide"]
    assert slide["id"] >= 1 and slide["pending"] == []
    saved = Store().corrections(slide["id"], owner=at.session_state["owner"])
    assert [(c["index"], c["label"], c["note"]) for c in saved] == [(cell, "basophil", "looks basophilic")]


def test_correction_on_a_saved_analysis_kept_when_the_database_is_busy(db_down):
    at = _upload(_page().run(), _smear_png(4), "smear.png")
    saved = at.session_state["slide"]["id"]
    db_down("add_correction")
    cell = at.selectbox(key="slide_cell").value
    _reclassify_box(at).set_value("basophil")
    _submit(at, "slide_reclassify").click().run()
    assert not at.exception and len(at.error) == 1 and "Not saved" in at.error[0].value
    slide = at.session_state["slide"]
    assert slide["id"] == saved and slide["result"].corrections == {cell: "basophil"}
    db_down.up()
    at.button(key="slide_retry_save").click().run()
    assert not at.exception and not at.error and at.session_state["slide"]["pending"] == []


@pytest.mark.parametrize("method", ["list_analyses", "load_analysis", "delete_analysis"])
def test_history_failures_are_one_error_and_keep_the_analysis(db_down, method):
    at = _upload(_page().run(), _smear_png(), "smear.png")
    saved = at.session_state["slide"]["id"]
    assert saved >= 1
    db_down(method)
    if method == "list_analyses":
        at.run()
    else:
        next(b for b in at.button if b.label == ("Reopen" if method == "load_analysis" else "Delete")).click().run()
    assert not at.exception
    assert len(at.error) == 1 and "is busy" in at.error[0].value
    assert at.session_state["slide"]["id"] == saved and {"Report CSV", "Report JSON"} <= set(_downloads(at))


def test_upload_over_cellkit_max_upload_mb_is_refused(monkeypatch):
    monkeypatch.setenv("CELLKIT_MAX_UPLOAD_MB", "1")
    at = _page().run()
    assert at.file_uploader(key="slide_upload").proto.max_upload_size_mb == 1
    at = _upload(at, _smear_png() + b"\0" * (1024 * 1024), "big [x](http://evil).png")
    assert not at.exception
    assert len(at.error) == 1 and "upload limit of 1 MB" in at.error[0].value and "slide" not in at.session_state


def test_flagged_cells_are_unidentified_in_the_differential_and_the_gallery(monkeypatch):
    import cellkit.classify

    def unsure(name=None):
        clf = cellkit.classify.build_tiny_classifier()
        clf.spec.ood = {"min_group_prob": 0.99}  # every white cell goes to review
        return clf

    monkeypatch.setattr(cellkit.classify, "load_classifier", unsure)
    img, _boxes, _cls = make_smear(640, 480, n_wbc=3, n_rbc=20, n_platelet=2, seed=3)
    at = _upload(_page().run(), encode_png(img), "smear.png")
    assert not at.exception
    table = at.dataframe[0].value  # the differential's table
    assert list(table["White cell"]) == ["Unidentified — review"] and int(table["Count"].iloc[0]) == 3
    assert "unknown" not in " ".join(table["White cell"])  # never the id on screen
    assert any("Platelets: 2, after review." in c.value for c in at.caption)
    picker = at.selectbox(key="slide_cell")  # the review picker names cells as on screen
    assert picker.options and all("Unidentified — review" in o for o in picker.options)
    assert any(visible(c.value).startswith("Flagged: unsure: no class reaches 0.99") for c in at.caption)  # why
    assert any(md.value.startswith("**Unidentified — review** (3)") for md in at.markdown)  # the gallery
    # flagged platelet boxes are grouped apart, saying how they are counted (they stood among the white cells)
    assert any(md.value.startswith("**Unidentified — review · platelet boxes, counted as platelets until decided** (2)")
               for md in at.markdown)  # fmt: skip


@pytest.mark.parametrize("inside_data_folder", [True, False])
def test_batch_job_is_listed_with_totals_and_a_smear_opens(tmp_path, monkeypatch, inside_data_folder):
    import getpass

    import pandas as pd

    from cellkit.batch import find_tasks, import_job, job_settings, run_batch
    from cellkit.pipeline import ModelChoice
    from cellkit.store import Store

    data = tmp_path / "archive"
    data.mkdir()
    for k in range(2):
        img, *_ = make_smear(320, 240, n_wbc=2, n_rbc=8, n_platelet=2, seed=40 + k)
        (data / f"field{k}.png").write_bytes(encode_png(img))
    (data / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "job"
    run_batch(find_tasks([data]), out, job_settings(ModelChoice("detector_v2", "classifier_lite0_v4")))
    import_job(out, Store(), getpass.getuser())
    monkeypatch.setenv("CELLKIT_DATA_DIR", str(data if inside_data_folder else tmp_path / "elsewhere"))
    at = _page().run()
    assert not at.exception
    jobs = next(d for d in at.dataframe if "Images" in d.value.columns).value
    summary = pd.read_csv(out / "summary.csv")
    assert jobs.iloc[0]["Images"] == 3 and jobs.iloc[0]["Errors"] == 1
    assert jobs.iloc[0]["White cells"] == summary.wbc.sum() and jobs.iloc[0]["Red cells"] == summary.rbc.sum()
    assert any("could not be analysed" in w.value for w in at.warning)
    at.selectbox(key="batch_smear").select_index(1).run()
    next(b for b in at.button if b.label == "Open this smear").click().run()
    assert not at.exception
    slide = at.session_state["slide"]
    assert slide["result"].name.endswith("archive/field1.png")
    row = summary.iloc[2]  # broken.png, field0.png, field1.png
    assert [m.value for m in at.metric][:3] == [str(int(row[c])) for c in ("wbc", "rbc", "platelet")]
    if inside_data_folder:
        assert slide["image"] is not None, (slide.get("image_note"), [i.value for i in at.info])
        assert slide["image"] is not None and slide["image"].shape == (240, 320, 3)
    else:
        assert slide["image"] is None
        assert any("outside the data folders" in i.value for i in at.info)


def test_saved_analyses_come_back_after_a_reload():
    """Analyses belong to the user (single-user mode: the account running the app), not to a browser session."""
    first = _page().run()
    first.button(key="slide_demo").click().run()  # "Try a demo smear": analysed and saved
    saved = first.session_state["slide"]["id"]
    again = _page().run()  # a reload: a new session
    assert not again.exception
    past = next(d.value for d in again.dataframe if "File" in d.value.columns)
    assert saved in list(past["Analysis"])
    assert not any("_" in c for c in past.columns)  # column names a person reads


def test_a_box_is_rejected_in_review_and_leaves_the_differential():
    img, *_ = make_smear(640, 480, n_wbc=2, n_rbc=10, n_platelet=2, seed=4)
    at = _upload(_page().run(), encode_png(img), "smear.png")
    classes = at.session_state["slide"]["result"].detections.class_name
    picker = at.selectbox(key="slide_cell")
    cell = next(i for i in range(len(classes)) if classes[i] == "wbc")
    picker.set_value(cell).run()
    before = sum(v["count"] for v in at.session_state["slide"]["result"].differential().values())
    _reclassify_box(at).set_value("reject_not_a_cell")
    _submit(at, "slide_reclassify").click().run()
    assert not at.exception
    result = at.session_state["slide"]["result"]
    assert result.corrections == {cell: "reject_not_a_cell"}
    assert sum(v["count"] for v in result.differential().values()) == before - 1
    assert any("Rejected in review, not counted: not a cell 1" in c.value for c in at.caption)


def test_an_image_too_small_to_be_a_field_is_one_message_and_the_other_upload_runs():
    img, _boxes, _cls = make_smear(640, 480, n_wbc=2, n_rbc=10, n_platelet=1, seed=4)
    at = _page().run()
    up = at.file_uploader(key="slide_upload")
    up.upload("dot.png", encode_png(np.full((1, 1, 3), 120, np.uint8)), "image/png")
    up.upload("smear.png", encode_png(img), "image/png")
    at.run()
    assert not at.exception
    assert any("dot.png" in e.value and "too small to be a smear field" in e.value for e in at.error)
    assert {m.label: m.value for m in at.metric}["WBC"] == "2"


def test_undo_back_to_unidentified_is_saved_and_so_are_the_corrections_after_it():
    """A cell the model left for review, relabelled by a key and undone: the undo is saved (it was refused as an
    unknown label and blocked every later correction), and the cell counts as uncorrected again."""
    at = _upload(_page().run(), _smear_png(4), "smear.png")
    slide = at.session_state["slide"]
    cell = at.selectbox(key="slide_cell").value
    slide["result"].corrections[cell] = "unknown"  # shown as Unidentified — review (as the model leaves cells)
    at.run()
    at.button(key="slide_key_basophil").click().run()
    at.button(key="slide_undo_button").click().run()
    assert not at.exception and not at.error
    slide = at.session_state["slide"]
    assert slide["pending"] == [] and slide["result"].labels()[cell] == "unknown"
    at.session_state["slide_cell"] = cell
    at.button(key="slide_key_eosinophil").click().run()
    assert not at.error and slide["pending"] == []
    from cellkit.store import Store

    saved = Store().corrections(slide["id"], owner=at.session_state["owner"])
    assert [(c["index"], c["label"]) for c in saved] == [(cell, "basophil"), (cell, "unknown"), (cell, "eosinophil")]


def test_an_undo_leaves_a_flagged_platelet_to_review_on_the_page_and_in_the_database(unsure_classifier):
    """The undo wrote the model's "Unidentified — review" back as a reviewer's decision: the platelet left the list
    of platelets to check, though nobody had decided it, and stayed decided when the analysis was reopened."""
    from cellkit.store import Store

    at = _upload(_page().run(), _smear_png(), "smear.png")
    result = at.session_state["slide"]["result"]
    flagged = result.platelets_to_review()
    assert len(flagged) == 3  # every platelet box, flagged by the unsure model
    at.session_state["slide_cell"] = flagged[0]
    at.button(key="slide_key_lymphocyte").click().run()
    assert at.session_state["slide"]["result"].platelets_to_review() == flagged[1:]
    at.button(key="slide_undo_button").click().run()
    assert not at.exception and not at.error
    slide = at.session_state["slide"]
    assert slide["result"].corrections == {} and slide["result"].platelets_to_review() == flagged
    assert any(w.value.startswith("3 platelets were flagged") for w in at.warning)
    again = Store().load_analysis(slide["id"], owner=at.session_state["owner"])
    assert again.corrections == {} and again.platelets_to_review() == flagged  # undecided when reopened too


def _past_delete(at: AppTest, analysis_id: int) -> AppTest:
    """Delete an analysis with "Your past analyses" (Delete)."""
    at.selectbox(key="slide_past").set_value(analysis_id)
    return next(b for b in at.button if b.label == "Delete").click().run()


def test_an_undo_step_of_a_deleted_analysis_never_reaches_the_next_one_saved_under_its_id():
    """SQLite gives the deleted analysis's id to the next one: the same image uploaded again got its undo steps."""
    from cellkit.store import Store

    at = _upload(_page().run(), _smear_png(), "smear.png")
    old = at.session_state["slide"]["id"]
    at.button(key="slide_key_basophil").click().run()
    at = _past_delete(at, old)
    assert not at.exception and "slide" not in at.session_state
    at = _upload(at, _smear_png(), "again.png")  # the same pixels, a new analysis
    slide = at.session_state["slide"]
    assert slide["id"] == old  # the id came back: what made the old steps match
    assert at.button(key="slide_undo_button").disabled  # the deleted analysis's steps went with it
    assert slide["result"].corrections == {} and Store().corrections(old, owner=at.session_state["owner"]) == []


def test_an_undo_step_never_reaches_another_image_given_the_id_of_one_deleted_elsewhere():
    """Deleted in another tab, so this page kept its steps: the new image's cells were relabelled (or IndexError)."""
    from cellkit.store import Store

    at = _upload(_page().run(), _smear_png(), "smear.png")
    old, owner = at.session_state["slide"]["id"], at.session_state["owner"]
    at.button(key="slide_key_basophil").click().run()
    Store().delete_analysis(old, owner=owner)  # another tab
    at = _upload(at, _smear_png(4), "other.png")
    slide = at.session_state["slide"]
    assert slide["id"] == old and slide["result"].name == "other.png"
    at.button(key="slide_undo_button").click().run()
    assert not at.exception and slide["result"].corrections == {}
    assert Store().corrections(slide["id"], owner=owner) == []


def test_an_undo_step_of_a_cell_the_field_does_not_have_is_said_never_raised():
    from cellkit.store import Store
    from tests.app._markdown import rendered

    at = _upload(_page().run(), _smear_png(), "smear.png")
    slide = at.session_state["slide"]
    n = len(slide["result"].detections)
    at.session_state["slide_undo"] = [(slide["key"], slide["id"], slide["result"].image_sha256, n + 5, None)]
    at.run().button(key="slide_undo_button").click().run()
    assert not at.exception and any(f"this field has no cell #{n + 5}" in rendered(e.value)[1] for e in at.error)
    assert at.session_state["slide_undo"] == [] and slide["result"].corrections == {}  # the step is gone
    assert Store().corrections(slide["id"], owner=at.session_state["owner"]) == []


def test_the_reclassify_box_starts_at_the_selected_cells_own_label():
    """Switching cells never carries the previous cell's choice into "Reclassify as" (it relabelled the wrong cell)."""
    img, *_ = make_smear(640, 480, n_wbc=3, n_rbc=10, n_platelet=2, seed=4)
    at = _upload(_page().run(), encode_png(img), "smear.png")
    result = at.session_state["slide"]["result"]
    cells = list(at.selectbox(key="slide_cell").options)
    assert len(cells) >= 2
    _reclassify_box(at).set_value("reject_artefact").run()  # chosen, not saved
    at.selectbox(key="slide_cell").set_value(at.selectbox(key="slide_cell").options[1]).run()
    second = at.selectbox(key="slide_cell").value
    assert _reclassify_box(at).value == result.labels()[second]
    _submit(at, "slide_reclassify").click().run()  # saving unchanged changes nothing to another label
    assert at.session_state["slide"]["result"].labels()[second] == result.detections.data["label"][second]


def test_a_field_keeps_the_model_that_analysed_it_when_the_sidebar_changes(monkeypatch):
    """Review, added cells and "Explain this cell" use the field's own model, and the page says so."""
    from _fakes import tiny_classifier_for

    import cellkit.classify

    def named(name=None):  # tiny stand-ins that carry the name they were asked for
        clf = tiny_classifier_for(name)
        if name and "rbc" not in (clf.spec.applies_to or []):
            clf.spec.name = name
        return clf

    monkeypatch.setattr(cellkit.classify, "load_classifier", named)
    at = _upload(_page().run(), _smear_png(4), "smear.png")
    first = at.session_state["slide"]["clf"].spec.name
    assert at.session_state["slide"]["result"].models["classifier"]["name"] == first
    assert not any("This field was analysed with" in c.value for c in at.caption)
    at.session_state["classifier_name"] = "classifier_lite0" if first != "classifier_lite0" else "other"
    at.run()
    assert not at.exception
    assert any("This field was analysed with" in c.value and "new uploads" in c.value for c in at.caption)
    assert at.session_state["slide"]["clf"].spec.name == first
    next(b for b in at.button if b.label == "Explain this cell").click().run()
    assert at.session_state["explain_model"] == first  # the Explain page explains the call the slide shows


def test_a_field_at_a_scale_the_detector_never_saw_is_warned(monkeypatch):
    from _fakes import ColourDetector

    import cellkit.detect

    det = ColourDetector()
    det.spec.card["reference_cell_px"] = {"range_5_95": [150.0, 200.0]}  # the drawn cells are far smaller
    monkeypatch.setattr(cellkit.detect, "load_detector", lambda name=None: det)
    st.cache_resource.clear()
    img, *_ = make_smear(640, 480, n_wbc=2, n_rbc=20, n_platelet=2, seed=5)
    at = _upload(_page().run(), encode_png(img), "tiny.png")
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any("smaller than on any smear the detector was trained on" in w for w in warnings)
    assert any("tiny.png" in w and "never trained on" in w for w in warnings)  # the case tab names the field


def test_a_cell_added_while_the_database_is_busy_is_kept_and_saved_on_retry(db_down, monkeypatch):
    """The click on the field is a custom component AppTest cannot press: a button calls the same action."""
    import ui.review

    def add_here(image, result, key, locked, act, kinds=None):
        st.button("add here", key="test_add", on_click=act, args=("add", ("wbc", 300.0, 200.0)))

    monkeypatch.setattr(ui.review, "add_cell_ui", add_here)
    at = _upload(_page().run(), _smear_png(4), "smear.png")
    saved, n = at.session_state["slide"]["id"], len(at.session_state["slide"]["result"].detections)
    db_down("add_cell")
    at.button(key="test_add").click().run()
    assert not at.exception and len(at.error) == 1 and "Not saved" in at.error[0].value
    slide = at.session_state["slide"]
    assert len(slide["result"].detections) == n + 1 and n in slide["result"].added  # kept in the session
    assert slide["pending_adds"] == [n]
    db_down.up()
    at.button(key="slide_retry_save").click().run()
    assert not at.exception and not at.error and at.session_state["slide"]["pending_adds"] == []
    from cellkit.store import Store

    assert n in Store().load_analysis(saved, at.session_state["owner"]).added  # in the database at last


def test_undo_after_a_red_cell_correction_undoes_that_red_cell():
    img, *_ = make_smear(640, 480, n_wbc=1, n_rbc=12, n_platelet=1, seed=6)
    at = _upload(_page().run(), encode_png(img), "smear.png")
    cell = at.selectbox(key="rbc_cell").value
    before = at.session_state["slide"]["result"].labels()[cell]
    _reclassify_box(at, "rbc").set_value("schistocyte" if before != "schistocyte" else "normal")
    _submit(at, "rbc_reclassify").click().run()
    assert at.session_state["slide"]["result"].labels()[cell] != before
    at.button(key="slide_undo_button").click().run()
    assert not at.exception
    assert at.session_state["slide"]["result"].labels()[cell] == before and at.session_state["rbc_cell"] == cell


def test_a_detector_or_red_cell_model_that_no_longer_loads_never_breaks_a_finished_field(monkeypatch):
    import cellkit.classify
    import cellkit.detect
    from cellkit.errors import CellkitError

    img, *_ = make_smear(640, 480, n_wbc=1, n_rbc=12, n_platelet=1, seed=6)
    first = _upload(_page().run(), encode_png(img), "smear.png")
    assert not first.exception

    def broken(name=None):
        raise CellkitError("detector weights damaged.safetensors: sha256 does not match its card")

    clf_loader = cellkit.classify.load_classifier

    def classifier(name=None):
        return broken() if name and name.startswith("rbc") else clf_loader(name)

    monkeypatch.setattr(cellkit.detect, "load_detector", broken)
    monkeypatch.setattr(cellkit.classify, "load_classifier", classifier)
    st.cache_resource.clear()
    again = _page().run()  # a reload: the case and its field come back from the database
    assert not again.exception
    assert again.session_state["slide"]["id"] == first.session_state["slide"]["id"]
    assert {m.label for m in again.metric} >= {"WBC", "RBC", "Platelets"}


def test_a_demo_smear_stays_out_of_the_patients_case_when_no_demo_case_can_be_started(db_down):
    from cellkit.store import Store

    at = _upload(_page().run(), _smear_png(), "patient.png")
    patient = at.session_state["case_id"]
    db_down("create_case")
    at.button(key="slide_demo").click().run()
    assert not at.exception
    owner = at.session_state["owner"]
    assert [r.name for _, r in Store().case_fields(patient, owner)] == ["patient.png"]
    slide = at.session_state["slide"]
    assert slide["case_id"] is None and slide["name"] == "demo_smear.png"  # shown on its own


def test_a_cell_the_store_refuses_is_said_once_and_never_blocks_later_saves(monkeypatch):
    """A refusal (the case signed in another tab) is no busy database: the add is not retried for ever."""
    import ui.review
    from cellkit.errors import CellkitError
    from cellkit.store import Store

    def add_here(image, result, key, locked, act, kinds=None):
        st.button("add here", key="test_add", on_click=act, args=("add", ("wbc", 300.0, 200.0)))

    monkeypatch.setattr(ui.review, "add_cell_ui", add_here)
    at = _upload(_page().run(), _smear_png(4), "smear.png")

    def refuse(self, *args, **kwargs):
        raise CellkitError("the case is signed off (version 1); amend it to add cells to it")

    monkeypatch.setattr(Store, "add_cell", refuse)
    at.button(key="test_add").click().run()
    assert not at.exception and any("The added cell was not saved" in e.value for e in at.error)
    assert at.session_state["slide"]["pending_adds"] == [] and not at.session_state["slide"]["db_error"]


def test_a_label_the_store_refuses_is_said_once_and_never_retried_for_ever(monkeypatch):
    """A refused correction (the case signed in another tab) stayed pending: "Retry save" for ever."""
    from cellkit.errors import CellkitError
    from cellkit.store import Store

    at = _upload(_page().run(), _smear_png(4), "smear.png")

    def refuse(self, *args, **kwargs):
        raise CellkitError("the case is signed off (version 1); amend it to change its cells")

    monkeypatch.setattr(Store, "add_correction", refuse)
    cell = at.selectbox(key="slide_cell").value
    at.button(key="slide_key_basophil").click().run()
    assert not at.exception and any("was not saved and is taken back" in e.value and "signed off" in e.value
                                    for e in at.error)  # fmt: skip
    assert cell not in at.session_state["slide"]["result"].corrections  # the page never shows an unstored label
    assert at.button(key="slide_undo_button").disabled  # and its undo step went with it
    assert at.session_state["slide"]["pending"] == [] and not at.session_state["slide"]["db_error"]
    assert "slide_retry_save" not in [b.key for b in at.button]


def test_a_cell_left_for_review_starts_with_no_choice_and_an_empty_save_records_nothing():
    """The best guess of an Unidentified cell is never pre-selected: one click on "Save correction" made it the
    reviewer's decision. Saving with no choice, or with the label the cell already has, records nothing."""
    from cellkit.store import Store

    at = _upload(_page().run(), _smear_png(4), "smear.png")
    slide = at.session_state["slide"]
    cell = at.selectbox(key="slide_cell").value
    slide["result"].corrections[cell] = "unknown"  # as the model leaves a flagged cell
    at.run()
    box = _reclassify_box(at)
    assert box.value is None and box.proto.placeholder == "Choose a cell type"  # short: a narrow column cut it
    assert "best guess" in box.proto.help and any(c.value.startswith("Best guess: ") for c in at.caption)
    _submit(at, "slide_reclassify").click().run()
    assert not at.exception and any("nothing was saved" in w.value for w in at.warning)
    assert at.session_state["slide"]["result"].labels()[cell] == "unknown"
    assert Store().corrections(slide["id"], owner=at.session_state["owner"]) == []
    _reclassify_box(at).set_value("basophil")
    _submit(at, "slide_reclassify").click().run()
    assert at.session_state["slide"]["result"].labels()[cell] == "basophil"
    _submit(at, "slide_reclassify").click().run()  # the same label again: no second record
    assert any("No change" in m.value for m in at.info)
    saved = Store().corrections(slide["id"], owner=at.session_state["owner"])
    assert [(c["index"], c["label"]) for c in saved] == [(cell, "basophil")]


def test_red_cell_forms_the_page_calls_unreliable_are_not_tabled(monkeypatch):
    """The warning said the forms were unreliable while the table beside it gave their percentages."""
    import cellkit
    import cellkit.rbc_grading

    def off(result, spec):
        return "The red cells here are 3.0x the size the red-cell model was trained on: withheld."

    monkeypatch.setattr(cellkit.rbc_grading, "scale_warning", off)
    monkeypatch.setattr(cellkit, "scale_warning", off, raising=False)
    img, *_ = make_smear(640, 480, n_wbc=1, n_rbc=12, n_platelet=1, seed=6)
    at = _upload(_page().run(), encode_png(img), "smear.png")
    assert not at.exception and any("3.0x the size" in w.value for w in at.warning)
    assert not any("Form" in d.value.columns for d in at.dataframe)
    assert any("No form counts or percentages" in c.value for c in at.caption)
