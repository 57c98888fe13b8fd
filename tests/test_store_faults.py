"""The database busy or gone: every fault is one clear StoreError, nothing half-written, the result kept.

SQLite faults are real SQLite errors (a second connection holding the write lock, a read-only URI,
a page limit standing in for a full disk); PostgreSQL runs as a throwaway local server when the
machine has one (skipped, with the reason, when it cannot start).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from _postgres import PG_PASSWORD, closed_port

from cellkit.errors import CellkitError
from cellkit.slide import SlideResult
from cellkit.store import Store, StoreError, engine_url
from cellkit.types import Detections


def big_result(n: int = 5000, seed: int = 0) -> SlideResult:
    """A classified result with ``n`` boxes (a large smear's worth of rows)."""
    rng = np.random.default_rng(seed)
    nodes = tuple(f"node{i}" for i in range(12))
    xy = rng.uniform(0, 8000, (n, 2)).astype(np.float32)
    probs = rng.dirichlet(np.ones(len(nodes)), n).astype(np.float32)
    leaf = np.array([nodes[i] for i in probs.argmax(1)], dtype=object)
    data = {
        "leaf": leaf,
        "label": leaf.copy(),
        "cls_confidence": probs.max(1),
        "ood_score": rng.random(n).astype(np.float32),
        "node_probs": probs,
    }
    det = Detections(np.hstack([xy, xy + 30]), rng.random(n), rng.integers(0, 3, n), data=data)
    return SlideResult(
        detections=det, image_shape=(8030, 8030), node_ids=nodes, name=f"big{seed}.png", image_sha256="ab" * 32
    )


@pytest.fixture(scope="module")
def result() -> SlideResult:
    return big_result(800, seed=1)


@pytest.fixture
def db(tmp_path) -> SimpleNamespace:
    path = tmp_path / "cellkit.db"
    return SimpleNamespace(path=path, url=f"sqlite:///{path}")


def rows(path: Path, table: str = "detections") -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def one_clear_line(err: StoreError) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text and len(text) < 400
    return text


# ---- SQLite: WAL, locks, concurrent writers ----------------------------------------------------
def test_sqlite_is_wal_and_writers_take_the_lock_up_front(db, result):
    store = Store(db.url)
    statements: list[str] = []
    from sqlalchemy import event

    event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    store.save_analysis(result, owner="o")
    store.list_analyses("o")
    with sqlite3.connect(db.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    begins = [s for s in statements if s.startswith("BEGIN")]
    assert "BEGIN IMMEDIATE" in begins and begins[-1] == "BEGIN"  # the save locks at once, the read does not


def test_write_waits_for_a_lock_held_briefly(db, result):
    store = Store(db.url, timeout=15)
    store.check()
    locker = sqlite3.connect(db.path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    threading.Timer(1.5, locker.rollback).start()
    t0 = time.perf_counter()
    aid = store.save_analysis(result, owner="o")
    waited = time.perf_counter() - t0
    locker.close()
    assert waited >= 1.2, "the save should have queued behind the lock"
    assert store.load_analysis(aid, owner="o").counts == result.counts


def test_lock_held_past_the_timeout_is_a_clear_error_then_retry_works(db, result):
    store = Store(db.url, timeout=0.5, retries=1)
    store.check()
    before = result.to_json()
    locker = sqlite3.connect(db.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    t0 = time.perf_counter()
    with pytest.raises(StoreError) as info:
        store.save_analysis(result, owner="o")
    assert time.perf_counter() - t0 < 5
    text = one_clear_line(info.value)
    assert info.value.kind == "busy" and info.value.retryable
    assert "busy" in text and "try again" in text and str(db.path) in text
    locker.rollback()
    locker.close()
    assert result.to_json() == before  # the analysis is intact: it can be downloaded or saved again
    assert rows(db.path, "analyses") == 0  # nothing half-written
    aid = store.save_analysis(result, owner="o")  # "retry" = the same call again
    assert [r["id"] for r in store.list_analyses("o")] == [aid]


def _save_in_process(url: str, seed: int, n: int, start, queue) -> None:
    result = big_result(n, seed=seed)
    store = Store(url)
    start.wait()
    try:
        queue.put((seed, store.save_analysis(result, owner=f"writer{seed}")))
    except Exception as exc:  # reported to the parent, which asserts on it
        queue.put((seed, f"{type(exc).__name__}: {exc}"))


def test_eight_concurrent_writers_of_large_analyses_all_saved(db):
    """8 processes save 5000-box analyses at once while another program holds the write lock for 6 s
    (longer than sqlite3's default 5 s timeout that lost writers before): all queue and all are saved."""
    n, writers = 5000, 8
    Store(db.url).check()
    ctx = multiprocessing.get_context("fork")
    start, queue = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_save_in_process, args=(db.url, i, n, start, queue)) for i in range(writers)]
    for p in procs:
        p.start()
    locker = sqlite3.connect(db.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    start.set()
    time.sleep(6)
    locker.rollback()
    locker.close()
    outcomes = dict(queue.get(timeout=240) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    failed = {k: v for k, v in outcomes.items() if not isinstance(v, int)}
    assert not failed, failed
    assert len(set(outcomes.values())) == writers
    assert rows(db.path, "analyses") == writers and rows(db.path) == writers * n


# ---- SQLite: read-only, absent, full, corrupt ----------------------------------------------------
def test_read_only_database_file_reads_but_refuses_saves(db, result):
    Store(db.url).save_analysis(result, owner="o")
    ro = Store(f"sqlite:///file:{db.path}?mode=ro&uri=true")  # a real read-only SQLite connection
    assert len(ro.list_analyses("o")) == 1
    with pytest.raises(StoreError) as info:
        ro.save_analysis(result, owner="o")
    assert info.value.kind == "readonly" and not info.value.retryable
    assert "read-only" in one_clear_line(info.value) and "CELLKIT_DB_URL" in str(info.value)
    assert rows(db.path, "analyses") == 1


def test_cellkit_home_that_cannot_be_created_fails_at_use_not_at_open(tmp_path, monkeypatch, result):
    """CELLKIT_HOME under a regular file cannot be created even by root (chmod would not stop root)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CELLKIT_HOME", str(blocker / "home"))
    monkeypatch.delenv("CELLKIT_DB_URL", raising=False)
    store = Store()  # opening never crashes
    with pytest.raises(StoreError) as info:
        store.save_analysis(result, owner="o")
    text = one_clear_line(info.value)
    assert info.value.kind == "cannot_open" and "CELLKIT_HOME" in text and str(blocker) in text


def test_missing_read_only_database_is_a_clear_error(tmp_path):
    store = Store(f"sqlite:///file:{tmp_path / 'absent.db'}?mode=ro&uri=true")
    with pytest.raises(StoreError) as info:
        store.list_analyses("o")
    assert info.value.kind == "cannot_open" and "absent.db" in one_clear_line(info.value)


_FAULT_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from test_store_faults import big_result
from cellkit.store import Store, StoreError
n = int(sys.argv[2])
for url in sys.argv[3:]:
    try:
        Store(url or None).save_analysis(big_result(n), owner="o")
        outcome = "SAVED | "
    except StoreError as exc:
        outcome = f"{exc.kind} | {exc}"
    try:
        count = Store(url or None).count_analyses()
    except StoreError:
        count = "?"
    print(f"{count} | {outcome}")
"""


def run_on_small_mount(tmp: Path, prepare: str, urls: list[str], n: int = 20, **env: str) -> list[str]:
    """Save one ``n``-box analysis per URL in a child process whose ``tmp/mnt`` is a fresh 256 KiB tmpfs.

    The child first saves a 5-box analysis into ``mnt/old.db``, then runs ``prepare`` (shell, e.g. a
    read-only remount). Real kernel errors even for root (EROFS, ENOSPC), inside a private mount
    namespace (``unshare -m``) so nothing outside the child sees the mount. Each line printed:
    ``analyses in the database after | kind | message``. Skips, with the reason, where mounting is refused.
    """
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to mount a private read-only / tiny file system")
    mnt = tmp / "mnt"
    mnt.mkdir()
    script = tmp / "fault.py"
    script.write_text(_FAULT_SCRIPT)
    tests = str(Path(__file__).parent)
    shell = (
        f'mount -t tmpfs -o size=256k tmpfs "{mnt}" || exit 77; '
        f'"{sys.executable}" "{script}" "{tests}" 5 "sqlite:///{mnt}/old.db" >/dev/null || exit 78; '
        f'{prepare}; exec "{sys.executable}" "{script}" "{tests}" {n} "$@"'
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), **env}
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", shell, "sh", *urls],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    if proc.returncode == 77:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(urls), proc.stdout + proc.stderr[-1000:]
    return lines


def test_read_only_file_system_as_root(tmp_path):
    """A read-only mount stops root too: an existing DB, a new DB and a CELLKIT_HOME on it."""
    mnt = tmp_path / "mnt"
    old, new, home = run_on_small_mount(
        tmp_path,
        f'mount -o remount,ro "{mnt}"',
        [f"sqlite:///{mnt}/old.db", f"sqlite:///{mnt}/new.db", ""],
        CELLKIT_HOME=str(mnt / "home"),
        CELLKIT_DB_URL="",
    )
    # SQLite cannot open a WAL database on a read-only disk for writing (nor, without its -shm file, read it)
    assert old.startswith(("? | cannot_open |", "1 | readonly |")) and "old.db" in old and "read-only" in old, old
    assert new.startswith("? | cannot_open |") and "new.db" in new and "cannot be created" in new, new
    assert home.startswith("? | cannot_open |") and "Read-only file system" in home and "CELLKIT_HOME" in home, home


def test_full_disk_for_real(tmp_path):
    """A 256 KiB tmpfs: saving a 3000-box analysis hits ENOSPC; the first analysis stays, alone and whole."""
    mnt = tmp_path / "mnt"
    (line,) = run_on_small_mount(tmp_path, "true", [f"sqlite:///{mnt}/old.db"], n=3000)
    assert line.startswith("1 | full |") and "disk" in line and "free some space" in line, line


def test_a_disk_full_before_a_new_database_is_opened_is_called_full(tmp_path):
    """A full disk met while SQLite creates or journals a database is a bare "disk I/O error": it said so."""
    mnt = tmp_path / "mnt"
    fill = f'dd if=/dev/zero of="{mnt}/fill" bs=4k 2>/dev/null; true'
    new, old = run_on_small_mount(tmp_path, fill, [f"sqlite:///{mnt}/new.db", f"sqlite:///{mnt}/old.db"])
    for line in (new, old):
        assert "| full |" in line and "is full; free some space" in line and "I/O error" not in line, line


def test_full_disk_is_a_clear_error_and_nothing_half_written(db, result):
    """SQLite's real SQLITE_FULL path, triggered by a page limit instead of a full device."""
    store = Store(db.url)
    store.save_analysis(big_result(50), owner="o")
    pages = sqlite3.connect(db.path).execute("PRAGMA page_count").fetchone()[0]
    from sqlalchemy import event

    event.listen(store.engine, "connect", lambda conn, _: conn.execute(f"PRAGMA max_page_count={pages + 2}"))
    store.engine.dispose()
    with pytest.raises(StoreError) as info:
        store.save_analysis(big_result(3000), owner="o")
    assert info.value.kind == "full" and info.value.retryable
    assert "disk" in one_clear_line(info.value) and "full" in str(info.value)
    assert rows(db.path, "analyses") == 1 and rows(db.path) == 50


def test_a_file_that_is_not_a_database(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as info:
        Store(f"sqlite:///{bad}").list_analyses("o")
    assert info.value.kind == "corrupt" and "notes.db" in one_clear_line(info.value)


def test_bad_timeout_setting(monkeypatch):
    monkeypatch.setenv("CELLKIT_DB_TIMEOUT", "soon")
    with pytest.raises(StoreError, match="CELLKIT_DB_TIMEOUT"):
        Store("sqlite://")


# ---- PostgreSQL: driver, down, not answering --------------------------------------------------
def test_postgresql_urls_use_psycopg3():
    for url in ("postgresql://u:p@db.example/cellkit", "postgres://u:p@db.example/cellkit"):
        assert engine_url(url).drivername == "postgresql+psycopg"
        assert Store(url).engine.dialect.driver == "psycopg"  # no I/O: nothing connects yet
    assert engine_url("postgresql+psycopg2://u@h/d").drivername == "postgresql+psycopg2"  # an explicit choice


def test_missing_driver_says_what_to_install():
    with pytest.raises(StoreError) as info:
        Store("postgresql+psycopg2://alice:s3cret@localhost/db")  # psycopg2 is not a dependency
    text = one_clear_line(info.value)
    assert info.value.kind == "driver" and "pip install" in text and "s3cret" not in text


def test_postgresql_down_is_a_quick_clear_error(result):
    port = closed_port()
    store = Store(f"postgresql://alice:{PG_PASSWORD}@127.0.0.1:{port}/cellkit?connect_timeout=2")
    before = result.to_json()
    t0 = time.perf_counter()
    with pytest.raises(StoreError) as info:
        store.save_analysis(result, owner="o")
    assert time.perf_counter() - t0 < 5
    text = one_clear_line(info.value)
    assert info.value.kind == "unreachable" and info.value.retryable
    assert f"127.0.0.1:{port}" in text and "connection refused" in text and PG_PASSWORD not in text
    assert result.to_json() == before


def test_postgresql_not_answering_times_out():
    """A port that accepts TCP but never speaks: connect_timeout bounds the wait."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        store = Store(f"postgresql://alice:{PG_PASSWORD}@127.0.0.1:{port}/cellkit?connect_timeout=2")
        t0 = time.perf_counter()
        with pytest.raises(StoreError) as info:
            store.check()
        elapsed = time.perf_counter() - t0
    assert elapsed < 8
    assert info.value.kind == "unreachable" and "no answer within 2 s" in one_clear_line(info.value)


# ---- a real PostgreSQL (tests/_postgres.py starts a throwaway server) ------------------------------
def test_postgresql_round_trip(postgres, result):
    store = Store(postgres.url)
    assert store.engine.dialect.driver == "psycopg"
    aid = store.save_analysis(result, owner="alice", metadata={"stain": "MGG"})
    store.add_correction(aid, 0, "node3", owner="alice", note="checked")
    back = store.load_analysis(aid, owner="alice")
    assert back.counts == result.counts and back.node_ids == result.node_ids and back.corrections == {0: "node3"}
    np.testing.assert_allclose(back.detections.xyxy, result.detections.xyxy, atol=1e-3)
    np.testing.assert_allclose(back.detections.data["node_probs"], result.detections.data["node_probs"], atol=1e-5)
    assert [r["id"] for r in store.list_analyses("alice")] == [aid] and store.list_analyses("bob") == []
    assert store.count_analyses("alice") == 1
    store.delete_analysis(aid, owner="alice")
    assert store.count_analyses("alice") == 0


def test_postgresql_wrong_password_never_shows_it(postgres):
    wrong = postgres.url.replace(PG_PASSWORD, "not-the-pw-123")
    with pytest.raises(StoreError) as info:
        Store(wrong).check()
    text = one_clear_line(info.value)
    assert info.value.kind == "login" and "not-the-pw-123" not in text and PG_PASSWORD not in text


def test_postgresql_going_down_then_back(postgres, result):
    store = Store(postgres.url)
    store.save_analysis(result, owner="carol")
    postgres.stop()
    try:
        before = result.to_json()
        t0 = time.perf_counter()
        with pytest.raises(StoreError) as info:
            store.save_analysis(result, owner="carol")
        assert time.perf_counter() - t0 < 15
        assert info.value.retryable and info.value.kind in ("unreachable", "dropped")
        assert PG_PASSWORD not in one_clear_line(info.value) and result.to_json() == before
    finally:
        postgres.start()
    store.save_analysis(result, owner="carol")  # the retry works once the server is back
    assert store.count_analyses("carol") == 2


def test_postgresql_concurrent_writers(postgres):
    results = [big_result(1500, seed=i) for i in range(8)]
    stores = [Store(postgres.url) for _ in results]
    errors: list[BaseException] = []

    def save(store: Store, res: SlideResult) -> None:
        try:
            store.save_analysis(res, owner="many")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=save, args=pair) for pair in zip(stores, results, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and stores[0].count_analyses("many") == 8


def test_a_nul_in_the_database_url_is_one_config_error():
    with pytest.raises(StoreError, match="NUL character") as err:
        Store("sqlite:////tmp/a\x00b.db")
    assert err.value.kind == "config"


def test_names_longer_than_their_column_are_refused_alike_on_every_database(tmp_path):
    from cellkit.store import NAME_CHARS

    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    cid = store.create_case("ann", "S-1")
    with pytest.raises(CellkitError, match=f"at most {NAME_CHARS} characters"):
        store.sign_off(cid, "ann", "Dr " + "x" * NAME_CHARS, {})
    with pytest.raises(CellkitError, match="at most"):
        store.create_case("o" * (NAME_CHARS + 1), "S-2")
    assert store.case(cid, "ann")["status"] == "open"
