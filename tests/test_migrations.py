"""Schema changes go through Alembic: an existing database upgrades in place, its rows kept."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from cellkit.store import MIGRATIONS, Base, Store

HEAD = "0006"


def _alembic(url: str, target: str) -> None:
    from alembic import command
    from alembic.config import Config

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)
    engine.dispose()


def _old_database(url: str) -> None:
    """A database as cellkit made it before migrations: the three tables, rows in them, no alembic_version."""
    _alembic(url, "0001")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
        t1, t2 = datetime(2026, 11, 1, 10, tzinfo=UTC), datetime(2026, 11, 2, 9, tzinfo=UTC)
        aid = conn.execute(
            sa.text(
                "INSERT INTO analyses (created, owner, image_sha256, file_name, width, height, meta, "
                "detector_name, detector_sha256, classifier_name, classifier_sha256, node_ids, groups, timings) "
                "VALUES (:t, 'ann', 'ab', 'old.png', 640, 480, '{}', 'd', 'x', 'c', 'y', :nodes, '{}', '{}') "
                "RETURNING id"
            ),
            {"nodes": '["lymphocyte", "monocyte"]', "t": t1},
        ).scalar_one()
        did = conn.execute(
            sa.text(
                "INSERT INTO detections (analysis_id, idx, x1, y1, x2, y2, cls, confidence, leaf, label) "
                "VALUES (:a, 0, 1, 2, 30, 40, 'wbc', 0.9, 'lymphocyte', 'lymphocyte') RETURNING id"
            ),
            {"a": aid},
        ).scalar_one()
        conn.execute(
            sa.text("INSERT INTO corrections (detection_id, label, created, note) VALUES (:d, 'monocyte', :t, 'old')"),
            {"d": did, "t": t2},
        )
    engine.dispose()


def _check_upgraded(url: str) -> None:
    store = Store(url)
    assert [a["file_name"] for a in store.list_analyses("ann")] == ["old.png"]  # the old rows, readable
    (old,) = store.corrections(1, "ann")
    assert (old["label"], old["note"], old["author"], old["from_label"]) == ("monocyte", "old", "", "")
    store.add_correction(1, 0, "lymphocyte", owner="ann", note="looked again", author="dr.b")
    new = store.corrections(1, "ann")[-1]
    assert (new["from_label"], new["label"], new["author"]) == ("monocyte", "lymphocyte", "dr.b")
    assert store.load_analysis(1, "ann").corrections == {0: "lymphocyte"}  # the latest decision applies
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD
        assert {"batch_jobs", "batch_items"} <= set(sa.inspect(conn).get_table_names())
    engine.dispose()


def test_sqlite_database_of_the_previous_schema_upgrades_in_place(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _old_database(url)
    _check_upgraded(url)


def test_postgresql_database_of_the_previous_schema_upgrades_in_place(postgres):
    url = postgres.url.replace("postgresql://", "postgresql+psycopg://")
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a clean database: the module's server is shared with other tests
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    _old_database(url)
    _check_upgraded(url)


def test_migrations_build_exactly_the_models_schema(tmp_path):
    """A fresh database from the migrations has what the ORM expects (nothing missing, nothing extra)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    url = f"sqlite:///{tmp_path / 'new.db'}"
    Store(url).check()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    tables_or_columns = [d for d in diff if d[0] in ("add_table", "remove_table", "add_column", "remove_column")]
    assert not tables_or_columns, tables_or_columns


def test_a_database_at_head_is_left_alone(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.db'}"
    Store(url).check()
    Store(url).check()  # opening again runs no migration and changes nothing
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    engine.dispose()


@pytest.mark.parametrize("target", ["0001", "0002", "0003", "0004"])
def test_every_revision_upgrades_to_head(tmp_path, target):
    url = f"sqlite:///{tmp_path / 'db.db'}"
    _alembic(url, target)
    Store(url).check()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD
    engine.dispose()


def test_a_database_of_the_previous_release_0003_upgrades_to_cases_keeping_its_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'v3.db'}"
    _old_database(url)  # rows in the first schema, then the migrations of the previous release up to 0003
    from alembic import command
    from alembic.config import Config

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.stamp(cfg, "0001")
        command.upgrade(cfg, "0003")
    engine.dispose()
    store = Store(url)  # opening it upgrades in place
    (row,) = store.list_analyses("ann")
    assert store.load_analysis(row["id"], "ann").added == {}
    cid = store.create_case("ann", "S-1")
    assert store.case(cid, "ann")["field_ids"] == []
    assert store.corrections(row["id"], "ann")[0]["label"] == "monocyte"


def test_a_database_from_a_newer_cellkit_is_one_clear_error(tmp_path):
    from cellkit.errors import CellkitError

    url = f"sqlite:///{tmp_path / 'db.db'}"
    Store(url).check()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'zzzz999'"))
    engine.dispose()
    with pytest.raises(CellkitError, match="written by a newer version"):
        Store(url).check()


def test_a_cell_added_before_0005_stays_in_the_audit_trail_with_its_time_unknown(tmp_path):
    url = f"sqlite:///{tmp_path / 'v4.db'}"
    _alembic(url, "0004")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO cases (owner, name, created, version, status) VALUES "
                             "('ann', 'S-1', '2026-12-01 09:00:00', 1, 'open')"))  # fmt: skip
        conn.execute(
            sa.text(
                "INSERT INTO analyses (created, owner, image_sha256, file_name, width, height, meta, detector_name, "
                "detector_sha256, classifier_name, classifier_sha256, node_ids, groups, timings, case_id) VALUES "
                "('2026-12-01 09:01:00', 'ann', 'ab', 'f.png', 640, 480, '{}', 'd', 'x', 'c', 'y', '[]', '{}', "
                "'{}', 1)"
            )
        )
        row = "VALUES (1, 0, 1, 2, 30, 40, 'wbc', 0, 'lymphocyte', 'lymphocyte', 'dr.a')"
        conn.execute(sa.text("INSERT INTO detections (analysis_id, idx, x1, y1, x2, y2, cls, confidence, leaf, label, "
                             f"added_by) {row}"))  # fmt: skip
    engine.dispose()
    (added,) = [t for t in Store(url).case_audit(1, "ann") if t["what"] == "added"]
    assert (added["who"], added["created"], added["version"], added["label"]) == ("dr.a", "unknown", None, "lymphocyte")
