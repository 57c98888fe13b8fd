"""Database of analyses: every detection, prediction and correction, scoped by owner.

SQLAlchemy 2 ORM; the schema is built and upgraded in place by Alembic migrations (``cellkit/migrations``,
run when a database is opened); SQLite file by default (``config.db_url()``), any SQL URL via ``CELLKIT_DB_URL``
(``postgresql://`` uses psycopg 3). An analysis is written in one transaction: a failure half-way
leaves nothing behind. Every read and write takes an ``owner`` (a browser session id or a user
name), so two sessions never see each other's analyses.

A busy or gone database: SQLite runs in WAL mode with a busy timeout, writers take the write lock
up front and a busy database or dropped connection is retried with backoff, so concurrent writers
queue instead of failing. Every database failure is raised as :class:`StoreError`, one line that
says what happened and what to do, never the password.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

import numpy as np
from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, selectinload, sessionmaker

from cellkit.errors import CellkitError
from cellkit.slide import SlideResult
from cellkit.types import DETECTION_CLASSES, Detections

T = TypeVar("T")
UNDONE = ""  # a correction's label when an undo withdrew the reviewer's label: the box is undecided again


class Base(DeclarativeBase):
    pass


def _now() -> datetime:
    return datetime.now(UTC)


class Analysis(Base):
    __tablename__ = "analyses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, index=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    file_name: Mapped[str] = mapped_column(String(512), default="")
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    detector_name: Mapped[str] = mapped_column(String(128), default="")
    detector_sha256: Mapped[str] = mapped_column(String(64), default="")
    classifier_name: Mapped[str] = mapped_column(String(128), default="")
    classifier_sha256: Mapped[str] = mapped_column(String(64), default="")
    node_ids: Mapped[list] = mapped_column(JSON, default=list)
    groups: Mapped[dict] = mapped_column(JSON, default=dict)
    timings: Mapped[dict] = mapped_column(JSON, default=dict)
    case_id: Mapped[int | None] = mapped_column(  # the case it is a field of (migration 0004)
        ForeignKey("cases.id", ondelete="SET NULL"), nullable=True, index=True
    )
    detections: Mapped[list[DetectionRow]] = relationship(
        back_populates="analysis", cascade="all, delete-orphan", order_by="DetectionRow.idx"
    )


class DetectionRow(Base):
    __tablename__ = "detections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    cls: Mapped[str] = mapped_column(String(32))
    confidence: Mapped[float] = mapped_column(Float)
    leaf: Mapped[str] = mapped_column(String(64), default="")
    label: Mapped[str] = mapped_column(String(64), default="")
    cls_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    ood_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    probs: Mapped[list | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    added_by: Mapped[str] = mapped_column(String(128), default="", server_default="")  # a reviewer's added cell
    added_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # when (0005)
    added_version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the case's version then (0005)
    review: Mapped[str] = mapped_column(Text, default="", server_default="")  # why the model flagged it (0006)
    analysis: Mapped[Analysis] = relationship(back_populates="detections")
    corrections: Mapped[list[Correction]] = relationship(
        back_populates="detection", cascade="all, delete-orphan", order_by="Correction.id"
    )


class Correction(Base):
    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    detection_id: Mapped[int] = mapped_column(ForeignKey("detections.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    note: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(128), default="", server_default="")  # who (migration 0003)
    from_label: Mapped[str] = mapped_column(String(64), default="", server_default="")  # the label it replaced
    case_version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the case's version it amends
    detection: Mapped[DetectionRow] = relationship(back_populates="corrections")


class BatchJob(Base):
    """A batch job imported from its folder (``cellkit batch --save`` / ``cellkit import``)."""

    __tablename__ = "batch_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_uid: Mapped[str] = mapped_column(String(64), unique=True)  # job.json's job_id
    owner: Mapped[str] = mapped_column(String(128), index=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    folder: Mapped[str] = mapped_column(String(1024), default="")
    command: Mapped[str] = mapped_column(Text, default="")
    settings: Mapped[dict] = mapped_column(JSON, default=dict)


class BatchItem(Base):
    """One image of a batch job: its status and, when analysed, the analysis it became."""

    __tablename__ = "batch_items"
    __table_args__ = (UniqueConstraint("job_id", "key", name="uq_batch_item"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(40))
    path: Mapped[str] = mapped_column(String(1024))  # as named in the job's outputs (zip/member for zip members)
    source: Mapped[str] = mapped_column(String(1024), default="")  # the file on disk
    member: Mapped[str] = mapped_column(String(1024), default="")  # the zip member, "" for a plain file
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str] = mapped_column(Text, default="")
    analysis_id: Mapped[int | None] = mapped_column(ForeignKey("analyses.id", ondelete="SET NULL"), nullable=True)
    wbc: Mapped[int] = mapped_column(Integer, default=0)
    rbc: Mapped[int] = mapped_column(Integer, default=0)
    platelet: Mapped[int] = mapped_column(Integer, default=0)


class Case(Base):
    """A specimen: many fields (analyses) counted together, signed off by a reviewer (migration 0004).

    ``status`` is ``open`` or ``signed``; a signed case is locked until it is amended, which opens version
    ``version + 1``. Every sign-off and amendment is a :class:`CaseEvent`; nothing is ever overwritten."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(256))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    target_wbc: Mapped[int] = mapped_column(Integer, default=100, server_default="100")
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    status: Mapped[str] = mapped_column(String(16), default="open", server_default="open")
    events: Mapped[list[CaseEvent]] = relationship(
        back_populates="case", cascade="all, delete-orphan", order_by="CaseEvent.id"
    )


class CaseEvent(Base):
    """One step of a case's history: created, signed (with the summary that was signed) or amended (why)."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    who: Mapped[str] = mapped_column(String(128), default="", server_default="")
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    note: Mapped[str] = mapped_column(Text, default="", server_default="")
    summary: Mapped[dict | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    case: Mapped[Case] = relationship(back_populates="events")


class StoredImage(Base):
    """An analysed image as PNG, by the sha256 of its pixels (``CELLKIT_IMAGE_STORE=database``)."""

    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    png: Mapped[bytes] = mapped_column(LargeBinary)


MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATING = threading.Lock()  # Alembic's ``context`` is one module-level proxy: one migration run per process


def migrate(conn: Connection) -> None:
    """Bring the database on ``conn`` to the newest schema with its Alembic migrations (``cellkit/migrations``).

    An empty database gets every table; one made by cellkit before migrations existed (tables, no
    ``alembic_version``) is stamped with the revision it matches, then upgraded in place, its rows kept.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.util.exc import CommandError
    from sqlalchemy import inspect

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    with _MIGRATING:
        tables = set(inspect(conn).get_table_names())
        if "alembic_version" not in tables and "analyses" in tables:
            command.stamp(cfg, "0002" if "batch_jobs" in tables else "0001")  # pre-Alembic databases
        try:
            command.upgrade(cfg, "head")
        except CommandError as exc:  # e.g. a revision this version does not know: written by a newer cellkit
            raise CellkitError(
                f"the database's schema is not one this cellkit knows ({exc}); it was probably written by a newer "
                "version: upgrade cellkit, or use another database (CELLKIT_DB_URL)"
            ) from None


