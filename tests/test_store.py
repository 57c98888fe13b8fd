"""The analyses database: round trip, owners kept apart, corrections, delete, all-or-nothing saves."""

from __future__ import annotations

import numpy as np
import pytest
from _fakes import ColourDetector

from cellkit.classify import build_tiny_classifier
from cellkit.errors import CellkitError
from cellkit.slide import analyze
from cellkit.store import Store, StoreError
from cellkit.synth import make_smear


@pytest.fixture(scope="module")
def result():
    img, *_ = make_smear(640, 480, n_wbc=3, n_rbc=12, n_platelet=3, seed=21)
    return analyze(img, ColourDetector(), build_tiny_classifier(), name="smear.png")


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'a.db'}")


def test_round_trip(store, result):
    aid = store.save_analysis(result, owner="alice", file_name="smear.png", metadata={"stain": "MGG"})
    back = store.load_analysis(aid, owner="alice")
    assert back.counts == result.counts and back.node_ids == result.node_ids
    np.testing.assert_allclose(back.detections.xyxy, result.detections.xyxy, atol=1e-3)
    np.testing.assert_array_equal(back.detections.data["label"], result.detections.data["label"])
    np.testing.assert_allclose(back.detections.data["node_probs"], result.detections.data["node_probs"], atol=1e-5)
    # why the model flagged a cell comes back with it: a reopened field said no reason (before migration 0006)
    assert list(back.detections.data["review"]) == list(result.detections.data["review"])
    assert any(result.detections.data["review"])  # the tiny model leaves some cells for review
    assert back.differential() == result.differential()
    assert back.image_sha256 == result.image_sha256 and back.models == result.models
    (row,) = store.list_analyses("alice")
    assert row["id"] == aid and row["wbc"] == 3 and row["rbc"] == 12 and row["file_name"] == "smear.png"


def test_owners_never_see_each_other(store, result):
    a = store.save_analysis(result, owner="session-a")
    b = store.save_analysis(result, owner="session-b")
    assert [r["id"] for r in store.list_analyses("session-a")] == [a]
    assert [r["id"] for r in store.list_analyses("session-b")] == [b]
    with pytest.raises(CellkitError, match="not found"):
        store.load_analysis(a, owner="session-b")
    with pytest.raises(CellkitError, match="not found"):
        store.delete_analysis(a, owner="session-b")
    with pytest.raises(CellkitError, match="owner"):
        store.list_analyses("")


def test_corrections_kept_beside_model_label(store, result):
    aid = store.save_analysis(result, owner="o")
    wbc = int(np.flatnonzero(result.detections.class_id == 0)[0])
    store.add_correction(aid, wbc, "eosinophil", owner="o", note="granules")
    store.add_correction(aid, wbc, "basophil", owner="o")
    back = store.load_analysis(aid, owner="o")
    assert back.corrections == {wbc: "basophil"}  # the latest correction wins
    assert back.detections.data["label"][wbc] == result.detections.data["label"][wbc]
    hist = store.corrections(aid, owner="o")
    assert [h["label"] for h in hist] == ["eosinophil", "basophil"] and hist[0]["note"] == "granules"
    with pytest.raises(CellkitError, match="unknown label 'dragon': expected one of the") as err:
        store.add_correction(aid, wbc, "dragon", owner="o")
    assert len(str(err.value)) < 300  # a sentence, not the whole taxonomy
    store.add_correction(aid, wbc, "unknown", owner="o", note="undo")  # back to "Unidentified — review"
    assert store.load_analysis(aid, owner="o").corrections == {wbc: "unknown"}
    with pytest.raises(CellkitError, match="no cell"):
        store.add_correction(aid, 10_000, "basophil", owner="o")


def test_an_undo_back_to_before_any_correction_leaves_the_stored_cell_undecided(store, result):
    """The undo was stored as the model's own label: a reopened analysis counted it as a reviewer's decision."""
    from cellkit.store import UNDONE

    aid = store.save_analysis(result, owner="o")
    cell = int(np.flatnonzero(result.detections.class_id == 0)[0])
    model = str(result.detections.data["label"][cell])
    store.add_correction(aid, cell, "basophil", owner="o")
    store.add_correction(aid, cell, None, owner="o", note="undo")  # the reviewer's label withdrawn
    assert store.load_analysis(aid, owner="o").corrections == {}  # undecided, as the model left it
    store.add_correction(aid, cell, "eosinophil", owner="o")
    assert store.load_analysis(aid, owner="o").corrections == {cell: "eosinophil"}
    hist = store.corrections(aid, owner="o")  # every step kept, the undo as one
    assert [(h["from_label"], h["label"], h["note"]) for h in hist] == [
        (model, "basophil", ""), ("basophil", UNDONE, "undo"), (model, "eosinophil", "")
    ]  # fmt: skip


