"""Baseline: analyses, detections and corrections, as cellkit created them before migrations.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "analyses",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created", sa.DateTime(timezone=True)),
        sa.Column("owner", sa.String(128)),
        sa.Column("image_sha256", sa.String(64)),
        sa.Column("file_name", sa.String(512)),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("meta", sa.JSON),
        sa.Column("detector_name", sa.String(128)),
        sa.Column("detector_sha256", sa.String(64)),
        sa.Column("classifier_name", sa.String(128)),
        sa.Column("classifier_sha256", sa.String(64)),
        sa.Column("node_ids", sa.JSON),
        sa.Column("groups", sa.JSON),
        sa.Column("timings", sa.JSON),
    )
    for col in ("created", "owner", "image_sha256"):
        op.create_index(f"ix_analyses_{col}", "analyses", [col])
    op.create_table(
        "detections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("analysis_id", sa.Integer, sa.ForeignKey("analyses.id", ondelete="CASCADE")),
        sa.Column("idx", sa.Integer),
        sa.Column("x1", sa.Float),
        sa.Column("y1", sa.Float),
        sa.Column("x2", sa.Float),
        sa.Column("y2", sa.Float),
        sa.Column("cls", sa.String(32)),
        sa.Column("confidence", sa.Float),
        sa.Column("leaf", sa.String(64)),
        sa.Column("label", sa.String(64)),
        sa.Column("cls_confidence", sa.Float, nullable=True),
        sa.Column("ood_score", sa.Float, nullable=True),
        sa.Column("probs", sa.JSON(none_as_null=True), nullable=True),
    )
    op.create_index("ix_detections_analysis_id", "detections", ["analysis_id"])
    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("detection_id", sa.Integer, sa.ForeignKey("detections.id", ondelete="CASCADE")),
        sa.Column("label", sa.String(64)),
        sa.Column("created", sa.DateTime(timezone=True)),
        sa.Column("note", sa.Text),
    )
    op.create_index("ix_corrections_detection_id", "corrections", ["detection_id"])