def _opt(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def detection_records(result: SlideResult) -> list[dict[str, Any]]:
    """One ``detections`` row per box of a result, as plain dicts (classifier fields empty when unclassified).

    Built before the write transaction starts, so the database is locked only while rows are inserted.
    """
    d = result.detections
    names, data = d.class_name, d.data
    classified = "label" in data
    out = []
    for i in range(len(d)):
        row: dict[str, Any] = {
            "idx": i,
            "x1": float(d.xyxy[i, 0]),
            "y1": float(d.xyxy[i, 1]),
            "x2": float(d.xyxy[i, 2]),
            "y2": float(d.xyxy[i, 3]),
            "cls": str(names[i]),
            "confidence": float(d.confidence[i]),
            "leaf": "",
            "label": "",
            "cls_confidence": None,
            "ood_score": None,
            "probs": None,
            "added_by": _tail(str(result.added.get(i, "")), NAME_CHARS),
            "review": "",
        }
        if classified and data["label"][i]:
            row["leaf"], row["label"] = str(data["leaf"][i]), str(data["label"][i])
            row["cls_confidence"] = _opt(data["cls_confidence"][i])
            row["ood_score"] = _opt(data["ood_score"][i])
            row["probs"] = [_opt(round(float(p), 6)) for p in data["node_probs"][i]]  # NaN is not JSON: null
            if "review" in data:
                row["review"] = str(data["review"][i] or "")
        out.append(row)
    return out


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except (SQLAlchemyError, ValueError):
        return None


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages and the Home page."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return "<unparseable database URL>"


def engine_url(url: str) -> URL:
    """The SQLAlchemy URL for ``url``: ``postgresql://`` and ``postgres://`` use psycopg 3."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u


def default_timeout() -> float:
    """Seconds to wait for a busy database (``CELLKIT_DB_TIMEOUT``, default 30)."""
    raw = os.environ.get("CELLKIT_DB_TIMEOUT", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:  # also rejects NaN
        raise StoreError(f"CELLKIT_DB_TIMEOUT={raw!r} is not a number of seconds in (0, 3600]; set e.g. 30", "config")
    return value


DEFAULT_TIMEOUT = 30.0
#: Kinds of :class:`StoreError` retried inside the store (with backoff) before they are raised.
_RETRIED = frozenset({"busy", "dropped"})
#: Kinds where the same call may work later without changing the set-up.
_TEMPORARY = frozenset({"busy", "dropped", "unreachable", "full", "io"})
_UNREACHABLE = (
    "connection refused",
    "timeout expired",
    "could not translate host name",
    "name or service not known",
    "no route to host",
    "network is unreachable",
    "could not connect",
    "connection failed",
    "is the server running",
)
_REASONS = (
    ("refused", "connection refused"),
    ("timeout expired", "timeout"),
    ("could not translate host name", "unknown host name"),
    ("name or service not known", "unknown host name"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
)
_DROPPED = ("server closed the connection", "terminating connection", "connection is closed", "ssl syscall")


class StoreError(CellkitError):
    """A database failure in one line: what happened and what to do (never the password).

    ``kind``: busy, dropped, unreachable, full, io, readonly, cannot_open, corrupt, login, driver,
    config or error. ``retryable`` is True when the same call may work later without changing the
    set-up (busy, dropped, unreachable, full, io): offer "try again".
    """

    def __init__(self, message: str, kind: str = "error"):
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple[Any, ...]:  # keep ``kind`` across processes (pickling)
        return (type(self), (str(self), self.kind))

    @property
    def retryable(self) -> bool:
        return self.kind in _TEMPORARY


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both made absolute, links resolved where they can be)."""

    def real(p: Path) -> Path:
        try:
            return p.expanduser().resolve()
        except (OSError, RuntimeError):  # a link loop: compare the paths as written
            return Path(os.path.abspath(p.expanduser()))

    return real(path).is_relative_to(real(folder))


def _one_line(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Store:
    """Analyses database. ``Store()`` uses ``config.db_url()``; ``Store("sqlite://")`` is in memory.

    Creating a store does no I/O: a database that is read-only, absent, full or unreachable is
    reported as :class:`StoreError` when it is first used (or by :meth:`check`). Only a malformed
    URL, an unknown dialect or a missing driver raise here. ``timeout``: seconds to wait for a
    busy SQLite database (default ``CELLKIT_DB_TIMEOUT`` or 30; also caps PostgreSQL's
    connect_timeout at 10 s unless the URL sets one); ``retries``: further attempts, with backoff,
    after a dropped connection or an early "busy" answer (never past ``timeout``).
    """

    def __init__(self, url: str | None = None, *, timeout: float | None = None, retries: int = 3):
        from cellkit import config

        if url is None:
            try:
                url = config.db_url()
            except OSError:  # CELLKIT_HOME cannot be created: said clearly on first use
                url = f"sqlite:///{config.home() / 'cellkit.db'}"
        if "\x00" in url:  # a NUL reaches the file system or the driver as "embedded null byte"
            raise StoreError("CELLKIT_DB_URL holds a NUL character; set it to a sqlite:/// or postgresql:// URL",
                             "config")  # fmt: skip
        self.url = url
        self.timeout = default_timeout() if timeout is None else float(timeout)
        self.retries = max(0, int(retries))
        self._secret = _password(url)
        self._connect_timeout: Any = None
        self.is_sqlite = url.startswith("sqlite")
        self.where = safe_url(url)
        self._sqlite_file: Path | None = None
        self._ready = False
        self._lock = threading.Lock()
        try:
            u = engine_url(url)
        except (SQLAlchemyError, ValueError) as exc:
            raise self._error(exc, "open the database") from None
        self._engine_url = u
        self._connect_timeout = u.query.get("connect_timeout")
        self.is_sqlite = u.get_backend_name() == "sqlite"
        self._sqlite_file = self._sqlite_path(u)
        self.where = str(self._sqlite_file) if self._sqlite_file else safe_url(url)
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            connect_args: dict[str, Any] = {"check_same_thread": False}
            if "timeout" not in u.query:
                connect_args["timeout"] = self.timeout
            kwargs["connect_args"] = connect_args
            if u.database in (None, "", ":memory:"):
                from sqlalchemy.pool import StaticPool

                kwargs["poolclass"] = StaticPool
        else:
            kwargs["pool_pre_ping"] = True  # a restarted server costs one reconnect, not an error
            if u.get_backend_name() == "postgresql" and "connect_timeout" not in u.query:
                self._connect_timeout = max(2, round(min(self.timeout, 10)))
                kwargs["connect_args"] = {"connect_timeout": self._connect_timeout}
        try:
            self.engine = create_engine(u, **kwargs)
        except (SQLAlchemyError, ImportError) as exc:
            raise self._error(exc, "open the database") from None
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._write_session = sessionmaker(self.engine.execution_options(cellkit_write=True), expire_on_commit=False)

    # ---- plumbing: schema on first use, retries, one-line errors --------------------------------
    @staticmethod
    def _sqlite_path(u: URL) -> Path | None:
        db = u.database or ""
        if u.get_backend_name() != "sqlite" or db in ("", ":memory:"):
            return None
        if db.startswith("file:"):  # a URI (uri=true): the path before any ?query
            db = db[5:].split("?", 1)[0]
            return Path(db) if db and db != ":memory:" and u.query.get("mode") != "memory" else None
        return Path(db).expanduser()

    def _ensure_schema(self, op: str) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            if self._sqlite_file is not None and "uri" not in self._engine_url.query:
                self._make_folder(self._sqlite_file.parent, op)
            started = time.monotonic()
            for attempt in itertools.count():
                try:
                    with self.engine.begin() as conn:
                        migrate(conn)
                    break
                except (SQLAlchemyError, OSError) as exc:
                    err = self._error(exc, op)
                    raced = "already exists" in str(exc) or isinstance(exc, IntegrityError)  # another process
                    if not (raced or self._again(err, attempt, started)):
                        raise err from None
                    _backoff(attempt)
            self._ready = True

    @staticmethod
    def _make_folder(folder: Path, op: str) -> None:
        """Create the SQLite file's folder, only inside CELLKIT_HOME (the app's own folder); a missing folder
        anywhere else is the user's to create (a typo in CELLKIT_DB_URL never makes folders all over the disk)."""
        from cellkit import config

        if folder.is_dir():
            return
        if not folder.exists() and not _inside(folder, config.home()):
            raise StoreError(
                f"cannot {op}: the folder {folder} for the database file does not exist; create it, "
                "or choose another CELLKIT_DB_URL",
                "cannot_open",
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot {op}: cannot create the folder {folder} for the database ({exc.strerror or exc}); "
                "set CELLKIT_HOME (or CELLKIT_DB_URL) to a writable place",
                "cannot_open",
            ) from None

    def _run(self, op: str, work: Callable[[Session], T], *, write: bool = False) -> T:
        """``work(session)`` in one transaction; busy/dropped retried with backoff, errors as StoreError."""
        self._ensure_schema(op)
        maker = self._write_session if write else self._session
        started = time.monotonic()
        for attempt in itertools.count():
            try:
                with maker.begin() as session:
                    return work(session)
            except (SQLAlchemyError, OSError) as exc:
                err = self._error(exc, op)
                if not self._again(err, attempt, started):
                    raise err from None
                _backoff(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _again(self, err: StoreError, attempt: int, started: float) -> bool:
        """Retry? A dropped connection up to ``retries`` times; a busy database while the busy
        timeout lasts (SQLite's own wait uses it up; early "busy" answers are retried)."""
        if attempt >= self.retries or err.kind not in _RETRIED:
            return False
        return err.kind != "busy" or time.monotonic() - started < self.timeout

    def _scrub(self, text: str) -> str:
        if self._secret:
            for secret in {self._secret, quote_plus(self._secret), quote(self._secret, safe="")}:
                text = text.replace(secret, "***")
        return text

    def _error(self, exc: BaseException, op: str) -> StoreError:
        """One clear line for a database failure (see :class:`StoreError` for the kinds)."""
        orig = getattr(exc, "orig", None) or exc
        text = self._scrub(_one_line(str(orig) or type(orig).__name__))
        low = text.lower()
        name = str(getattr(orig, "sqlite_errorname", "") or "")
        state = str(getattr(orig, "sqlstate", "") or "")
        safe, where = safe_url(self.url), self.where
        if isinstance(orig, ImportError):
            return StoreError(
                f"cannot use the database {safe}: its Python driver is not installed ({text}); "
                "for PostgreSQL: pip install 'psycopg[binary]'",
                "driver",
            )
        if isinstance(exc, (ArgumentError, NoSuchModuleError, ValueError)) and not isinstance(exc, DBAPIError):
            return StoreError(
                f"cannot use the database URL {safe!r}: {text}; check CELLKIT_DB_URL "
                "(e.g. sqlite:////data/cellkit.db or postgresql://user:password@host:5432/cellkit)",
                "config",
            )
        if (
            isinstance(exc, PoolTimeoutError)
            or name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
            or "database is locked" in low
            or state in ("40001", "40P01", "55P03")
        ):
            why = (
                f"another program held its write lock for over {self.timeout:g} s"
                if self.is_sqlite
                else f"lock conflict: {text}"
            )
            return StoreError(f"cannot {op}: the database {where} is busy ({why}); try again in a moment", "busy")
        if name.startswith("SQLITE_READONLY") or "readonly database" in low or state == "25006":
            return StoreError(
                f"cannot {op}: the database {where} is read-only; make it (and its folder) writable "
                "or set CELLKIT_DB_URL / CELLKIT_HOME to a writable place",
                "readonly",
            )
        if name == "SQLITE_FULL" or "disk is full" in low or state == "53100" or getattr(orig, "errno", 0) == 28:
            return StoreError(
                f"cannot {op}: the disk holding the database {where} is full; free some space, then try again",
                "full",
            )
        if name.startswith("SQLITE_CANTOPEN") or "unable to open database file" in low:
            if self._sqlite_file is not None and self._sqlite_file.is_dir():  # not a permission: no chmod fixes it
                return StoreError(
                    f"cannot {op}: the database path {where} is a folder, not a database file; set CELLKIT_DB_URL "
                    f"to a file (e.g. sqlite:///{self._sqlite_file / 'cellkit.db'}) or move the folder away",
                    "cannot_open",
                )
            if self._sqlite_file is not None and self._sqlite_file.exists():
                problem = (
                    "exists but cannot be opened: the file or its folder is not writable, or the disk is read-only"
                )
            else:
                problem = "cannot be created: its folder is missing or not writable"
            return StoreError(
                f"cannot {op}: the database file {where} {problem}; "
                "set CELLKIT_HOME or CELLKIT_DB_URL to a writable place",
                "cannot_open",
            )
        if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "file is not a database" in low or "malformed" in low:
            return StoreError(
                f"cannot {op}: {where} is not a readable SQLite database (corrupt, or another kind of file); "
                "move it away or set CELLKIT_DB_URL to another database",
                "corrupt",
            )
        if name.startswith("SQLITE_IOERR"):
            return StoreError(
                f"cannot {op}: disk error on the database {where} ({text}); check the disk, then try again", "io"
            )
        if (
            state.startswith("28")
            or state == "3D000"
            or "password authentication failed" in low
            or "no pg_hba.conf entry" in low
            or ("does not exist" in low and ("role" in low or "database" in low))
        ):
            return StoreError(
                f"cannot {op}: the database server {safe} refused the login ({text}); "
                "check the user, password and database name in CELLKIT_DB_URL",
                "login",
            )
        if (
            getattr(exc, "connection_invalidated", False)
            or state[:2] in ("08", "57")
            or any(p in low for p in _DROPPED)
        ):
            return StoreError(
                f"cannot {op}: the connection to the database server {safe} was lost; "
                "check that the server is running, then try again",
                "dropped",
            )
        if not self.is_sqlite and isinstance(exc, OperationalError) and any(p in low for p in _UNREACHABLE):
            u = self._engine_url
            reason = next((r for key, r in _REASONS if key in low), text)
            if reason == "timeout":
                reason = f"no answer within {self._connect_timeout} s" if self._connect_timeout else "no answer"
            return StoreError(
                f"cannot {op}: the database server {u.host or 'localhost'}:{u.port or 5432} cannot be reached "
                f"({reason}); check that it is running and that CELLKIT_DB_URL is right, then try again",
                "unreachable",
            )
        return StoreError(f"cannot {op}: database error on {where}: {text}; check CELLKIT_DB_URL", "error")

    # ---- public API ----------------------------------------------------------------------------
    def check(self) -> None:
        """Connect (creating the tables if needed); raises :class:`StoreError` saying what is wrong."""
        self._run("open the database", lambda session: session.execute(select(1)).scalar())

    def save_analysis(
        self,
        result: SlideResult,
        owner: str,
        file_name: str = "",
        metadata: dict[str, Any] | None = None,
        case_id: int | None = None,
    ) -> int:
        """Store a result with all its boxes in ONE transaction; returns the new analysis id.

        ``case_id``: add it as a field of that case (refused when the case is signed off). ``result`` is only
        read, never changed: after a :class:`StoreError` nothing was written, and the same call can be made
        again (a "retry" button) or the result exported (``result.to_json()``).
        """
        owner = _owner(owner)
        meta = json.loads(json.dumps(metadata or {}, default=str))

        def work(session: Session) -> int:
            case = self._case(session, case_id, owner, lock=True) if case_id is not None else None
            if case is not None:
                _open_case(case, "add a field to it")
            return _insert_analysis(session, result, owner, file_name, meta, case_id, case.version if case else None)

        return self._run("save the analysis", work, write=True)

    def count_analyses(self, owner: str | None = None) -> int:
        """Analyses in the database (all owners, or only ``owner``'s), e.g. for the Home page."""
        query = select(func.count()).select_from(Analysis)
        if owner is not None:
            query = query.where(Analysis.owner == _owner(owner))
        return int(self._run("count the analyses", lambda session: session.execute(query).scalar_one()))

    def list_analyses(self, owner: str) -> list[dict[str, Any]]:
        """This owner's analyses, newest first: id, created, file name, size, counts, models."""
        owner = _owner(owner)

        def work(session: Session) -> list[dict[str, Any]]:
            rows = session.scalars(select(Analysis).where(Analysis.owner == owner).order_by(Analysis.id.desc())).all()
            per_class: dict[int, dict[str, int]] = {}
            for aid, cls, n in session.execute(
                select(DetectionRow.analysis_id, DetectionRow.cls, func.count())
                .join(Analysis)
                .where(Analysis.owner == owner)
                .group_by(DetectionRow.analysis_id, DetectionRow.cls)
            ):
                per_class.setdefault(aid, {})[cls] = int(n)
            out = []
            for a in rows:
                counts = {c: 0 for c in DETECTION_CLASSES} | per_class.get(a.id, {})
                out.append(
                    {
                        "id": a.id,
                        "created": a.created.isoformat(timespec="seconds"),
                        "file_name": a.file_name,
                        "width": a.width,
                        "height": a.height,
                        "image_sha256": a.image_sha256,
                        **counts,
                        "detector": a.detector_name,
                        "classifier": a.classifier_name,
                        "case_id": a.case_id,
                    }
                )
            return out

        return self._run("list the analyses", work)

    # ---- batch jobs --------------------------------------------------------------------------------
    def save_batch_items(self, job: dict[str, Any], owner: str, items: list[dict[str, Any]]) -> tuple[int, int]:
        """Add a chunk of a batch job's images in ONE transaction; returns (job id, images added).

        ``job`` is the folder's job.json (``job_id``, ``settings``, ``command``) plus ``folder``; each item has
        ``key``, ``path``, ``status``, ``error`` and, when analysed, ``result`` (a :class:`SlideResult`).
        Idempotent: an image already stored for the job is skipped, unless its record changed (``stamp``: the
        image was analysed again, e.g. after its file changed) or it was an error and now is not; then the job's
        row points at the new analysis (the old analysis is kept, with any review of it).
        """
        owner = _owner(owner)

        def work(session: Session) -> tuple[int, int]:
            found = session.scalars(select(BatchJob).where(BatchJob.job_uid == job["job_id"])).first()
            if found is not None and found.owner != owner:
                raise StoreError(f"batch job {job['job_id']} was imported by another owner; import it as that owner")
            if found is None:
                found = BatchJob(
                    job_uid=job["job_id"], owner=owner, folder=_tail(str(job.get("folder", "")), 1024),
                    command=str(job.get("command", "")), settings=dict(job.get("settings", {})),
                )  # fmt: skip
                session.add(found)
                session.flush()
            jid = int(found.id)
            keys = [it["key"] for it in items]
            have = {
                key: (status, (meta or {}).get("batch_stamp"), pixels)
                for key, status, meta, pixels in session.execute(
                    select(BatchItem.key, BatchItem.status, Analysis.meta, Analysis.image_sha256)
                    .outerjoin(Analysis, Analysis.id == BatchItem.analysis_id)
                    .where(BatchItem.job_id == jid, BatchItem.key.in_(keys))
                ).all()
            }
            added = 0
            for it in items:
                old, stamp, pixels = have.get(it["key"], (None, None, None))
                if stamp is not None:  # the record the row was imported from, against today's
                    changed = it.get("stamp") is not None and stamp != it["stamp"]
                else:  # a row imported before records were stamped: its image's pixels
                    result = it.get("result")
                    changed = pixels is not None and result is not None and pixels != result.image_sha256
                if old is not None and not (old == "error" and it["status"] == "ok") and not changed:
                    continue
                if old is not None:
                    session.execute(delete(BatchItem).where(BatchItem.job_id == jid, BatchItem.key == it["key"]))
                result = it.get("result")
                aid = None
                if result is not None:
                    meta = {"batch_job": job["job_id"], "batch_stamp": it.get("stamp")}
                    aid = _insert_analysis(session, result, owner, it["path"], meta)
                counts = result.reviewed_counts() if result is not None else {}
                white = result.white_cells() if result is not None else 0  # the Slide page's count: NRBC apart
                session.add(
                    BatchItem(
                        job_id=jid, key=it["key"], path=_tail(it["path"], 1024),
                        source=_tail(it.get("source", ""), 1024), member=_tail(it.get("member", ""), 1024),
                        status=it["status"], error=it.get("error", ""),
                        analysis_id=aid, wbc=white, rbc=counts.get("rbc", 0),
                        platelet=counts.get("platelet", 0),
                    )
                )  # fmt: skip
                added += 1
            return jid, added

        return self._run("import the batch job", work, write=True)

    def prune_batch_items(self, job: dict[str, Any], owner: str, keep: set[str]) -> int:
        """Take out of a stored job the images its folder's last run no longer holds (``keep``: their keys), so its
        totals are the folder's summary's; their analyses stay (with any review). Returns how many were taken out."""
        owner = _owner(owner)

        def work(session: Session) -> int:
            found = session.scalars(select(BatchJob).where(BatchJob.job_uid == job["job_id"])).first()
            if found is None or found.owner != owner:
                return 0
            stored = session.scalars(select(BatchItem.key).where(BatchItem.job_id == found.id))
            gone = [k for k in stored if k not in keep]
            for start in range(0, len(gone), 500):
                chunk = gone[start : start + 500]
                session.execute(delete(BatchItem).where(BatchItem.job_id == found.id, BatchItem.key.in_(chunk)))
            return len(gone)

        return self._run("import the batch job", work, write=True)

    def list_batch_jobs(self, owner: str) -> list[dict[str, Any]]:
        """This owner's batch jobs, newest first, with per-job totals (images, analysed, errors, cells)."""
        owner = _owner(owner)

        def work(session: Session) -> list[dict[str, Any]]:
            ok = func.sum(func.cast(BatchItem.status == "ok", Integer))
            totals = (
                select(
                    BatchItem.job_id,
                    func.count(),
                    ok,
                    func.sum(BatchItem.wbc),
                    func.sum(BatchItem.rbc),
                    func.sum(BatchItem.platelet),
                )
                .join(BatchJob)
                .where(BatchJob.owner == owner)
                .group_by(BatchItem.job_id)
            )
            per_job = {row[0]: row[1:] for row in session.execute(totals)}
            jobs = session.scalars(select(BatchJob).where(BatchJob.owner == owner).order_by(BatchJob.id.desc())).all()
            out = []
            for j in jobs:
                n, n_ok, wbc, rbc, plt = per_job.get(j.id, (0, 0, 0, 0, 0))
                out.append(
                    {
                        "id": j.id, "job": j.job_uid, "created": j.created.isoformat(timespec="seconds"),
                        "folder": j.folder, "images": int(n or 0), "analysed": int(n_ok or 0),
                        "errors": int(n or 0) - int(n_ok or 0), "wbc": int(wbc or 0), "rbc": int(rbc or 0),
                        "platelet": int(plt or 0),
                    }
                )  # fmt: skip
            return out

        return self._run("list the batch jobs", work)

    def batch_items(self, job_id: int, owner: str) -> list[dict[str, Any]]:
        """The images of one of this owner's batch jobs, in path order, with the analysis id of each."""
        owner = _owner(owner)

        def work(session: Session) -> list[dict[str, Any]]:
            job = session.get(BatchJob, int(job_id))
            if job is None or job.owner != owner:
                raise CellkitError(f"batch job {job_id} not found; pick one from the list of your batch jobs")
            rows = session.scalars(select(BatchItem).where(BatchItem.job_id == job.id).order_by(BatchItem.path)).all()
            return [
                {
                    "path": r.path,
                    "source": r.source,
                    "member": r.member,
                    "status": r.status,
                    "error": r.error,
                    "analysis_id": r.analysis_id,
                    "wbc": r.wbc,
                    "rbc": r.rbc,
                    "platelet": r.platelet,
                }
                for r in rows
            ]

        return self._run("list the images of the batch job", work)

    def _get(self, session: Session, analysis_id: int, owner: str, full: bool = False, lock: bool = False) -> Analysis:
        """The owner's analysis; ``lock``: its row is locked for this write (FOR UPDATE on PostgreSQL; SQLite's
        writers are serialised by BEGIN IMMEDIATE)."""
        options = [selectinload(Analysis.detections).selectinload(DetectionRow.corrections)] if full else []
        a = session.get(Analysis, int(analysis_id), options=options, with_for_update=lock)
        if a is None or a.owner != _owner(owner):
            raise CellkitError(f"analysis {analysis_id} not found; pick one from the list of your analyses")
        return a

    def load_analysis(self, analysis_id: int, owner: str) -> SlideResult:
        """Rebuild the :class:`SlideResult` (latest correction per box applied)."""
        return self._run("load the analysis", lambda session: _result(self._get(session, analysis_id, owner, True)))

    def delete_analysis(self, analysis_id: int, owner: str) -> None:
        """Delete an analysis with its detections and corrections (in one transaction); refused for a field of a
        signed-off case."""

        def work(session: Session) -> None:
            a = self._get(session, analysis_id, owner, lock=True)
            if a.case_id is not None:
                _open_case(session.get(Case, a.case_id, with_for_update=True), "delete its fields")
            aid = a.id
            boxes = select(DetectionRow.id).where(DetectionRow.analysis_id == aid)
            session.execute(delete(Correction).where(Correction.detection_id.in_(boxes)))
            session.execute(delete(DetectionRow).where(DetectionRow.analysis_id == aid))
            session.execute(delete(Analysis).where(Analysis.id == aid))
            session.expunge_all()

        self._run("delete the analysis", work, write=True)

    def add_correction(
        self, analysis_id: int, index: int, label: str | None, owner: str, note: str = "", author: str = ""
    ) -> int:
        """Record a reviewer's label for box ``index`` of an analysis: who (``author``, default the owner), when,
        from which label to which, and the note. The model's label and earlier corrections are never changed.
        ``label`` None withdraws the reviewer's label (an undo back to before any correction): recorded as a
        correction to :data:`UNDONE`, so the audit trail keeps the step and the box is undecided again.
        Refused for a field of a signed-off case (amend the case first)."""
        from cellkit.taxonomy import REJECTIONS, UNKNOWN

        author = _person(str(author or "").strip(), "the correction's author")
        label = UNDONE if label is None else label

        def work(session: Session) -> int:
            a = self._get(session, analysis_id, owner, lock=True)
            case = session.get(Case, a.case_id, with_for_update=True) if a.case_id is not None else None
            if case is not None:
                _open_case(case, "change its cells")
            if a.node_ids and label not in (*a.node_ids, *REJECTIONS, UNKNOWN, UNDONE):
                some = ", ".join(a.node_ids[:4])
                raise CellkitError(
                    f"unknown label {label!r}: expected one of the {len(a.node_ids)} cell types of the analysis's "
                    f"models (e.g. {some}), a rejection ({', '.join(REJECTIONS)}) or {UNKNOWN!r} (left for review)"
                )
            row = session.scalar(
                select(DetectionRow).where(DetectionRow.analysis_id == a.id, DetectionRow.idx == int(index))
            )
            if row is None:
                raise CellkitError(f"analysis {analysis_id} has no cell #{index}; pick a cell from its gallery")
            before = _reviewed(row) or row.label or row.cls
            corr = Correction(label=label, note=note, author=author or a.owner, from_label=before,
                              case_version=case.version if case is not None else None)  # fmt: skip
            row.corrections.append(corr)
            session.flush()
            return int(corr.id)

        return self._run("save the correction", work, write=True)

    def add_cell(self, analysis_id: int, result: SlideResult, index: int, owner: str) -> int:
        """Store box ``index`` of ``result`` (a cell a reviewer added, :func:`cellkit.review.add_cell`) as a new box
        of the analysis; returns its index. Refused for a field of a signed-off case."""
        rows = detection_records(result)
        if not 0 <= index < len(rows) or index not in result.added:
            raise CellkitError(f"add a cell: box #{index} is not a cell added by a reviewer")

        def work(session: Session) -> int:
            a = self._get(session, analysis_id, owner, lock=True)
            case = session.get(Case, a.case_id, with_for_update=True) if a.case_id is not None else None
            if case is not None:
                _open_case(case, "add cells to it")
            have = session.scalar(select(func.count()).where(DetectionRow.analysis_id == a.id))
            if int(have) != index:
                raise CellkitError(f"add a cell: the analysis has {have} boxes, expected the new one as #{have}, "
                                   f"got #{index}; reopen the analysis and add the cell again")  # fmt: skip
            when = {"added_at": _now(), "added_version": case.version if case is not None else None}
            session.execute(insert(DetectionRow), [{**rows[index], "analysis_id": a.id, **when}])
            if not a.node_ids and result.node_ids:  # the first classified box of an analysis without any
                a.node_ids = list(result.node_ids)
            return index

        return self._run("add the cell", work, write=True)

    def corrections(self, analysis_id: int, owner: str) -> list[dict[str, Any]]:
        """Every correction of an analysis, oldest first: cell index, model label, from -> to, who, when, note (an
        undo that withdrew the reviewer's label is a correction to :data:`UNDONE`)."""

        def work(session: Session) -> list[dict[str, Any]]:
            a = self._get(session, analysis_id, owner, full=True)
            return [
                {
                    "index": d.idx,
                    "model_label": d.label,
                    "from_label": c.from_label,
                    "label": c.label,
                    "author": c.author,
                    "created": c.created.isoformat(timespec="seconds") if c.created else "",
                    "note": c.note,
                }
                for d in a.detections
                for c in d.corrections
            ]

        return self._run("read the corrections", work)

    # ---- cases -------------------------------------------------------------------------------------
    def _case(self, session: Session, case_id: int, owner: str, lock: bool = False) -> Case:
        """The owner's case; ``lock``: its row is locked for this write, so a sign-off, an amendment and a change of
        its cells never interleave (PostgreSQL's default isolation would let them)."""
        case = session.get(Case, int(case_id), with_for_update=lock)
        if case is None or case.owner != _owner(owner):
            raise CellkitError(f"case {case_id} not found; pick one from the list of your cases")
        return case

    def create_case(
        self, owner: str, name: str, target_wbc: int = 100, details: dict[str, Any] | None = None, who: str = ""
    ) -> int:
        """A new, open case (specimen) of ``owner``; returns its id. ``details``: specimen fields for the report;
        ``who``: the person who started it, for the audit trail (default the owner)."""
        owner, name = _owner(owner), _case_name(name)
        who = _person(str(who or "").strip(), "who starts the case") or owner
        if not 1 <= int(target_wbc) <= 10_000:
            raise CellkitError(f"target white-cell count: expected 1 to 10,000, got {target_wbc}")
        details = json.loads(json.dumps(details or {}, default=str))

        def work(session: Session) -> int:
            case = Case(owner=owner, name=name, target_wbc=int(target_wbc), details=details)
            case.events.append(CaseEvent(version=1, kind="created", who=who))
            session.add(case)
            session.flush()
            return int(case.id)

        return self._run("create the case", work, write=True)

    def find_case(self, owner: str, name: str) -> dict[str, Any] | None:
        """The owner's case of this name (as :meth:`create_case` stores names), or None: the open one when there is
        one, else the newest (signed off). A row as :meth:`list_cases` gives it."""
        owner, name = _owner(owner), _case_name(name)

        def work(session: Session) -> dict[str, Any] | None:
            cases = session.scalars(
                select(Case)
                .where(Case.owner == owner, Case.name == name)
                .options(selectinload(Case.events))
                .order_by(Case.id.desc())
            ).all()
            case = next((c for c in cases if c.status == "open"), cases[0] if cases else None)
            if case is None:
                return None
            fields = session.scalar(select(func.count()).select_from(Analysis).where(Analysis.case_id == case.id))
            return _case_row(case, int(fields or 0))

        return self._run("find the case", work)

    def find_analysis(self, owner: str, image_sha256: str, models: dict[str, dict[str, str]]) -> int | None:
        """The id of the owner's latest analysis of these pixels by the same models (every role's sha256, or name
        where a card has none; ``models`` as :func:`cellkit.slide.model_versions` gives them), or None."""
        owner = _owner(owner)
        want = _model_keys(models)

        def work(session: Session) -> int | None:
            rows = session.execute(
                select(Analysis.id, Analysis.meta)
                .where(Analysis.owner == owner, Analysis.image_sha256 == image_sha256)
                .order_by(Analysis.id.desc())
            ).all()
            return next((int(i) for i, meta in rows if _model_keys((meta or {}).get("models") or {}) == want), None)

        return self._run("read the analyses", work)

    def list_cases(self, owner: str) -> list[dict[str, Any]]:
        """This owner's cases, newest first: id, name, created, status, version, fields, target and sign-off."""
        owner = _owner(owner)

        def work(session: Session) -> list[dict[str, Any]]:
            fields = dict(
                session.execute(
                    select(Analysis.case_id, func.count()).where(Analysis.owner == owner).group_by(Analysis.case_id)
                ).all()
            )
            cases = session.scalars(
                select(Case).where(Case.owner == owner).options(selectinload(Case.events)).order_by(Case.id.desc())
            ).all()
            return [_case_row(c, int(fields.get(c.id, 0))) for c in cases]

        return self._run("list the cases", work)

    def case(self, case_id: int, owner: str) -> dict[str, Any]:
        """One case: its row (see :meth:`list_cases`), details, the ids of its fields in order and its events."""

        def work(session: Session) -> dict[str, Any]:
            c = self._case(session, case_id, owner)
            ids = session.scalars(select(Analysis.id).where(Analysis.case_id == c.id).order_by(Analysis.id)).all()
            row = _case_row(c, len(ids))
            row["details"] = dict(c.details or {})
            row["field_ids"] = [int(i) for i in ids]
            row["events"] = [
                {"version": e.version, "kind": e.kind, "who": e.who, "note": e.note, "created": _iso(e.created)}
                for e in c.events
            ]
            return row

        return self._run("read the case", work)

    def case_fields(self, case_id: int, owner: str) -> list[tuple[int, SlideResult]]:
        """(analysis id, result) of every field of a case, in the order they were added, in one read."""
        return self._run(
            "read the fields of the case", lambda session: _fields(session, self._case(session, case_id, owner))
        )

    def case_snapshot(self, case_id: int, owner: str) -> tuple[str, list[tuple[int, SlideResult]]]:
        """The case's state (a fingerprint of its version, fields, boxes and corrections) and its fields, read in one
        transaction: sign with ``sign_off(..., expected_state=state)`` what was computed from these fields."""

        def work(session: Session) -> tuple[str, list[tuple[int, SlideResult]]]:
            c = self._case(session, case_id, owner)
            return _case_state(session, c), _fields(session, c)

        return self._run("read the fields of the case", work)

    def find_field(self, case_id: int, owner: str, image_sha256: str) -> int | None:
        """The id of the case's field of this image (by the sha256 of its pixels), or None: an image is one field."""

        def work(session: Session) -> int | None:
            c = self._case(session, case_id, owner)
            return session.scalar(
                select(Analysis.id).where(Analysis.case_id == c.id, Analysis.image_sha256 == image_sha256).limit(1)
            )

        return self._run("read the case", work)

    def sign_off(
        self,
        case_id: int,
        owner: str,
        reviewer: str,
        summary: dict[str, Any],
        note: str = "",
        expected_state: str | None = None,
    ) -> int:
        """Sign the case's current version as ``reviewer`` (with the summary signed, kept as it was): the case is
        locked until amended. Returns the version signed.

        ``expected_state``: the :meth:`case_snapshot` state the summary was computed from; when the case changed
        since (a cell corrected or a field added in another tab, an amendment), nothing is signed."""
        reviewer = " ".join(str(reviewer or "").split())
        if not reviewer:
            raise CellkitError("sign-off needs the reviewer's name")
        reviewer = _person(reviewer, "the reviewer's name")
        frozen = json.loads(json.dumps(summary, default=str))

        def work(session: Session) -> int:
            c = self._case(session, case_id, owner, lock=True)
            _open_case(c, "sign it again")
            if expected_state is not None and _case_state(session, c) != expected_state:
                raise CellkitError(
                    f"case {c.name!r} changed since its counts were read (a cell or field changed in another tab or "
                    "by another reviewer): nothing was signed; check the counts again and sign"
                )
            c.status = "signed"
            c.events.append(CaseEvent(version=c.version, kind="signed", who=reviewer, note=note, summary=frozen))
            return int(c.version)

        return self._run("sign off the case", work, write=True)

    def amend_case(self, case_id: int, owner: str, who: str, reason: str) -> int:
        """Open a signed case for changes as a new version (``version + 1``), logged with who and why; the signed
        version and its summary stay as they were. Returns the new version."""
        reason = str(reason or "").strip()
        if not reason:
            raise CellkitError("an amendment needs its reason (it goes into the audit trail and the report)")
        if not " ".join(str(who or "").split()):
            raise CellkitError("an amendment needs the name of who amends (it goes into the audit trail, the report)")
        who = _person(str(who or "").strip(), "the name of who amends")

        def work(session: Session) -> int:
            c = self._case(session, case_id, owner, lock=True)
            if c.status != "signed":
                raise CellkitError(f"case {c.name!r} is not signed off; change it directly, no amendment needed")
            c.version += 1
            c.status = "open"
            c.events.append(CaseEvent(version=c.version, kind="amended", who=who or c.owner, note=reason))
            return int(c.version)

        return self._run("amend the case", work, write=True)

    def case_audit(self, case_id: int, owner: str) -> list[dict[str, Any]]:
        """The case's audit trail, oldest first: its events (created, signed, amended) and every correction of its
        fields (field, cell, from -> to, who, when, note, version)."""

        def work(session: Session) -> list[dict[str, Any]]:
            c = self._case(session, case_id, owner)
            out = [
                {"at": e.created, "created": _iso(e.created), "version": e.version, "what": e.kind, "who": e.who,
                 "field": "", "cell": None, "from_label": "", "label": "", "note": e.note}
                for e in c.events
            ]  # fmt: skip
            rows = session.execute(
                select(
                    Analysis.file_name,
                    DetectionRow.idx,
                    DetectionRow.added_by,
                    DetectionRow.label,
                    DetectionRow.cls,
                    Correction,
                )
                .join(DetectionRow, DetectionRow.analysis_id == Analysis.id)
                .join(Correction, Correction.detection_id == DetectionRow.id)
                .where(Analysis.case_id == c.id)
            ).all()
            for file_name, idx, added_by, model, cls, corr in rows:
                undone = corr.label == UNDONE  # back to the model's label (or the box's class): no decision now
                model = model or cls
                note = corr.note + (" (the reviewer's label withdrawn: undecided again)" if undone else "")
                out.append(
                    {"at": corr.created, "created": _iso(corr.created), "version": corr.case_version,
                     "what": "undo" if undone or corr.note == "undo" else "correction", "who": corr.author,
                     "field": file_name,
                     "cell": int(idx), "from_label": corr.from_label, "label": model if undone else corr.label,
                     "note": note + (" (cell added by the reviewer)" if added_by else "")}
                )  # fmt: skip
            added = session.execute(
                select(Analysis.file_name, DetectionRow)
                .join(DetectionRow, DetectionRow.analysis_id == Analysis.id)
                .where(Analysis.case_id == c.id, DetectionRow.added_by != "")
            ).all()
            for file_name, d in added:  # a cell added before 0005 has no time: listed first, its time unknown
                out.append(
                    {"at": d.added_at, "created": _iso(d.added_at) if d.added_at else "unknown",
                     "version": d.added_version, "what": "added", "who": d.added_by, "field": file_name,
                     "cell": int(d.idx), "from_label": "", "label": d.label, "note": "a cell the detector missed"}
                )  # fmt: skip
            order = {"added": 1, "correction": 2, "undo": 2}  # an event first, an addition, then its corrections
            out.sort(key=lambda r: (_aware(r["at"]), order.get(r["what"], 0)))  # to the microsecond
            return [{k: v for k, v in r.items() if k != "at"} for r in out]

        return self._run("read the audit trail", work)

    # ---- stored images (content-addressed) ------------------------------------------------------------
    def image_folder(self) -> Path:
        """Where ``files`` mode keeps images: ``CELLKIT_IMAGE_DIR``, else ``images/`` beside a SQLite database
        file, else ``CELLKIT_HOME/images``."""
        from cellkit import config

        if os.environ.get("CELLKIT_IMAGE_DIR"):
            return Path(os.environ["CELLKIT_IMAGE_DIR"]).expanduser()
        if self._sqlite_file is not None:
            return self._sqlite_file.parent / "images"
        return config.home() / "images"

    def save_image(self, image: np.ndarray, sha256: str) -> bool:
        """Keep an analysed image by the sha256 of its pixels (``cellkit.slide.image_sha256``), as set by
        ``CELLKIT_IMAGE_STORE``: ``files`` (PNG files beside the database, the default), ``database`` (blobs)
        or ``off``. Returns whether it is stored; a second save of the same image writes nothing."""
        from cellkit import config
        from cellkit.io import encode_png

        mode = config.image_store()
        if mode == "off":
            return False
        if mode == "files":
            from cellkit.writes import atomic_write_bytes

            path = self.image_folder() / sha256[:2] / f"{sha256}.png"
            if path.is_file():
                return True
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, encode_png(image), fallback=False)
            except (OSError, CellkitError) as exc:
                raise StoreError(f"cannot store the image in {path.parent} ({getattr(exc, 'strerror', None) or exc}); "
                                 "set CELLKIT_IMAGE_DIR to a writable folder, or CELLKIT_IMAGE_STORE=off",
                                 "read_only") from None  # fmt: skip
            return True
        png = encode_png(image)

        def work(session: Session) -> bool:
            if session.get(StoredImage, sha256) is None:
                session.add(StoredImage(sha256=sha256, width=int(image.shape[1]), height=int(image.shape[0]), png=png))
            return True

        return self._run("store the image", work, write=True)

    def load_image(self, sha256: str) -> np.ndarray | None:
        """The stored image with this sha256 (files or database, whichever has it), or None when none is kept or
        the stored pixels no longer match their hash."""
        from cellkit.io import read_image
        from cellkit.slide import image_sha256

        path = self.image_folder() / sha256[:2] / f"{sha256}.png"
        data: bytes | None = None
        try:
            data = path.read_bytes()
        except OSError:
            row = self._run("read the image", lambda session: session.get(StoredImage, sha256))
            data = row.png if row is not None else None
        if data is None:
            return None
        try:
            image = read_image(data, name=path.name)
        except CellkitError:
            return None
        return image if image_sha256(image) == sha256 else None


def _insert_analysis(
    session: Session,
    result: SlideResult,
    owner: str,
    file_name: str,
    meta: dict[str, Any],
    case_id: int | None = None,
    case_version: int | None = None,
) -> int:
    """Add one analysis with its boxes (and corrections made before saving) in ``session``; its new id.

    Cells a reviewer added and corrections made before the save (the database was busy) get the audit trail's
    who, when and case version as if they had been saved one by one."""
    models = result.models
    # every model by role and the taxonomies (display names); the columns keep the detector and white-cell model
    meta = {**meta, "models": models, "taxonomies": list(result.taxonomies)}
    rows = detection_records(result)
    corrections = {int(i): str(label) for i, label in result.corrections.items()}
    analysis = Analysis(
        owner=owner,
        image_sha256=result.image_sha256,
        file_name=_tail(file_name or result.name, 512),
        height=int(result.image_shape[0]),
        width=int(result.image_shape[1]),
        meta=meta,
        detector_name=models.get("detector", {}).get("name", ""),
        detector_sha256=models.get("detector", {}).get("sha256", ""),
        classifier_name=models.get("classifier", {}).get("name", ""),
        classifier_sha256=models.get("classifier", {}).get("sha256", ""),
        node_ids=list(result.node_ids),
        groups=dict(result.groups),
        timings=dict(result.timings),
        case_id=case_id,
    )
    session.add(analysis)
    session.flush()  # the write transaction (and, on SQLite, the write lock) starts here
    aid = int(analysis.id)
    now = _now()
    for row in rows:  # every row has the same keys (one executemany)
        row["added_at"], row["added_version"] = (now, case_version) if row["added_by"] else (None, None)
    if rows:
        session.execute(insert(DetectionRow), [{**row, "analysis_id": aid} for row in rows])
    if corrections:
        ids = dict(
            session.execute(
                select(DetectionRow.idx, DetectionRow.id).where(
                    DetectionRow.analysis_id == aid, DetectionRow.idx.in_(list(corrections))
                )
            ).all()
        )
        session.execute(
            insert(Correction),
            [
                {
                    "detection_id": ids[i],
                    "label": label,
                    "note": "reviewed before saving",
                    "created": now,
                    "author": owner,
                    "from_label": rows[i]["label"] or rows[i]["cls"],
                    "case_version": case_version,
                }
                for i, label in corrections.items()
                if i in ids
            ],
        )
    return aid


def _fields(session: Session, case: Case) -> list[tuple[int, SlideResult]]:
    """(analysis id, result) of every field of a case, in the order they were added."""
    rows = session.scalars(
        select(Analysis)
        .where(Analysis.case_id == case.id)
        .options(selectinload(Analysis.detections).selectinload(DetectionRow.corrections))
        .order_by(Analysis.id)
    ).all()
    return [(int(a.id), _result(a)) for a in rows]


def _case_state(session: Session, case: Case) -> str:
    """A fingerprint of what a case's counts depend on: version, status, fields, their boxes and corrections."""
    import hashlib

    boxes = session.execute(
        select(Analysis.id, func.count(DetectionRow.id))
        .outerjoin(DetectionRow, DetectionRow.analysis_id == Analysis.id)
        .where(Analysis.case_id == case.id)
        .group_by(Analysis.id)
        .order_by(Analysis.id)
    ).all()
    corrections = session.execute(
        select(func.count(Correction.id), func.max(Correction.id))
        .join(DetectionRow, Correction.detection_id == DetectionRow.id)
        .join(Analysis, DetectionRow.analysis_id == Analysis.id)
        .where(Analysis.case_id == case.id)
    ).one()
    key = [case.version, case.status, [list(b) for b in boxes], list(corrections)]
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:16]


def _result(a: Analysis) -> SlideResult:
    """The :class:`SlideResult` of a stored analysis (loaded with its boxes and corrections); the latest
    correction per box applied (none where an undo withdrew it)."""
    dets = a.detections
    n, node_ids = len(dets), tuple(a.node_ids or ())
    data: dict[str, np.ndarray] = {}
    if node_ids:
        data = {
            "leaf": np.array([d.leaf for d in dets], dtype=object),
            "label": np.array([d.label for d in dets], dtype=object),
            "cls_confidence": np.array([_nan(d.cls_confidence) for d in dets], np.float32),
            "ood_score": np.array([_nan(d.ood_score) for d in dets], np.float32),
            "review": np.array([d.review or "" for d in dets], dtype=object),
            "node_probs": np.array(
                [[_nan(p) for p in d.probs] if d.probs else [np.nan] * len(node_ids) for d in dets],
                np.float32,
            ).reshape(n, len(node_ids)),
        }
    detections = Detections(
        np.array([[d.x1, d.y1, d.x2, d.y2] for d in dets], np.float32).reshape(n, 4),
        np.array([d.confidence for d in dets], np.float32),
        np.array([DETECTION_CLASSES.index(d.cls) for d in dets], np.int64),
        DETECTION_CLASSES,
        data,
    )
    models = {"detector": {"name": a.detector_name, "sha256": a.detector_sha256}}
    if a.classifier_name:
        models["classifier"] = {"name": a.classifier_name, "sha256": a.classifier_sha256}
    models.update((a.meta or {}).get("models", {}))  # every model of the analysis (e.g. the red-cell one)
    return SlideResult(
        detections=detections,
        image_shape=(a.height, a.width),
        node_ids=node_ids,
        timings=dict(a.timings or {}),
        models=models,
        name=a.file_name,
        image_sha256=a.image_sha256,
        corrections={d.idx: label for d in dets if (label := _reviewed(d))},
        groups=dict(a.groups or {}),
        taxonomies=tuple((a.meta or {}).get("taxonomies", ())),
        added={d.idx: d.added_by for d in dets if d.added_by},
    )


def _reviewed(row: DetectionRow) -> str | None:
    """The reviewer's label of a stored box: its latest correction, None when it has none or an undo withdrew it.

    Undo rows stored before withdrawals were recorded (note "undo", the model's own label) withdraw too, unless a
    reviewer had chosen that label in an earlier step (then the undo went back to that decision)."""
    if not row.corrections or row.corrections[-1].label == UNDONE:
        return None
    last = row.corrections[-1]
    model = row.label or row.cls
    if last.note == "undo" and last.label == model:
        earlier = [c.label for c in row.corrections[:-1] if c.note != "undo"]
        if model not in earlier:
            return None
    return last.label


def _aware(when: datetime | None) -> datetime:
    """A stored time as an aware UTC datetime (SQLite gives them back naive)."""
    if when is None:
        return datetime.min.replace(tzinfo=UTC)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _iso(when: datetime | None) -> str:
    return when.isoformat(timespec="seconds") if when else ""


def _case_row(c: Case, fields: int) -> dict[str, Any]:
    """A case as a plain row: who signed its current version and when (empty while it is open)."""
    signed = next((e for e in reversed(c.events) if e.kind == "signed" and e.version == c.version), None)
    return {
        "id": int(c.id), "name": c.name, "created": _iso(c.created), "status": c.status, "version": int(c.version),
        "fields": fields, "target_wbc": int(c.target_wbc),
        "signed_by": signed.who if signed is not None and c.status == "signed" else "",
        "signed_at": _iso(signed.created) if signed is not None and c.status == "signed" else "",
    }  # fmt: skip


def _case_name(name: str) -> str:
    """A case's name as it is stored and looked up: whitespace collapsed, at most the column's 256 characters."""
    name = " ".join(str(name or "").split())[:256]
    if not name:
        raise CellkitError("a case needs a name (e.g. the specimen or accession number)")
    return name


def _model_keys(models: dict[str, Any]) -> dict[str, str]:
    """{role: the model's sha256, or its name without one}: what tells two analyses' models apart."""
    return {str(r): str(m.get("sha256") or m.get("name", "")) for r, m in models.items() if isinstance(m, dict)}


def _open_case(case: Case | None, doing: str) -> None:
    """Refuse a change to a signed-off case (one line: what to do instead)."""
    if case is not None and case.status == "signed":
        raise CellkitError(f"case {case.name!r} is signed off (version {case.version}); amend it to {doing}")


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _owner(owner: str) -> str:
    owner = str(owner or "").strip()
    if not owner:
        raise CellkitError("an owner (session or user id) is required to store or read analyses")
    return _person(owner, "an owner (session or user id)")


NAME_CHARS = 128  # a person's name in the audit trail (the columns' size: PostgreSQL enforces it, SQLite not)


def _person(name: str, what: str) -> str:
    """A name for the audit trail, refused when longer than its column (PostgreSQL would refuse the write with a
    message about the database's URL; SQLite would store it): the same rule on both."""
    if len(name) > NAME_CHARS:
        raise CellkitError(f"{what}: expected at most {NAME_CHARS} characters, got {len(name)}; use a shorter name")
    return name


def _tail(text: str, size: int) -> str:
    """``text`` cut to a column of ``size`` characters, keeping its end (a path's file name): "…" + the end."""
    return text if len(text) <= size else "…" + text[-(size - 1) :]


def _backoff(attempt: int) -> None:
    """Sleep before retry ``attempt`` (0, 1, ...): 0.25 s doubling up to 4 s, with jitter."""
    time.sleep(min(4.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.5))


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """Every SQLite connection: foreign keys, WAL (readers never block the writer), our own BEGIN."""
    dbapi_connection.isolation_level = None  # the driver emits no BEGIN; _sqlite_begin does
    cur = dbapi_connection.cursor()
    try:
        cur.execute("PRAGMA foreign_keys=ON")
        try:
            cur.execute("PRAGMA journal_mode=WAL")  # persistent: set once per database file
        except sqlite3.OperationalError as exc:
            # busy: another connection holds the file (WAL gets set by a later connection);
            # read-only: the file keeps its mode. Either way the real work reports any problem.
            if not str(getattr(exc, "sqlite_errorname", "")).startswith(
                ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_READONLY")
            ):
                raise
    finally:
        cur.close()


def _sqlite_begin(conn: Connection) -> None:
    """Writers take the write lock up front (BEGIN IMMEDIATE) so they queue on the busy timeout
    instead of failing when a read transaction cannot be upgraded; readers use a plain BEGIN."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("cellkit_write") else "BEGIN")
