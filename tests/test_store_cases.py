"""Cases in the database: fields in order, sign-off locks, amendments are new logged versions, stored images."""

from __future__ import annotations

import numpy as np
import pytest
from _fakes import ColourDetector

from cellkit.case import case_summary
from cellkit.classify import build_tiny_classifier
from cellkit.errors import CellkitError
from cellkit.review import add_cell
from cellkit.slide import analyze, image_sha256
from cellkit.store import Store
from cellkit.synth import make_smear


@pytest.fixture(scope="module")
def smear():
    img, *_ = make_smear(320, 240, n_wbc=2, n_rbc=6, n_platelet=1, seed=5)
    clf = build_tiny_classifier()
    return img, clf, analyze(img, ColourDetector(), clf, name="f1.png")


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'a.db'}")


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request, tmp_path):
    """The same behaviour on SQLite and on PostgreSQL (a throwaway server; skipped without Debian postgresql)."""
    if request.param == "sqlite":
        return Store(f"sqlite:///{tmp_path / 'a.db'}")
    import sqlalchemy as sa

    server = request.getfixturevalue("postgres")
    engine = sa.create_engine(server.url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:  # a clean database: the module's server is shared by the tests
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return Store(server.url)


def _wbc(result) -> int:
    return int(np.flatnonzero(result.detections.class_name == "wbc")[0])


def test_a_case_gathers_its_fields_in_order_and_only_its_owner_sees_it(store, smear):
    _, _, result = smear
    cid = store.create_case("ann", "  S-26  0042 ", target_wbc=200, details={"specimen": "EDTA blood"})
    ids = [store.save_analysis(result, owner="ann", file_name=f"f{k}.png", case_id=cid) for k in range(3)]
    store.save_analysis(result, owner="ann", file_name="loose.png")  # not in the case
    case = store.case(cid, "ann")
    assert case["name"] == "S-26 0042" and case["target_wbc"] == 200 and case["field_ids"] == ids
    assert case["status"] == "open" and case["version"] == 1 and case["details"] == {"specimen": "EDTA blood"}
    assert [r for _, r in store.case_fields(cid, "ann")][2].name == "f2.png"
    (row,) = store.list_cases("ann")
    assert row["fields"] == 3 and row["signed_by"] == ""
    assert store.list_cases("bob") == []
    with pytest.raises(CellkitError, match="not found"):
        store.case(cid, "bob")
    with pytest.raises(CellkitError, match="not found"):
        store.save_analysis(result, owner="bob", case_id=cid)
    with pytest.raises(CellkitError, match="name"):
        store.create_case("ann", "   ")
    with pytest.raises(CellkitError, match="expected 1 to 10,000"):
        store.create_case("ann", "x", target_wbc=0)


def test_sign_off_locks_the_case_and_an_amendment_is_a_new_logged_version(any_store, smear):
    store = any_store
    img, clf, result = smear
    cid = store.create_case("ann", "S-1")
    aid = store.save_analysis(result, owner="ann", case_id=cid)
    cell = _wbc(result)
    store.add_correction(aid, cell, "eosinophil", owner="ann", author="dr.a", note="granules")
    summary = case_summary("S-1", [r for _, r in store.case_fields(cid, "ann")])
    assert store.sign_off(cid, "ann", "Dr A", summary) == 1
    row = store.case(cid, "ann")
    assert row["status"] == "signed" and row["signed_by"] == "Dr A" and row["signed_at"]
    for change in (
        lambda: store.add_correction(aid, cell, "basophil", owner="ann"),
        lambda: store.save_analysis(result, owner="ann", case_id=cid),
        lambda: store.delete_analysis(aid, owner="ann"),
        lambda: store.sign_off(cid, "ann", "Dr A", summary),
        lambda: store.add_cell(aid, *add_cell(img, result, 50.0, 50.0, clf, author="dr.a"), owner="ann"),
    ):
        with pytest.raises(CellkitError, match="signed off \\(version 1\\); amend it"):
            change()
    with pytest.raises(CellkitError, match="reason"):
        store.amend_case(cid, "ann", "Dr A", "  ")
    assert store.amend_case(cid, "ann", "Dr A", "missed a blast") == 2
    store.add_correction(aid, cell, "basophil", owner="ann", author="Dr A", note="looked again")
    assert store.load_analysis(aid, "ann").corrections == {cell: "basophil"}
    assert store.sign_off(cid, "ann", "Dr B", summary, note="second look") == 2
    trail = store.case_audit(cid, "ann")
    assert [t["what"] for t in trail] == ["created", "correction", "signed", "amended", "correction", "signed"]
    corrections = [t for t in trail if t["what"] == "correction"]
    assert [(c["from_label"], c["label"], c["version"]) for c in corrections] == [
        (result.detections.data["label"][cell], "eosinophil", 1),
        ("eosinophil", "basophil", 2),
    ]
    assert trail[3]["note"] == "missed a blast" and trail[-1]["who"] == "Dr B"
    with pytest.raises(CellkitError, match="not signed off"):
        store.amend_case(store.create_case("ann", "S-2"), "ann", "x", "why")


def test_a_cell_added_by_the_reviewer_is_stored_classified_and_reloaded(any_store, smear):
    store = any_store
    img, clf, result = smear
    aid = store.save_analysis(result, owner="ann")
    more, idx = add_cell(img, result, 100.0, 80.0, clf, author="dr.a")
    assert idx == len(result.detections) and more.added == {idx: "dr.a"} and len(result.detections) == idx
    assert store.add_cell(aid, more, idx, owner="ann") == idx
    back = store.load_analysis(aid, "ann")
    assert back.added == {idx: "dr.a"} and back.detections.class_name[idx] == "wbc"
    assert back.detections.data["label"][idx] == more.detections.data["label"][idx] != ""
    np.testing.assert_allclose(back.detections.data["node_probs"][idx], more.detections.data["node_probs"][idx], 1e-5)
    with pytest.raises(CellkitError, match="expected the new one"):
        store.add_cell(aid, more, idx, owner="ann")  # twice: the analysis moved on
    with pytest.raises(CellkitError, match="not a cell added"):
        store.add_cell(aid, more, 0, owner="ann")
    assert store.corrections(aid, "ann") == []


def test_a_cell_added_to_a_case_is_in_its_audit_trail_with_who_when_and_version(any_store, smear):
    store = any_store
    img, clf, result = smear
    cid = store.create_case("ann", "S-3")
    aid = store.save_analysis(result, owner="ann", case_id=cid, file_name="f1.png")
    more, idx = add_cell(img, result, 100.0, 80.0, clf, author="dr.a")
    store.add_cell(aid, more, idx, owner="ann")
    store.add_correction(aid, idx, "basophil", owner="ann", author="dr.a", note="granules")
    trail = store.case_audit(cid, "ann")
    assert [t["what"] for t in trail] == ["created", "added", "correction"]
    added = trail[1]
    assert (added["who"], added["field"], added["cell"], added["version"]) == ("dr.a", "f1.png", idx, 1)
    assert added["label"] == more.detections.data["label"][idx] and added["created"] not in ("", "unknown")
    assert "(cell added by the reviewer)" in trail[2]["note"]


def test_an_undo_that_withdraws_a_correction_is_in_the_audit_trail_as_an_undo(any_store, smear):
    store = any_store
    _, _, result = smear
    cid = store.create_case("ann", "S-5")
    aid = store.save_analysis(result, owner="ann", case_id=cid, file_name="f1.png")
    cell = _wbc(result)
    model = str(result.detections.data["label"][cell])
    store.add_correction(aid, cell, "basophil", owner="ann", author="dr.a")
    store.add_correction(aid, cell, None, owner="ann", author="dr.a", note="undo")
    trail = store.case_audit(cid, "ann")
    assert [t["what"] for t in trail] == ["created", "correction", "undo"]
    undo = trail[2]
    assert (undo["who"], undo["cell"], undo["from_label"], undo["label"]) == ("dr.a", cell, "basophil", model)
    assert "withdrawn" in undo["note"] and store.case_fields(cid, "ann")[0][1].corrections == {}
    store.add_correction(aid, cell, "eosinophil", owner="ann", author="dr.a")
    store.add_correction(aid, cell, "monocyte", owner="ann", author="dr.a")
    store.add_correction(aid, cell, "eosinophil", owner="ann", author="dr.a", note="undo")  # back to a decision
    assert [t["what"] for t in store.case_audit(cid, "ann")][-1] == "undo"  # an undo reads as one, either way


def test_who_started_a_case_is_the_reviewer_when_named(any_store):
    """The audit trail said "Created · root" with a reviewer's name typed in the sidebar."""
    cid = any_store.create_case("root", "S-6", who="Dr Ada")
    first = any_store.case_audit(cid, "root")[0]
    assert (first["what"], first["who"]) == ("created", "Dr Ada")
    assert any_store.case_audit(any_store.create_case("root", "S-7"), "root")[0]["who"] == "root"  # default


def test_cells_added_and_corrected_before_the_first_save_keep_who_when_and_version(any_store, smear):
    """The app saves such a field later ("Retry save" after the database was busy): its audit is as complete."""
    store = any_store
    img, clf, result = smear
    cid = store.create_case("ann", "S-4")
    more, _ = add_cell(img, result, 100.0, 80.0, clf, author="dr.a")
    more.corrections[0] = "basophil"  # as the page keeps a review made while the database was busy
    store.save_analysis(more, owner="ann", case_id=cid, file_name="f1.png")
    trail = store.case_audit(cid, "ann")
    added = next(t for t in trail if t["what"] == "added")
    assert added["created"] not in ("", "unknown") and added["version"] == 1
    fix = next(t for t in trail if t["what"] == "correction")
    assert (fix["who"], fix["from_label"], fix["label"], fix["version"]) == (
        "ann", result.detections.data["label"][0] or result.detections.class_name[0], "basophil", 1)  # fmt: skip
    assert [t["created"] for t in trail] == sorted(t["created"] for t in trail)  # none before the case was made


def test_a_sign_off_of_counts_read_before_another_change_is_refused(any_store, smear):
    store = any_store
    _, _, result = smear
    cid = store.create_case("ann", "S-5")
    aid = store.save_analysis(result, owner="ann", case_id=cid)
    state, fields = store.case_snapshot(cid, "ann")
    assert [a for a, _ in fields] == [aid] and store.case_snapshot(cid, "ann")[0] == state  # reading changes nothing
    store.add_correction(aid, 0, "reject_artefact", owner="ann", author="other tab")
    summary = case_summary("S-5", [r for _, r in fields], 100)
    with pytest.raises(CellkitError, match="changed since its counts were read"):
        store.sign_off(cid, "ann", "Dr A", summary, expected_state=state)
    assert store.case(cid, "ann")["status"] == "open"
    state, fields = store.case_snapshot(cid, "ann")
    fresh = case_summary("S-5", [r for _, r in fields], 100)
    assert store.sign_off(cid, "ann", "Dr A", fresh, expected_state=state) == 1
    amended = store.amend_case(cid, "ann", "Dr A", "recount")
    with pytest.raises(CellkitError, match="changed since"):  # an amendment is a change too
        store.sign_off(cid, "ann", "Dr A", summary, expected_state=state)
    assert amended == 2


@pytest.mark.parametrize("mode", ["files", "database"])
def test_images_are_stored_by_their_pixels_hash(store, smear, mode, monkeypatch, tmp_path):
    img = smear[0]
    monkeypatch.setenv("CELLKIT_IMAGE_STORE", mode)
    sha = image_sha256(img)
    assert store.load_image(sha) is None
    assert store.save_image(img, sha) and store.save_image(img, sha)  # the second one writes nothing
    np.testing.assert_array_equal(store.load_image(sha), img)
    files = list((tmp_path / "images").rglob("*.png"))
    assert [f.name for f in files] == ([f"{sha}.png"] if mode == "files" else [])
    if mode == "files":  # a damaged file is not shown as the image
        files[0].write_bytes(files[0].read_bytes()[:-40] + bytes(40))
        assert store.load_image(sha) is None


def test_image_store_off_and_unwritable(store, smear, monkeypatch, tmp_path):
    img = smear[0]
    monkeypatch.setenv("CELLKIT_IMAGE_STORE", "off")
    assert store.save_image(img, image_sha256(img)) is False
    monkeypatch.setenv("CELLKIT_IMAGE_STORE", "tape")
    with pytest.raises(CellkitError, match="expected one of files, database, off"):
        store.save_image(img, image_sha256(img))
    monkeypatch.setenv("CELLKIT_IMAGE_STORE", "files")
    blocker = tmp_path / "blocked"
    blocker.write_text("a file, not a folder")
    monkeypatch.setenv("CELLKIT_IMAGE_DIR", str(blocker))
    with pytest.raises(CellkitError, match=r"cannot store the image .*CELLKIT_IMAGE_DIR"):
        store.save_image(img, image_sha256(img))


def test_adding_a_cell_no_model_can_classify_says_so_in_words(smear):
    img, clf, result = smear
    with pytest.raises(CellkitError, match=r"cannot add one of the red cells: no model here classifies them") as err:
        add_cell(img, result, 100.0, 80.0, {"wbc": clf, "platelet": clf}, author="dr.a", cls="rbc")
    assert "it can add: platelets, white cells" in str(err.value) and "rbc" not in str(err.value)


def test_on_postgresql_a_correction_waits_for_a_sign_off_in_progress_and_is_then_refused(request, tmp_path, smear):
    """PostgreSQL's default isolation let a correction land after the signature: the case row is now locked
    (SQLite serialises its writers with BEGIN IMMEDIATE)."""
    import threading

    import sqlalchemy as sa

    server = request.getfixturevalue("postgres")
    url = server.url.replace("postgresql://", "postgresql+psycopg://")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    store = Store(url)
    cid = store.create_case("ann", "S-6")
    aid = store.save_analysis(smear[2], owner="ann", case_id=cid)
    outcome: list[object] = []

    def correct() -> None:
        try:
            outcome.append(store.add_correction(aid, 0, "basophil", owner="ann"))
        except CellkitError as exc:
            outcome.append(exc)

    with engine.connect() as signer:
        tx = signer.begin()
        signer.execute(sa.text("SELECT id FROM cases WHERE id = :i FOR UPDATE"), {"i": cid})  # a sign-off under way
        worker = threading.Thread(target=correct)
        worker.start()
        worker.join(1.0)
        assert worker.is_alive()  # the correction waits for the case row ...
        signer.execute(sa.text("UPDATE cases SET status = 'signed' WHERE id = :i"), {"i": cid})
        tx.commit()
    worker.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], CellkitError) and "signed off" in str(outcome[0])  # ... refused
    assert store.corrections(aid, "ann") == []
