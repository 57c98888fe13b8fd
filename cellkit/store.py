"""Database of analyses: every detection, prediction and correction, scoped by owner.

SQLAlchemy 2 ORM; SQLite file by default (``config.db_url()``), any SQL URL via ``CELLKIT_DB_URL``.
An analysis is written in one transaction: a failure half-way leaves nothing behind. Every read
and write takes an ``owner`` (a browser session id or a user name), so two sessions never see
each other's analyses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from cellkit.errors import CellkitError
from cellkit.slide import SlideResult
from cellkit.types import DETECTION_CLASSES, Detections


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
    probs: Mapped[list | None] = mapped_column(JSON, nullable=True)
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
    detection: Mapped[DetectionRow] = relationship(back_populates="corrections")


def _opt(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def detection_rows(result: SlideResult) -> Iterator[DetectionRow]:
    """ORM rows for every box of a result (classifier fields empty for unclassified boxes)."""
    d = result.detections
    names = d.class_name
    for i in range(len(d)):
        row = DetectionRow(
            idx=i,
            x1=float(d.xyxy[i, 0]),
            y1=float(d.xyxy[i, 1]),
            x2=float(d.xyxy[i, 2]),
            y2=float(d.xyxy[i, 3]),
            cls=str(names[i]),
            confidence=float(d.confidence[i]),
        )
        if "label" in d.data and d.data["label"][i]:
            row.leaf, row.label = str(d.data["leaf"][i]), str(d.data["label"][i])
            row.cls_confidence = _opt(d.data["cls_confidence"][i])
            row.ood_score = _opt(d.data["ood_score"][i])
            row.probs = [round(float(p), 6) for p in d.data["node_probs"][i]]
        if i in result.corrections:
            row.corrections.append(Correction(label=result.corrections[i], note="reviewed before saving"))
        yield row


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


class Store:
    """Analyses database. ``Store()`` uses ``config.db_url()``; ``Store("sqlite://")`` is in memory."""

    def __init__(self, url: str | None = None):
        from cellkit import config

        self.url = url or config.db_url()
        kwargs: dict[str, Any] = {}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False}
            if self.url in ("sqlite://", "sqlite:///:memory:"):
                from sqlalchemy.pool import StaticPool

                kwargs["poolclass"] = StaticPool
        try:
            self.engine = create_engine(self.url, **kwargs)
            if self.url.startswith("sqlite"):
                event.listen(self.engine, "connect", _sqlite_pragmas)
            Base.metadata.create_all(self.engine)
        except (SQLAlchemyError, ImportError) as exc:
            safe = safe_url(self.url)
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            pw = _password(self.url)
            if pw:
                detail = detail.replace(pw, "***")
            raise CellkitError(f"cannot open the database {safe!r}: {detail}; check CELLKIT_DB_URL") from None
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def save_analysis(
        self, result: SlideResult, owner: str, file_name: str = "", metadata: dict[str, Any] | None = None
    ) -> int:
        """Store a result with all its boxes in ONE transaction; returns the new analysis id."""
        models = result.models
        analysis = Analysis(
            owner=_owner(owner),
            image_sha256=result.image_sha256,
            file_name=file_name or result.name,
            height=int(result.image_shape[0]),
            width=int(result.image_shape[1]),
            meta=json.loads(json.dumps(metadata or {}, default=str)),
            detector_name=models.get("detector", {}).get("name", ""),
            detector_sha256=models.get("detector", {}).get("sha256", ""),
            classifier_name=models.get("classifier", {}).get("name", ""),
            classifier_sha256=models.get("classifier", {}).get("sha256", ""),
            node_ids=list(result.node_ids),
            groups=dict(result.groups),
            timings=dict(result.timings),
        )
        with self._session.begin() as session:
            session.add(analysis)
            for row in detection_rows(result):
                analysis.detections.append(row)
            session.flush()
            return int(analysis.id)

    def list_analyses(self, owner: str) -> list[dict[str, Any]]:
        """This owner's analyses, newest first: id, created, file name, size, counts, models."""
        with self._session() as session:
            rows = session.scalars(
                select(Analysis).where(Analysis.owner == _owner(owner)).order_by(Analysis.id.desc())
            ).all()
            out = []
            for a in rows:
                counts = {c: 0 for c in DETECTION_CLASSES}
                for d in a.detections:
                    counts[d.cls] = counts.get(d.cls, 0) + 1
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
                    }
                )
            return out

    def _get(self, session: Session, analysis_id: int, owner: str) -> Analysis:
        a = session.get(Analysis, int(analysis_id))
        if a is None or a.owner != _owner(owner):
            raise CellkitError(f"analysis {analysis_id} not found; pick one from the list of your analyses")
        return a

    def load_analysis(self, analysis_id: int, owner: str) -> SlideResult:
        """Rebuild the :class:`SlideResult` (latest correction per box applied)."""
        with self._session() as session:
            a = self._get(session, analysis_id, owner)
            dets = a.detections
            n, node_ids = len(dets), tuple(a.node_ids or ())
            data: dict[str, np.ndarray] = {}
            if node_ids:
                data = {
                    "leaf": np.array([d.leaf for d in dets], dtype=object),
                    "label": np.array([d.label for d in dets], dtype=object),
                    "cls_confidence": np.array([_nan(d.cls_confidence) for d in dets], np.float32),
                    "ood_score": np.array([_nan(d.ood_score) for d in dets], np.float32),
                    "node_probs": np.array(
                        [d.probs if d.probs else [np.nan] * len(node_ids) for d in dets], np.float32
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
            return SlideResult(
                detections=detections,
                image_shape=(a.height, a.width),
                node_ids=node_ids,
                timings=dict(a.timings or {}),
                models=models,
                name=a.file_name,
                image_sha256=a.image_sha256,
                corrections={d.idx: d.corrections[-1].label for d in dets if d.corrections},
                groups=dict(a.groups or {}),
            )

    def delete_analysis(self, analysis_id: int, owner: str) -> None:
        """Delete an analysis with its detections and corrections."""
        with self._session.begin() as session:
            session.delete(self._get(session, analysis_id, owner))

    def add_correction(self, analysis_id: int, index: int, label: str, owner: str, note: str = "") -> int:
        """Record a reviewer's label for box ``index`` of an analysis (the model's label is kept)."""
        with self._session.begin() as session:
            a = self._get(session, analysis_id, owner)
            if a.node_ids and label not in a.node_ids:
                raise CellkitError(f"unknown label {label!r}; choose a node of the taxonomy ({', '.join(a.node_ids)})")
            row = session.scalar(
                select(DetectionRow).where(DetectionRow.analysis_id == a.id, DetectionRow.idx == int(index))
            )
            if row is None:
                raise CellkitError(f"analysis {analysis_id} has no cell #{index}; pick a cell from its gallery")
            corr = Correction(label=label, note=note)
            row.corrections.append(corr)
            session.flush()
            return int(corr.id)

    def corrections(self, analysis_id: int, owner: str) -> list[dict[str, Any]]:
        """Every correction of an analysis, oldest first: cell index, model label, new label, time, note."""
        with self._session() as session:
            a = self._get(session, analysis_id, owner)
            return [
                {
                    "index": d.idx,
                    "model_label": d.label,
                    "label": c.label,
                    "created": c.created.isoformat(timespec="seconds"),
                    "note": c.note,
                }
                for d in a.detections
                for c in d.corrections
            ]


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _owner(owner: str) -> str:
    owner = str(owner or "").strip()
    if not owner:
        raise CellkitError("an owner (session or user id) is required to store or read analyses")
    return owner


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