def test_an_undo_stored_before_withdrawals_existed_still_withdraws(store, result):
    """Databases from before withdrawals stored an undo as the model's own label (note "undo"): read as a decision,
    a platelet the model called a white cell moved, and a flagged one left the review list."""
    aid = store.save_analysis(result, owner="o")
    cells = np.flatnonzero(result.detections.class_id == 0)[:2]
    first, second = int(cells[0]), int(cells[1])
    model = str(result.detections.data["label"][first])
    store.add_correction(aid, first, "basophil", owner="o")
    store.add_correction(aid, first, model, owner="o", note="undo")  # as yesterday's code wrote it
    assert store.load_analysis(aid, owner="o").corrections == {}
    other = str(result.detections.data["label"][second])
    store.add_correction(aid, second, other, owner="o")  # a reviewer confirmed the model's label...
    store.add_correction(aid, second, "basophil", owner="o")
    store.add_correction(aid, second, other, owner="o", note="undo")  # ...and an undo went back to that decision
    assert store.load_analysis(aid, owner="o").corrections == {second: other}


def test_delete_removes_everything(store, result):
    aid = store.save_analysis(result, owner="o")
    store.add_correction(aid, 0, "lymphocyte", owner="o")
    store.delete_analysis(aid, owner="o")
    assert store.list_analyses("o") == []
    with store.engine.connect() as conn:
        for table in ("analyses", "detections", "corrections"):
            assert conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar() == 0


def test_crash_mid_save_leaves_nothing(store, result):
    """A real failure half-way through the INSERTs (a trigger aborts box #5): no analysis, no boxes."""
    store.check()
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER power_cut BEFORE INSERT ON detections WHEN NEW.idx = 5 "
            "BEGIN SELECT RAISE(ABORT, 'power cut'); END"
        )
    with pytest.raises(StoreError, match="power cut"):
        store.save_analysis(result, owner="o")
    assert store.list_analyses("o") == []
    with store.engine.connect() as conn:
        for table in ("analyses", "detections", "corrections"):
            assert conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar() == 0


def test_corrections_made_before_saving_are_stored(store, result):
    result.corrections[0] = "monocyte"
    try:
        aid = store.save_analysis(result, owner="o")
    finally:
        result.corrections.clear()
    assert store.load_analysis(aid, owner="o").corrections == {0: "monocyte"}


def test_default_url_from_environment(tmp_path, monkeypatch, result):
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{tmp_path / 'env.db'}")
    Store().save_analysis(result, owner="o")
    assert (tmp_path / "env.db").is_file() and len(Store().list_analyses("o")) == 1


def test_a_missing_database_folder_is_created_only_inside_cellkit_home(tmp_path, monkeypatch, result):
    home = tmp_path / "home"
    monkeypatch.setenv("CELLKIT_HOME", str(home))
    deep = tmp_path / "some" / "deep" / "new" / "dir"
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{deep / 'cases.db'}")
    with pytest.raises(StoreError) as info:
        Store().save_analysis(result, owner="o")
    text = str(info.value)
    assert f"the folder {deep} for the database file does not exist" in text and "CELLKIT_DB_URL" in text
    assert info.value.kind == "cannot_open" and not (tmp_path / "some").exists()  # nothing made on the disk
    inside = home / "dbs" / "lab"  # the app's own folder: made as needed
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{inside / 'cases.db'}")
    Store().save_analysis(result, owner="o")
    assert (inside / "cases.db").is_file()


def test_bad_url_is_a_clear_error():
    with pytest.raises(CellkitError, match="CELLKIT_DB_URL"):
        Store("nosuchdialect://x")
    with pytest.raises(StoreError, match="CELLKIT_DB_URL"):
        Store("not a url at all")


def test_open_error_never_shows_the_password():
    with pytest.raises(CellkitError) as info:
        Store("postgresql+nosuchdriver://alice:s3cret@localhost/db")
    assert "s3cret" not in str(info.value) and "CELLKIT_DB_URL" in str(info.value)


def test_a_database_path_that_is_a_folder_is_said_to_be_one(tmp_path, monkeypatch, capsys):
    """It was called 'not writable, or the disk is read-only': no permission change would have helped."""
    from _cli import run_cli

    folder = tmp_path / "cellkit.db"
    folder.mkdir()
    with pytest.raises(StoreError) as info:
        Store(f"sqlite:///{folder}").check()
    text = str(info.value)
    assert info.value.kind == "cannot_open" and f"the database path {folder} is a folder, not a database file" in text
    assert "not writable" not in text and f"sqlite:///{folder / 'cellkit.db'}" in text
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{folder}")
    code, _, err = run_cli(monkeypatch, capsys, "import", tmp_path)
    assert code == 2 and err.count("\n") == 1 and "is a folder, not a database file" in err


def test_a_case_is_found_by_its_name_as_stored_and_an_analysis_by_its_pixels_and_models(store, result):
    cid = store.create_case("ann", "  P  21 ")
    assert store.find_case("ann", "P 21")["id"] == cid and store.find_case("ann", "P 21 ")["status"] == "open"
    assert store.find_case("bob", "P 21") is None and store.find_case("ann", "P 22") is None
    aid = store.save_analysis(result, owner="ann", file_name="smear.png")
    assert store.find_analysis("ann", result.image_sha256, result.models) == aid
    other = {**result.models, "detector": {**result.models["detector"], "sha256": "f" * 64}}
    assert store.find_analysis("ann", result.image_sha256, other) is None  # another detector's weights
    assert (
        store.find_analysis("ann", "0" * 64, result.models) is None
        and store.find_analysis("bob", result.image_sha256, result.models) is None
    )
